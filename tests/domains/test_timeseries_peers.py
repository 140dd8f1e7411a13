"""statsforecast peers (issue 29 item 3): AutoETS, AutoARIMA, MSTL, SeasonalNaive and Naive as ensembles in gendiff's
forecast layout, fitted once on the training period and forecast from the data up to each init."""
import sys

import numpy as np
import pandas as pd
import pytest
import xarray as xr

pytest.importorskip("statsforecast")

from gendiff.domains.timeseries import peers  # noqa: E402
from gendiff.errors import ConfigError, DataError  # noqa: E402

TRAIN = ("2024-01-01", "2024-01-07")
LEADS_H = (1, 2, 6, 24)


@pytest.fixture(scope="module")
def hourly():
    """Ten days of two hourly series with a daily cycle and noise, a gap in the training period and one at the
    first init;
    a forecast (3 inits, 4 members, leads 1, 2, 6, 24 h) in gendiff's layout to take the times from."""
    t = pd.date_range("2024-01-01", periods=24 * 10, freq="h")
    rng = np.random.default_rng(0)
    x = 10 + 3 * np.sin(2 * np.pi * np.arange(len(t)) / 24)[:, None] + rng.normal(0, 0.5, (len(t), 2))
    x[50:53, 0] = np.nan
    x[24 * 8, 1] = np.nan
    truth = xr.Dataset({"y": (("time", "series"), x)}, coords={"time": t, "series": ["a", "b"]})
    init = t[[24 * 8, 24 * 8 + 5, 24 * 9 - 6]]
    lead = pd.to_timedelta(LEADS_H, unit="h").to_numpy()
    fc = xr.Dataset({"y": (("init_time", "member", "lead_time", "series"), np.zeros((3, 4, len(lead), 2)))},
                    coords={"init_time": init.to_numpy(), "member": np.arange(4), "lead_time": lead,
                            "series": ["a", "b"]})
    fc = fc.assign_coords(valid_time=fc["init_time"] + fc["lead_time"])
    return truth, fc


@pytest.fixture(scope="module")
def moments(hourly):
    truth, fc = hourly
    return peers.peer_moments(truth, fc, TRAIN, ["seasonal_naive", "naive", "auto_ets"], season_length=24)


def test_seasonal_naive_is_one_season_back_and_naive_the_last_value(hourly, moments):
    truth, fc = hourly
    x = truth["y"].values
    tidx = pd.DatetimeIndex(truth["time"].values)
    sn, nv = moments["seasonal_naive"][0]["y"].values, moments["naive"][0]["y"].values  # (init, lead, series)
    for k, it in enumerate(fc["init_time"].values):
        i = tidx.get_loc(it)
        for j, h in enumerate(LEADS_H):
            for c in range(2):
                if np.isfinite(x[i + h - 24, c]) and np.isfinite(x[i, c]):
                    assert sn[k, j, c] == x[i + h - 24, c]  # exactly: the value one season back
                    assert nv[k, j, c] == x[i, c]  # the last value
    # series b is missing at the first init: its history is filled from itself only, the last valid value held
    # (no look at the value after the init)
    i = tidx.get_loc(fc["init_time"].values[0])
    assert np.isnan(x[i, 1]) and np.isfinite(x[i + 1, 1])
    np.testing.assert_array_equal(nv[0, :, 1], x[i - 1, 1])
    assert sn[0, LEADS_H.index(24), 1] == x[i - 1, 1]


def test_moments_are_statsforecast_own(hourly, moments):
    """The mean and sigma are the library's: AutoETS fitted on the (gap-filled) training period, forward on the
    history up to the init; sigma from the 80% interval."""
    from statsforecast.models import AutoETS

    truth, fc = hourly
    x = truth["y"].values[:, 0]
    train = peers.fill_gaps(x[: 24 * 7])
    assert np.isfinite(train).all() and train[51] == pytest.approx((x[49] + x[53]) / 2)
    model = AutoETS(season_length=24).fit(train)
    i = 24 * 8 + 5
    out = model.forward(y=peers.fill_gaps(x[: i + 1]), h=24, level=[80])
    mean, sigma = moments["auto_ets"]
    idx = np.array(LEADS_H) - 1
    np.testing.assert_allclose(mean["y"].values[1, :, 0], out["mean"][idx], rtol=1e-10)
    np.testing.assert_allclose(sigma["y"].values[1, :, 0], (out["hi-80"] - out["lo-80"])[idx] / (2 * 1.2815515655),
                               rtol=1e-8)
    assert (sigma["y"].values > 0).all()


def test_forecasts_layout_and_members_match_the_moments(hourly):
    truth, fc = hourly
    members = 400
    out = peers.peer_forecasts(truth, fc, TRAIN, ["auto_ets", "mstl", "seasonal_naive"], members=members,
                               season_length=24, seed=3)
    mom = peers.peer_moments(truth, fc, TRAIN, ["auto_ets", "mstl"], season_length=24)
    for s in ("auto_ets", "mstl", "seasonal_naive"):
        f = out[s]
        assert f["y"].dims == ("init_time", "member", "lead_time", "series")
        assert f["y"].shape == (3, members, len(LEADS_H), 2)
        np.testing.assert_array_equal(f["lead_time"].values, fc["lead_time"].values)
        np.testing.assert_array_equal(f["init_time"].values, fc["init_time"].values)
        np.testing.assert_array_equal(f["valid_time"].values, fc["valid_time"].values)
        assert list(f["series"].values) == ["a", "b"] and np.isfinite(f["y"].values).all()
        assert f.attrs["peer"] == s
    for s, (mean, sigma) in mom.items():
        draws = out[s]["y"]
        z = (draws.mean("member") - mean["y"]) / (sigma["y"] / np.sqrt(members))
        assert float(abs(z).max()) < 4.5  # the members' mean is the library's mean within sampling error
        ratio = draws.std("member") / sigma["y"]
        assert float(abs(ratio - 1).max()) < 0.2
    again = peers.peer_forecasts(truth, fc, TRAIN, ["seasonal_naive"], members=members, seed=3)
    xr.testing.assert_identical(again["seasonal_naive"], out["seasonal_naive"])  # seeded, per system


def test_arima_and_mstl_with_several_seasons():
    """6-hourly data with a daily cycle (season 4): AutoARIMA, and MSTL with a daily and a weekly season."""
    t = pd.date_range("2024-01-01", periods=4 * 40, freq="6h")
    rng = np.random.default_rng(1)
    x = 5 + np.sin(2 * np.pi * np.arange(len(t)) / 4)[:, None] + rng.normal(0, 0.3, (len(t), 1))
    truth = xr.Dataset({"v": (("time", "site"), x)}, coords={"time": t, "site": [7]})
    fc = xr.Dataset({"v": (("init_time", "lead_time", "site"), np.zeros((2, 2, 1)))},
                    coords={"init_time": t[[120, 130]], "lead_time": pd.to_timedelta([6, 24], unit="h"), "site": [7]})
    out = peers.peer_forecasts(truth, fc, ("2024-01-01", "2024-01-28"), ["auto_arima", "mstl"], members=5,
                               season_length=[4, 28])
    for f in out.values():
        assert f["v"].dims == ("init_time", "member", "lead_time", "site") and np.isfinite(f["v"].values).all()
        # the daily cycle is forecast: lead 24 h (the same phase as the init) far from lead 6 h's phase
        assert abs(float(f["v"].isel(init_time=0, lead_time=1).mean() - x[120 + 4, 0])) < 1.5


def test_missing_statsforecast_is_one_config_error(hourly, monkeypatch):
    truth, fc = hourly
    monkeypatch.setitem(sys.modules, "statsforecast", None)
    monkeypatch.setitem(sys.modules, "statsforecast.models", None)
    with pytest.raises(ConfigError, match="pip install statsforecast") as err:
        peers.peer_forecasts(truth, fc, TRAIN, ["naive"], members=2)
    assert "\n" not in str(err.value)


def test_bad_arguments(hourly):
    truth, fc = hourly
    with pytest.raises(ConfigError, match="unknown"):
        peers.peer_forecasts(truth, fc, TRAIN, ["prophet"], members=2)
    with pytest.raises(ConfigError, match="season_length"):
        peers.peer_forecasts(truth, fc, TRAIN, ["seasonal_naive"], members=2, season_length=0)
    late = fc.assign_coords(init_time=fc["init_time"].values + np.timedelta64(30, "D"))
    with pytest.raises(DataError, match="not in the truth"):
        peers.peer_forecasts(truth, late, TRAIN, ["naive"], members=2)
