"""Score a forecast file against truth, with persistence, hour-of-day climatology and linear AR baselines scored alike."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from gendiff.errors import DataError
from gendiff.io import write_json_atomic

from . import baselines
from .data import Codec, _jsonable, open_data, period_indices, time_step, write_dataset
from .forecasting import forecast_dataset
from .metrics import score

SYSTEMS = ("model", "persistence", "climatology", "linear")


def _open_forecast(forecast) -> xr.Dataset:
    if isinstance(forecast, xr.Dataset):
        return forecast
    path = Path(forecast)
    if not path.exists():
        raise DataError(f"{path}: no such forecast file")
    try:
        return xr.open_zarr(path) if path.suffix == ".zarr" else xr.open_dataset(path)
    except Exception as exc:
        raise DataError(f"{path}: not a readable forecast file ({type(exc).__name__}: {exc})") from None


def truth_at_valid_time(truth: xr.DataArray, valid_time: xr.DataArray) -> xr.DataArray:
    """truth(time, ...) -> truth(init_time, lead_time, ...) at the forecast's valid times (NaN beyond the data)."""
    wanted = np.unique(valid_time.values.ravel())
    return truth.reindex(time=wanted).sel(time=valid_time).drop_vars("time", errors="ignore")


def baseline_forecasts(truth: xr.Dataset, fc: xr.Dataset, train_period, members: int, seed: int = 0,
                       label: str = "truth") -> dict[str, xr.Dataset]:
    """Persistence, climatology and linear AR forecasts for the forecast's init and lead times."""
    step = time_step(truth)
    lead_steps = (pd.to_timedelta(fc["lead_time"].values) / step).to_numpy()
    if not np.allclose(lead_steps, np.arange(1, len(lead_steps) + 1)):
        raise DataError(f"{label}: forecast lead times {fc['lead_time'].values[:3]}... are not 1, 2, ... steps of "
                        f"the truth's time step {step}")
    n_lead = len(lead_steps)
    train_idx = period_indices(truth, train_period, label, "training period")
    codec = Codec.fit(truth.isel(time=train_idx))
    values = codec.encode(truth, label)
    times = truth["time"].values
    tindex = pd.DatetimeIndex(times)
    init = pd.DatetimeIndex(fc["init_time"].values)
    init_idx = tindex.get_indexer(init)
    if (init_idx < 0).any():
        raise DataError(f"{label}: init time {init[init_idx < 0][0]} of the forecast is not in the truth data")
    valid = fc["valid_time"].transpose("init_time", "lead_time").values
    out = {
        "persistence": baselines.persistence(values, init_idx, n_lead),
        "climatology": baselines.hourly_climatology(values, times, train_idx, valid),
        "linear": baselines.LinearAR().fit(values, times, train_idx).forecast(values, times, init_idx, n_lead,
                                                                             members, seed=seed),
    }
    return {k: forecast_dataset(codec, v, init.values, step) for k, v in out.items()}


def evaluate(forecast, truth, *, train_period=None, systems=SYSTEMS, members_linear: int | None = None,
             out=None, plots: bool = True, seed: int = 0) -> list[dict]:
    """Records {variable, lead_time_hours, system, crps, crps_fair, rmse, spread, ssr} per lead time; optional files."""
    fc = _open_forecast(forecast)
    for d in ("init_time", "member", "lead_time"):
        if d not in fc.dims:
            raise DataError(f"{forecast}: not a gendiff forecast (no '{d}' dimension)")
    label = str(truth) if isinstance(truth, (str, Path)) else "truth"
    variables = [str(v) for v in fc.data_vars]
    truth_ds = open_data(truth, variables, name=label)
    if train_period is None:
        tp = fc.attrs.get("train_period")
        if not tp:
            raise DataError(f"{forecast}: no 'train_period' attribute; pass train_period for the baselines")
        train_period = tuple(str(pd.Timestamp(s)) for s in tp.split(" to "))
    systems = list(systems)
    forecasts = {"model": fc}
    wanted_baselines = [s for s in systems if s != "model"]
    if wanted_baselines:
        base = baseline_forecasts(truth_ds, fc, train_period, members_linear or fc.sizes["member"], seed, label)
        forecasts.update({k: base[k] for k in wanted_baselines})
    records, scores = [], {}
    for system in systems:
        f = forecasts[system]
        for v in variables:
            y = truth_at_valid_time(truth_ds[v], f["valid_time"])
            s = score(f[v], y, "member")
            scores[(system, v)] = s
            for j, lt in enumerate(s["lead_time"].values):
                rec = {"variable": v, "lead_time_hours": float(pd.Timedelta(lt).total_seconds() / 3600),
                       "system": system}
                for k in ("crps", "rmse", "spread", "ssr", "crps_fair"):
                    val = float(s[k].values[j])
                    rec[k] = val if np.isfinite(val) else None
                records.append(rec)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "scores.json", records)
        ranks = xr.Dataset({f"{v}_{system}": s["rank_histogram"].rename(rank=f"rank_{system}")
                            for (system, v), s in scores.items()})
        write_dataset(ranks, out / "rank_histograms.nc")
        if plots:
            from .plots import plot_maps, plot_rank_histograms, plot_skill

            plot_skill(records, out / "skill.png")
            plot_rank_histograms({k: s["rank_histogram"] for k, s in scores.items()}, out / "rank_histogram.png")
            for v in variables:
                y = truth_at_valid_time(truth_ds[v], fc["valid_time"])
                plot_maps(fc[v], y, out / f"maps_{v}.png")
    return records


def card_metrics(records: list[dict], fc: xr.Dataset, headline_hours=None) -> dict:
    """A metrics block for a run's card (gendiff.runs.record_metrics) from evaluate's records: CRPS per lead of the
    model and each baseline (`per_lead`), and as headline numbers (shown by `gendiff list`) the CRPS of each system
    at up to three leads (`headline_hours`; default 6/12/24 h for forecasts to 48 h at most, 24/72/120 h for longer
    ones, else the first, middle and last lead)."""
    systems = sorted({r["system"] for r in records}, key=lambda s: SYSTEMS.index(s) if s in SYSTEMS else 99)
    variables = sorted({r["variable"] for r in records})
    hours = sorted({r["lead_time_hours"] for r in records})
    if headline_hours is None:
        short = hours[-1] <= 48
        headline_hours = [h for h in ((6.0, 12.0, 24.0) if short else (24.0, 72.0, 120.0, 240.0)) if h in hours][:3]
        if not headline_hours:  # other lead times: first, middle, last
            headline_hours = sorted({hours[0], hours[len(hours) // 2], hours[-1]})
    by = {(r["variable"], r["system"], r["lead_time_hours"]): r for r in records}
    block: dict = {}
    for v in variables:
        tag = "" if len(variables) == 1 else f"_{v}"
        for h in headline_hours:
            for s in systems:
                rec = by.get((v, s, float(h)))
                if rec is not None and rec["crps"] is not None:
                    block[f"crps{tag}_{h:g}h" + ("" if s == "model" else f"_{s}")] = round(rec["crps"], 4)
    block["per_lead"] = {v: {s: {"crps": [by[(v, s, h)]["crps"] for h in hours],
                                 "rmse": [by[(v, s, h)]["rmse"] for h in hours],
                                 "ssr": [by[(v, s, h)]["ssr"] for h in hours]} for s in systems}
                         for v in variables}
    block["lead_hours"] = hours
    model = [by[(v, "model", h)]["crps"] for v in variables for h in hours]
    block["model_crps_below_at_all_leads"] = beats = {}
    for s in systems:
        if s != "model":
            other = [by[(v, s, h)]["crps"] for v in variables for h in hours]
            beats[s] = bool(all(m is not None and o is not None and m < o
                                                         for m, o in zip(model, other)))
    block["forecast"] = {"inits": int(fc.sizes["init_time"]), "members": int(fc.sizes["member"]),
                         "first_init": str(fc["init_time"].values[0])[:16],
                         "last_init": str(fc["init_time"].values[-1])[:16],
                         **{k: _jsonable(fc.attrs[k]) for k in ("sampler", "sampler_steps", "seed", "spread_calibration",
                                                     "forecast_seconds", "device") if k in fc.attrs}}
    return block
