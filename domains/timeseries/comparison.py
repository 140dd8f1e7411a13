"""Every claim with its interval: the model's CRPS against each competitor's, per lead, on the same inits, as the mean
difference (model - competitor) with a 95% paired moving-block bootstrap interval over init times (intervals.py)
and the model's win rate; and the competitors that scoring.evaluate adds beside the baselines: statsforecast's
models (peers.py) and EMOS on the model's ensemble (emos.py), cross-fitted over two halves of the inits, or fitted
on a sliding window of the days before each init (emos_past_system: what a forecaster runs operationally)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from .emos import emos_calibrate
from .frequency import candidate_seasons
from .intervals import format_interval, paired_block_bootstrap
from .layout import truth_at_valid_time
from .peers import PEERS, peer_forecasts
from .scores import crps_ensemble, weighted_mean
from .timeaxis import time_step


def per_init_crps(forecast: xr.DataArray, truth: xr.DataArray, weights=None) -> np.ndarray:
    """(init, lead) fair CRPS, averaged over every other dim (with `weights`, as scores.score)."""
    y = truth_at_valid_time(truth, forecast["valid_time"]).where(forecast.notnull().all("member"))
    if callable(weights):
        weights = weights(y)
    crps = crps_ensemble(forecast, y, "member", fair=True)
    dims = [d for d in crps.dims if d not in ("init_time", "lead_time")]
    return weighted_mean(crps, dims, weights).transpose("init_time", "lead_time").values


def attach_intervals(records: list[dict], per_init: dict, seed: int = 0) -> None:
    """Add to each competitor's record (variable, lead, system) the model's CRPS minus its, the 95% paired
    block-bootstrap interval and the model's win rate over the inits: `vs_model` = {diff, lo, hi, win_rate, n}."""
    for rec in records:
        if rec["system"] == "model" or "series" in rec:  # per-series records: the pooled ones carry the interval
            continue
        key, model_key = (rec["system"], rec["variable"]), ("model", rec["variable"])
        if key not in per_init or model_key not in per_init:
            continue
        j = per_init[key]["leads"].index(rec["lead_time_hours"])
        a, b = per_init[model_key]["crps"][:, j], per_init[key]["crps"][:, j]
        if np.isfinite(a - b).sum() < 2:
            continue
        res = paired_block_bootstrap(a, b, seed=seed)
        rec["vs_model"] = {"diff": res["mean_diff"], "lo": res["lo"], "hi": res["hi"],
                           "win_rate": res["win_rate"], "n": res["n"]}


def format_comparisons(records: list[dict]) -> str:
    """Plain text: per variable, lead and competitor, model - competitor CRPS [95% interval], model wins x%."""
    lines = []
    for rec in records:
        vs = rec.get("vs_model")
        if vs is None:
            continue
        res = {"mean_diff": vs["diff"], "lo": vs["lo"], "hi": vs["hi"], "win_rate": vs["win_rate"]}
        verdict = "better" if vs["hi"] < 0 else "worse" if vs["lo"] > 0 else "no clear difference"
        lines.append(f"{rec['variable']} {rec['lead_time_hours']:g} h  model - {rec['system']}: "
                     f"{format_interval(res)} ({verdict})")
    if not lines:
        return ""
    return "model CRPS minus each competitor's, 95% paired block-bootstrap interval over inits:\n" + "\n".join(lines)


def default_seasons(truth: xr.Dataset) -> list[int]:
    """The peers' season lengths: the frequency's candidates (a day and a week of hourly data, ...), else 1."""
    return candidate_seasons(time_step(truth)) or [1]


def peer_systems(truth: xr.Dataset, fc: xr.Dataset, train_period, systems, members: int, seed: int,
                 label: str, season_length=None) -> dict:
    """statsforecast's models among `systems` as forecasts in gendiff's layout (peers.peer_forecasts)."""
    wanted = [s for s in systems if s in PEERS]
    if not wanted:
        return {}
    seasons = default_seasons(truth) if season_length is None else season_length
    return peer_forecasts(truth, fc, train_period, wanted, members, seasons, seed, label=label)


def emos_system(truth: xr.Dataset, fc: xr.Dataset, seed: int = 0, members: int | None = None) -> xr.Dataset:
    """EMOS on the model's ensemble, cross-fitted: fitted on the first half of the inits and applied to the second,
    and the other way round, so that no init is post-processed by a fit that saw its own truth; `members` draws
    (default: fc's; a point forecast such as the AR base gets its Gaussian sampled as wide as the model's)."""
    n = fc.sizes["init_time"]
    halves = (np.arange(n // 2), np.arange(n // 2, n))
    parts = [emos_calibrate(fc.isel(init_time=train), truth, fc.isel(init_time=test), members, seed=seed + k)
             for k, (train, test) in enumerate((halves, halves[::-1]))]
    return xr.concat(parts[::-1], "init_time").sortby("init_time")


PAST_WINDOW = pd.Timedelta(days=40)  # Gneiting et al. 2005: the 40 most recent days train each day's EMOS


def past_inits(fc: xr.Dataset, window: pd.Timedelta = PAST_WINDOW) -> np.ndarray:
    """The inits an EMOS with a sliding `window` needs: the forecast's own and, at their spacing (the median gap),
    those of `window` plus the longest lead before the first (the first init's training cases)."""
    inits = np.sort(fc["init_time"].values.astype("datetime64[ns]"))
    gaps = np.diff(inits)
    spacing = pd.Timedelta(np.median(gaps)) if len(gaps) else pd.Timedelta(days=1)
    reach = window + pd.Timedelta(np.max(fc["lead_time"].values))
    n_before = int(np.ceil(reach / spacing))
    before = inits[0] - np.arange(n_before, 0, -1) * spacing.to_timedelta64()
    return np.union1d(before, inits)


def emos_past_system(truth: xr.Dataset, history: xr.Dataset, fc: xr.Dataset, seed: int = 0,
                     members: int | None = None, window: pd.Timedelta = PAST_WINDOW) -> xr.Dataset:
    """EMOS on a forecaster's output with past data only, as run operationally (Gneiting et al. 2005's sliding
    training period): each init of `fc` is post-processed by a fit on `history` (the same forecaster's forecasts,
    gendiff's layout, at past_inits) from the inits of the `window` before it whose every lead is verified by the
    init's time. An init with fewer than emos.MIN_CASES such cases comes back NaN. `members`: draws per init
    (default: fc's)."""
    inits = fc["init_time"].values.astype("datetime64[ns]")
    hist_inits = history["init_time"].values.astype("datetime64[ns]")
    longest = np.max(fc["lead_time"].values).astype("timedelta64[ns]")
    win = window.to_timedelta64()
    parts = []
    for k, t in enumerate(inits):
        train = np.flatnonzero((hist_inits >= t - win) & (hist_inits + longest <= t))
        parts.append(emos_calibrate(history.isel(init_time=train), truth, fc.sel(init_time=[t]), members,
                                    seed=seed + k))
    return xr.concat(parts, "init_time")
