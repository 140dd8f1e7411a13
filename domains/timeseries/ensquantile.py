"""Quantiles of a finite ensemble, the estimator behind every interval and quantile gendiff writes or scores
(`evaluate`'s coverage, the long table's `gendiff-lo-80` / `-hi-80` and `-q-0.1` columns, the tidy tables'
quantiles).

M members drawn from the forecast distribution split the line so that a new draw Y falls below the k-th smallest
member with probability k / (M + 1) (exchangeability). So the q-quantile sits at rank q (M + 1) (Weibull's plotting
position, Hyndman & Fan 1996 type 6), interpolated linearly between neighbouring members. numpy's default (type 7,
rank 1 + q (M - 1)) pulls every quantile towards the median: the central 80% interval of a calibrated 16-member
ensemble then covers (M - 1) 0.8 / (M + 1) = 71%, not 80%. Beyond the members' range (q < 1 / (M + 1) or
q > M / (M + 1): a 95% interval needs 39 members) no member marks the quantile, and a normal tail with the members'
standard deviation continues from the outermost member: x_(1) + s (z_q - z_{1/(M+1)}) below, likewise above.
With 16 members of a calibrated ensemble the 80% / 95% intervals then cover 0.80-0.82 / 0.93-0.95 for normal,
Student-t(3) and exponential forecasts (simulated; the tail is exact only for a normal one)."""
from __future__ import annotations

import numpy as np
from scipy.special import ndtri


def ensemble_quantile(x, q, axis: int = -1, skipna: bool = True) -> np.ndarray:
    """Quantiles `q` (a level or a sequence of levels in (0, 1)) of the members along `axis` of `x`: shape of x
    without that axis, with a leading quantile axis when q is a sequence (as np.quantile). skipna: NaN members are
    left out case by case (a case with none left gives NaN); skipna=False: a NaN member makes the case NaN."""
    levels = np.asarray(q, dtype=np.float64)
    if levels.size and not ((levels > 0.0) & (levels < 1.0)).all():
        raise ValueError(f"quantile levels must lie in (0, 1), got {levels.tolist()}")
    s = np.sort(np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1), axis=-1)  # NaN sorts last
    finite = np.isfinite(s)
    m = finite.sum(-1)
    if not skipna:
        m = np.where(finite.all(-1), m, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(m > 0, np.where(finite, s, 0.0).sum(-1) / np.maximum(m, 1), np.nan)
        dev = np.where(finite, s - mean[..., None], 0.0)
        sd = np.where(m > 1, np.sqrt((dev ** 2).sum(-1) / np.maximum(m - 1, 1)), 0.0)
    last = np.maximum(m - 1, 0)
    lowest = s[..., 0]
    highest = np.take_along_axis(s, last[..., None], -1)[..., 0]
    out = np.stack([_one(s, m, last, lowest, highest, sd, float(p)) for p in levels.reshape(-1)])
    out = np.where(m > 0, out, np.nan)
    return out.reshape(levels.shape + out.shape[1:])


def _one(s, m, last, lowest, highest, sd, p: float) -> np.ndarray:
    rank = p * (m + 1.0)  # 1-based position among the m sorted members
    k = np.clip(np.floor(rank).astype(np.int64), 1, np.maximum(m - 1, 1))  # lower neighbour, 1-based
    below = np.take_along_axis(s, (k - 1)[..., None], -1)[..., 0]
    above = np.take_along_axis(s, np.minimum(k, last)[..., None], -1)[..., 0]
    inner = below + (rank - k) * (above - below)
    with np.errstate(invalid="ignore", divide="ignore"):
        low_tail = lowest + sd * (ndtri(p) - ndtri(1.0 / (m + 1.0)))
        high_tail = highest + sd * (ndtri(p) - ndtri(m / (m + 1.0)))
    return np.where(rank < 1.0, low_tail, np.where(rank > m, high_tail, inner))
