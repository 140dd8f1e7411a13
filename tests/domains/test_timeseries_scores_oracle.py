"""Ensemble scores against independent oracles on seeded random ensembles: scoringrules (fair / standard CRPS, energy
score, quantile score, quantile CRPS), properscoring (standard CRPS), brute-force O(M^2) double loops (fair and
standard CRPS, energy score), and a re-implementation of GluonTS's CRPS-sum (m_sum_mean_wQuantileLoss) from its
definition, item by item and quantile by quantile (gluonts itself is not installed)."""
from __future__ import annotations

import numpy as np
import properscoring
import pytest
import scoringrules as sr
import xarray as xr

from gendiff.domains.timeseries import probabilistic as P
from gendiff.domains.timeseries import scores
from gendiff.errors import ConfigError, DataError

RTOL = 1e-10
ATOL = 1e-13  # exact cancellations: a two-member fair CRPS is 0 up to rounding when the obs lies between


def _uni(seed=0, cases=(4, 5), m=9):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(*cases, m)) * rng.uniform(0.5, 2.0, size=(*cases, 1)) + rng.normal(size=(*cases, 1))
    return x, rng.normal(size=cases)


def _multi(seed=0, cases=(6, 3), m=7, d=4):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(*cases, m, d)) + rng.normal(size=(*cases, 1, d))
    return x, rng.normal(size=(*cases, d)) + 0.5


def _crps_brute(x, y, fair):
    m = len(x)
    skill = sum(abs(xi - y) for xi in x) / m
    pairs = sum(abs(xi - xj) for xi in x for xj in x)
    return skill - pairs / (2 * (m * (m - 1) if fair else m * m))


def _es_brute(x, y, fair):
    m = len(x)
    skill = sum(np.sqrt(((xi - y) ** 2).sum()) for xi in x) / m
    pairs = sum(np.sqrt(((xi - xj) ** 2).sum()) for xi in x for xj in x)
    return skill - pairs / (2 * (m * (m - 1) if fair else m * m))


def _gluonts_crps_sum(samples, obs, quantiles=P.GLUONTS_QUANTILES):
    """GluonTS's definition spelled out: per item (case) the summed target and the SampleForecast of summed samples,
    Q_q = sorted_samples[int(np.round((num_samples - 1) q))], QuantileLoss = 2 sum |(Q - y)((y <= Q) - q)|,
    abs_target_sum = sum |y|; aggregate: sums over items, wQuantileLoss[q] = QuantileLoss / abs_target_sum, mean."""
    items_x = samples.reshape(-1, samples.shape[-2], samples.shape[-1])
    items_y = obs.reshape(-1, obs.shape[-1])
    total_loss = {q: 0.0 for q in quantiles}
    abs_target_sum = 0.0
    for xi, yi in zip(items_x, items_y, strict=True):
        target = float(np.sum(yi))
        summed = sorted(float(np.sum(member)) for member in xi)
        abs_target_sum += abs(target)
        for q in quantiles:
            forecast = summed[int(np.round((len(summed) - 1) * q))]
            total_loss[q] += 2.0 * abs((forecast - target) * (float(target <= forecast) - q))
    return float(np.mean([total_loss[q] / abs_target_sum for q in quantiles]))


# ---- univariate CRPS of scores.py against the oracles


@pytest.mark.parametrize("m", [2, 3, 10, 31])
def test_scores_crps_fair_matches_scoringrules_and_brute_force(m):
    x, y = _uni(m, m=m)
    ours = scores._crps_numpy(x, y, fair=True)
    np.testing.assert_allclose(ours, sr.crps_ensemble(y, x, estimator="fair", backend="numpy"), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(ours, sr.crps_ensemble(y, x, estimator="pwm", backend="numpy"), rtol=RTOL, atol=ATOL)
    brute = np.vectorize(lambda i, j: _crps_brute(x[i, j], y[i, j], True))(*np.indices(y.shape))
    np.testing.assert_allclose(ours, brute, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("m", [2, 5, 16])
def test_scores_crps_standard_matches_properscoring_scoringrules_and_brute_force(m):
    x, y = _uni(10 + m, m=m)
    ours = scores._crps_numpy(x, y, fair=False)
    np.testing.assert_allclose(ours, properscoring.crps_ensemble(y, x), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(ours, sr.crps_ensemble(y, x, estimator="nrg", backend="numpy"), rtol=RTOL, atol=ATOL)
    brute = np.vectorize(lambda i, j: _crps_brute(x[i, j], y[i, j], False))(*np.indices(y.shape))
    np.testing.assert_allclose(ours, brute, rtol=RTOL, atol=ATOL)


def test_scores_crps_ensemble_dataarray_matches_scoringrules():
    x, y = _uni(3, cases=(2, 6), m=8)
    fc = xr.DataArray(x, dims=("init_time", "lead_time", "member"))
    truth = xr.DataArray(y, dims=("init_time", "lead_time"))
    for fair, est in ((True, "fair"), (False, "nrg")):
        got = scores.crps_ensemble(fc, truth, "member", fair=fair)
        expected = sr.crps_ensemble(y, x, estimator=est, backend="numpy")
        np.testing.assert_allclose(got.values, expected, rtol=RTOL, atol=ATOL)


def test_scores_crps_with_ties_matches_properscoring():
    x = np.array([[0.0, 0.0, 1.0, 1.0, 1.0, 3.0]])
    y = np.array([1.0])
    np.testing.assert_allclose(scores._crps_numpy(x, y, False), properscoring.crps_ensemble(y, x), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(scores._crps_numpy(x, y, True), [_crps_brute(x[0], 1.0, True)], rtol=RTOL, atol=ATOL)


# ---- energy score


@pytest.mark.parametrize("fair,est", [(True, "fair"), (False, "nrg")])
@pytest.mark.parametrize("m,d", [(2, 3), (7, 4), (20, 2)])
def test_energy_score_matches_scoringrules_and_brute_force(fair, est, m, d):
    x, y = _multi(m * d, m=m, d=d)
    ours = P.energy_score(x, y, fair=fair)
    assert ours.shape == y.shape[:-1]
    np.testing.assert_allclose(ours, sr.es_ensemble(y, x, estimator=est, backend="numpy"), rtol=RTOL, atol=ATOL)
    brute = np.vectorize(lambda i, j: _es_brute(x[i, j], y[i, j], fair))(*np.indices(y.shape[:-1]))
    np.testing.assert_allclose(ours, brute, rtol=RTOL, atol=ATOL)


def test_energy_score_one_component_is_the_crps_and_one_member_the_euclidean_error():
    x, y = _uni(5, m=6)
    for fair in (True, False):
        np.testing.assert_allclose(P.energy_score(x[..., None], y[..., None], fair=fair),
                                   scores._crps_numpy(x, y, fair), rtol=RTOL, atol=ATOL)
    xm, ym = _multi(6, m=1, d=3)
    expected = np.sqrt(((xm[..., 0, :] - ym) ** 2).sum(-1))
    np.testing.assert_allclose(P.energy_score(xm, ym, fair=True), expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(P.energy_score(xm, ym, fair=False), expected, rtol=RTOL, atol=ATOL)


def test_energy_score_axes_dataarray_and_nan_cases():
    x, y = _multi(7)  # (6, 3, M, D), obs (6, 3, D)
    ref = P.energy_score(x, y)
    # members first, vector on axis 1: samples (M, D, 6, 3), obs (D, 6, 3)
    moved = P.energy_score(np.moveaxis(x, (2, 3), (0, 1)), np.moveaxis(y, 2, 0), member_axis=0, vector_axis=1)
    np.testing.assert_allclose(moved, ref, rtol=RTOL, atol=ATOL)
    fc = xr.DataArray(x, dims=("init_time", "lead_time", "member", "variable"))
    truth = xr.DataArray(y, dims=("init_time", "lead_time", "variable"))
    np.testing.assert_allclose(P.energy_score_da(fc, truth).transpose("init_time", "lead_time").values, ref,
                               rtol=RTOL, atol=ATOL)
    y2, x2 = y.copy(), x.copy()
    y2[0, 0, 1] = np.nan
    x2[1, 2, 3, 0] = np.nan
    got = P.energy_score(x2, y2)
    assert np.isnan(got[0, 0]) and np.isnan(got[1, 2])
    keep = np.ones(got.shape, bool)
    keep[0, 0] = keep[1, 2] = False
    np.testing.assert_allclose(got[keep], ref[keep], rtol=RTOL, atol=ATOL)


def test_energy_score_shape_errors():
    x, y = _multi(8)
    with pytest.raises(DataError, match=r"need obs of shape \(6, 3, 4\), got \(6, 3\)"):
        P.energy_score(x, y[..., 0])
    with pytest.raises(DataError, match="out of range"):
        P.energy_score(x, y, member_axis=7)
    with pytest.raises(DataError, match="same axis"):
        P.energy_score(x, y, member_axis=-1, vector_axis=3)
    with pytest.raises(DataError, match="no dim 'variable'"):
        P.energy_score_da(xr.DataArray(x, dims=("a", "b", "member", "var")),
                          xr.DataArray(y, dims=("a", "b", "var")))


# ---- CRPS-sum


@pytest.mark.parametrize("m", [5, 20, 100])
def test_crps_sum_quantile_form_matches_gluonts_definition(m):
    x, y = _multi(20 + m, cases=(8, 3), m=m, d=5)
    ours = P.crps_sum(x, y, form="quantile")
    assert ours == pytest.approx(_gluonts_crps_sum(x, y), rel=RTOL)
    # the same via scoringrules' quantile CRPS (2/|Q| sum pinball per case) on the GluonTS sample quantiles
    xs, ys = x.sum(-1).reshape(-1, m), y.sum(-1).reshape(-1)
    idx = [int(np.round((m - 1) * q)) for q in P.GLUONTS_QUANTILES]
    qf = np.sort(xs, axis=-1)[:, idx]
    per_case = sr.crps_quantile(ys, qf, np.asarray(P.GLUONTS_QUANTILES), backend="numpy")
    assert ours == pytest.approx(per_case.sum() / np.abs(ys).sum(), rel=RTOL)


@pytest.mark.parametrize("fair", [True, False])
def test_crps_sum_ensemble_form_matches_brute_force(fair):
    x, y = _multi(31, cases=(5, 4), m=9, d=3)
    items_x, items_y = x.reshape(-1, 9, 3), y.reshape(-1, 3)
    num = sum(_crps_brute(xi.sum(-1), yi.sum(), fair) for xi, yi in zip(items_x, items_y, strict=True))
    expected = num / np.abs(items_y.sum(-1)).sum()
    assert P.crps_sum(x, y, fair=fair) == pytest.approx(expected, rel=RTOL)
    if not fair:  # the standard CRPS of the summed ensemble, also by properscoring
        ps = properscoring.crps_ensemble(items_y.sum(-1), items_x.sum(-1)).sum() / np.abs(items_y.sum(-1)).sum()
        assert P.crps_sum(x, y, fair=False) == pytest.approx(ps, rel=RTOL)


def test_crps_sum_leaves_out_nan_cases_and_checks_arguments():
    x, y = _multi(32, cases=(10,), m=6, d=3)
    y2, x2 = y.copy(), x.copy()
    y2[2, 1] = np.nan
    x2[7, 0, 2] = np.nan
    keep = np.array([i not in (2, 7) for i in range(10)])
    for form in P.CRPS_SUM_FORMS:
        assert P.crps_sum(x2, y2, form=form) == pytest.approx(P.crps_sum(x[keep], y[keep], form=form), rel=RTOL)
    assert np.isnan(P.crps_sum(x, np.full_like(y, np.nan)))
    with pytest.raises(DataError, match="need obs of shape"):
        P.crps_sum(x, y[:, :2])
    with pytest.raises(ConfigError, match="form must be one of"):
        P.crps_sum(x, y, form="wql")


# ---- quantile loss, interval coverage, spread / skill


def test_quantile_loss_matches_scoringrules():
    rng = np.random.default_rng(40)
    y = rng.normal(size=(5, 6))
    levels = np.array([0.05, 0.25, 0.5, 0.9])
    qp = rng.normal(size=(5, 6, 4))
    ours = P.quantile_loss(qp, y, levels)
    assert ours.shape == (5, 6, 4)
    np.testing.assert_allclose(ours, sr.quantile_score(y[..., None], qp, levels, backend="numpy"), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(P.quantile_loss(qp[..., 2], y, 0.5), 0.5 * np.abs(y - qp[..., 2]), rtol=RTOL, atol=ATOL)
    y[0, 0] = np.nan
    assert np.isnan(P.quantile_loss(qp, y, levels)[0, 0]).all()
    with pytest.raises(DataError, match="need q_pred of shape"):
        P.quantile_loss(qp[..., :3], y, levels)
    with pytest.raises(DataError, match="differ"):
        P.quantile_loss(qp, y, 0.5)
    with pytest.raises(ConfigError, match=r"in \[0, 1\]"):
        P.quantile_loss(qp, y, [0.1, 0.2, 1.5, 0.3])


def test_interval_coverage_samples_and_quantiles():
    x, y = _uni(41, cases=(30, 4), m=19)
    lo, hi = np.quantile(x, [0.1, 0.9], axis=-1, method="weibull")  # ranks 2 and 18 of 19: inside the members
    expected = ((y >= lo) & (y <= hi)).mean()
    assert P.interval_coverage(x, y, 0.8) == pytest.approx(expected, rel=RTOL)
    levels = [0.1, 0.5, 0.9]
    qf = np.stack([lo, np.median(x, -1), hi], axis=-1)
    assert P.interval_coverage(qf, y, 0.8, quantiles=levels) == pytest.approx(expected, rel=RTOL)
    # members first
    assert P.interval_coverage(np.moveaxis(x, -1, 0), y, 0.8, member_axis=0) == pytest.approx(expected, rel=RTOL)
    y2 = y.copy()
    y2[:10] = np.nan
    sub = ((y[10:] >= lo[10:]) & (y[10:] <= hi[10:])).mean()
    assert P.interval_coverage(x, y2, 0.8) == pytest.approx(sub, rel=RTOL)
    # obs exchangeable with the M members: the bounds cover `level` on average (numpy's linear quantiles would
    # cover (M - 1) level / (M + 1): 0.71 for 80% of 16 members)
    rng = np.random.default_rng(42)
    cover = P.interval_coverage(rng.normal(size=(20000, 16)), rng.normal(size=20000), 0.8)
    assert cover == pytest.approx(0.8, abs=0.02)
    with pytest.raises(DataError, match="needs the 0.05 quantile"):
        P.interval_coverage(qf, y, 0.9, quantiles=levels)
    with pytest.raises(DataError, match="need obs of shape"):
        P.interval_coverage(x, y[:, :2], 0.8)
    with pytest.raises(ConfigError, match="level"):
        P.interval_coverage(x, y, 1.2)


def test_spread_skill_matches_scores_score_and_size_factor():
    x, y = _uni(43, cases=(12, 3), m=8)
    y[0, 1] = np.nan
    x[4, 2, 5] = np.nan
    ours = P.spread_skill(x, y)
    fc = xr.DataArray(x, dims=("init_time", "lead_time", "member"))
    truth = xr.DataArray(y, dims=("init_time", "lead_time"))
    ref = scores.score(fc, truth, keep_dims=())
    for k in ("spread", "rmse", "ssr"):
        assert ours[k] == pytest.approx(float(ref[k]), rel=RTOL)
    valid = np.isfinite(y) & np.isfinite(x).all(-1)
    spread = np.sqrt(np.mean([np.var(x[i, j], ddof=1) for i, j in zip(*np.nonzero(valid), strict=True)]))
    assert ours["spread"] == pytest.approx(spread, rel=RTOL)
    corrected = P.spread_skill(x, y, size_correction=True)
    assert corrected["spread"] == pytest.approx(ours["spread"] * np.sqrt(9 / 8), rel=RTOL)
    assert corrected["rmse"] == ours["rmse"]
    one = P.spread_skill(x[..., :1], y)
    assert one["spread"] == 0.0 and one["ssr"] == 0.0
    with pytest.raises(DataError, match="need obs of shape"):
        P.spread_skill(x, y.T)
