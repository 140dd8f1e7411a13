"""Issue 29: `evaluate` as the referee: the statistical peers (statsforecast) and EMOS scored through the same code
path as the model, on held-out inits, each with the model's paired 95% interval and win rate."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from gendiff.cli import main
from gendiff.domains import timeseries
from gendiff.domains.timeseries.scoring import format_table

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    """Two hourly series with a daily cycle; a tiny run on the first 20 days, a forecast from days 22-27."""
    t = pd.date_range("2023-03-01", periods=24 * 28, freq="h")
    rng = np.random.default_rng(3)
    day = np.sin(2 * np.pi * t.hour.to_numpy() / 24)
    df = pd.DataFrame({"a": 10 + 3 * day + rng.normal(0, 0.4, len(t)),
                       "b": 5 - 2 * day + np.cumsum(rng.normal(0, 0.05, len(t)))}, index=t)
    run = tmp_path_factory.mktemp("referee") / "run"
    timeseries.train(df, run, train_period=("2023-03-01", "2023-03-20"), max_steps=2, batch_size=4,
                     net={"width": 8, "mults": [1]}, sample_steps=2, progress=False, calibration=0.0)
    fc = timeseries.forecast(run, df, output="xarray", init_period=("2023-03-22", "2023-03-27"), init_every="12h",
                             members=6, lead="12h", steps=2, progress=False)
    return df, run, fc


def test_emos_and_baselines_carry_paired_intervals(held_out):
    df, _, fc = held_out
    records = timeseries.evaluate(fc, df, systems=["model", "persistence", "climatology", "emos"])
    assert {r["system"] for r in records} == {"model", "persistence", "climatology", "emos"}
    others = [r for r in records if r["system"] != "model"]
    assert others and all("vs_model" in r for r in others)
    for r in others:
        vs = r["vs_model"]
        assert vs["lo"] <= vs["diff"] <= vs["hi"] and 0.0 <= vs["win_rate"] <= 1.0 and vs["n"] >= 2
        model = next(m for m in records if m["system"] == "model" and m["lead_time_hours"] == r["lead_time_hours"])
        assert vs["diff"] == pytest.approx(model["crps"] - r["crps"], rel=1e-6, abs=1e-9)  # same inits, same code
    text = format_table(records)
    assert "95% paired block-bootstrap interval" in text and "model - emos" in text


def test_statsforecast_peers_inside_evaluate(held_out, tmp_path, capsys):
    pytest.importorskip("statsforecast")
    df, _, fc = held_out
    records = timeseries.evaluate(fc, df, systems=["model", "seasonal_naive", "naive", "auto_ets"])
    assert {r["system"] for r in records} == {"model", "seasonal_naive", "naive", "auto_ets"}
    sn = [r for r in records if r["system"] == "seasonal_naive"]
    assert all(r["crps"] > 0 and "vs_model" in r for r in sn)
    csv = tmp_path / "obs.csv"
    df.rename_axis("time").reset_index().to_csv(csv, index=False)
    fc.to_netcdf(tmp_path / "fc.nc")
    assert main(["evaluate", "timeseries", "--forecast", str(tmp_path / "fc.nc"), "--truth", str(csv),
                 "--systems", "model,seasonal_naive", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "seasonal_naive" in out and "model - seasonal_naive" in out


def test_every_series_keeps_its_name_in_the_records(held_out):
    df, _, fc = held_out
    records = timeseries.evaluate(fc, df, systems=["model", "persistence"], per_series=True)
    pooled = [r for r in records if "series" not in r]
    each = [r for r in records if "series" in r]
    assert {r["series"] for r in each} == {"a", "b"} and len(each) == 2 * len(pooled)
    for lead in {r["lead_time_hours"] for r in pooled}:
        p = next(r for r in pooled if r["system"] == "model" and r["lead_time_hours"] == lead)
        parts = [r["crps"] for r in each if r["system"] == "model" and r["lead_time_hours"] == lead]
        assert p["crps"] == pytest.approx(np.mean(parts), rel=1e-9)  # the pooled score is the mean over series
    assert "CRPS per series" in format_table(records)


def test_the_raw_ar_base_and_emos_on_it_are_competitors(held_out):
    df, run, fc = held_out
    records = timeseries.evaluate(fc, df, systems=["model", "ar_base", "emos_ar"], run=run)
    base = [r for r in records if r["system"] == "ar_base"]
    emos = [r for r in records if r["system"] == "emos_ar"]
    assert base and emos and all(r["spread"] == 0 for r in base)  # the AR base alone: a point forecast
    assert all(r["spread"] > 0 and "vs_model" in r for r in emos)  # EMOS gives it a predictive spread


def test_interval_coverage_is_reported_per_lead(held_out):
    df, _, fc = held_out
    records = timeseries.evaluate(fc, df, systems=["model", "climatology"], intervals=False)
    for r in records:
        assert 0.0 <= r["coverage_80"] <= r["coverage_95"] <= 1.0
    from gendiff.domains.timeseries.scores import inside_interval
    import xarray as xr

    members = xr.DataArray(np.tile(np.arange(11.0), (4, 1)), dims=("case", "member"))
    truth = xr.DataArray([0.5, 5.0, 9.9, 10.5], dims="case")
    got = inside_interval(members, truth, 0.8)
    assert got.values.tolist() == [1.0, 1.0, 0.0, 0.0]  # the 80% interval of 0..10: ranks 1.2 and 10.8 of 11
