"""Future-known covariates (exogenous columns of a long table, statsforecast's X_df) in the time-series engine."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from gendiff.cli import main
from gendiff.domains import timeseries
from gendiff.domains.timeseries.inputs import make_inputs
from gendiff.domains.timeseries.longformat import cross_validation
from gendiff.domains.timeseries.windows import GridWindowDataset
from gendiff.errors import ConfigError, DataError

torch.set_num_threads(1)
OPTS = {"context": 8, "horizon": 4, "seasons": None, "batch_size": 16, "net": {"width": 16, "mults": [1]},
        "sample_steps": 8, "progress": False, "calibration": 0.0, "lr": 2e-3, "warmup_steps": 20}
N, H = 240, 4


def driven(seed: int = 0, n: int = N, series: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(df, X_df): daily series y = 3 x + small noise, x random and known H steps past each series' end."""
    rng = np.random.default_rng(seed)
    rows, future = [], []
    for k in range(series):
        ds = pd.date_range("2021-01-01", periods=n + H, freq="D")
        x = rng.normal(0, 1, n + H)
        y = 5.0 * k + 3.0 * x + rng.normal(0, 0.1, n + H)
        rows.append(pd.DataFrame({"unique_id": f"s{k}", "ds": ds[:n], "y": y[:n], "x": x[:n]}))
        future.append(pd.DataFrame({"unique_id": f"s{k}", "ds": ds[n:], "x": x[n:], "truth": y[n:]}))
    return pd.concat(rows, ignore_index=True), pd.concat(future, ignore_index=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    df, future = driven()
    out = tmp_path_factory.mktemp("exog") / "run"
    timeseries.train(df, out, max_steps=250, **OPTS)
    return df, future, out


def within(fc: pd.DataFrame, future: pd.DataFrame) -> float:
    """Correlation of the point forecast with the truth about each series' own level (the levels differ)."""
    m = fc.merge(future, on=["unique_id", "ds"])
    assert len(m) == len(future)
    dev = lambda c: m[c] - m.groupby("unique_id")[c].transform("mean")  # noqa: E731
    return float(np.corrcoef(dev("gendiff"), dev("truth"))[0, 1])


def test_forecast_follows_the_future_covariate(trained):
    df, future, run = trained
    fc = timeseries.forecast(run, df, X_df=future[["unique_id", "ds", "x"]], members=8, progress=False)
    assert len(fc) == 3 * H and (fc.groupby("unique_id")["cutoff"].first() == pd.Timestamp("2021-08-28")).all()
    good = within(fc, future)
    other = future.assign(x=np.random.default_rng(7).normal(0, 1, len(future)))
    bad = within(timeseries.forecast(run, df, X_df=other[["unique_id", "ds", "x"]], members=8, progress=False),
                 future)
    assert good > 0.8 and good > bad + 0.5, (good, bad)


def test_config_records_the_covariates(trained):
    df, _, run = trained
    config = json.loads((run / "config.json").read_text())
    cov = config["covariates"]
    assert cov["names"] == ["x"]
    assert abs(cov["mean"][0] - df["x"].mean()) < 0.05 and abs(cov["std"][0] - df["x"].std()) < 0.05
    assert "x" not in config["variables"] and config["variables"] == ["value"]
    assert config["net"]["cond_channels"] == 3 + 1 + 4 + 3 + 3  # values, flag, calendar, missing flags, x x 3


def test_covariate_channels_reach_the_cond_normalised():
    window = torch.randn(2, 6, 3)
    cov = torch.arange(2 * 6 * 3, dtype=torch.float32).reshape(2, 6, 3)
    _, _, plain = make_inputs(window, torch.zeros(2, 6, 4), 4, torch.ones(3, dtype=torch.bool), missing_flag=True)
    _, _, cond = make_inputs(window, torch.zeros(2, 6, 4), 4, torch.ones(3, dtype=torch.bool), missing_flag=True,
                             covariates=cov)
    assert torch.equal(cond[:, :plain.shape[1]], plain)
    assert torch.equal(cond[:, plain.shape[1]:], cov.transpose(1, 2))  # over context and horizon alike


def test_missing_future_covariates_name_the_covariate(trained):
    df, future, run = trained
    with pytest.raises(DataError, match=r"covariate 'x' is missing at 2021-08-29 00:00:00 for series 's0'.*X_df"):
        timeseries.forecast(run, df, members=2, progress=False)
    with pytest.raises(DataError, match=r"covariate 'x' missing: the run was trained with x; pass X_df"):
        timeseries.forecast(run, df.drop(columns=["x"]), members=2, progress=False)
    short = future[future["ds"] < future["ds"].max()][["unique_id", "ds", "x"]]
    with pytest.raises(DataError, match=r"covariate 'x' is missing at 2021-09-01.*X_df") as err:
        timeseries.forecast(run, df, X_df=short, members=2, progress=False)
    assert "\n" not in str(err.value)


def test_unknown_covariates_are_a_config_error(trained, tmp_path):
    df, future, run = trained
    with pytest.raises(ConfigError, match="covariate\\(s\\) z: the run was not trained with them"):
        timeseries.forecast(run, df, X_df=future[["unique_id", "ds", "x"]].assign(z=1.0), members=2,
                            progress=False)
    plain = tmp_path / "plain"
    timeseries.train(df.drop(columns=["x"]), plain, max_steps=2, **OPTS)
    with pytest.raises(ConfigError, match=r"covariate\(s\) x: .*its covariates: none"):
        timeseries.forecast(plain, df, members=2, progress=False)


def test_cross_validation_reads_the_covariates_of_the_table(trained):
    df, _, run = trained
    cv = cross_validation(run, df, h=H, n_windows=2, members=4, progress=False, allow_in_sample=True)
    assert len(cv) == 2 * 3 * H and cv["y"].notna().all()
    assert np.corrcoef(cv["gendiff"], cv["y"])[0, 1] > 0.5


def test_a_non_numeric_exogenous_column_is_a_data_error(tmp_path):
    df, _ = driven(n=60)
    df["holiday"] = "no"
    df.loc[5, "holiday"] = "yes"
    with pytest.raises(DataError, match="column 'holiday' 'no' is not a number"):
        timeseries.train(df, tmp_path / "r", max_steps=2, **OPTS)


def test_gridnet_takes_per_location_covariates(tmp_path):
    df, future = driven(n=60, series=5)
    out = tmp_path / "grid"
    timeseries.train(df, out, arch="gridnet", patch=3, max_steps=3, **{**OPTS, "net": {"width": 8, "mults": [1]},
                                                                       "calibration": 0.3, "calibration_inits": 4})
    assert (out / "calibration.json").is_file()  # the held-out forecast read the covariates too
    config = json.loads((out / "config.json").read_text())
    assert config["net"]["covariates"] == 1 and config["covariates"]["names"] == ["x"]
    fc = timeseries.forecast(out, df, X_df=future[["unique_id", "ds", "x"]], members=2, progress=False)
    assert len(fc) == 5 * H and fc["gendiff"].notna().all()
    fc2 = timeseries.forecast(out, df, X_df=future[["unique_id", "ds", "x"]].assign(x=5.0), members=2,
                              progress=False)
    assert not np.allclose(fc["gendiff"], fc2["gendiff"])  # the covariates reach the shared network


def test_gridnet_patches_select_their_covariates():
    values = np.zeros((20, 6), np.float32)  # K=1 channel x 6 locations
    cov = np.arange(20 * 12, dtype=np.float32).reshape(20, 12)  # 2 covariates x 6 locations
    data = GridWindowDataset(values, np.zeros((20, 4), np.float32), np.arange(0, 8), 4, 4,
                             static=np.zeros((6, 0), np.float32), locations=6, pos_dims=0, patch=3, seed=1,
                             covariates=cov)
    item = data[0]
    seq = item["cond"]["seq"]
    assert seq.shape[0] == 2 * 3 + 5 + 2 * 3
    got = seq[-6:].T.numpy()  # (L, 2 x 3)
    sel = [c for j in range(3) for c in range(6) if np.array_equal(got[:, j], cov[:8, c])]  # the patch's locations
    assert len(sel) == 3 and sel == sorted(sel)
    assert all(np.array_equal(got[:, 3 + j], cov[:8, 6 + sel[j]]) for j in range(3))  # the 2nd, same locations


def test_cli_forecast_takes_the_future_file(trained, tmp_path):
    df, future, run = trained
    data, fut, out = tmp_path / "train.csv", tmp_path / "future.csv", tmp_path / "fc.csv"
    df.to_csv(data, index=False)
    future[["unique_id", "ds", "x"]].to_csv(fut, index=False)
    assert main(["forecast", "timeseries", "--run", str(run), "--data", str(data), "--future", str(fut), "--out",
                 str(out), "--members", "4", "--quiet"]) == 0
    fc = pd.read_csv(out, parse_dates=["ds"])
    assert len(fc) == 3 * H and within(fc, future) > 0.8


def test_each_series_needs_its_covariates_from_its_own_end(trained):
    df, future, run = trained
    full = pd.concat([df, future.rename(columns={"truth": "y"})], ignore_index=True)
    end = pd.Timestamp("2021-08-28")
    keep = (full["unique_id"] != "s1") | (full["ds"] <= end - pd.Timedelta(days=2))
    hist = full[keep & (full["ds"] <= end)][["unique_id", "ds", "y", "x"]]
    fut = full[(full["unique_id"] != "s1") & (full["ds"] > end)
               | (full["unique_id"] == "s1") & (full["ds"] > end - pd.Timedelta(days=2))
               & (full["ds"] <= end + pd.Timedelta(days=2))][["unique_id", "ds", "x"]]
    fc = timeseries.forecast(run, hist, X_df=fut, members=2, progress=False)
    cut = fc.groupby("unique_id")["cutoff"].first()
    assert cut["s1"] == end - pd.Timedelta(days=2) and cut["s0"] == end and len(fc) == 3 * H
    with pytest.raises(DataError, match="for series 's1'"):  # s1's own steps lack x
        timeseries.forecast(run, hist, X_df=fut[(fut["unique_id"] != "s1") | (fut["ds"] <= end)], members=2,
                            progress=False)
