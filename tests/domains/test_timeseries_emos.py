"""EMOS (Gneiting et al. 2005): minimum-CRPS non-homogeneous Gaussian regression, per lead and location."""
import numpy as np
import pandas as pd
import properscoring as ps
import pytest
import xarray as xr

from gendiff.domains.timeseries import emos
from gendiff.errors import ConfigError, DataError

TRUE = {"a": 1.0, "b": 0.8, "c": 0.5, "d": 2.0}


def test_gaussian_crps_is_properscoring():
    rng = np.random.default_rng(0)
    obs, mu = rng.normal(0, 3, 500), rng.normal(0, 3, 500)
    sigma = np.exp(rng.normal(0, 1.5, 500))
    np.testing.assert_allclose(emos.crps_gaussian(obs, mu, sigma), ps.crps_gaussian(obs, mu, sigma), rtol=0,
                               atol=1e-10)
    assert emos.crps_gaussian(0.0, 0.0, 1.0) == pytest.approx((np.sqrt(2) - 1) / np.sqrt(np.pi), abs=1e-12)


def emos_cases(n, groups, seed=1):
    """Ensemble means and variances, and observations drawn from N(a + b m, c + d s2) with the TRUE parameters."""
    rng = np.random.default_rng(seed)
    m = rng.normal(5, 2, (n, *groups))
    s2 = rng.gamma(2, 0.5, (n, *groups))
    y = TRUE["a"] + TRUE["b"] * m + np.sqrt(TRUE["c"] + TRUE["d"] * s2) * rng.standard_normal((n, *groups))
    return m, s2, y


def test_fit_recovers_the_parameters_and_is_each_groups_own_minimum():
    m, s2, y = emos_cases(5000, (2, 2))
    p = emos.fit_emos(m, s2, y)
    assert p.shape == (4, 2, 2)
    for k, tol in zip("abcd", (0.15, 0.04, 0.15, 0.25), strict=True):
        np.testing.assert_allclose(p[emos.PARAMS.index(k)], TRUE[k], atol=tol)
    # the joint fit of the groups is each group's own fit, and a shift / rescale of the data maps the parameters
    one = emos.fit_emos(m[:, 0, 1], s2[:, 0, 1], y[:, 0, 1])
    np.testing.assert_allclose(one, p[:, 0, 1], rtol=1e-4, atol=1e-5)
    scaled = emos.fit_emos(100 + 10 * m[:, 0, 1], 100 * s2[:, 0, 1], 100 + 10 * y[:, 0, 1])
    np.testing.assert_allclose(scaled, [100 + 10 * one[0] - 100 * one[1], one[1], 100 * one[2], one[3]], rtol=1e-4)


def test_missing_cases_and_too_few():
    m, s2, y = emos_cases(300, (3,))
    y[::3, 0] = np.nan
    y[4:, 2] = np.nan  # four cases left: the minimum
    y[3:, 1] = np.nan  # three: too few
    p = emos.fit_emos(m, s2, y)
    assert np.isfinite(p[:, 0]).all() and np.isnan(p[:, 1]).all() and np.isfinite(p[:, 2]).all()
    with pytest.raises(DataError, match="one shape"):
        emos.fit_emos(m, s2[:10], y)


def test_forecast_samples_and_quantiles():
    params = np.array([[1.0], [0.8], [0.5], [2.0]])
    m, s2 = np.full((3, 1), 2.0), np.full((3, 1), 1.0)
    draws = emos.emos_forecast(params, m, s2, members=20000, seed=5)
    assert draws.shape == (20000, 3, 1)
    np.testing.assert_allclose(draws.mean(0), 2.6, atol=0.05)
    np.testing.assert_allclose(draws.std(0), np.sqrt(2.5), rtol=0.03)
    np.testing.assert_array_equal(draws, emos.emos_forecast(params, m, s2, members=20000, seed=5))
    q = emos.emos_quantiles(params, m, s2, [0.1, 0.5, 0.9])
    np.testing.assert_allclose(q[:, 0, 0], 2.6 + np.sqrt(2.5) * np.array([-1.2815515655, 0, 1.2815515655]))
    with pytest.raises(ConfigError):
        emos.emos_forecast(params, m, s2, members=0)


def ensemble_dataset(n_init, members=8, seed=0):
    """An hourly truth at 3 stations and a biased, under-dispersed ensemble forecast of it (init_time, member,
    lead_time, station): ensemble mean m and spread s chosen per case, observations from N(a + b m, c + d s2), so
    the raw ensemble is off by a + (b - 1) m in the mean and far too narrow."""
    rng = np.random.default_rng(seed)
    leads = pd.to_timedelta([6, 12], unit="h").to_numpy()
    init = pd.date_range("2024-01-01", periods=n_init, freq="D").to_numpy()
    shape = (n_init, len(leads), 3)
    m = rng.normal(0, 2, shape)  # the raw mean off by 1 - 0.2 m: +1 on average
    s2 = rng.gamma(2, 0.1, shape)
    y = TRUE["a"] + TRUE["b"] * m + np.sqrt(TRUE["c"] + TRUE["d"] * s2) * rng.standard_normal(shape)
    z = rng.standard_normal((n_init, members, len(leads), 3))
    z = (z - z.mean(1, keepdims=True)) / z.std(1, keepdims=True) if members > 1 else 0 * z  # mean m, variance s2
    ens = m[:, None] + np.sqrt(s2)[:, None] * z
    fc = xr.Dataset({"t2m": (("init_time", "member", "lead_time", "station"), ens)},
                    coords={"init_time": init, "member": np.arange(members), "lead_time": leads,
                            "station": ["x", "y", "z"]})
    fc = fc.assign_coords(valid_time=fc["init_time"] + fc["lead_time"])
    valid = fc["valid_time"].values.ravel()
    times = pd.date_range(valid.min(), valid.max(), freq="h")
    obs = np.full((len(times), 3), np.nan)
    obs[times.get_indexer(valid)] = y.reshape(-1, 3)
    truth = xr.Dataset({"t2m": (("time", "station"), obs)}, coords={"time": times, "station": ["x", "y", "z"]})
    return fc, truth, y


def test_calibrate_dataset_recovers_parameters_and_lowers_crps():
    train_fc, train_truth, _ = ensemble_dataset(3000, seed=0)
    params = emos.emos_params(train_fc, train_truth)
    assert params["t2m"].dims == ("param", "lead_time", "station")
    for k, tol in zip("abcd", (0.15, 0.04, 0.15, 0.4), strict=True):
        np.testing.assert_allclose(params["t2m"].sel(param=k).values, TRUE[k], atol=tol)
    test_fc, test_truth, y = ensemble_dataset(400, seed=1)
    test_fc = test_fc.assign_coords(init_time=test_fc["init_time"].values + np.timedelta64(4000, "D"))
    test_truth = test_truth.assign_coords(time=test_truth["time"].values + np.timedelta64(4000, "D"))
    cal = emos.emos_calibrate(train_fc, train_truth, test_fc, members=50, seed=2)
    assert cal["t2m"].dims == ("init_time", "member", "lead_time", "station")
    assert cal.sizes["member"] == 50 and np.isfinite(cal["t2m"].values).all()
    np.testing.assert_array_equal(cal["valid_time"].values, test_fc["valid_time"].values)
    raw = ps.crps_ensemble(y, test_fc["t2m"].transpose("init_time", "lead_time", "station", "member").values).mean()
    post = ps.crps_ensemble(y, cal["t2m"].transpose("init_time", "lead_time", "station", "member").values).mean()
    assert post < 0.8 * raw
    again = emos.emos_calibrate(train_fc, train_truth, test_fc, members=50, seed=2)
    xr.testing.assert_identical(again, cal)
    with pytest.raises(DataError, match="lead time"):
        emos.emos_calibrate(train_fc, train_truth, test_fc.assign_coords(lead_time=test_fc["lead_time"] * 2))


def test_point_forecast_is_emos_without_spread():
    """One member (or no member dim): variance 0, the predictive N(a + b m, c)."""
    train_fc, train_truth, _ = ensemble_dataset(600, members=1, seed=3)
    params = emos.emos_params(train_fc.isel(member=0, drop=True), train_truth)
    assert np.isfinite(params["t2m"].values).all()
    assert np.allclose(params["t2m"].sel(param="b"), TRUE["b"], atol=0.1)


def test_past_window_emos_uses_only_verified_past_inits():
    """emos_past_system: each init is post-processed by a fit on the forecasts of the window before it whose every
    lead the init's time has verified; changing any later forecast (or the truth after the init) changes nothing."""
    from gendiff.domains.timeseries.comparison import emos_past_system, past_inits

    fc, truth, _ = ensemble_dataset(120, seed=4)
    test = fc.isel(init_time=slice(80, None))
    hist = fc.sel(init_time=past_inits(test, pd.Timedelta(days=30)))
    assert hist.sizes["init_time"] == 30 + 1 + 40  # the window, its longest lead (12 h: one more day), the test's
    out = emos_past_system(truth, hist, test, seed=3, window=pd.Timedelta(days=30))
    assert out["t2m"].dims == ("init_time", "member", "lead_time", "station") and out.sizes["member"] == 8
    t = test["init_time"].values[5]
    inits = hist["init_time"].values
    used = (inits >= t - np.timedelta64(30, "D")) & (inits + np.timedelta64(12, "h") <= t)
    assert used.sum() == 30  # the init of the day before verifies its 12 h lead before t
    ref = emos.emos_calibrate(hist.isel(init_time=np.flatnonzero(used)), truth, test.sel(init_time=[t]), seed=3 + 5)
    np.testing.assert_array_equal(out["t2m"].sel(init_time=t).values, ref["t2m"].isel(init_time=0).values)
    later = hist.copy(deep=True)
    later["t2m"].values[~used & (inits >= t)] += 100.0  # t's own forecast and every later one
    again = emos_past_system(truth, later, test.sel(init_time=[t]), seed=3 + 5, window=pd.Timedelta(days=30))
    np.testing.assert_array_equal(again["t2m"].values, ref["t2m"].values)


def test_past_window_emos_follows_a_changing_bias():
    """A forecaster whose bias jumps by 5 halfway: the cross-fitted EMOS splits the difference for every init, the
    past-window EMOS catches up within its window, so after the jump plus a window it is near the truth."""
    from gendiff.domains.timeseries.comparison import emos_past_system, past_inits

    fc, truth, y = ensemble_dataset(200, seed=6)
    jump = fc["init_time"] >= fc["init_time"].values[100]
    fc["t2m"] = fc["t2m"] + 5.0 * jump
    test = fc.isel(init_time=slice(150, None))
    out = emos_past_system(truth, fc.sel(init_time=past_inits(test, pd.Timedelta(days=40))), test, seed=1,
                           window=pd.Timedelta(days=40))
    bias_past = (out["t2m"].mean("member").values - y[150:]).mean()
    cross = emos.emos_calibrate(fc.isel(init_time=slice(0, 150)), truth, test, seed=1)  # fitted across the jump
    bias_cross = (cross["t2m"].mean("member").values - y[150:]).mean()
    assert abs(bias_past) < 0.3 and bias_cross > 0.6  # measured: 0.08 and 0.95
