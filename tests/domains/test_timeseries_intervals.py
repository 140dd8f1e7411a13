"""The paired moving-block bootstrap: empirical coverage on simulated AR(1) differences with a known mean, exact
zero width for identical systems, the win rate on a case counted by hand, series resampled with their init,
determinism for a seed, the default block length, errors for bad shapes and arguments, and the one-line format."""
from __future__ import annotations

import numpy as np
import pytest

from gendiff.domains.timeseries.intervals import default_block, format_interval, paired_block_bootstrap
from gendiff.errors import ConfigError, DataError


def _ar1(rng, n, phi, mean, sigma=1.0):
    e = rng.normal(scale=sigma, size=n)
    x = np.empty(n)
    x[0] = e[0] / np.sqrt(1.0 - phi**2)  # stationary start
    for t in range(1, n):
        x[t] = phi * x[t - 1] + e[t]
    return mean + x


def test_coverage_on_ar1_differences_with_known_mean():
    rng = np.random.default_rng(2024)
    true_mean, n, reps = 0.3, 120, 200
    hits, widths = 0, []
    for r in range(reps):
        b = rng.normal(size=n)
        a = b + _ar1(rng, n, phi=0.5, mean=true_mean)  # d = a - b is AR(1) around true_mean
        res = paired_block_bootstrap(a, b, n_boot=500, seed=r)
        assert res["block"] == 5 and res["lo"] <= res["mean_diff"] <= res["hi"]
        hits += res["lo"] <= true_mean <= res["hi"]
        widths.append(res["hi"] - res["lo"])
    coverage = hits / reps
    assert 0.85 <= coverage <= 0.99, coverage
    # the iid bootstrap (block 1) ignores the autocorrelation: its intervals are clearly narrower
    b = rng.normal(size=n)
    a = b + _ar1(rng, n, phi=0.5, mean=true_mean)
    iid = paired_block_bootstrap(a, b, block=1, n_boot=500)
    assert iid["hi"] - iid["lo"] < 0.85 * np.mean(widths)


def test_identical_systems_give_an_exact_zero_width_interval():
    a = np.random.default_rng(1).normal(size=(40, 3))
    res = paired_block_bootstrap(a, a.copy(), n_boot=300)
    assert res["mean_diff"] == 0.0 and res["lo"] == 0.0 and res["hi"] == 0.0
    assert res["win_rate"] == 0.5  # every case a tie
    assert format_interval(res) == "0.000 [0.000, 0.000], wins 50%"


def test_win_rate_counts_ties_half_and_leaves_out_nan():
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0, np.nan, 7.0, 8.0])
    b = np.array([2.0, 1.0, 3.0, 5.0, 6.0, 1.0, 9.0, 8.0])
    res = paired_block_bootstrap(a, b, n_boot=200)
    # finite cases: 7; a < b at 0, 3, 4, 6 (4), ties at 2, 7 (2 halves), a > b at 1
    assert res["n"] == 8 and res["n_cases"] == 7
    assert res["win_rate"] == pytest.approx(5.0 / 7.0)
    assert res["mean_diff"] == pytest.approx(np.nanmean(a - b))


def test_series_are_resampled_with_their_init():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(50, 4)), rng.normal(size=(50, 4))
    joint = paired_block_bootstrap(a, b, n_boot=400, seed=7)
    rows = paired_block_bootstrap(a.mean(1), b.mean(1), n_boot=400, seed=7)
    # no NaN: every init has the same number of series, so resampling whole rows is resampling the row means
    for k in ("mean_diff", "lo", "hi"):
        assert joint[k] == pytest.approx(rows[k], rel=1e-12)
    assert joint["n"] == 50 and joint["n_cases"] == 200
    assert joint["win_rate"] == pytest.approx(np.mean(a < b))


def test_determinism_and_seed_dependence():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=60), rng.normal(size=60)
    first = paired_block_bootstrap(a, b, n_boot=300, seed=11)
    assert paired_block_bootstrap(a, b, n_boot=300, seed=11) == first
    other = paired_block_bootstrap(a, b, n_boot=300, seed=12)
    assert other["mean_diff"] == first["mean_diff"] and (other["lo"], other["hi"]) != (first["lo"], first["hi"])


def test_default_block_is_the_integer_cube_root_ceiling():
    assert [default_block(n) for n in (1, 2, 8, 9, 27, 28, 64, 65, 1000, 1001)] == [1, 2, 2, 3, 3, 4, 4, 5, 10, 11]
    assert paired_block_bootstrap(np.arange(27.0), np.zeros(27), n_boot=10)["block"] == 3


def test_errors_name_the_problem():
    with pytest.raises(DataError, match=r"a of shape \(5,\) and b of shape \(6,\) differ"):
        paired_block_bootstrap(np.zeros(5), np.zeros(6))
    with pytest.raises(DataError, match="at least 2 inits"):
        paired_block_bootstrap(np.zeros(1), np.zeros(1))
    with pytest.raises(DataError, match=r"\(init,\) or \(init, series\)"):
        paired_block_bootstrap(np.zeros((3, 2, 2)), np.zeros((3, 2, 2)))
    with pytest.raises(DataError, match="no case where both"):
        paired_block_bootstrap(np.full(4, np.nan), np.zeros(4))
    with pytest.raises(ConfigError, match="block must lie in"):
        paired_block_bootstrap(np.zeros(4), np.zeros(4), block=5)
    with pytest.raises(ConfigError, match="level"):
        paired_block_bootstrap(np.zeros(4), np.zeros(4), level=95)
    with pytest.raises(ConfigError, match="n_boot"):
        paired_block_bootstrap(np.zeros(4), np.zeros(4), n_boot=0)


def test_format_interval():
    res = {"mean_diff": -0.0123, "lo": -0.0201, "hi": -0.0041, "win_rate": 0.634}
    assert format_interval(res) == "-0.012 [-0.020, -0.004], wins 63%"
    assert format_interval(res, "K") == "-0.012 [-0.020, -0.004] K, wins 63%"
    assert format_interval({**res, "mean_diff": 12.3, "lo": 10.1, "hi": 14.6}, digits=1) == (
        "12.3 [10.1, 14.6], wins 63%")
