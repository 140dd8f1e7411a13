"""Issue 29: statsforecast's long tables in and out, defaults that follow the frequency, the held-out protocol."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from gendiff.cli import main
from gendiff.domains import timeseries
from gendiff.domains.timeseries import frequency
from gendiff.domains.timeseries.longformat import cross_validation
from gendiff.errors import ConfigError, DataError

torch.set_num_threads(1)
TINY = {"max_steps": 2, "batch_size": 4, "net": {"width": 8, "mults": [1]}, "sample_steps": 2, "progress": False,
        "calibration": 0.0}


def long_daily(n: int = 120, seed: int = 0) -> pd.DataFrame:
    """Three daily series with a weekly cycle, starting and ending on different days, one with a gap."""
    rng = np.random.default_rng(seed)
    rows = []
    for k, (start, length) in enumerate((("2021-01-01", n), ("2021-01-08", n - 10), ("2021-01-03", n - 20))):
        ds = pd.date_range(start, periods=length, freq="D")
        y = 10 * (k + 1) + 3 * np.sin(2 * np.pi * ds.dayofweek.to_numpy() / 7) + rng.normal(0, 0.3, length)
        frame = pd.DataFrame({"unique_id": f"s{k}", "ds": ds, "y": y})
        if k == 1:
            frame = frame.drop(index=range(30, 35))  # a gap of five days
        rows.append(frame)
    return pd.concat(rows, ignore_index=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    df = long_daily()
    out = tmp_path_factory.mktemp("long") / "run"
    summary = timeseries.train(df, out, **TINY)
    return df, out, summary


def test_daily_long_table_trains_with_the_defaults_and_the_card_says_why(trained):
    _, out, _ = trained
    config = json.loads((out / "config.json").read_text())
    assert config["horizon_steps"] == 14 and config["ar_seasons"] == [7]  # a day step: two weeks, the weekly cycle
    assert config["context_steps"] == 28
    why = config["defaults"]
    assert why["seasons"]["candidates"]["7"]["kept"] and "horizon" in why and "context" in why
    card = json.loads((out / "card.json").read_text())
    assert card["defaults"] == why


def test_forecast_speaks_statsforecast(trained):
    df, run, _ = trained
    fc = timeseries.forecast(run, df, level=[80, 95], members=8, steps=2, progress=False)
    assert list(fc.columns[:4]) == ["unique_id", "ds", "cutoff", "gendiff"]
    assert {"gendiff-lo-80", "gendiff-hi-80", "gendiff-lo-95", "gendiff-hi-95"} <= set(fc.columns)
    last = df.groupby("unique_id")["ds"].max()
    for uid, block in fc.groupby("unique_id"):
        assert len(block) == 14 and (block["cutoff"] == last[uid]).all()  # each series from its own end
        assert (block["ds"].to_numpy() == (last[uid] + pd.to_timedelta(np.arange(1, 15), "D")).to_numpy()).all()
        assert (block["gendiff-lo-95"] <= block["gendiff-lo-80"] + 1e-9).all()
        assert (block["gendiff-lo-80"] <= block["gendiff"] + 1e-9).all() and (block["gendiff"] <= block["gendiff-hi-80"] + 1e-9).all()
    assert set(fc["unique_id"]) == {"s0", "s1", "s2"}
    means = fc.groupby("unique_id")["gendiff"].mean()
    assert means["s0"] < means["s1"] < means["s2"]  # each series on its own level


def test_cli_long_csv_in_and_out(trained, tmp_path, capsys):
    df, run, _ = trained
    csv = tmp_path / "long.csv"
    df.to_csv(csv, index=False)
    out = tmp_path / "fc.csv"
    assert main(["forecast", "timeseries", "--run", str(run), "--data", str(csv), "--out", str(out), "--members", "4",
                 "--steps", "2", "--quiet", "--level", "90"]) == 0
    fc = pd.read_csv(out)
    assert {"unique_id", "ds", "cutoff", "gendiff", "gendiff-lo-90", "gendiff-hi-90"} <= set(fc.columns)
    assert len(fc) == 3 * 14


def test_cross_validation_has_the_truth_beside(tmp_path):
    df = long_daily(160)
    train_part = df[df["ds"] < "2021-04-20"]
    run = tmp_path / "run"
    timeseries.train(train_part, run, **TINY)
    cv = cross_validation(run, df, h=7, n_windows=2, members=4, steps=2, progress=False)
    assert sorted(cv["cutoff"].unique()) == sorted(cv["cutoff"].unique())[:2] and cv["cutoff"].nunique() == 2
    assert cv["y"].notna().mean() > 0.4 and {"unique_id", "ds", "cutoff", "gendiff", "y"} <= set(cv.columns)
    assert (cv["ds"] > cv["cutoff"]).all()


def test_exogenous_columns_and_duplicates_are_one_line_errors(tmp_path, capsys):
    df = long_daily()
    with pytest.raises(DataError, match="column 'temp' 'warm' is not a number"):  # numeric ones are covariates
        timeseries.train(df.assign(temp="warm"), tmp_path / "a", **TINY)
    dup = pd.concat([df, df.iloc[[5]]], ignore_index=True)
    with pytest.raises(DataError, match="series 's0' has two rows"):
        timeseries.train(dup, tmp_path / "b", **TINY)
    csv = tmp_path / "x.csv"
    df.assign(temp="warm").to_csv(csv, index=False)
    assert main(["train", "timeseries", "--data", str(csv), "--out", str(tmp_path / "c"), "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "temp" in err[0] and err[0].startswith("gendiff: error:")


def test_in_sample_inits_are_refused_then_marked(trained, tmp_path, capsys):
    df, run, _ = trained
    csv = tmp_path / "long.csv"
    df.to_csv(csv, index=False)
    argv = ["forecast", "timeseries", "--run", str(run), "--data", str(csv), "--init-period", "2021-03-01:2021-03-02",
            "--init-every", "1d", "--members", "2", "--steps", "2", "--quiet", "--out"]
    assert main([*argv, str(tmp_path / "a.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "inside the run's training period" in err[0] and "--allow-in-sample" in err[0]
    data = timeseries.resolve_data(df)
    fc = timeseries.forecast(run, data, init_times=["2021-03-01"], members=2, steps=2, progress=False,
                             allow_in_sample=True)
    assert fc.attrs["in_sample"] == 1
    records = timeseries.evaluate(fc, data, allow_in_sample=True)
    assert all(r.get("in_sample") for r in records)
    with pytest.raises(DataError, match="inside the model's training period"):
        timeseries.evaluate(fc, data)


def test_frequency_defaults_keep_the_seasons_the_data_show():
    t = pd.date_range("2022-01-01", periods=24 * 60, freq="h")
    rng = np.random.default_rng(1)
    daily = np.sin(2 * np.pi * t.hour.to_numpy() / 24)[:, None] + rng.normal(0, 0.2, (len(t), 2))
    walk = np.cumsum(rng.normal(0, 1, (len(t), 2)), axis=0)
    assert frequency.candidate_seasons(pd.Timedelta("1h")) == [24, 168]
    assert frequency.season_strength(daily, 24) > frequency.KEEP_ACF and abs(frequency.season_strength(walk, 24)) < 0.1
    assert frequency.default_horizon(pd.Timedelta("1h")) == 24 and frequency.default_horizon(pd.Timedelta("1D")) == 14
    assert frequency.candidate_seasons(pd.Timedelta("7D")) == [52] and frequency.default_horizon(pd.Timedelta("7D")) == 13
    assert frequency.candidate_seasons(pd.Timedelta("1D")) == [7, 365]
    assert frequency.default_context(24, [24, 168]) == 170
