"""Ensemble calibration fitted on held-out days: per variable and lead, shrink the mean departure, model the variance.

A diffusion model fitted to a few weeks of data is over-confident: its members agree more than its errors warrant,
and part of the departure of its ensemble mean from the AR base forecast is noise learnt from the training days.
`fit_calibration` forecasts from init times (48 by default, train's calibration_inits) in the last part of the
training period, which the network did not train on, and fits per variable and lead (EMOS-style post-processing,
Gneiting et al. 2005):
  a = clip(<d, e> / <d, d>, 0, 1), d = ensemble mean - base, e = truth - base      (least-squares shrinkage), then
  E_i = c + g S_i, c, g >= 0                                                         (variance model),
E_i being init i's squared error of base + a d and S_i its (M+1)/M-corrected ensemble variance, both averaged
over the variable's grid, so the spread may follow the network's spread as far as that tracks the error on days the
network has not seen (g) and otherwise falls back to a constant (c). c and g are then scaled so that the mean
variance on the held-out inits is RMSE^2, where the RMSE is the AR base's RMS error over all network-training
windows (at the held-out inits' times of day) times the held-out ratio RMSE(base + a d) / RMSE(base): a few
held-out days alone set the error level by their weather (calm or stormy).
`apply` returns base + a (mean - base) + k_i (member - mean), k_i = sqrt((c + g S_i) / S_i) for each init, lead and
variable (clipped to LIMITS), so the spatial pattern of each ensemble's spread is the network's. Leads beyond the
calibrated ones reuse the last values. Without an AR base a = 1 and the level is the held-out one.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .windows import horizon_values


FILE = "calibration.json"
LIMITS = (0.5, 20.0)  # k: a network trained on a few days can spread ten times too little (solar: 0.08)


def calibration_inits(idx_hold: np.ndarray, horizon: int, last: int, n: int = 48) -> np.ndarray:
    """Up to n evenly spaced init indices in the held-out part whose whole horizon lies at or before `last`."""
    ok = idx_hold[idx_hold + horizon <= last]
    if len(ok) == 0:
        return ok
    return np.unique(ok[np.linspace(0, len(ok) - 1, min(n, len(ok))).round().astype(int)])


def fit_variance(ens_var: np.ndarray, sq_err: np.ndarray,
                 use: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per lead, non-negative least squares of sq_err (I, H) on [1, ens_var (I, H)] over the inits `use` (I, H)
    marks (all by default): (c, g), each (H,); (0, 0) for a lead without any."""
    const, slope = np.zeros(ens_var.shape[1]), np.zeros(ens_var.shape[1])
    for h in range(ens_var.shape[1]):
        rows = slice(None) if use is None else use[:, h]
        x, y = ens_var[rows, h], sq_err[rows, h]
        if len(x) == 0:
            continue
        g = np.cov(x, y, bias=True)[0, 1] / x.var() if len(x) > 1 and x.var() > 0 else 0.0
        cst = y.mean() - g * x.mean()
        if g < 0 or not np.isfinite(g):  # the ensemble spread does not track the error: a constant variance
            g, cst = 0.0, y.mean()
        elif cst < 0:  # through the origin: a pure spread inflation
            g, cst = (x * y).sum() / max((x * x).sum(), 1e-300), 0.0
        const[h], slope[h] = cst, g
    return const, slope


def load(run_dir) -> dict | None:
    path = Path(run_dir) / FILE
    return json.loads(path.read_text()) if path.is_file() else None


def apply(values: np.ndarray, calib: dict, codec, base: np.ndarray | None = None) -> np.ndarray:
    """values (I, M, L, C) normalised ensemble, base (I, L, C) or None -> base + a (mean - base) + k (member - mean),
    k = sqrt((c + g S) / S) per init, lead and variable (S: the ensemble's corrected variance over the variable's
    cells), or the fixed per-lead factors of calibration files written before the variance model."""
    members = values.shape[1]
    if members < 2 and base is None:
        return values
    mean = values.mean(1, keepdims=True)  # NaN cells are NaN in every member and stay NaN
    out = values.copy()
    idx = np.arange(values.shape[2])
    corr = (members + 1.0) / members
    start = 0
    for v, size in zip(codec.variables, codec.sizes):
        sl = slice(start, start + size)
        start += size

        def per_lead(key, default):
            x = np.asarray(calib.get(key, {}).get(v, default), dtype=np.float64)
            return x[np.minimum(idx, len(x) - 1)]  # beyond the calibrated leads: the last values

        a = per_lead("shrink", [1.0])
        dev = values[..., sl] - mean[..., sl]
        if v in calib.get("var_const", {}) and members > 1:
            with np.errstate(invalid="ignore", divide="ignore"):
                s_var = corr * np.nanmean(np.var(values[..., sl], axis=1, ddof=1), axis=-1)  # (I, L)
                want = per_lead("var_const", [0.0])[None] + per_lead("var_slope", [1.0])[None] * s_var
                k = np.where(s_var > 0, np.sqrt(np.maximum(want, 0.0) / s_var), 1.0)
            k = np.clip(np.nan_to_num(k, nan=1.0), *LIMITS)[:, None, :, None]
        else:
            k = per_lead("factors", [1.0])[None, None, :, None]
        centre = mean[..., sl]
        if base is not None:
            b = base[:, None, :, sl].astype(values.dtype)
            centre = b + a.astype(values.dtype)[None, None, :, None] * (centre - b)
        out[..., sl] = centre + k.astype(values.dtype) * dev
    return out


def fit_ensemble(run, ens: np.ndarray, values, times: np.ndarray, init_idx: np.ndarray, base: np.ndarray | None,
                 own_level: bool = False) -> dict:
    """The calibration of ensemble `ens` (I, M, H, C), forecast by `run` from `init_idx`, against `values` (an
    array or stream.EncodedValues, normalised, climatology removed; `times` its times), `base` (I, H, C) the AR
    base forecast from those inits (None: no base, a = 1): the shrinkage a, the variance model (c, g) and the
    earlier fixed factors per variable and lead (module docstring). `own_level`: the error level of these inits
    themselves, not the AR base's over the run's training windows (recalibrate.py: a window of recent forecasts)."""
    ens = np.asarray(ens, dtype=np.float64)
    members, n_lead = ens.shape[1], ens.shape[2]
    truth = horizon_values(values, init_idx, n_lead).astype(np.float64)
    mean = ens.mean(1)
    base = mean if base is None else base.astype(np.float64)
    shrink, factors, raw_ssr, var_const, var_slope = {}, {}, {}, {}, {}
    c = np.sqrt((members + 1.0) / members)
    start = 0
    for v, size in zip(run.codec.variables, run.codec.sizes):
        sl = slice(start, start + size)
        start += size
        d, e = mean[..., sl] - base[..., sl], truth[..., sl] - base[..., sl]
        ok = np.isfinite(d) & np.isfinite(e)
        d, e = np.where(ok, d, 0.0), np.where(ok, e, 0.0)
        dd = (d * d).sum((0, 2))
        a = np.clip(np.where(dd > 0, (d * e).sum((0, 2)) / np.maximum(dd, 1e-300), 1.0), 0.0, 1.0)
        n_raw = ok.sum(2)  # (I, H) valid cells per init and lead; inits without any take no part in the fit
        has = n_raw > 0
        n_i, n = np.maximum(n_raw, 1), np.maximum(n_raw.sum(0), 1)
        rmse_raw = np.sqrt(((d - e) ** 2).sum((0, 2)) / n)
        sq_err = ((a[None, :, None] * d - e) ** 2).sum(2) / n_i  # (I, H): E_i
        rmse = np.sqrt((sq_err * n_i).sum(0) / n)
        if run.ar is not None and run.ar.scale is not None and not own_level:
            # error level from the AR base's RMS error over all network-training windows (weeks, not the few
            # held-out days, whose weather may be calmer or stormier than usual), times the held-out gain of a
            rmse_base = np.sqrt((e ** 2).sum((0, 2)) / n)
            slots = run.ar.slots(times[init_idx])
            level = np.sqrt((run.ar.level(slots)[:, sl].double().cpu().numpy() ** 2).mean(1))
            rmse = level * np.where(rmse_base > 0, rmse / np.maximum(rmse_base, 1e-300), 1.0)
        var = np.where(ok[:, None], ens[..., sl], np.nan).var(1, ddof=1)  # (I, L, C)
        ens_var = c * c * np.nansum(var, axis=2) / n_i  # (I, H): S_i
        spread = np.sqrt((ens_var * n_i).sum(0) / n) / c
        k = np.where(spread > 0, rmse / np.maximum(c * spread, 1e-300), 1.0)
        const, slope = fit_variance(ens_var, sq_err, has)
        target = rmse ** 2  # the mean variance the model should give on these inits
        fitted = ((const[None] + slope[None] * ens_var) * has).sum(0) / np.maximum(has.sum(0), 1)
        q = np.where(fitted > 0, target / np.maximum(fitted, 1e-300), 1.0)
        shrink[v] = a.round(4).tolist()
        factors[v] = np.clip(k, *LIMITS).round(4).tolist()
        var_const[v] = (q * const).tolist()
        var_slope[v] = (q * slope).tolist()
        raw_ssr[v] = np.where(rmse_raw > 0, c * spread / np.maximum(rmse_raw, 1e-300), np.nan).round(4).tolist()
    return {"shrink": shrink, "var_const": var_const, "var_slope": var_slope, "factors": factors, "raw_ssr": raw_ssr,
            "members": members, "inits": [str(t)[:16] for t in times[init_idx]]}
