"""Fitting the ensemble spread calibration (calibrate.py) on held-out inits: forecast them with the run's network,
then fit the mean shrinkage towards the AR base and the variance model per variable and lead."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from gendiff.io import write_json_atomic

from .calibrate import FILE, LIMITS, fit_variance
from .forecasting import base_trajectory, rollout
from .regions import restrict
from .run import Run, load_run
from .sharednet import location_features
from .windows import horizon_values

CALIBRATION_SERIES = 64  # a run shared by more series fits the calibration on this many of them, drawn at random


def calibration_series(run: Run, values: np.ndarray, seed: int, covariates: np.ndarray | None = None):
    """(run, values) cut to CALIBRATION_SERIES series drawn at random (seeded) for a gridnet run on more: the
    calibration is one per variable and lead, and forecasting every series of a 10,000-series table 48 times would
    cost more than training; others as they are. Returns (run, values, covariates: theirs of the same series)."""
    layout = run.config.get("locations") if run.arch == "gridnet" else None
    if not samples_series(layout):
        return run, values, covariates
    n = int(layout["locations"])
    cells = np.sort(np.random.default_rng(seed).choice(n, CALIBRATION_SERIES, replace=False))
    feat = location_features(sum(run.codec.sizes) // n, n, cells)
    if covariates is not None:  # K per series, variable-major
        covariates = covariates[:, location_features(covariates.shape[1] // n, n, cells)]
    return restrict(run, cells), values[:, feat], covariates


def samples_series(locations: dict | None) -> bool:
    """Whether a run's calibration is fitted on CALIBRATION_SERIES of its series: a gridnet run (its `locations`
    layout) over more series on one location dim (a table's); a grid keeps every cell."""
    return bool(locations) and int(locations["locations"]) > CALIBRATION_SERIES \
        and len(locations["location_dims"]) == 1


def fit_calibration(run_dir, values: np.ndarray, times: np.ndarray, init_idx: np.ndarray, members: int = 16,
                    seed: int = 12345, device="cpu", covariates: np.ndarray | None = None) -> dict:
    """Forecast from `init_idx` with the run's network (uncalibrated) on `device`, fit a, c and g, write
    calibration.json (with the fixed per-lead inflation `factors` of the earlier method and the raw SSR, for the
    record).

    `values` (T, C) are the data as the network sees them: encoded by the run's codec, climatology removed;
    `covariates` (T, F) the run's covariates, encoded (covariates.py)."""
    run = load_run(run_dir, device=device)
    run, values, covariates = calibration_series(run, values, seed, covariates)
    ens = rollout(run, values, times, init_idx, run.horizon, members, sampler=run.config["sampler"],
                  steps=int(run.config["sample_steps"]), seed=seed, progress=False, covariates=covariates)
    out = fit_parameters(run, ens, values, times, init_idx)
    write_json_atomic(Path(run_dir) / FILE, out)
    return out


def fit_parameters(run, ens: np.ndarray, values: np.ndarray, times: np.ndarray, init_idx: np.ndarray) -> dict:
    """The calibration of ensemble `ens` (I, M, H, C), forecast by `run` from `init_idx`, against `values`: the
    shrinkage a, the variance model (c, g) and the earlier fixed factors per variable and lead, as
    fit_calibration writes them (also what the ar_calibrated baseline fits on its own Gaussian ensemble)."""
    ens = np.asarray(ens, dtype=np.float64)
    members, n_lead = ens.shape[1], ens.shape[2]
    truth = horizon_values(values, init_idx, n_lead).astype(np.float64)
    base = base_trajectory(run, values, init_idx, n_lead, times)
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
        if run.ar is not None and run.ar.scale is not None:
            # error level from the AR base's RMS error over all network-training windows (weeks, not the few
            # held-out days, whose weather may be calmer or stormier than usual), times the held-out gain of a
            rmse_base = np.sqrt((e ** 2).sum((0, 2)) / n)
            level = np.sqrt((run.ar.level(run.ar.slots(times[init_idx]))[:, sl].double().cpu().numpy() ** 2).mean(1))
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
            "members": members, "inits": [str(t)[:16] for t in times[init_idx]], "method": __doc__.split("\n\n")[0]}
