"""Spread calibration: per-lead, per-variable inflation of the ensemble about its mean, fitted on held-out days.

A diffusion model fitted to a few weeks of data is over-confident (its members agree more than its errors warrant).
`fit_spread_calibration` forecasts from init times in the last part of the training period, which the network did
not train on, and sets, per variable and lead, k = RMSE(ensemble mean) / (sqrt((M+1)/M) spread), the factor that
makes the spread-skill ratio of those forecasts 1 (Fortin et al. 2014). `apply` rescales members about their mean
by k; the ensemble mean is unchanged. Leads beyond the calibrated ones reuse the last factor.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gendiff.io import write_json_atomic

FILE = "calibration.json"
LIMITS = (0.5, 5.0)


def calibration_inits(idx_hold: np.ndarray, horizon: int, last: int, n: int = 16) -> np.ndarray:
    """Up to n evenly spaced init indices in the held-out part whose whole horizon lies at or before `last`."""
    ok = idx_hold[idx_hold + horizon <= last]
    if len(ok) == 0:
        return ok
    return np.unique(ok[np.linspace(0, len(ok) - 1, min(n, len(ok))).round().astype(int)])


def fit_spread_calibration(run_dir, ds, init_idx: np.ndarray, members: int = 16, seed: int = 12345) -> dict:
    """Forecast from `init_idx` with the run's network (no calibration yet), score, write calibration.json."""
    from .forecasting import forecast
    from .metrics import score
    from .scoring import truth_at_valid_time

    times = ds["time"].values
    lead = f"{int(round(_horizon_hours(run_dir)))}h"
    fc = forecast(run_dir, ds, init_times=times[init_idx], members=members, lead=lead, seed=seed, progress=False,
                  calibrated=False)
    factors, ssr = {}, {}
    for v in fc.data_vars:
        truth = truth_at_valid_time(ds[v], fc["valid_time"])
        s = score(fc[v], truth)
        raw = np.sqrt(members / (members + 1.0)) * s["rmse"].values / s["spread"].values
        raw = np.where(np.isfinite(raw), raw, 1.0)
        factors[str(v)] = np.clip(raw, *LIMITS).round(4).tolist()
        ssr[str(v)] = s["ssr"].values.round(4).tolist()
    out = {"factors": factors, "raw_ssr": ssr, "members": members, "inits": [str(t)[:16] for t in times[init_idx]],
           "method": "k = RMSE / (sqrt((M+1)/M) spread) per variable and lead on held-out training days"}
    write_json_atomic(Path(run_dir) / FILE, out)
    return out


def _horizon_hours(run_dir) -> float:
    cfg = json.loads((Path(run_dir) / "config.json").read_text())
    return cfg["horizon_steps"] * cfg["time_step_seconds"] / 3600.0


def load(run_dir) -> dict | None:
    path = Path(run_dir) / FILE
    return json.loads(path.read_text()) if path.is_file() else None


def apply(values: np.ndarray, factors: dict, codec) -> np.ndarray:
    """values (I, M, L, C) normalised ensemble -> members rescaled about their mean by k[variable][lead]."""
    if values.shape[1] < 2:
        return values
    out = values.copy()
    mean = values.mean(1, keepdims=True)  # NaN cells are NaN in every member and stay NaN
    start = 0
    for v, size in zip(codec.variables, codec.sizes):
        k = np.asarray(factors.get(v, [1.0]), dtype=values.dtype)
        k = k[np.minimum(np.arange(values.shape[2]), len(k) - 1)]  # beyond the calibrated leads: the last factor
        sl = slice(start, start + size)
        out[:, :, :, sl] = mean[:, :, :, sl] + k[None, None, :, None] * (values[:, :, :, sl] - mean[:, :, :, sl])
        start += size
    return out
