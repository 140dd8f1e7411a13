"""Multivariate, aggregate and quantile scores of ensemble forecasts (issue 29 item 5), numpy over explicit axes:
energy score, CRPS-sum (the ensemble form and GluonTS's quantile form), pinball loss, central-interval coverage and
spread / skill. The univariate CRPS and the rank histogram live in `scores` (the fair CRPS is reused from there).

Layouts: a univariate ensemble is `samples` (..., M) with `obs` (...); a multivariate one is (..., M, D) with obs
(..., D); `member_axis` / `vector_axis` say where M and D are when elsewhere. A case whose observation (any component
of it) or any member is NaN takes no part: per-case scores are NaN there and pooled scores leave it out. A shape
that does not fit raises gendiff.errors.DataError naming both shapes."""

from __future__ import annotations

import numpy as np
import xarray as xr

from gendiff.errors import ConfigError, DataError

from .ensquantile import ensemble_quantile
from .scores import _crps_numpy

GLUONTS_QUANTILES = tuple(np.round(np.arange(1, 20) / 20.0, 2))  # 0.05, 0.10, ..., 0.95 (MultivariateEvaluator)
CRPS_SUM_FORMS = ("ensemble", "quantile")


def _float(name: str, x) -> np.ndarray:
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name}: not numeric ({exc})") from None


def _members_last(fn: str, samples, obs, member_axis: int) -> tuple[np.ndarray, np.ndarray]:
    """samples moved to (..., M); obs checked to be (...)."""
    s, y = _float(f"{fn}: samples", samples), _float(f"{fn}: obs", obs)
    if s.ndim < 1:
        raise DataError(f"{fn}: samples must have a member axis, got a scalar")
    if not -s.ndim <= member_axis < s.ndim:
        raise DataError(f"{fn}: member_axis {member_axis} out of range for samples of shape {s.shape}")
    x = np.moveaxis(s, member_axis, -1)
    if x.shape[:-1] != y.shape:
        raise DataError(f"{fn}: samples of shape {s.shape} (members on axis {member_axis}) need obs of shape "
                        f"{x.shape[:-1]}, got {y.shape}")
    return x, y


def _members_vector_last(fn: str, samples, obs, member_axis: int, vector_axis: int) -> tuple[np.ndarray, np.ndarray]:
    """samples moved to (..., M, D) and obs to (..., D); obs is samples without its member axis."""
    s, y = _float(f"{fn}: samples", samples), _float(f"{fn}: obs", obs)
    if s.ndim < 2:
        raise DataError(f"{fn}: samples need a member and a vector axis, got shape {s.shape}")
    if not all(-s.ndim <= a < s.ndim for a in (member_axis, vector_axis)):
        raise DataError(f"{fn}: member_axis {member_axis} / vector_axis {vector_axis} out of range for samples of "
                        f"shape {s.shape}")
    m_ax, v_ax = member_axis % s.ndim, vector_axis % s.ndim
    if m_ax == v_ax:
        raise DataError(f"{fn}: member_axis and vector_axis are the same axis ({m_ax})")
    expected = s.shape[:m_ax] + s.shape[m_ax + 1:]
    if y.shape != expected:
        raise DataError(f"{fn}: samples of shape {s.shape} (members on axis {member_axis}, vector on axis "
                        f"{vector_axis}) need obs of shape {expected}, got {y.shape}")
    x = np.moveaxis(s, (m_ax, v_ax), (-2, -1))
    y = np.moveaxis(y, v_ax - (1 if m_ax < v_ax else 0), -1)
    return x, y


def energy_score(samples, obs, fair: bool = True, *, member_axis: int = -2, vector_axis: int = -1) -> np.ndarray:
    """ES = mean_i ||x_i - y|| - sum_{i,j} ||x_i - x_j|| / (2 D) per case (Gneiting & Raftery 2007 eq. 22).

    fair (default, as `scores.crps_ensemble`): D = M (M - 1), the unbiased estimate of the ES of the distribution
    the members are drawn from; fair=False: D = M^2, the ES of the M-member empirical distribution (scoringrules'
    "nrg"). Euclidean norm over the vector axis; one member: the Euclidean error either way. With one component
    it is the CRPS. Returns one score per case (the shape of obs without its vector axis), NaN where the
    observation or any member has a NaN component. Memory O(M D) per case: the pairs are summed member by member."""
    x, y = _members_vector_last("energy_score", samples, obs, member_axis, vector_axis)
    m = x.shape[-2]
    if m == 0:
        raise DataError("energy_score: the ensemble has no members")
    skill = np.linalg.norm(x - y[..., None, :], axis=-1).mean(-1)
    if m < 2:
        return skill
    pairs = np.zeros(x.shape[:-2])  # sum over i < j of ||x_i - x_j||
    for i in range(m - 1):
        pairs += np.linalg.norm(x[..., i + 1:, :] - x[..., i:i + 1, :], axis=-1).sum(-1)
    return skill - pairs / (m * (m - 1) if fair else m * m)


def energy_score_da(forecast: xr.DataArray, truth: xr.DataArray, ensemble_dim: str = "member",
                    vector_dim: str = "variable", fair: bool = True) -> xr.DataArray:
    """`energy_score` over named dims (Gneiting & Raftery 2007 eq. 22): one score per cell of the other dims."""
    for da, name, dims in ((forecast, "forecast", (ensemble_dim, vector_dim)), (truth, "truth", (vector_dim,))):
        missing = [d for d in dims if d not in da.dims]
        if missing:
            raise DataError(f"energy_score_da: {name} has no dim {missing[0]!r} (dims {tuple(da.dims)})")
    return xr.apply_ufunc(energy_score, forecast, truth, input_core_dims=[[ensemble_dim, vector_dim], [vector_dim]],
                          kwargs={"fair": fair}, dask="allowed")


def _summed(fn: str, samples, obs, member_axis: int, vector_axis: int) -> tuple[np.ndarray, np.ndarray]:
    """The summed ensemble (cases, M) and summed obs (cases,) over the valid cases only."""
    x, y = _members_vector_last(fn, samples, obs, member_axis, vector_axis)
    if x.shape[-2] == 0:
        raise DataError(f"{fn}: the ensemble has no members")
    xs, ys = x.sum(-1).reshape(-1, x.shape[-2]), y.sum(-1).reshape(-1)
    valid = np.isfinite(y).all(-1).reshape(-1) & np.isfinite(x).all((-2, -1)).reshape(-1)
    return xs[valid], ys[valid]


def crps_sum(samples, obs, *, form: str = "ensemble", fair: bool = True, quantiles=GLUONTS_QUANTILES,
             member_axis: int = -2, vector_axis: int = -1) -> float:
    """CRPS-sum (Rasul et al. 2021, TimeGrad; GluonTS m_sum_mean_wQuantileLoss): the CRPS of the ensemble summed over
    the vector axis (series / variables) against the summed obs, pooled over all cases (every other axis) and
    normalised by sum over cases of |summed obs|.

    form="ensemble": sum_cases CRPS(summed members, summed obs) / sum_cases |summed obs|, with the fair
    (M (M - 1)) or standard (M^2) CRPS of `scores` (Gneiting & Raftery 2007 eq. 21).
    form="quantile" (GluonTS's MultivariateEvaluator with target_agg_funcs={"sum": np.sum}, what TimeGrad reports):
    mean over q in `quantiles` (0.05, ..., 0.95) of sum_cases 2 |(Y - Q_q) (1{Y <= Q_q} - q)| / sum_cases |Y|, with
    Q_q the GluonTS sample quantile of the summed members: the sorted member at index round((M - 1) q) (numpy's
    round half to even, as gluonts.model.forecast.SampleForecast.quantile); `fair` is not used there.
    Cases with any NaN obs component or member are left out; NaN when none is left or the summed obs are all 0."""
    if form not in CRPS_SUM_FORMS:
        raise ConfigError(f"crps_sum: form must be one of {CRPS_SUM_FORMS}, got {form!r}")
    xs, ys = _summed("crps_sum", samples, obs, member_axis, vector_axis)
    denom = float(np.abs(ys).sum())
    if ys.size == 0 or denom == 0.0:
        return float("nan")
    if form == "ensemble":
        return float(_crps_numpy(xs, ys, fair).sum() / denom)
    q = _levels("crps_sum", quantiles)
    m = xs.shape[-1]
    ordered = np.sort(xs, axis=-1)
    losses = []
    for level in q:
        qhat = ordered[:, int(np.round((m - 1) * level))]
        losses.append(2.0 * np.abs((ys - qhat) * ((ys <= qhat) - level)).sum() / denom)
    return float(np.mean(losses))


def _levels(fn: str, q) -> np.ndarray:
    levels = _float(f"{fn}: quantile levels", q)
    if levels.size == 0 or not np.all((levels >= 0.0) & (levels <= 1.0)):
        raise ConfigError(f"{fn}: quantile levels must lie in [0, 1], got {levels.tolist()}")
    return levels


def quantile_loss(q_pred, obs, q) -> np.ndarray:
    """Pinball loss rho_q(y - q_pred) = (y - q_pred) (q - 1{y < q_pred}) per element (Koenker & Bassett 1978), without
    GluonTS's factor 2. A scalar q: q_pred has obs's shape; a vector of Q levels: q_pred is (..., Q) and obs (...),
    returning (..., Q). NaN where obs or q_pred is NaN."""
    levels = _levels("quantile_loss", q)
    p, y = _float("quantile_loss: q_pred", q_pred), _float("quantile_loss: obs", obs)
    if levels.ndim == 0:
        if p.shape != y.shape:
            raise DataError(f"quantile_loss: q_pred of shape {p.shape} and obs of shape {y.shape} differ")
        err = y - p
    else:
        if levels.ndim != 1 or p.shape != y.shape + levels.shape:
            raise DataError(f"quantile_loss: {levels.size} levels need q_pred of shape {y.shape + (levels.size,)} "
                            f"(obs {y.shape} plus a last quantile axis), got {p.shape}")
        err = y[..., None] - p
    return err * (levels - (err < 0))


def interval_coverage(forecast, obs, level: float = 0.9, *, quantiles=None, member_axis: int = -1) -> float:
    """Fraction of the observations inside the central `level` interval [Q_{(1-level)/2}, Q_{(1+level)/2}], bounds
    included (Gneiting & Raftery 2007 sec. 6.2's central prediction interval); a calibrated forecast covers `level`.

    forecast along member_axis: ensemble members (bounds by `ensquantile.ensemble_quantile`: rank q (M + 1), a
    normal tail beyond the members, so a calibrated ensemble of any size covers about `level`) or, with
    `quantiles` (the levels, one per entry on that axis), quantile predictions that must include both bounds' levels.
    Cases with a NaN observation or bound are left out; NaN when none is left."""
    if not 0.0 < level < 1.0:
        raise ConfigError(f"interval_coverage: level must lie in (0, 1), got {level}")
    x, y = _members_last("interval_coverage", forecast, obs, member_axis)
    alpha = ((1.0 - level) / 2.0, (1.0 + level) / 2.0)
    if quantiles is None:
        if x.shape[-1] == 0:
            raise DataError("interval_coverage: the ensemble has no members")
        lo, hi = ensemble_quantile(x, alpha, skipna=False)
    else:
        levels = _levels("interval_coverage", quantiles).reshape(-1)
        if levels.size != x.shape[-1]:
            raise DataError(f"interval_coverage: {levels.size} quantile levels for {x.shape[-1]} entries on the "
                            f"quantile axis {member_axis}")
        idx = []
        for a in alpha:
            hit = np.flatnonzero(np.isclose(levels, a, rtol=0.0, atol=1e-9))
            if hit.size == 0:
                raise DataError(f"interval_coverage: a {level:g} central interval needs the {a:g} quantile; the "
                                f"forecast has levels {levels.tolist()}")
            idx.append(int(hit[0]))
        lo, hi = x[..., idx[0]], x[..., idx[1]]
    valid = np.isfinite(y) & np.isfinite(lo) & np.isfinite(hi)
    if not valid.any():
        return float("nan")
    inside = (y[valid] >= lo[valid]) & (y[valid] <= hi[valid])
    return float(inside.mean())


def spread_skill(samples, obs, *, member_axis: int = -1, size_correction: bool = False) -> dict:
    """{spread, rmse, ssr} pooled over all cases: spread = sqrt(mean unbiased member variance (ddof=1)), rmse = RMSE of
    the ensemble mean, ssr = spread / rmse, as `scores.score` and WeatherBench2's SpreadSkillRatio: without an
    ensemble-size factor by default; size_correction=True multiplies spread by sqrt((M + 1) / M) (Fortin et al. 2014
    eq. 1; Leutbecher & Palmer 2008), so that a perfect M-member ensemble has ssr 1. One member: spread 0.
    Cases with a NaN observation or member are left out; NaN values when none is left."""
    x, y = _members_last("spread_skill", samples, obs, member_axis)
    m = x.shape[-1]
    if m == 0:
        raise DataError("spread_skill: the ensemble has no members")
    valid = np.isfinite(y) & np.isfinite(x).all(-1)
    if not valid.any():
        return {"spread": float("nan"), "rmse": float("nan"), "ssr": float("nan")}
    xv, yv = x[valid], y[valid]
    var = xv.var(-1, ddof=1) if m > 1 else np.zeros(yv.shape)
    spread = float(np.sqrt(var.mean()))
    if size_correction:
        spread *= float(np.sqrt((m + 1) / m))
    rmse = float(np.sqrt(((xv.mean(-1) - yv) ** 2).mean()))
    ssr = spread / rmse if rmse > 0 else float("nan")
    return {"spread": spread, "rmse": rmse, "ssr": ssr}
