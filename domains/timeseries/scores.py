"""Ensemble skill scores as WeatherBench2 defines them: fair CRPS (standard beside it), ensemble-mean RMSE, spread,
spread / skill, rank histograms; small xarray functions over an ensemble dim, with optional weights (the gridded
adapter passes cell-area latitude weights, gendiff.domains.weather.metrics) and NaN as weight 0."""
from __future__ import annotations

import numpy as np
import xarray as xr

from .ensquantile import ensemble_quantile

def weighted_mean(da: xr.DataArray, dims, weights: xr.DataArray | None = None) -> xr.DataArray:
    """Mean over `dims` with weights; NaN cells (masks, gaps) get weight 0."""
    dims = [d for d in dims if d in da.dims]
    w = xr.ones_like(da, dtype=np.float64) if weights is None else (weights * xr.ones_like(da, dtype=np.float64))
    w = w.where(da.notnull(), 0.0)
    total = w.sum(dims)
    return (da.fillna(0.0) * w).sum(dims) / total.where(total > 0)


def _crps_numpy(x: np.ndarray, y: np.ndarray, fair: bool) -> np.ndarray:
    m = x.shape[-1]
    skill = np.abs(x - y[..., None]).mean(-1)
    if m < 2:  # a single member is a point forecast: no spread term (CRPS = absolute error), fair or not
        return skill
    xs = np.sort(x, axis=-1)
    rank = 2.0 * np.arange(1, m + 1) - m - 1
    pair_sum = 2.0 * (xs * rank).sum(-1)  # sum_{i,j} |x_i - x_j|, from the sorted members in O(M log M)
    return skill - pair_sum / (2.0 * (m * (m - 1) if fair else m * m))


def crps_ensemble(forecast: xr.DataArray, truth: xr.DataArray, ensemble_dim: str = "member",
                  fair: bool = True) -> xr.DataArray:
    """CRPS per cell = mean_i |x_i - y| - sum_{i,j} |x_i - x_j| / (2 D) (Gneiting & Raftery 2007 eq. 21).

    fair (the default, as WeatherBench2): D = M (M - 1), the unbiased estimate of the CRPS of the distribution the
    M members are drawn from (Ferro 2014); fair=False: D = M^2, the CRPS of the M-member empirical distribution
    (properscoring's). One member: the absolute error either way."""
    return xr.apply_ufunc(_crps_numpy, forecast, truth, input_core_dims=[[ensemble_dim], []],
                          kwargs={"fair": fair}, dask="allowed")


def ensemble_mean_squared_error(forecast: xr.DataArray, truth: xr.DataArray,
                                ensemble_dim: str = "member") -> xr.DataArray:
    return (forecast.mean(ensemble_dim, skipna=False) - truth) ** 2


def ensemble_variance(forecast: xr.DataArray, ensemble_dim: str = "member") -> xr.DataArray:
    """Unbiased member variance (ddof=1); 0 for a single member."""
    if forecast.sizes[ensemble_dim] < 2:
        return xr.zeros_like(forecast.isel({ensemble_dim: 0}, drop=True)).where(forecast.notnull().all(ensemble_dim))
    return forecast.var(ensemble_dim, ddof=1, skipna=False)


def rank_histogram(forecast: xr.DataArray, truth: xr.DataArray, ensemble_dim: str = "member",
                   reduce_dims=None, seed: int = 0) -> xr.DataArray:
    """Counts of the truth's rank among the members (0..M), ties split at random (Hamill 2001), over reduce_dims."""
    x = forecast.transpose(..., ensemble_dim)
    x, y = xr.broadcast(x, truth)
    x = x.transpose(..., ensemble_dim)
    y = y.isel({ensemble_dim: 0}, drop=True) if ensemble_dim in y.dims else y
    xv, yv = x.values, y.transpose(*x.dims[:-1]).values
    rng = np.random.default_rng(seed)
    below = (xv < yv[..., None]).sum(-1)
    ties = (xv == yv[..., None]).sum(-1)
    rank = below + np.floor(rng.random(below.shape) * (ties + 1)).astype(int)
    valid = np.isfinite(yv) & np.isfinite(xv).all(-1)
    m = xv.shape[-1]
    onehot = (rank[..., None] == np.arange(m + 1)) & valid[..., None]
    counts = xr.DataArray(onehot.astype(np.int64), dims=(*x.dims[:-1], "rank"), coords={
        k: c for k, c in x.coords.items() if set(c.dims) <= set(x.dims[:-1])})
    reduce_dims = [d for d in (reduce_dims if reduce_dims is not None else x.dims[:-1]) if d in counts.dims]
    return counts.sum(reduce_dims).assign_coords(rank=np.arange(m + 1))


def spread_skill_ratio(spread: xr.DataArray, rmse: xr.DataArray) -> xr.DataArray:
    """spread / RMSE: the ensemble standard deviation (root of the mean unbiased member variance) over the RMSE of
    the ensemble mean, without any ensemble-size factor (WeatherBench2's SpreadSkillRatio)."""
    return spread / rmse


def score(forecast: xr.DataArray, truth: xr.DataArray, ensemble_dim: str = "member",
          keep_dims=("lead_time",), rank_seed: int = 0, weights=None) -> xr.Dataset:
    """Fair CRPS (`crps`) and standard CRPS (`crps_standard`), ensemble-mean RMSE, spread, SSR and rank histogram,
    averaged over all dims but keep_dims (with `weights`: a DataArray, or a function of the truth giving one or
    None); cells where the truth or any member is NaN take no part."""
    truth = truth.where(forecast.notnull().all(ensemble_dim))
    if callable(weights):
        weights = weights(truth)
    dims = [d for d in truth.dims if d not in keep_dims]
    crps = weighted_mean(crps_ensemble(forecast, truth, ensemble_dim, fair=True), dims, weights)
    crps_standard = weighted_mean(crps_ensemble(forecast, truth, ensemble_dim, fair=False), dims, weights)
    rmse = np.sqrt(weighted_mean(ensemble_mean_squared_error(forecast, truth, ensemble_dim), dims, weights))
    var = ensemble_variance(forecast, ensemble_dim).where(truth.notnull())
    spread = np.sqrt(weighted_mean(var, dims, weights))
    out = xr.Dataset({"crps": crps, "crps_standard": crps_standard, "rmse": rmse, "spread": spread,
                      "ssr": spread_skill_ratio(spread, rmse)})
    for level in COVERAGE_LEVELS:
        out[f"coverage_{level}"] = weighted_mean(inside_interval(forecast, truth, level / 100, ensemble_dim), dims,
                                                 weights)
    out["rank_histogram"] = rank_histogram(forecast, truth, ensemble_dim, dims, seed=rank_seed)
    return out


COVERAGE_LEVELS = (80, 95)  # central prediction intervals whose coverage evaluate reports (nominal: 0.80, 0.95)


def inside_interval(forecast: xr.DataArray, truth: xr.DataArray, level: float,
                    ensemble_dim: str = "member") -> xr.DataArray:
    """1 where the truth lies in the members' central `level` interval (ends included), 0 outside, NaN where the
    truth or a member is missing; the interval's ends are `ensquantile.ensemble_quantile`'s (rank q (M + 1), a
    normal tail beyond the members), so a calibrated ensemble covers about `level` whatever its size."""
    lo, hi = xr.apply_ufunc(lambda x: tuple(ensemble_quantile(x, [(1 - level) / 2, (1 + level) / 2], skipna=False)),
                            forecast, input_core_dims=[[ensemble_dim]], output_core_dims=[[], []])
    return ((truth >= lo) & (truth <= hi)).astype(np.float64).where(truth.notnull() & lo.notnull() & hi.notnull())
