"""Calendar steps: monthly (month starts and ends), quarterly and yearly series train with the defaults, forecast the
real calendar months (wide frames, tidy tables, statsforecast's long tables, the CLI) and evaluate against them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from gendiff.cli import main
from gendiff.domains import timeseries
from gendiff.domains.timeseries import frequency, tabular
from gendiff.domains.timeseries.data import open_data
from gendiff.domains.timeseries.timeaxis import MONTH, CalendarStep, add_steps, parse_duration, time_step
from gendiff.errors import ConfigError, DataError

torch.set_num_threads(1)
TINY = {
    "max_steps": 2,
    "batch_size": 4,
    "net": {"width": 8, "mults": [1]},
    "sample_steps": 2,
    "progress": False,
    "calibration": 0.0,
}
TRAIN = ("2000-01-01", "2009-12-31")
FAST = {"members": 4, "steps": 2, "progress": False}


def seasonal(n: int = 150, freq: str = "MS", start: str = "2000-01-01", seed: int = 0) -> pd.DataFrame:
    """Two series with a yearly cycle on a calendar step (month starts by default)."""
    rng = np.random.default_rng(seed)
    t = pd.date_range(start, periods=n, freq=freq)
    cycle = 3 * np.sin(2 * np.pi * (t.month.to_numpy() - 1) / 12)
    y = 10 + cycle + np.cumsum(rng.normal(0, 0.2, n))
    return pd.DataFrame({"a": y, "b": 2 * y + rng.normal(0, 0.3, n)}, index=pd.DatetimeIndex(t, name="time"))


@pytest.fixture(scope="module")
def monthly(tmp_path_factory):
    df = seasonal()
    out = tmp_path_factory.mktemp("monthly") / "run"
    timeseries.train(df, out, train_period=TRAIN, **TINY)
    return df, out


def test_monthly_frame_trains_with_the_defaults_a_year_ahead(monthly):
    _, run = monthly
    config = json.loads((run / "config.json").read_text())
    assert config["time_step"] == "MS" and "time_step_seconds" not in config
    assert config["horizon_steps"] == 12 and config["ar_seasons"] == [12] and config["context_steps"] == 24
    why = config["defaults"]
    assert why["seasons"]["candidates"]["12"]["kept"] and why["step"].startswith("MS")
    assert json.loads((run / "card.json").read_text())["defaults"] == why


def test_forecast_valid_times_are_the_next_calendar_months(monthly):
    df, run = monthly
    fc = timeseries.forecast(run, df, init_period="2010-06-01:2011-06-01", output="xarray", **FAST)
    assert fc.sizes["lead_time"] == 12 and fc.sizes["init_time"] == 2  # lead and init_every: the run's horizon
    assert (pd.to_timedelta(fc["lead_time"].values) == pd.to_timedelta(np.arange(1, 13) * MONTH)).all()
    want = pd.date_range("2010-07-01", periods=12, freq="MS")
    assert (fc["valid_time"].values[0] == want.as_unit("ns").values).all()
    assert (fc["valid_time"].values[1] == pd.date_range("2011-07-01", periods=12, freq="MS").as_unit("ns").values).all()
    tidy = timeseries.forecast(run, df, init_times=["2010-12-01"], lead="6MS", **FAST)
    assert list(tidy.columns) == ["init_time", "lead_time", "valid_time", "series", "member", "value"]
    assert sorted(tidy["valid_time"].unique()) == list(pd.date_range("2011-01-01", periods=6, freq="MS"))
    back = tabular.from_tidy(tidy)
    assert (back["valid_time"].values[0] == pd.date_range("2011-01-01", periods=6, freq="MS").as_unit("ns")).all()


def test_long_table_forecasts_each_series_from_its_own_end(tmp_path):
    rng = np.random.default_rng(3)
    rows = []
    for k, (start, n) in enumerate((("2001-01-01", 120), ("2003-05-01", 90))):
        ds = pd.date_range(start, periods=n, freq="MS")
        y = 10 * (k + 1) + 3 * np.sin(2 * np.pi * ds.month.to_numpy() / 12) + rng.normal(0, 0.3, n)
        rows.append(pd.DataFrame({"unique_id": f"s{k}", "ds": ds, "y": y}))
    df = pd.concat(rows, ignore_index=True)
    timeseries.train(df, tmp_path / "run", **TINY)
    fc = timeseries.forecast(tmp_path / "run", df, h=6, **FAST)
    last = df.groupby("unique_id")["ds"].max()
    assert set(fc["unique_id"]) == {"s0", "s1"}
    for uid, block in fc.groupby("unique_id"):
        assert (block["cutoff"] == last[uid]).all()
        want = pd.date_range(last[uid], periods=7, freq="MS")[1:]
        assert (pd.DatetimeIndex(block["ds"]) == want).all()


def test_month_end_series_stay_on_month_ends(tmp_path):
    df = seasonal(100, "ME", "2000-01-31")
    assert time_step(tabular.from_pandas(df)) == CalendarStep(1, end=True)
    timeseries.train(df, tmp_path / "run", train_period=("2000-01", "2006-12"), **TINY)  # whole months, as pandas
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["time_step"] == "ME" and config["train_period"] == ["2000-01-31 00:00:00", "2006-12-31 00:00:00"]
    fc = timeseries.forecast(tmp_path / "run", df, init_times=["2007-11-30"], lead=4, output="xarray", **FAST)
    want = pd.to_datetime(["2007-12-31", "2008-01-31", "2008-02-29", "2008-03-31"])  # a leap February
    assert (fc["valid_time"].values[0] == want.values).all()


def test_quarterly_series_take_eight_quarters_and_a_season_of_four(tmp_path):
    df = seasonal(80, "QS", "1990-01-01")
    timeseries.train(df, tmp_path / "run", train_period=("1990-01-01", "2007-12-31"), **TINY)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["time_step"] == "QS" and config["horizon_steps"] == 8
    assert list(config["defaults"]["seasons"]["candidates"]) == ["4"]
    fc = timeseries.forecast(tmp_path / "run", df, init_times=["2008-01-01"], output="xarray", **FAST)
    assert (fc["valid_time"].values[0] == pd.date_range("2008-04-01", periods=8, freq="QS").as_unit("ns")).all()


def test_evaluate_scores_the_real_months(monthly, tmp_path):
    df, run = monthly
    fc = timeseries.forecast(run, df, init_period="2010-06-01:2011-06-01", output="xarray", **FAST)
    records = timeseries.evaluate(fc, df, systems=["model", "persistence"], intervals=False)
    model = [r for r in records if r["system"] == "model"]
    assert len(model) == 12 and model[0]["lead_time_hours"] == pytest.approx(MONTH.total_seconds() / 3600)
    truth = df.reindex(pd.DatetimeIndex(fc["valid_time"].values[:, 0]))  # lead 1: July 2010 and July 2011
    ens = fc["value"].isel(lead_time=0).transpose("init_time", "series", "member").values
    y = truth[["a", "b"]].to_numpy()[..., None]
    m = ens.shape[-1]  # the fair CRPS (Ferro 2014) by hand
    direct = np.abs(ens - y).mean(-1) - np.abs(ens[..., :, None] - ens[..., None, :]).sum((-1, -2)) / (2 * m * (m - 1))
    assert model[0]["crps"] == pytest.approx(float(np.mean(direct)), rel=1e-6)
    path = tmp_path / "fc.csv"
    tabular.write_table(tabular.to_tidy(fc), path)
    again = timeseries.evaluate(str(path), df, train_period=TRAIN, systems=["model", "persistence"], intervals=False)
    assert [r["crps"] for r in again] == pytest.approx([r["crps"] for r in records])
    no_valid = tabular.to_tidy(fc).drop(columns="valid_time")  # nominal leads only: the truth's months decide
    third = timeseries.evaluate(no_valid, df, train_period=TRAIN, systems=["model"], intervals=False)
    assert [r["crps"] for r in third] == pytest.approx([r["crps"] for r in model])


def test_cli_monthly_csv_train_forecast_evaluate(tmp_path, capsys):
    df = seasonal(150)
    csv = tmp_path / "monthly.csv"
    df.to_csv(csv)
    run, out = tmp_path / "run", tmp_path / "fc.csv"
    train = f"train timeseries --data {csv} --out {run} --train-period 2000-01:2009-12 --steps 2 --batch-size 4"
    assert main([*train.split(), "--width", "8", "--calibration", "0", "--quiet"]) == 0
    assert json.loads((run / "config.json").read_text())["horizon_steps"] == 12
    forecast = f"forecast timeseries --run {run} --data {csv} --out {out} --init-period 2011-01-01:2011-01-01"
    assert main([*forecast.split(), "--members", "3", "--steps", "2", "--quiet"]) == 0  # no --lead: the horizon
    fc = pd.read_csv(out, parse_dates=["init_time", "valid_time"])
    assert sorted(fc["valid_time"].unique()) == list(pd.date_range("2011-02-01", periods=12, freq="MS"))
    capsys.readouterr()
    evaluate = f"evaluate timeseries --forecast {out} --truth {csv} --json --train-period 2000-01:2009-12"
    assert main([*evaluate.split(), "--systems", "model,persistence"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert len(records) == 24 and all(r["crps"] is not None for r in records)


def test_wine_sales_keep_the_yearly_season(tmp_path):
    pytest.importorskip("pmdarima")
    from gendiff.domains.timeseries import real_series

    df = real_series.load("wine")
    assert df.shape == (176, 1) and df.index[-1] == pd.Timestamp("1994-08-01")
    timeseries.train(df, tmp_path / "run", train_period=("1980-01-01", "1991-12-31"), **TINY)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["horizon_steps"] == 12 and config["ar_seasons"] == [12]
    naive = real_series.seasonal_naive(tabular.from_pandas(df), ["1992-12-01"], n_lead=3, season=12)
    assert (naive["valid_time"].values[0] == pd.date_range("1993-01-01", periods=3, freq="MS").as_unit("ns")).all()
    np.testing.assert_array_equal(naive["value"].values[0, 0, :, 0], df["wine"].loc["1992-01-01":"1992-03-01"])


def test_irregular_and_mismatched_steps_are_one_line_errors(monthly):
    df, run = monthly
    ds = tabular.from_pandas(df).isel(time=[0, 1, 2, 4, 5, 6])  # a month missing from a Dataset
    with pytest.raises(DataError, match=r"f.nc: 'time' step is irregular at index 3"):
        open_data(ds, name="f.nc")
    mixed = pd.DataFrame(
        {"a": np.arange(4.0)}, index=pd.to_datetime(["2024-01-01", "2024-02-01", "2024-02-08", "2024-03-01"])
    )
    with pytest.raises(DataError, match=r"obs.csv: irregular time step at 2024-02-08 00:00:00 \(row 2\)"):
        tabular.from_pandas(mixed, name="obs.csv")
    hourly = pd.DataFrame(
        {"a": np.arange(60.0), "b": np.arange(60.0)}, index=pd.date_range("2024-01-01", periods=60, freq="h")
    )
    with pytest.raises(DataError, match=r"time step 0 days 01:00:00 differs from the model's MS"):
        timeseries.forecast(run, hourly, init_times=["2024-01-03"], **FAST)


def test_calendar_steps_count_months():
    step = CalendarStep(1)
    given = (12, "12", "12MS", "1YS", "4QS", "2 years")
    assert [parse_duration(x, step, "lead") for x in given] == [12, 12, 12, 12, 12, 24]
    with pytest.raises(ConfigError, match="lead: '24h' is no number of steps"):
        parse_duration("24h", step, "lead")
    with pytest.raises(ConfigError, match="not a multiple"):
        parse_duration("1MS", CalendarStep(3), "lead")
    assert CalendarStep.parse("QE-DEC") == CalendarStep(3, True) and CalendarStep.parse("1h") is None
    aliases = [CalendarStep(m, e).alias for m, e in ((1, False), (1, True), (3, False), (12, True))]
    assert aliases == ["MS", "ME", "QS", "YE"]
    ends = add_steps(np.datetime64("2023-11-30T06:00"), np.arange(4), CalendarStep(1, True))
    assert list(pd.DatetimeIndex(ends).strftime("%m-%d %H")) == ["11-30 06", "12-31 06", "01-31 06", "02-29 06"]
    assert frequency.default_horizon(CalendarStep(1)) == 12 and frequency.candidate_seasons(CalendarStep(1)) == [12]
    assert frequency.default_horizon(CalendarStep(3)) == 8 and frequency.candidate_seasons(CalendarStep(3)) == [4]
    assert frequency.default_horizon(CalendarStep(12)) == 8 and frequency.candidate_seasons(CalendarStep(12)) == []
    years = xr.Dataset(
        {"v": ("time", np.arange(4.0))},
        coords={"time": pd.to_datetime(["2021-01-01", "2022-01-01", "2023-01-01", "2024-01-01"])},
    )
    assert time_step(years) == CalendarStep(12)  # 365-day gaps, but years: the next is 2025-01-01


def test_yearly_data_take_their_own_cycle_from_the_acf():
    """No calendar season at a yearly step: the sunspots' 11-year cycle is found in the training years, and the best
    of many lags of a random walk is not taken for a season."""
    from gendiff.domains.timeseries.real_series import sunspots_yearly

    values = sunspots_yearly().loc[:"1950"].to_numpy(np.float64)
    season, why = frequency.natural_season(values)
    assert season == 11 and why["acf"] > 0.4
    walks = [frequency.natural_season(np.random.default_rng(s).normal(size=(120, 1)).cumsum(0))[0] for s in range(40)]
    assert walks.count(None) >= 38
    ds = xr.Dataset({"value": (("time", "series"), values)},
                    coords={"time": pd.date_range("1700-01-01", periods=len(values), freq="YS"), "series": ["s"]})
    _, seasons, why = frequency.choose(ds, np.arange(len(values)), CalendarStep(12), None, "auto")
    assert seasons == [11] and why["seasons"]["natural"]["kept"]
