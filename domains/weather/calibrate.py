"""Ensemble calibration fitted on held-out days: per variable and lead, shrink the mean departure, inflate the spread.

A diffusion model fitted to a few weeks of data is over-confident: its members agree more than its errors warrant,
and part of the departure of its ensemble mean from the AR base forecast is noise learnt from the training days.
`fit_calibration` forecasts from init times in the last part of the training period, which the network did not
train on, and fits per variable and lead (EMOS-style post-processing, Gneiting et al. 2005):
  a = clip(<d, e> / <d, d>, 0, 1), d = ensemble mean - base, e = truth - base   (least-squares shrinkage), then
  k = RMSE(base + a d) / (sqrt((M+1)/M) spread)                                  (spread-skill ratio 1, Fortin 2014),
where the RMSE is the AR base's RMS error over all network-training windows times the held-out ratio
RMSE(base + a d) / RMSE(base): a few held-out days alone set the error level by their weather (calm or stormy).
`apply` returns base + a (mean - base) + k (member - mean). Leads beyond the calibrated ones reuse the last values.
Without an AR base only k is fitted (a = 1).
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


def fit_calibration(run_dir, values: np.ndarray, times: np.ndarray, init_idx: np.ndarray, members: int = 16,
                    seed: int = 12345) -> dict:
    """Forecast from `init_idx` with the run's network (uncalibrated), fit a and k, write calibration.json.

    `values` (T, C) are the data as the network sees them: encoded by the run's codec, climatology removed."""
    from .forecasting import base_trajectory, rollout
    from .model import load_run

    run = load_run(run_dir)
    n_lead = run.horizon
    ens = rollout(run, values, times, init_idx, n_lead, members, sampler=run.config["sampler"],
                  steps=int(run.config["sample_steps"]), seed=seed, progress=False).astype(np.float64)
    truth = np.stack([values[i + 1:i + 1 + n_lead] for i in init_idx]).astype(np.float64)
    base = base_trajectory(run, values, init_idx, n_lead)
    mean = ens.mean(1)
    base = mean if base is None else base.astype(np.float64)
    shrink, factors, raw_ssr = {}, {}, {}
    start = 0
    for v, size in zip(run.codec.variables, run.codec.sizes):
        sl = slice(start, start + size)
        start += size
        d, e = mean[..., sl] - base[..., sl], truth[..., sl] - base[..., sl]
        ok = np.isfinite(d) & np.isfinite(e)
        d, e = np.where(ok, d, 0.0), np.where(ok, e, 0.0)
        dd = (d * d).sum((0, 2))
        a = np.clip(np.where(dd > 0, (d * e).sum((0, 2)) / np.maximum(dd, 1e-300), 1.0), 0.0, 1.0)
        n = np.maximum(ok.sum((0, 2)), 1)
        rmse_raw = np.sqrt(((d - e) ** 2).sum((0, 2)) / n)
        rmse = np.sqrt(((a[None, :, None] * d - e) ** 2).sum((0, 2)) / n)
        if run.ar is not None and run.ar.scale is not None:
            # error level from the AR base's RMS error over all network-training windows (weeks, not the few
            # held-out days, whose weather may be calmer or stormier than usual), times the held-out gain of a
            rmse_base = np.sqrt((e ** 2).sum((0, 2)) / n)
            level = np.sqrt((run.ar.scale[:, sl].double().numpy() ** 2).mean(1))
            rmse = level * np.where(rmse_base > 0, rmse / np.maximum(rmse_base, 1e-300), 1.0)
        var = np.where(ok[:, None], ens[..., sl], np.nan).var(1, ddof=1)
        spread = np.sqrt(np.nansum(var, axis=(0, 2)) / n)
        c = np.sqrt((members + 1.0) / members)
        k = np.where(spread > 0, rmse / np.maximum(c * spread, 1e-300), 1.0)
        shrink[v] = a.round(4).tolist()
        factors[v] = np.clip(k, *LIMITS).round(4).tolist()
        raw_ssr[v] = np.where(rmse_raw > 0, c * spread / np.maximum(rmse_raw, 1e-300), np.nan).round(4).tolist()
    out = {"shrink": shrink, "factors": factors, "raw_ssr": raw_ssr, "members": members,
           "inits": [str(t)[:16] for t in times[init_idx]], "method": __doc__.split("\n\n")[0]}
    write_json_atomic(Path(run_dir) / FILE, out)
    return out


def load(run_dir) -> dict | None:
    path = Path(run_dir) / FILE
    return json.loads(path.read_text()) if path.is_file() else None


def apply(values: np.ndarray, calib: dict, codec, base: np.ndarray | None = None) -> np.ndarray:
    """values (I, M, L, C) normalised ensemble, base (I, L, C) or None -> base + a (mean - base) + k (member - mean)."""
    if values.shape[1] < 2 and base is None:
        return values
    mean = values.mean(1, keepdims=True)  # NaN cells are NaN in every member and stay NaN
    out = values.copy()
    idx = np.arange(values.shape[2])
    start = 0
    for v, size in zip(codec.variables, codec.sizes):
        sl = slice(start, start + size)
        start += size
        k = np.asarray(calib.get("factors", {}).get(v, [1.0]), dtype=values.dtype)
        a = np.asarray(calib.get("shrink", {}).get(v, [1.0]), dtype=values.dtype)
        k, a = k[np.minimum(idx, len(k) - 1)], a[np.minimum(idx, len(a) - 1)]  # beyond: the last values
        centre = mean[..., sl]
        if base is not None:
            b = base[:, None, :, sl].astype(values.dtype)
            centre = b + a[None, None, :, None] * (centre - b)
        out[..., sl] = centre + k[None, None, :, None] * (values[..., sl] - mean[..., sl])
    return out
