"""Score a forecast file against truth, with persistence, hour-of-day climatology, linear AR and the run's own
calibrated AR base without its network (`ar_calibrated`) as baselines, all scored alike.

Forecast files are read in gendiff's layout (init_time, member, lead_time, valid_time) or WeatherBench2's (time as
the init time, prediction_timedelta, ensemble dim number or realization; none: a one-member point forecast)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from gendiff.errors import ConfigError, DataError
from gendiff.io import write_json_atomic

from . import baselines
from .ar_calibrated import ar_calibrated
from .data import _jsonable, open_data, period_indices, write_dataset
from .forecasting import base_trajectory, forecast_dataset, nonnegative_variables
from .comparison import (attach_intervals, emos_past_system, emos_system, format_comparisons, past_inits, peer_systems,
                         per_init_crps)
from .heldout import check_held_out
from .joint import joint_records
from .layout import (ENSEMBLE_DIMS, _lead_steps, _open_forecast, calendar_valid_time, to_gendiff_layout,  # noqa: F401
                     truth_at_valid_time)
from .peers import PEERS
from .plots import plot_maps, plot_rank_histograms, plot_rank_histograms_by_lead, plot_skill
from .run import Run, load_run
from .scores import score
from .stream import EncodedValues, fit_codec
from .tabular import SERIES
from .timeaxis import lead_times, run_step

SYSTEMS = ("model", "persistence", "climatology", "linear", "ar_calibrated", "ar_base", *PEERS, "emos", "emos_ar",
           "emos_ar_past")
# ar_calibrated needs the run, the peers statsforecast (pip install 'gendiff[peers]'), emos 4 inits: ask for them
DEFAULT_SYSTEMS = ("model", "persistence", "climatology", "linear")
def baseline_forecasts(truth: xr.Dataset, fc: xr.Dataset, train_period, members: int, seed: int = 0,
                       label: str = "truth", systems=("persistence", "climatology", "linear")) -> dict[str, xr.Dataset]:
    """Persistence, climatology and linear AR forecasts (those in `systems`) for the forecast's init and lead
    times; leads may skip steps of the truth (every 6 h of an hourly truth: the baselines run every step and keep
    those leads)."""
    step, lead_steps = _lead_steps(truth, fc, label)
    n_lead = int(lead_steps[-1])
    train_idx = period_indices(truth, train_period, label, "training period")
    codec = fit_codec(truth.isel(time=train_idx))
    values = EncodedValues(truth, codec, label=label)  # read where a baseline needs it
    times = truth["time"].values
    tindex = pd.DatetimeIndex(times)
    init = pd.DatetimeIndex(fc["init_time"].values)
    init_idx = tindex.get_indexer(init)
    if (init_idx < 0).any():
        raise DataError(f"{label}: init time {init[init_idx < 0][0]} of the forecast is not in the truth data")
    valid = lead_times(init.values, n_lead, step)
    make = {
        "persistence": lambda: baselines.persistence(values, init_idx, n_lead),
        "climatology": lambda: baselines.hourly_climatology(values, times, train_idx, valid),
        "linear": lambda: baselines.LinearAR().fit(values, times, train_idx).forecast(values, times, init_idx,
                                                                                     n_lead, members, seed=seed),
    }
    return {k: forecast_dataset(codec, make[k](), init.values, step).isel(lead_time=lead_steps - 1)
            for k in systems if k in make}


def ar_calibrated_forecast(run, truth: xr.Dataset, fc: xr.Dataset, members: int, seed: int = 0,
                           label: str = "truth") -> xr.Dataset:
    """The `ar_calibrated` baseline at the forecast's init and lead times: the run's AR base, its held-out
    calibration and Gaussian noise, no network (baselines.ar_calibrated); `run` a Run, run folder or
    pretrained:NAME."""
    if not isinstance(run, Run):
        run = load_run(run, device="cpu")
    step, lead_steps = _lead_steps(truth, fc, label)
    if step != run_step(run.config):
        raise DataError(f"{label}: time step {step} differs from the run's {run_step(run.config)} ({run.path})")
    missing = [v for v in run.codec.variables if v not in truth.data_vars]
    if missing:
        raise DataError(f"{label}: no variable {missing[0]!r} of the run {run.path}")
    times = truth["time"].values
    init = pd.DatetimeIndex(fc["init_time"].values)
    init_idx = pd.DatetimeIndex(times).get_indexer(init)
    if (init_idx < 0).any():
        raise DataError(f"{label}: init time {init[init_idx < 0][0]} of the forecast is not in the truth data")
    values = EncodedValues(truth, run.codec, run.climatology, label)
    arr = ar_calibrated(run, values, times, init_idx, int(lead_steps[-1]), members, seed=seed)
    return forecast_dataset(run.codec, arr, init.values, step,
                            nonnegative=nonnegative_variables(run)).isel(lead_time=lead_steps - 1)


def ar_base_forecast(run, truth: xr.Dataset, fc: xr.Dataset, label: str = "truth",
                     skip_short: bool = False) -> xr.Dataset:
    """The run's AR base alone at the forecast's inits and leads: a one-member (point) forecast in data units, the
    deterministic forecast the network departs from (`ar_base`; EMOS on it is `emos_ar`). `skip_short`: inits
    outside the truth or without the run's context before them are left out (emos_ar_past's history) instead of
    being an error."""
    if not isinstance(run, Run):
        run = load_run(run, device="cpu")
    if run.ar is None:
        raise DataError(f"{run.path}: the ar_base and emos_ar competitors need a run with an AR base (base 'linear')")
    step, lead_steps = _lead_steps(truth, fc, label)
    times = truth["time"].values
    init = pd.DatetimeIndex(fc["init_time"].values)
    init_idx = pd.DatetimeIndex(times).get_indexer(init)
    short = (init_idx < 0) | (init_idx - run.context + 1 < 0)
    if skip_short:
        init, init_idx = init[~short], init_idx[~short]
    elif short.any():
        raise DataError(f"{label}: an init time of the forecast is not in the truth data with {run.context} steps "
                        "of context before it")
    values = EncodedValues(truth, run.codec, run.climatology, label)
    n_lead = int(lead_steps[-1])
    arr = base_trajectory(run, values, init_idx, n_lead, times)[:, None]  # (I, 1, L, C)
    valid = lead_times(times[init_idx], n_lead, step)
    arr = run.climatology.restore(arr, valid, axis=1)
    return forecast_dataset(run.codec, arr, init.values, step,
                            nonnegative=nonnegative_variables(run)).isel(lead_time=lead_steps - 1)


def _run_competitors(fc: xr.Dataset, truth: xr.Dataset, systems, run, name: str, seed: int, label: str) -> dict:
    """The competitors made from the run (`run`, or the forecast's gendiff_run attribute): ar_calibrated, the AR
    base alone (ar_base) and EMOS on it, cross-fitted on the inits (emos_ar) or on the 40 days before each
    (emos_ar_past)."""
    needs_run = [x for x in ("ar_calibrated", "ar_base", "emos_ar", "emos_ar_past") if x in systems]
    if not needs_run:
        return {}
    spec = run if run is not None else fc.attrs.get("gendiff_run")
    if not spec:
        raise ConfigError(f"{name}: {', '.join(needs_run)} need(s) the run (--run RUN): the forecast has no "
                          "'gendiff_run' attribute")
    out = {}
    if not isinstance(spec, Run):
        spec = load_run(spec, device="cpu")
    if {"ar_base", "emos_ar", "emos_ar_past"} & set(systems):
        base = ar_base_forecast(spec, truth, fc, label)
        if "ar_base" in systems:
            out["ar_base"] = base
        if "emos_ar" in systems:
            out["emos_ar"] = emos_system(truth, base, seed, members=fc.sizes["member"])
        if "emos_ar_past" in systems:  # fitted on the base's forecasts of the days before each init
            past = xr.Dataset(coords={"init_time": past_inits(fc), "lead_time": fc["lead_time"].values})
            history = ar_base_forecast(spec, truth, past, label, skip_short=True)
            out["emos_ar_past"] = emos_past_system(truth, history, base, seed, members=fc.sizes["member"])
    if "ar_calibrated" in systems:
        out["ar_calibrated"] = ar_calibrated_forecast(spec, truth, fc, fc.sizes["member"], seed, label)
    return out


def evaluate(forecast, truth, *, train_period=None, systems=DEFAULT_SYSTEMS, members_linear: int | None = None,
             out=None, plots: bool = True, seed: int = 0, run=None, weights=None,
             allow_in_sample: bool = False, season_length=None, intervals: bool = True,
             per_series: bool = False, joint: bool = False) -> list[dict]:
    """Records {variable, lead_time_hours, system, crps, crps_standard, crps_fair, rmse, spread, ssr} per lead
    time; optional files. `crps` is the fair CRPS (1/(M(M-1)) spread term, as WeatherBench2; `crps_fair` the same
    number under its explicit name), `crps_standard` the 1/M^2 one; `ssr` = spread / RMSE.

    systems: any of SYSTEMS. `ar_calibrated` needs the run (`run`: a Run, run folder or pretrained:NAME; default:
    the forecast's `gendiff_run` attribute): its AR base, held-out calibration and Gaussian noise, no network.
    The baselines persistence, climatology and linear are fitted on `train_period` (default: the forecast's
    `train_period` attribute) and are not calibrated; the model and ar_calibrated are calibrated on held-out days.
    `weights`: scores.score's (the gridded adapter passes cell-area latitude weights). Init times inside the
    model's training period (the forecast's `train_period` attribute) or the baselines' `train_period` are refused
    (heldout.py) unless `allow_in_sample`; the records then carry `in_sample` True. statsforecast's models
    (auto_ets, auto_arima, mstl, seasonal_naive, naive; peers.py, `season_length` in steps, default the frequency's
    day / week / year) are fitted on the same training period; `emos` is EMOS on the model's ensemble, cross-fitted
    over two halves of the inits (comparison.emos_system). With `intervals`, each competitor's record carries
    `vs_model`: the model's CRPS minus its with a 95% paired block-bootstrap interval over the inits and the model's
    win rate (comparison.attach_intervals). `per_series`: also one record per series (its name in `series`) of the
    (time, series) tables, after the pooled ones. `joint`: also the joint scores over every series, cell and
    variable (joint.py: energy score, CRPS-sum) per lead and system, as records of variable "joint" after the
    others (their univariate fields None), with `vs_model_energy` intervals; written to joint_scores.json too."""
    fc = _open_forecast(forecast)
    label = str(truth) if isinstance(truth, (str, Path)) else "truth"
    variables = [str(v) for v in fc.data_vars if {"init_time", "lead_time"} <= set(fc[v].dims)]
    if not variables:
        raise DataError(f"{forecast}: no forecast variable with init_time and lead_time dimensions")
    fc = fc[variables]
    truth_ds = open_data(truth, variables, name=label)
    name = str(forecast) if isinstance(forecast, (str, Path)) else "forecast"
    fc = calendar_valid_time(fc, truth_ds, name)  # monthly leads: the truth's calendar months
    systems = list(systems)
    bad = [s for s in systems if s not in SYSTEMS]
    if bad:
        raise ConfigError(f"systems: unknown system(s) {', '.join(bad)} (choose from {', '.join(SYSTEMS)})")
    forecasts = {"model": fc}
    fitted = [s for s in systems if s in ("persistence", "climatology", "linear")]
    model_period = tuple(str(pd.Timestamp(t)) for t in fc.attrs["train_period"].split(" to ")) \
        if fc.attrs.get("train_period") else None
    if train_period is None or train_period == (None, None):
        train_period = model_period
    in_sample = bool(fc.attrs.get("in_sample", 0))
    for period, what in ((model_period, "the model's training period"), (train_period, "the baselines' training "
                                                                         "period")):
        if period is not None and None not in period:
            in_sample |= check_held_out(fc["init_time"].values, period, str(forecast), what, allow_in_sample)
    if fitted:
        if train_period is None:
            raise DataError(f"{forecast}: no 'train_period' attribute; pass train_period for the baselines")
        forecasts.update(baseline_forecasts(truth_ds, fc, train_period, members_linear or fc.sizes["member"], seed,
                                            label, fitted))
    forecasts.update(_run_competitors(fc, truth_ds, systems, run, str(forecast), seed, label))
    forecasts.update(peer_systems(truth_ds, fc, train_period, systems, fc.sizes["member"], seed, label,
                                  season_length))
    if "emos" in systems:
        forecasts["emos"] = emos_system(truth_ds, fc, seed)
    records, scores, per_init = [], {}, {}
    for system in systems:
        f = forecasts[system]
        for v in variables:
            y = truth_at_valid_time(truth_ds[v], f["valid_time"])
            s = score(f[v], y, "member", weights=weights)
            scores[(system, v)] = s
            if intervals:
                per_init[(system, v)] = {"crps": per_init_crps(f[v], truth_ds[v], weights), "leads": [
                    float(pd.Timedelta(lt).total_seconds() / 3600) for lt in s["lead_time"].values]}
            records += _records(s, v, system, in_sample)
            if per_series and SERIES in f[v].dims:
                by = score(f[v], y, "member", keep_dims=("lead_time", SERIES), weights=weights)
                for name in by[SERIES].values:
                    records += _records(by.sel({SERIES: name}), v, system, in_sample, series=str(name))
    if intervals:
        attach_intervals(records, per_init, seed)
    joint_recs = joint_records({s: forecasts[s] for s in systems}, truth_ds, variables, intervals, seed) \
        if joint else []
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "scores.json", records)
        if joint:
            write_json_atomic(out / "joint_scores.json", joint_recs)
        ranks = xr.Dataset({f"{v}_{system}": s["rank_histogram"].rename(rank=f"rank_{system}")
                            for (system, v), s in scores.items()})
        write_dataset(ranks, out / "rank_histograms.nc")
        if plots:
            plot_skill(records, out / "skill.png")
            hists = {k: s["rank_histogram"] for k, s in scores.items()}
            plot_rank_histograms(hists, out / "rank_histogram.png")
            plot_rank_histograms_by_lead(hists, out / "rank_histogram_by_lead.png")
            for v in variables:
                y = truth_at_valid_time(truth_ds[v], fc["valid_time"])
                plot_maps(fc[v], y, out / f"maps_{v}.png")
    return records + joint_recs


def _records(s: xr.Dataset, variable: str, system: str, in_sample: bool, series: str | None = None) -> list[dict]:
    """Score records per lead from scores.score's Dataset (one series' when `series` is given)."""
    out = []
    for j, lt in enumerate(s["lead_time"].values):
        rec = {"variable": variable, "lead_time_hours": float(pd.Timedelta(lt).total_seconds() / 3600),
               "system": system}
        if series is not None:
            rec["series"] = series
        for k in ("crps", "crps_standard", "rmse", "spread", "ssr", "coverage_80", "coverage_95"):
            val = float(s[k].values[j])
            rec[k] = val if np.isfinite(val) else None
        rec["crps_fair"] = rec["crps"]
        if in_sample:
            rec["in_sample"] = True
        out.append(rec)
    return out


def card_metrics(records: list[dict], fc: xr.Dataset, headline_hours=None) -> dict:
    """A metrics block for a run's card (gendiff.runs.record_metrics) from evaluate's records: fair and standard
    CRPS, RMSE and SSR per lead of the model and each baseline (`per_lead`), and as headline numbers (shown by
    `gendiff list`) the fair CRPS of each system at up to three leads (`headline_hours`; default 6/12/24 h for
    forecasts to 48 h at most, 24/72/120 h for longer ones, else the first, middle and last lead)."""
    records = [r for r in records if "series" not in r]  # the pooled scores; per-series ones stay in scores.json
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
    block["per_lead"] = {v: {s: {k: [by[(v, s, h)].get(k) for h in hours]
                                 for k in ("crps", "crps_standard", "rmse", "ssr", "coverage_80", "coverage_95")}
                             for s in systems}
                         for v in variables}
    block["lead_hours"] = hours
    block["scores"] = ("crps: fair CRPS (spread term over M(M-1) member pairs), crps_standard: over M^2; "
                       "cell-area latitude weights; ssr = ensemble spread / RMSE of the ensemble mean")
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


def format_table(records: list[dict]) -> str:
    """Plain-text CRPS / RMSE / SSR table: one row per (variable, lead), one column group per system."""
    df = pd.DataFrame(records)
    if df.empty:
        return "(no scores)"
    series = df.pop("series") if "series" in df else pd.Series(np.nan, index=df.index)
    table = df[series.isna()].pivot_table(index=["variable", "lead_time_hours"], columns="system",
                                          values=["crps", "rmse", "ssr"], aggfunc="first")
    text = table.to_string(float_format=lambda v: f"{v:.3f}")
    if series.notna().any():
        each = df[series.notna()].assign(series=series[series.notna()]).pivot_table(
            index=["variable", "series", "lead_time_hours"], columns="system", values="crps", aggfunc="first")
        text += "\n\nCRPS per series:\n" + each.to_string(float_format=lambda v: f"{v:.3f}")
    comparisons = format_comparisons(records)
    if comparisons:
        text += "\n\n" + comparisons
    if "in_sample" in df and df["in_sample"].fillna(False).any():
        text = "IN-SAMPLE: init times inside a training period; these scores are no measure of skill\n" + text
    return text
