"""Recalibration on the recent past (`forecast(..., recalibrate="past")`): the run's ensemble calibration refitted for
each init on the network's own forecasts from the `days` before it whose every lead is verified at the init, as
operational centres post-process an ensemble on a sliding training window (Gneiting et al. 2005 used the 40 most
recent days). The fit is calibrate_fit.fit_parameters' (the shrinkage towards the AR base and the variance model
per variable and lead) with the error level of the window itself: the run's own calibration sets the level from the
AR base's error over its training windows, a year-round average that a winter of stronger winds leaves too narrow
(ERA5 Berlin, Nov-Dec 2017: spread / skill of the 10 m meridional wind 0.78-0.82 from 24 h).

Everything the fit uses was observed before the init: a hindcast over a period and a real-time forecast from the
last time of the data get the same numbers. The past inits are forecast at the spacing of the requested ones
(their median gap, or the run's horizon for a single init), with their own seed; an init whose window holds fewer
than MIN_CASES verified forecasts keeps the run's calibration."""
from __future__ import annotations

import numpy as np
import pandas as pd

from gendiff.errors import ConfigError

from . import calibrate

RECALIBRATE = ("past",)
DAYS = 40.0
MIN_CASES = 8  # fewer verified forecasts in the window: the run's calibration for that init
SEED_OFFSET = 7919  # the past inits' draws come from seed + this, apart from the requested ones'


def check_recalibrate(mode, days) -> None:
    if mode is not None and mode not in RECALIBRATE:
        raise ConfigError(f"recalibrate={mode!r}: expected None or one of {', '.join(RECALIBRATE)}")
    if not (isinstance(days, (int, float)) and days > 0):
        raise ConfigError(f"recalibrate_days={days!r}: expected a positive number of days")


def past_indices(times: np.ndarray, idx: np.ndarray, n_lead: int, days: float, context: int,
                 spacing: int | None = None, after=None) -> np.ndarray:
    """Indices of the past inits the windows of inits `idx` need, at `spacing` steps (default: the median gap of
    idx, else n_lead), going back `days` plus the horizon from the first init; those with `context` steps of data
    before them, later than `after` (the end of the run's network-training period: a forecast from inside it is
    in-sample, its errors too small) and not in idx."""
    idx = np.sort(np.asarray(idx))
    if spacing is None:
        gaps = np.diff(idx)
        spacing = int(np.median(gaps)) if len(gaps) else int(n_lead)
    spacing = max(int(spacing), 1)
    t = pd.DatetimeIndex(times)
    limit = t[idx[0]] - pd.Timedelta(days=days)
    first = int(np.searchsorted(t.values, limit.to_datetime64())) - n_lead  # its horizon verified by the window
    past = np.arange(idx[0] - spacing, max(first, context - 1) - 1, -spacing)[::-1]
    past = past[past >= context - 1]
    if after is not None:
        past = past[t.values[past] > np.datetime64(pd.Timestamp(after))]
    return np.setdiff1d(past, idx)


def network_end(config: dict):
    """The last time of the run's network-training period (config's network_period), None when not recorded."""
    period = config.get("network_period")
    return None if not period else pd.Timestamp(period[-1])


def window_cases(times: np.ndarray, all_idx: np.ndarray, init: int, n_lead: int, days: float) -> np.ndarray:
    """Positions in all_idx of the inits within `days` before `init` whose n_lead steps are all at or before it."""
    t = np.asarray(times)
    limit = t[init] - np.timedelta64(int(days * 86400), "s")
    return np.flatnonzero((t[all_idx] >= limit) & (all_idx + n_lead <= init))


def recalibrate_past(run, values, times: np.ndarray, idx: np.ndarray, arr: np.ndarray, past: np.ndarray,
                     hist: np.ndarray, base, own: dict | None, days: float = DAYS) -> tuple[np.ndarray, dict]:
    """The raw ensembles `arr` (I, M, L, C) from inits `idx`, each recalibrated on the window before it (module
    docstring), from the raw ensembles `hist` of the `past` inits (past_indices) and of the earlier inits of idx;
    `base(indices)` gives the AR base forecasts (K, L, C) from given inits, or None without a base; `own` is the
    run's calibration (calibrate.load), kept by an init whose window holds too few cases (None: raw). Returns the
    calibrated ensembles and a summary (past inits forecast, cases per init, inits left on the run's
    calibration)."""
    n_lead = arr.shape[2]
    all_idx = np.concatenate([np.asarray(past, dtype=np.int64), np.asarray(idx, dtype=np.int64)])
    all_arr = np.concatenate([hist, arr]) if len(past) else arr
    order = np.argsort(all_idx, kind="stable")
    all_idx, all_arr = all_idx[order], all_arr[order]
    base_all = base(all_idx)
    pos = np.searchsorted(all_idx, idx)
    out = np.empty_like(arr)
    cases, fallback = [], 0
    for k, init in enumerate(np.asarray(idx)):
        sel = window_cases(times, all_idx, int(init), n_lead, days)
        cases.append(len(sel))
        b = None if base_all is None else base_all[pos[k]:pos[k] + 1]
        if len(sel) >= MIN_CASES:
            calib = calibrate.fit_ensemble(run, all_arr[sel], values, times, all_idx[sel],
                                           None if base_all is None else base_all[sel], own_level=True)
        elif own is not None:
            calib, fallback = own, fallback + 1
        else:
            out[k:k + 1], fallback = arr[k:k + 1], fallback + 1
            continue
        out[k:k + 1] = calibrate.apply(arr[k:k + 1], calib, run.codec, b)
    summary = {"recalibrate": "past", "recalibrate_days": days, "past_inits": int(len(past)),
               "window_cases_min": int(min(cases)), "window_cases_max": int(max(cases)),
               "inits_on_run_calibration": fallback}
    return out, summary
