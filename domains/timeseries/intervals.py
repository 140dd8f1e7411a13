"""Paired comparison of two systems scored on the same cases (issue 29 item 6): the mean score difference with a
moving-block bootstrap interval over the init axis (Kunsch 1989), so that neighbouring, autocorrelated inits are
resampled together, and the win rate; `format_interval` writes one line of it."""

from __future__ import annotations

import math

import numpy as np

from gendiff.errors import ConfigError, DataError

_CHUNK = 256  # bootstrap replicates drawn at once: memory O(_CHUNK * n) indices


def default_block(n: int) -> int:
    """ceil(n ** (1/3)), the usual moving-block length for a mean (Hall, Horowitz & Jing 1995), in integers."""
    b = max(1, round(n ** (1.0 / 3.0)))
    while b**3 < n:
        b += 1
    while b > 1 and (b - 1) ** 3 >= n:
        b -= 1
    return b


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    try:
        x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"paired_block_bootstrap: scores are not numeric ({exc})") from None
    if x.shape != y.shape:
        raise DataError(f"paired_block_bootstrap: a of shape {x.shape} and b of shape {y.shape} differ; both systems "
                        f"must be scored on the same cases (init, or init x series)")
    if x.ndim not in (1, 2):
        raise DataError(f"paired_block_bootstrap: scores must be (init,) or (init, series), got shape {x.shape}")
    if x.shape[0] < 2:
        raise DataError(f"paired_block_bootstrap: needs at least 2 inits on axis 0, got {x.shape[0]}")
    return x, y


def paired_block_bootstrap(a, b, *, block: int | None = None, n_boot: int = 2000, seed: int = 0,
                           level: float = 0.95) -> dict:
    """Mean of d = a - b with a moving-block bootstrap percentile interval (Kunsch 1989; Lahiri 2003 ch. 2).

    a, b: the scores of two systems on the same cases, (init,) or (init, series), inits in time order along axis 0.
    Each replicate draws ceil(n / block) blocks of `block` consecutive inits (start uniform over the n - block + 1
    positions), concatenated and cut to n inits; a series stays with its init (an init's row is resampled whole), so
    cross-series correlation is kept. block defaults to ceil(n ** (1/3)). A replicate's statistic is the mean of
    its finite differences (a case where a or b is NaN takes no part). lo / hi: the (1 -+ level) / 2 quantiles of
    the n_boot replicates (numpy linear interpolation). win_rate: over the finite cases, the fraction with a < b
    (ties count half); a wins when lower is better. Deterministic for a seed; a == b gives lo = hi = 0 exactly.

    Returns {mean_diff, lo, hi, win_rate, n (inits), n_cases (finite cases), block, n_boot, level}."""
    x, y = _pair(a, b)
    n = x.shape[0]
    if block is None:
        block = default_block(n)
    if not 1 <= int(block) <= n:
        raise ConfigError(f"paired_block_bootstrap: block must lie in [1, {n}] (the number of inits), got {block}")
    if int(n_boot) < 1:
        raise ConfigError(f"paired_block_bootstrap: n_boot must be at least 1, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise ConfigError(f"paired_block_bootstrap: level must lie in (0, 1), got {level}")
    block, n_boot = int(block), int(n_boot)
    d = (x - y).reshape(n, -1)
    valid = np.isfinite(d)
    if not valid.any():
        raise DataError("paired_block_bootstrap: no case where both a and b are finite")
    row_sum = np.where(valid, d, 0.0).sum(1)  # per init: the sum and the count of its finite differences
    row_count = valid.sum(1)
    mean_diff = float(row_sum.sum() / row_count.sum())

    rng = np.random.default_rng(seed)
    k = math.ceil(n / block)
    offsets = np.arange(block)
    boots = np.empty(n_boot)
    for start in range(0, n_boot, _CHUNK):
        c = min(_CHUNK, n_boot - start)
        starts = rng.integers(0, n - block + 1, size=(c, k))
        idx = (starts[..., None] + offsets).reshape(c, k * block)[:, :n]
        with np.errstate(invalid="ignore", divide="ignore"):
            boots[start:start + c] = row_sum[idx].sum(1) / row_count[idx].sum(1)
    if np.isnan(boots).all():
        raise DataError("paired_block_bootstrap: every bootstrap replicate drew only NaN cases")
    lo, hi = np.nanquantile(boots, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])

    xv, yv = x.reshape(n, -1)[valid], y.reshape(n, -1)[valid]
    win_rate = float(((xv < yv).sum() + 0.5 * (xv == yv).sum()) / xv.size)
    return {"mean_diff": mean_diff, "lo": float(lo), "hi": float(hi), "win_rate": win_rate, "n": n,
            "n_cases": int(xv.size), "block": block, "n_boot": n_boot, "level": float(level)}


def format_interval(res: dict, unit: str = "", digits: int | None = None) -> str:
    """'-0.012 [-0.020, -0.004], wins 63%' (a unit goes after the bracket: '... [-0.020, -0.004] K, wins 63%');
    digits default: two significant figures of the largest of |mean_diff|, |lo|, |hi| (3 decimals when all are 0)."""
    values = [float(res[k]) for k in ("mean_diff", "lo", "hi")]
    if digits is None:
        top = max((abs(v) for v in values if math.isfinite(v)), default=0.0)
        digits = 3 if top == 0.0 else max(0, 1 - math.floor(math.log10(top)))
    m, lo, hi = (f"{v:.{digits}f}" for v in values)
    suffix = f" {unit}" if unit else ""
    return f"{m} [{lo}, {hi}]{suffix}, wins {100.0 * float(res['win_rate']):.0f}%"
