"""ensquantile.ensemble_quantile: Weibull positions inside the members (numpy's method='weibull'), a normal tail
beyond them, NaN handling, and the coverage of a calibrated finite ensemble."""
import numpy as np
import pytest

from gendiff.domains.timeseries.ensquantile import ensemble_quantile


def test_inside_the_members_it_is_numpys_weibull_quantile():
    x = np.random.default_rng(0).normal(size=(7, 3, 16))
    got = ensemble_quantile(x, [0.1, 0.5, 0.9])
    np.testing.assert_allclose(got, np.quantile(x, [0.1, 0.5, 0.9], axis=-1, method="weibull"), rtol=1e-12)
    np.testing.assert_allclose(ensemble_quantile(np.moveaxis(x, -1, 0), 0.3, axis=0),
                               np.quantile(x, 0.3, axis=-1, method="weibull"), rtol=1e-12)


def test_beyond_the_members_a_normal_tail_continues_from_the_outermost():
    from scipy.stats import norm

    x = np.array([0.0, 1.0, 2.0, 3.0])  # M = 4: members mark the 0.2 ... 0.8 quantiles
    s = x.std(ddof=1)
    lo, hi = ensemble_quantile(x, [0.025, 0.975])
    assert lo == pytest.approx(0.0 + s * (norm.ppf(0.025) - norm.ppf(0.2)))
    assert hi == pytest.approx(3.0 + s * (norm.ppf(0.975) - norm.ppf(0.8)))
    assert lo < 0.0 and hi > 3.0


def test_nan_members_are_left_out_or_poison_the_case():
    x = np.array([[0.0, 1.0, np.nan, 2.0, 3.0], [np.nan] * 5])
    got = ensemble_quantile(x, 0.4)
    assert got[0] == pytest.approx(np.quantile([0.0, 1.0, 2.0, 3.0], 0.4, method="weibull"))
    assert np.isnan(got[1])
    assert np.isnan(ensemble_quantile(x, 0.4, skipna=False)).all()
    assert ensemble_quantile(np.array([[5.0]]), [0.05, 0.95]).tolist() == [[5.0], [5.0]]  # one member: no spread
    with pytest.raises(ValueError, match="levels"):
        ensemble_quantile(x, [0.0, 0.5])


@pytest.mark.parametrize("members", [16, 32])  # 8 members: 95% covers 0.92 (the tail uses their std)
def test_a_calibrated_finite_ensemble_covers_the_nominal_level(members):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(40000, members)), rng.normal(size=40000)
    for level in (0.8, 0.95):
        lo, hi = ensemble_quantile(x, [(1 - level) / 2, (1 + level) / 2])
        assert ((y >= lo) & (y <= hi)).mean() == pytest.approx(level, abs=0.03)
    lo, hi = np.quantile(x, [0.1, 0.9], axis=-1)  # numpy's default: (M - 1) 0.8 / (M + 1), what this replaces
    assert ((y >= lo) & (y <= hi)).mean() < 0.8 - 0.04
