"""Seasonal lags in the AR base and per-series (per-location) normalisation (issue 13: skill at longer leads, and
tables that mix magnitudes)."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from gendiff import cli
from gendiff.domains import timeseries
from gendiff.domains.timeseries import tabular
from gendiff.domains.timeseries.base import ARBase
from gendiff.domains.timeseries.regions import subregion
from gendiff.domains.timeseries.run import load_run
from gendiff.domains.timeseries.stream import fit_statistics
from gendiff.errors import ConfigError, DataError

NET = {"width": 8, "mults": [1, 2], "blocks_per_level": 1, "heads": 2, "dropout": 0.0}
TINY = dict(net=NET, max_steps=3, batch_size=8, sample_steps=3, progress=False)


def seasonal_ar(n=3000, c=2, season=24, seed=0, coef=(0.5, 0.6, -0.3)):
    """x_t = a x_{t-1} + b x_{t-s} + c x_{t-s-1} + noise (a seasonal AR with known coefficients)."""
    a, b, cc = coef
    rng = np.random.default_rng(seed)
    x = np.zeros((n, c))
    for t in range(season + 1, n):
        x[t] = a * x[t - 1] + b * x[t - season] + cc * x[t - season - 1] + 0.1 * rng.standard_normal(c)
    return x.astype(np.float32)


def test_seasonal_lags_fit_their_coefficients_and_roll_like_the_recursion():
    x = seasonal_ar()
    lags = ARBase.lags_for(2, [24])
    assert lags == (1, 2, 24, 25)
    ar = ARBase.fit(x, np.arange(len(x)), lags)
    np.testing.assert_allclose(ar.phi.numpy(), np.tile([0.5, 0.0, 0.6, -0.3], (2, 1)), atol=0.04)
    window = torch.from_numpy(x[500:540])[None]
    got = ar.window_base(window, 30)[0].numpy()
    seq, phi = list(x[500:530].astype(np.float64)), ar.phi.numpy().astype(np.float64)
    for t in range(30, 40):  # lag 24 reads the context for 6 steps, then the recursion's own steps
        seq.append(sum(phi[:, k] * seq[t - lag] for k, lag in enumerate(lags)))
    np.testing.assert_allclose(got, np.array(seq), rtol=1e-5, atol=1e-5)
    back = ARBase.from_state(ar.state())
    assert back.lags == lags and back.order == 25 and back.short_lags == 2
    torch.testing.assert_close(back.window_base(window, 30), ar.window_base(window, 30))
    with pytest.raises(DataError, match="at least 25 steps"):
        ar.window_base(window, 20)
    with pytest.raises(DataError, match="context must be at least 25"):
        ARBase.fit(x, np.arange(len(x)), lags, np.arange(10), 20, 5)


def test_plain_ar_level_only_is_the_level_recursion():
    """Without seasons the base is the AR(p) it was: chained horizons start the recursion from the context's level."""
    x = seasonal_ar(season=5)
    ar = ARBase.fit(x, np.arange(len(x)), 2)
    assert ar.lags == (1, 2) and "lags" not in ar.state()  # older runs' state is unchanged
    window = torch.from_numpy(x[100:120])[None]
    got = ar.window_base(window, 10, level_only=True)[0].numpy().astype(np.float64)
    level = x[108:110].astype(np.float64).mean(0)
    prev, prev2, phi = level, level, ar.phi.numpy().astype(np.float64)
    for t in range(10, 20):
        nxt = phi[:, 0] * prev + phi[:, 1] * prev2
        np.testing.assert_allclose(got[t], nxt, rtol=1e-5, atol=1e-6)
        prev, prev2 = nxt, prev


def test_a_season_back_cuts_the_mean_forecast_error_at_long_leads():
    """On a series whose anomalies largely repeat every 24 steps (beyond the hourly climatology), the base with
    the seasonal lags forecasts lead 20 at least twice as well as the AR(2) that only sees the last steps."""
    x = seasonal_ar(n=4000, c=1, seed=1, coef=(0.3, 0.9, -0.27))
    train, test = np.arange(3000), range(3000, 3960, 7)
    errs = {}
    for name, order in (("plain", 2), ("seasonal", ARBase.lags_for(2, [24]))):
        ar = ARBase.fit(x, train, order)
        w = torch.from_numpy(np.stack([x[s - 30:s + 20] for s in test]))
        errs[name] = float(((ar.window_base(w, 30) - w)[:, -1] ** 2).mean().sqrt())
    assert errs["seasonal"] < 0.5 * errs["plain"], errs


def weekly_frame(days=16, seed=0):
    """Two hourly series of very different magnitudes, each with a weekday-weekend pattern (a 7-day season)."""
    idx = pd.date_range("2024-01-01", periods=24 * days, freq="h")
    h = np.arange(len(idx))
    rng = np.random.default_rng(seed)
    week = np.where(idx.dayofweek >= 5, -1.0, 0.3)
    df = pd.DataFrame({"load_mw": 5000 + 800 * np.sin(2 * np.pi * h / 24) + 600 * week + 50 * rng.standard_normal(len(h)),
                       "share": 0.2 + 0.05 * np.sin(2 * np.pi * h / 24) + 0.03 * week
                       + 0.002 * rng.standard_normal(len(h))}, index=idx)
    df.iloc[40:45, 1] = np.nan
    return df


def test_train_with_a_season_saves_and_rolls_out_with_it(tmp_path):
    df = weekly_frame()
    with pytest.raises(ConfigError, match="context of at least 25 steps"):
        timeseries.train(df, tmp_path / "short", context="12h", horizon="6h", seasons="1d", **TINY)
    with pytest.raises(ConfigError, match="not a multiple"):
        timeseries.train(df, tmp_path / "odd", context="30h", horizon="6h", seasons="90min", **TINY)
    with pytest.raises(ConfigError, match="need base='linear'"):
        timeseries.train(df, tmp_path / "nobase", context="30h", horizon="6h", seasons="1d", base=None, **TINY)
    timeseries.train(df, tmp_path / "run", context="26h", horizon="6h", seasons="1d", train_period="2024-01-01:2024-01-12",
                     **TINY)
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["ar_seasons"] == [24]
    run = load_run(tmp_path / "run")
    assert run.ar.lags == (1, 2, 24, 25)
    tidy = timeseries.forecast(tmp_path / "run", df, init_period="2024-01-13:2024-01-13T12:00", init_every="12h",
                               members=2, lead="15h", progress=False)  # 3 chained horizons
    assert tidy["value"].notna().all() and set(tidy["lead_time"].unique()).__len__() == 15


def test_cli_season_option(tmp_path, capsys):
    df = weekly_frame()
    df.to_csv(tmp_path / "w.csv", index_label="time")
    base = ["train", "timeseries", "--data", str(tmp_path / "w.csv"), "--context", "26h", "--horizon", "6h",
            "--steps", "2", "--batch-size", "8", "--width", "8", "--quiet"]
    assert cli.main(base + ["--season", "1d", "--out", str(tmp_path / "r")]) == 0
    assert json.loads((tmp_path / "r" / "config.json").read_text())["ar_seasons"] == [24]
    capsys.readouterr()
    assert cli.main(base + ["--season", "weekly", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "season" in err[0] and "weekly" in err[0]


def test_per_location_statistics_match_pandas_block_by_block():
    df = weekly_frame()
    df["flat"] = 3.0  # a constant series: its deviation is 0, so it takes the variable's
    df["late"] = np.where(np.arange(len(df)) >= 300, 1.0, np.nan)  # no value in the period fitted below
    ds = tabular.from_pandas(df).isel(time=slice(0, 300))
    df = df.iloc[:300]
    stats = fit_statistics(ds, normalise="location", max_bytes=4000)  # many blocks of time steps
    mean, std = stats.codec.mean["value"], stats.codec.std["value"]
    pooled = df.to_numpy().ravel()
    pooled = pooled[np.isfinite(pooled)]
    np.testing.assert_allclose(mean[:2], df[["load_mw", "share"]].mean().to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(std[:2], df[["load_mw", "share"]].std(ddof=0).to_numpy(), rtol=1e-9)
    assert mean[2] == 3.0 and std[2] == pytest.approx(pooled.std())
    assert mean[3] == pytest.approx(pooled.mean()) and std[3] == pytest.approx(pooled.std())
    encoded = stats.codec.encode(ds)
    np.testing.assert_allclose(np.nanstd(encoded[:, :2], axis=0), 1.0, rtol=1e-6)  # each series on its own scale
    back = stats.codec.decode(encoded, ("time",), {"time": ds["time"]})
    np.testing.assert_allclose(back["value"].values[:, :3], ds["value"].values[:, :3], rtol=1e-6)
    with pytest.raises(ConfigError, match="normalise="):
        fit_statistics(ds, normalise="series")


def test_tables_are_normalised_per_series_and_the_run_keeps_it(tmp_path):
    df = weekly_frame()
    kw = dict(context="26h", horizon="6h", train_period="2024-01-01:2024-01-12", **TINY)
    timeseries.train(df, tmp_path / "per", **kw)
    timeseries.train(df, tmp_path / "var", normalise="variable", **kw)
    per, var = load_run(tmp_path / "per"), load_run(tmp_path / "var")
    assert json.loads((tmp_path / "per" / "config.json").read_text())["codec"]["normalise"] == "location"
    assert per.codec.normalise == "location" and var.codec.normalise == "variable"
    period = df.loc[:"2024-01-12"]
    np.testing.assert_allclose(per.codec.mean["value"], period.mean().to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(per.codec.std["value"], period.std(ddof=0).to_numpy(), rtol=1e-9)
    assert np.ndim(var.codec.mean["value"]) == 0
    # per variable the small series is a sliver of the pooled scale; per series it spans a unit
    ds = tabular.from_pandas(df)
    assert np.nanstd(var.codec.encode(ds)[:, 1]) < 1e-3 < 0.9 < np.nanstd(per.codec.encode(ds)[:, 1])
    tidy = timeseries.forecast(tmp_path / "per", df, init_period="2024-01-13:2024-01-13", init_every="6h",
                               members=2, lead="6h", progress=False)
    means = tidy.groupby("series")["value"].mean()
    assert abs(means["load_mw"] - 5000) < 1500 and abs(means["share"] - 0.2) < 0.1


def test_a_subset_of_series_slices_the_per_series_normalisation(tmp_path):
    df = weekly_frame()
    df["third"] = 10 * df["share"]
    net = {"width": 8, "mults": [1, 2], "heads": 2, "neighbours": 2, "dropout": 0.0}
    timeseries.train(df, tmp_path / "g", arch="gridnet", context="26h", horizon="6h",
                     train_period="2024-01-01:2024-01-12", **{**TINY, "net": net})
    run = load_run(tmp_path / "g")
    part = subregion(run, tabular.from_pandas(df[["load_mw", "third"]]))
    np.testing.assert_array_equal(part.codec.mean["value"], run.codec.mean["value"][[0, 2]])
    np.testing.assert_array_equal(part.codec.std["value"], run.codec.std["value"][[0, 2]])
    tidy = timeseries.forecast(tmp_path / "g", df[["load_mw", "third"]], init_period="2024-01-13:2024-01-13",
                               init_every="6h", members=2, lead="6h", progress=False)
    means = tidy.groupby("series")["value"].mean()
    assert abs(means["load_mw"] - 5000) < 1500 and abs(means["third"] - 2.0) < 1.0
