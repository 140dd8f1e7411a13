"""The `ar_calibrated` baseline: the run's forecast pipeline with the network replaced by Gaussian noise (what the
network adds over its own AR base with the same held-out calibration)."""
from __future__ import annotations

import numpy as np
import torch

from gendiff.errors import DataError

from . import calibrate
from .calibrate_fit import fit_parameters
from .forecasting import base_trajectory, initial_history, peer_trajectory
from .timeaxis import add_steps, lead_times, time_step


def ar_calibrated(run, values: np.ndarray, times, init_idx: np.ndarray, n_lead: int, members: int, seed: int = 0,
                  chain_base: str = "level") -> np.ndarray:
    """What the network adds: the run's forecast pipeline with the network replaced by Gaussian noise.

    Each member is rolled out exactly as the model's (forecasting.rollout), horizon by horizon, from the run's AR
    base (ARBase.window_base; `chain_base` as there) plus the departure the network would generate, here drawn
    N(0, 1) per cell and step (the unit-variance target the network is trained on) and scaled like the network's
    by the AR base's error level per lead and feature and its time-of-day factor (ARBase.window_scale); then a
    held-out calibration sets the ensemble variance (calibrate.apply: mean shrinkage about the AR base and variance
    model c + g S per variable and lead). The calibration is fitted the way the run's was, on the run's held-out
    inits (calibration.json's `inits`), but on this Gaussian ensemble (calibrate.fit_parameters): the run's own
    parameters map the network's spread, which on a few days of data can be a tenth of this one's, and would
    inflate it as much. Where `values` lack those inits (data that start later) the run's parameters are used.
    Same members and leads as the model, seeded by `seed`. `values` (T, C): the data as the network sees them
    (codec-encoded, hourly climatology removed); returns (I, M, n_lead, C) codec-encoded, climatology added back,
    like forecasting.forecast."""
    if run.ar is None:
        raise DataError(f"{run.path}: the ar_calibrated baseline needs a run with an AR base (config base 'linear')")
    calib = calibrate.load(run.path)
    if calib is None:
        raise DataError(f"{run.path / calibrate.FILE}: missing; the ar_calibrated baseline needs the run's held-out "
                        "calibration")
    if chain_base not in ("level", "ar"):
        raise DataError(f"chain_base={chain_base!r}: expected 'level' or 'ar'")
    times = np.asarray(times)
    if np.any(init_idx - run.context + 1 < 0):
        raise DataError(f"ar_calibrated: an init time needs {run.context} steps of context")
    held = _held_out_inits(calib, times, run.context)
    if held is not None:
        ens = _gaussian_rollout(run, values, times, held, run.horizon, members, seed + 1, chain_base)
        calib = fit_parameters(run, ens, values, times, held)
    arr = _gaussian_rollout(run, values, times, init_idx, n_lead, members, seed, chain_base)
    arr = calibrate.apply(arr, calib, run.codec, base_trajectory(run, values, init_idx, n_lead, times))
    valid_t = lead_times(times[init_idx], n_lead, time_step(times))
    return run.climatology.restore(arr, valid_t, axis=1).astype(np.float32)


def _held_out_inits(calib: dict, times: np.ndarray, context: int) -> np.ndarray | None:
    """Indices in `times` of the calibration's held-out inits, or None where any is missing or lacks context."""
    stamps = calib.get("inits") or []
    if len(stamps) < 2:
        return None
    want = np.array([np.datetime64(s) for s in stamps]).astype(times.dtype)
    pos = np.searchsorted(times, want)
    if np.any(pos >= len(times)) or np.any(times[np.minimum(pos, len(times) - 1)] != want) or \
            np.any(pos - context + 1 < 0):
        return None
    return pos


def _gaussian_rollout(run, values, times, init_idx, n_lead: int, members: int, seed: int, chain_base: str):
    """(I, M, n_lead, C) anomalies: the run's AR base plus N(0, 1) departures scaled like the network's targets,
    rolled out horizon by horizon as forecasting.rollout rolls the network's."""
    ctx, hor = run.context, run.horizon
    step = time_step(times)
    ar = run.ar
    device = ar.device  # the draws come from a CPU generator whatever the device, so they are the same everywhere
    valid = torch.from_numpy(np.asarray(run.codec.valid, dtype=bool)).to(device)
    hist, t0, chunks = initial_history(values, times, init_idx, ctx, hor, n_lead, members, device)
    generator = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for c in range(chunks):
            w = hist[:, c * hor:c * hor + ctx + hor].clone()
            w[:, ctx:] = float("nan")
            base = ar.window_base(w, ctx, level_only=c > 0 and chain_base == "level")
            scale = ar.window_scale(ctx + hor, ctx, ar.slots(add_steps(t0, c * hor, step)))
            z = torch.randn(w.shape, generator=generator).to(device)
            filled = base + scale * z
            filled[:, :, ~valid] = float("nan")
            hist[:, c * hor + ctx:c * hor + ctx + hor] = filled[:, ctx:]
    out = hist[:, ctx:ctx + n_lead].reshape(len(init_idx), members, n_lead, values.shape[1]).cpu().numpy()
    peer = peer_trajectory(run, values, times, init_idx, n_lead)  # a statsforecast base's forecast
    return out if peer is None else out + peer[:, None]
