"""Fitting the ensemble spread calibration (calibrate.py) on held-out inits: forecast them with the run's network,
then fit the mean shrinkage towards the AR base and the variance model per variable and lead."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from gendiff.io import write_json_atomic

from .calibrate import FILE, fit_ensemble
from .forecasting import base_trajectory, rollout
from .regions import restrict
from .run import Run, load_run
from .sharednet import location_features

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
    fit_calibration writes them (also what the ar_calibrated baseline fits on its own Gaussian ensemble);
    calibrate.fit_ensemble with the run's AR base forecast from those inits."""
    base = base_trajectory(run, values, init_idx, int(np.asarray(ens).shape[2]), times)
    return {**fit_ensemble(run, ens, values, times, init_idx, base), "method": __doc__.split("\n\n")[0]}
