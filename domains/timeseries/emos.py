"""EMOS: ensemble model output statistics (Gneiting, Raftery, Westveld and Goldman 2005, "Calibrated probabilistic
forecasting using ensemble model output statistics and minimum CRPS estimation", Mon. Wea. Rev. 133).

Non-homogeneous Gaussian regression: given an ensemble's mean m and variance s2, the predictive distribution is

    N(a + b m,  c + d s2),    c, d >= 0,

with (a, b, c, d) fitted by minimum CRPS over a training set of past forecasts and their observations, the CRPS of
a Gaussian in closed form (Gneiting et al. 2005, eq. 5):

    CRPS(N(mu, sigma^2), y) = sigma [ z (2 Phi(z) - 1) + 2 phi(z) - 1 / sqrt(pi) ],   z = (y - mu) / sigma.

c and d are kept non-negative by fitting their square roots (c = gamma^2, d = delta^2), as the paper does; the
minimisation is scipy.optimize.minimize (L-BFGS-B) with the analytic gradient, on data standardised per group (the
parameters are mapped back exactly), so one tolerance suits every scale. The ensemble variance is the member
variance about the ensemble mean (ddof 0): d absorbs any constant factor, and a one-member forecast (s2 = 0) gives
N(a + b m, c), EMOS of a point forecast.

fit_emos fits many independent groups (each lead and location) at once: the summed objective separates, so its
minimum is every group's own. emos_calibrate does it on xarray forecasts in gendiff's layout.
"""
from __future__ import annotations

import warnings

import numpy as np
import xarray as xr
from scipy.optimize import minimize
from scipy.special import ndtr

from gendiff.errors import ConfigError, DataError

from .layout import truth_at_valid_time

PARAMS = ("a", "b", "c", "d")
MIN_CASES = 4  # a group with fewer valid training cases than parameters gets NaN parameters
SQRT_PI = np.sqrt(np.pi)
SIGMA_FLOOR = 1e-6  # in standardised units: keeps the objective smooth where c + d s2 reaches 0
CHUNK = 512  # groups per minimize call


def crps_gaussian(obs, mu, sigma) -> np.ndarray:
    """The CRPS of N(mu, sigma^2) at obs, in closed form (Gneiting et al. 2005, eq. 5); sigma > 0."""
    obs, mu, sigma = (np.asarray(a, dtype=np.float64) for a in (obs, mu, sigma))
    z = (obs - mu) / sigma
    pdf = np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
    return sigma * (z * (2 * ndtr(z) - 1) + 2 * pdf - 1 / SQRT_PI)


def _objective(theta: np.ndarray, m: np.ndarray, s2: np.ndarray, y: np.ndarray, w: np.ndarray):
    """Summed (over groups) mean CRPS and its gradient; theta (4G,) = a, b, gamma, delta per group; m, s2, y, w
    (n, G) standardised, w the case weights (1 / valid cases, 0 for a missing case)."""
    a, b, g, dl = theta.reshape(4, -1)
    mu = a + b * m
    sigma = np.sqrt(g * g + dl * dl * s2 + SIGMA_FLOOR**2)
    z = (y - mu) / sigma
    cdf, pdf = ndtr(z), np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
    crps = sigma * (z * (2 * cdf - 1) + 2 * pdf - 1 / SQRT_PI)
    d_mu = -(2 * cdf - 1) * w  # dCRPS/dmu, weighted
    d_sigma = (2 * pdf - 1 / SQRT_PI) * w  # dCRPS/dsigma
    grad = np.stack([d_mu.sum(0), (d_mu * m).sum(0), (d_sigma * g / sigma).sum(0),
                     (d_sigma * dl * s2 / sigma).sum(0)])
    return float((crps * w).sum()), grad.ravel()


def _fit_standardised(m: np.ndarray, s2: np.ndarray, y: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """(4, G) parameters (a, b, c, d) of standardised groups (n, G); missing cases have ok False (values 0)."""
    n_ok = ok.sum(0)
    w = np.where(ok, 1.0 / np.maximum(n_ok, 1), 0.0)
    # start: least-squares a, b; the residual variance shared between c and d s2
    mm = (w * m).sum(0)
    my = (w * y).sum(0)
    cov = (w * (m - mm) * (y - my)).sum(0)
    var = (w * (m - mm) ** 2).sum(0)
    b0 = np.where(var > 1e-12, cov / np.maximum(var, 1e-12), 0.0)
    a0 = my - b0 * mm
    r2 = np.maximum((w * (y - a0 - b0 * m) ** 2).sum(0), 1e-6)
    ms2 = (w * s2).sum(0)
    g0 = np.sqrt(0.5 * r2)
    d0 = np.sqrt(np.where(ms2 > 1e-12, 0.5 * r2 / np.maximum(ms2, 1e-12), 0.0))
    theta0 = np.concatenate([a0, b0, g0, d0])
    res = minimize(_objective, theta0, args=(m, s2, y, w), jac=True, method="L-BFGS-B",
                   options={"maxiter": 2000, "gtol": 1e-9, "ftol": 1e-14})
    a, b, g, dl = res.x.reshape(4, -1)
    return np.stack([a, b, g * g, dl * dl])


def fit_emos(ens_mean, ens_var, obs, min_cases: int = MIN_CASES) -> np.ndarray:
    """EMOS parameters (4, *groups) = a, b, c, d of N(a + b ens_mean, c + d ens_var), by minimum mean CRPS over
    the training cases: ens_mean, ens_var, obs (n, *groups) or (n,), the first axis the cases, every other cell an
    independent group (a lead and location). Cases with a NaN are left out; a group with fewer than `min_cases`
    valid cases gets NaN parameters."""
    m, s2, y = (np.asarray(a, dtype=np.float64) for a in (ens_mean, ens_var, obs))
    if not (m.shape == s2.shape == y.shape) or m.ndim < 1:
        raise DataError(f"EMOS: ens_mean, ens_var and obs must have one shape (cases, ...): got {m.shape}, "
                        f"{s2.shape}, {y.shape}")
    if np.nanmin(s2, initial=0.0) < 0:
        raise DataError("EMOS: a negative ensemble variance")
    groups = m.shape[1:]
    m, s2, y = (a.reshape(len(a), -1) for a in (m, s2, y))
    ok = np.isfinite(m) & np.isfinite(s2) & np.isfinite(y)
    n_ok = ok.sum(0)
    # standardise each group by its observations' centre and scale (y' = (y - loc) / scale)
    yk = np.where(ok, y, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a group without valid cases: all-NaN
        loc = np.nan_to_num(np.nanmean(yk, 0))
        scale = np.nan_to_num(np.nanstd(yk, 0))
    scale = np.where(scale > 0, scale, 1.0)
    ms = np.where(ok, (m - loc) / scale, 0.0)
    ss = np.where(ok, s2 / scale**2, 0.0)
    ys = np.where(ok, (y - loc) / scale, 0.0)
    out = np.full((4, m.shape[1]), np.nan)
    fit = np.flatnonzero(n_ok >= min_cases)
    for k in range(0, len(fit), CHUNK):
        j = fit[k:k + CHUNK]
        a, b, c, d = _fit_standardised(ms[:, j], ss[:, j], ys[:, j], ok[:, j])
        # back to the data's units: mu = loc + scale (a + b (m - loc) / scale), var = scale^2 c + d s2
        out[:, j] = np.stack([loc[j] + scale[j] * a - b * loc[j], b, scale[j] ** 2 * c, d])
    return out.reshape(4, *groups)


def emos_moments(params, ens_mean, ens_var) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of the EMOS predictive for ens_mean, ens_var (..., *groups) with params (4, *groups)."""
    a, b, c, d = np.asarray(params, dtype=np.float64)
    m, s2 = np.asarray(ens_mean, dtype=np.float64), np.asarray(ens_var, dtype=np.float64)
    return a + b * m, np.sqrt(np.maximum(c + d * s2, 0.0))


def emos_forecast(params, ens_mean, ens_var, members: int, seed: int = 0) -> np.ndarray:
    """(members, *ens_mean.shape) independent draws from the EMOS predictive N(a + b m, c + d s2), seeded."""
    if members < 1:
        raise ConfigError(f"members: {members}: need at least 1")
    mu, sigma = emos_moments(params, ens_mean, ens_var)
    z = np.random.default_rng(seed).standard_normal((members, *mu.shape))
    return mu + sigma * z


def emos_quantiles(params, ens_mean, ens_var, quantiles) -> np.ndarray:
    """(len(quantiles), *ens_mean.shape) quantiles of the EMOS predictive."""
    from scipy.special import ndtri

    mu, sigma = emos_moments(params, ens_mean, ens_var)
    q = np.asarray(quantiles, dtype=np.float64).reshape(-1, *([1] * mu.ndim))
    return mu + sigma * ndtri(q)


def _mean_var(fc: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray]:
    """Ensemble mean and variance (ddof 0) over `member`, dims (init_time, lead_time, ...); no member dim: a point
    forecast, variance 0."""
    if "member" not in fc.dims:
        fc = fc.expand_dims(member=[0])
    da = fc.transpose("init_time", "member", "lead_time", ...)
    return da.mean("member"), da.var("member", ddof=0)


def emos_params(train_fc: xr.Dataset, truth: xr.Dataset, min_cases: int = MIN_CASES) -> xr.Dataset:
    """EMOS parameters per variable, lead and location: Dataset of (param, lead_time, <series dims>), param =
    a, b, c, d, fitted on `train_fc` (gendiff's layout: init_time, member, lead_time, ... with valid_time; the
    init times are the training cases) against `truth` (time, ...) at its valid times."""
    out = {}
    for v in train_fc.data_vars:
        if v not in truth.data_vars:
            raise DataError(f"EMOS: the truth has no variable {v!r} of the training forecast")
        m, s2 = _mean_var(train_fc[v])
        y = truth_at_valid_time(truth[v], train_fc["valid_time"]).transpose(*m.dims)
        p = fit_emos(m.values, s2.values, y.values, min_cases)
        coords = {k: c for k, c in m.coords.items() if "init_time" not in c.dims}
        out[v] = xr.DataArray(p, dims=("param", *m.dims[1:]), coords={**coords, "param": list(PARAMS)})
    return xr.Dataset(out)


def emos_calibrate(train_fc: xr.Dataset, truth: xr.Dataset, test_fc: xr.Dataset, members: int | None = None,
                   seed: int = 0, min_cases: int = MIN_CASES) -> xr.Dataset:
    """EMOS fitted per (lead, location) on `train_fc` and its `truth`, applied to `test_fc` (both in gendiff's
    layout, init_time, member, lead_time, <series dims>, with valid_time); returns `members` (default: test_fc's)
    seeded draws from each predictive Gaussian in the same layout. Every lead of test_fc must be one of train_fc's.
    The ensemble input may be any forecast: the model's, or the run's AR base trajectories as a forecast."""
    params = emos_params(train_fc, truth, min_cases)
    members = int(test_fc.sizes.get("member", 1)) if members is None else int(members)
    missing = np.setdiff1d(test_fc["lead_time"].values, train_fc["lead_time"].values)
    if missing.size:
        raise DataError(f"EMOS: lead time {missing[0]} of the test forecast is not in the training forecast")
    rng = np.random.default_rng(seed)
    out = {}
    for v in test_fc.data_vars:
        if v not in params.data_vars:
            raise DataError(f"EMOS: variable {v!r} of the test forecast is not in the training forecast")
        m, s2 = _mean_var(test_fc[v])
        p = params[v].sel(lead_time=m["lead_time"]).transpose("param", *m.dims[1:])
        other = [d for d in m.dims[1:] if d != "lead_time"]
        if any(m.sizes[d] != p.sizes[d] for d in other) or any(
                d in m.coords and d in p.coords and not np.array_equal(m[d].values, p[d].values) for d in other):
            raise DataError(f"EMOS: the test forecast's {v!r} locations differ from the training forecast's")
        mu, sigma = emos_moments(p.values, m.values, s2.values)
        z = rng.standard_normal((mu.shape[0], members, *mu.shape[1:]))
        coords = {k: c for k, c in m.coords.items() if k != "valid_time"}
        out[v] = xr.DataArray(mu[:, None] + sigma[:, None] * z, dims=("init_time", "member", *m.dims[1:]),
                              coords=coords)
    ds = xr.Dataset(out).assign_coords(member=np.arange(members))
    if "valid_time" in test_fc.coords:
        ds = ds.assign_coords(valid_time=test_fc["valid_time"])
    return ds.assign_attrs(test_fc.attrs, postprocessing="EMOS (Gneiting et al. 2005), minimum-CRPS fit per lead "
                           "and location", emos_train_inits=int(train_fc.sizes["init_time"]))
