"""Real series shipped inside PyPI packages (statsmodels, sktime, pmdarima): loaders, seasonal naive, a tiny run."""
import numpy as np
import pandas as pd
import pytest

from gendiff.domains import timeseries
from gendiff.domains.timeseries import real_series, tabular
from gendiff.errors import ConfigError


def test_co2_weekly_as_shipped():
    pytest.importorskip("statsmodels")
    df = real_series.co2_weekly()
    assert df.shape == (2284, 1) and int(df["co2"].isna().sum()) == 59
    assert str(df.index[0].date()) == "1958-03-29" and str(df.index[-1].date()) == "2001-12-29"
    ds = timeseries.from_pandas(df)
    assert ds.sizes["time"] == 2284 and pd.Timedelta(np.diff(ds["time"].values[:2])[0]) == pd.Timedelta(days=7)
    assert 310 < float(ds["value"].min()) and float(ds["value"].max()) < 380


def test_gb_solar_week_without_the_api():
    pytest.importorskip("sktime")
    df = real_series.gb_solar()
    assert df.shape == (289, 1) and df.index.tz is None
    assert (np.diff(df.index.values) == np.timedelta64(30, "m")).all()
    assert df["solar_gen"].between(0, 1).all() and df["solar_gen"].max() > 0.3


def test_taylor_demand_dates():
    pytest.importorskip("pmdarima")
    df = real_series.taylor_demand()
    assert df.shape == (4032, 1) and df.index[0] == pd.Timestamp("2000-06-05") and df.index[0].day_name() == "Monday"
    assert df.index[-1] == pd.Timestamp("2000-08-27 23:30") and df["demand"].notna().all()
    with pytest.raises(ConfigError, match="known: co2, solar, taylor"):
        real_series.load("airline")


def test_sunspots_and_elnino_as_shipped():
    pytest.importorskip("statsmodels")
    spots = real_series.load("sunspots")
    assert spots.shape == (309, 1) and spots.index[0] == pd.Timestamp("1700-01-01")
    assert spots.index[-1] == pd.Timestamp("2008-01-01") and spots["sunspots"].iloc[0] == 5.0
    sst = real_series.load("elnino")
    assert sst.shape == (732, 1) and sst.index[0] == pd.Timestamp("1950-01-01")
    assert sst.index[-1] == pd.Timestamp("2010-12-01")
    assert sst["sst"].iloc[1] == 24.20 and sst["sst"].iloc[-1] == 22.07  # Feb 1950, Dec 2010 of the table


def test_seasonal_naive_reaches_back_whole_seasons():
    idx = pd.date_range("2024-01-01", periods=40, freq="h")
    ds = tabular.from_pandas(pd.DataFrame({"a": np.arange(40.0), "b": 100 + np.arange(40.0)}, index=idx))
    fc = real_series.seasonal_naive(ds, idx[[10, 30]], n_lead=7, season=3)
    assert dict(fc.sizes) == {"init_time": 2, "member": 1, "lead_time": 7, "series": 2}
    # lead h uses the step init + h - 3 * ceil(h / 3): leads 1-3 -> init-2..init, 4-6 -> init-2..init, 7 -> init-2
    expected = 30 + np.array([-2, -1, 0, -2, -1, 0, -2])
    np.testing.assert_array_equal(fc["value"].sel(series="a").values[1, 0], expected)
    np.testing.assert_array_equal(fc["value"].sel(series="b").values[1, 0], 100 + expected)
    assert (fc["valid_time"].values[0] == idx[11:18].values).all()
    early = real_series.seasonal_naive(ds, idx[[0]], n_lead=2, season=3)
    assert np.isnan(early["value"].values).all()  # one season back lies before the data
    with pytest.raises(ConfigError, match="season"):
        real_series.seasonal_naive(ds, idx[[10]], n_lead=2, season=0)


def test_tiny_run_on_weekly_co2_with_its_gaps(tmp_path):
    pytest.importorskip("statsmodels")
    df = real_series.co2_weekly()
    net = {"width": 8, "mults": [1, 2], "blocks_per_level": 1, "heads": 2, "dropout": 0.0}
    summary = timeseries.train(df, tmp_path / "run", context=26, horizon=4, net=net, max_steps=3, batch_size=8,
                               sample_steps=3, train_period=("1958-03-29", "1990-12-29"), progress=False)
    assert summary["step"] == 3 and summary["windows"] > 1000
    tidy = timeseries.forecast(tmp_path / "run", df, init_period=("1995-01-07", "1995-03-04"), init_every="28D",
                               members=2, lead=8, progress=False, quantiles=[0.5])
    assert len(tidy) == 3 * 8 and tidy["value"].between(340, 380).all()
    assert (tidy["lead_time"].unique() == pd.to_timedelta(np.arange(1, 9) * 7, unit="D")).all()
