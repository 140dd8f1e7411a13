"""Reference forecasts scored like the model: persistence, hour-of-day climatology, Gaussian linear AR ensemble, and
the run's own calibrated AR base with Gaussian noise in place of its network (ar_calibrated).

All work on the codec's stacked arrays (T, C) and return (init, member, lead, C) arrays; NaN stays NaN.
"""
from __future__ import annotations

import warnings

import numpy as np

from gendiff.errors import DataError

from .data import hour_of_day
from .timeaxis import lead_times, time_step


def persistence(values: np.ndarray, init_idx: np.ndarray, n_lead: int) -> np.ndarray:
    """The state at the init time, held for every lead: a one-member ensemble."""
    return np.repeat(values[init_idx][:, None, None, :], n_lead, axis=2)


def hourly_climatology(values: np.ndarray, times, train_idx: np.ndarray, valid_times: np.ndarray,
                       max_members: int = 100) -> np.ndarray:
    """Members = the training-period states at the valid time's hour of day (the latest max_members days)."""
    hours = hour_of_day(np.asarray(times)[train_idx])
    pools = {h: values[train_idx[hours == h]] for h in np.unique(hours)}
    m = min(max_members, min(len(p) for p in pools.values()))
    vh = hour_of_day(valid_times)
    missing = sorted(set(np.unique(vh)) - set(pools))
    if missing:
        raise DataError(f"climatology: no training data at hour(s) of day {missing}")
    out = np.empty((*valid_times.shape[:1], m, valid_times.shape[1], values.shape[1]), dtype=values.dtype)
    for i in range(valid_times.shape[0]):
        for j in range(valid_times.shape[1]):
            out[i, :, j] = pools[vh[i, j]][-m:]
    return out


def ar_lags(order) -> tuple[int, ...]:
    """The lags of an AR: an int p means lags 1..p; a sequence gives them (positive, increasing after sorting)."""
    if isinstance(order, (int, np.integer)):
        return tuple(range(1, int(order) + 1))
    return tuple(sorted({int(k) for k in order}))


def _ar_pairs(a: np.ndarray, order):
    """(lags (n, C, K), target (n, C)) of consecutive rows of a (T, C), 0 where a pair has a NaN, and its mask.
    `order`: p (lags 1..p) or the lags themselves (ar_lags)."""
    lags_k = ar_lags(order)
    m = lags_k[-1]
    target = a[m:]
    lags = np.stack([a[m - k:len(a) - k] for k in lags_k], axis=-1)  # (n, C, K)
    ok = np.isfinite(target) & np.isfinite(lags).all(-1)
    return np.where(ok[..., None], lags, 0.0), np.where(ok, target, 0.0), ok, target


def ar_sums(a: np.ndarray, order) -> tuple[np.ndarray, np.ndarray]:
    """The per-feature AR normal equations (gram (C, K, K), rhs (C, K)) of the consecutive rows of a (T, C), for
    lags 1..order or the given lags (ar_lags); sums over blocks of rows that overlap by the largest lag give those
    of all the rows (ARBase.fit streams them)."""
    lags_k = ar_lags(order)
    if len(a) <= lags_k[-1]:
        return np.zeros((a.shape[1], len(lags_k), len(lags_k))), np.zeros((a.shape[1], len(lags_k)))
    lags0, target0, _, _ = _ar_pairs(a, lags_k)
    return np.einsum("ncp,ncq->cpq", lags0, lags0), np.einsum("ncp,nc->cp", lags0, target0)


def solve_ar(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """phi (C, K), in the order of the lags, from the normal equations, with a small ridge for features without
    data."""
    return np.linalg.solve(gram + 1e-6 * np.eye(gram.shape[-1]), rhs[..., None])[..., 0]


def fit_ar(a: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature AR(order) by least squares on consecutive rows of anomalies a (T, C); NaN pairs are left out.

    Returns phi (C, order), lag 1 first, and the one-step residuals (T - order, C), 0 where a pair was left out."""
    lags0, _, ok, target = _ar_pairs(a, order)
    phi = solve_ar(*ar_sums(a, order))  # (C, p)
    return phi, np.where(ok, target - np.einsum("ncp,cp->nc", lags0, phi), 0.0)


class LinearAR:
    """Per-feature AR(p) on hour-of-day anomalies with spatially correlated Gaussian noise (residual covariance)."""

    def __init__(self, order: int = 2):
        self.order = order

    def fit(self, values: np.ndarray, times, train_idx: np.ndarray) -> "LinearAR":
        """Least squares per feature over consecutive training steps; NaN pairs are left out."""
        if np.any(np.diff(train_idx) != 1):
            raise DataError("linear baseline: the training period must be contiguous")
        times = np.asarray(times)
        hours = hour_of_day(times[train_idx])
        x = values[train_idx].astype(np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # never-valid features: all-NaN means stay NaN
            self.clim = {h: np.nanmean(x[hours == h], axis=0) for h in np.unique(hours)}
        a = x - np.stack([self.clim[h] for h in hours])
        self.phi, resid = fit_ar(a, self.order)
        self.resid = (resid - resid.mean(0)) / np.sqrt(max(len(resid) - 1, 1))
        return self

    def anomaly_mean(self, times) -> np.ndarray:
        hours = hour_of_day(times)
        missing = sorted(set(np.unique(hours)) - set(self.clim))
        if missing:
            raise DataError(f"linear baseline: no training data at hour(s) of day {missing}")
        return np.stack([self.clim[h] for h in hours.ravel()]).reshape(*np.shape(times), -1)

    def forecast(self, values: np.ndarray, times, init_idx: np.ndarray, n_lead: int, members: int,
                 seed: int = 0) -> np.ndarray:
        """Roll the AR forward with noise ~ N(0, residual covariance): (I, M, n_lead, C)."""
        rng = np.random.default_rng(seed)
        times = np.asarray(times)
        step = time_step(times)
        p = self.order
        if np.any(init_idx - (p - 1) < 0):
            raise DataError(f"linear baseline: an init time needs {p - 1} earlier step(s) of data")
        hist_idx = init_idx[:, None] - np.arange(p)[None, :]  # (I, p): t0, t0-1, ...
        a = values[hist_idx].astype(np.float64) - self.anomaly_mean(times[hist_idx])  # (I, p, C)
        a = np.repeat(a[:, None], members, axis=1)  # (I, M, p, C)
        valid = lead_times(times[init_idx], n_lead, step)
        clim = self.anomaly_mean(valid)  # (I, L, C)
        out = np.empty((len(init_idx), members, n_lead, values.shape[1]))
        for j in range(n_lead):
            nxt = np.einsum("imkc,ck->imc", np.nan_to_num(a), self.phi)
            z = rng.standard_normal((len(init_idx) * members, self.resid.shape[0]))
            nxt = nxt + (z @ self.resid).reshape(nxt.shape)  # 2-D matmul: numpy's batched 3-D path is far slower
            out[:, :, j] = nxt + clim[:, None, j]
            a = np.concatenate([nxt[:, :, None], a[:, :, :-1]], axis=2)
        return out.astype(values.dtype)
