"""Anomalies standardised by the hour-of-day deviation (train(hourly_std=True), base.HourlyClimatology.std): the
solar-power case of issue 13, whose variability follows the daily cycle."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from gendiff import cli
from gendiff.domains import timeseries
from gendiff.domains.timeseries import tabular
from gendiff.domains.timeseries.base import ARBase
from gendiff.domains.timeseries.climatology import STD_FLOOR, HourlyClimatology, hourly_std_floor, widen_hours
from gendiff.domains.timeseries.run import load_run
from gendiff.domains.timeseries.stream import EncodedValues, fit_statistics
from gendiff.errors import ConfigError, DataError

NET = {"width": 8, "mults": [1, 2], "blocks_per_level": 1, "heads": 2, "dropout": 0.0}
TINY = dict(net=NET, max_steps=3, batch_size=8, sample_steps=3, progress=False)


def solar_frame(days=40, seed=0, gaps=True):
    """Half-hourly 'solar power': a daylight bell (zero from 20:00 to 04:30) times a cloudiness factor that drifts
    from day to day and within the day; a second series at another scale."""
    idx = pd.date_range("2024-05-01", periods=48 * days, freq="30min")
    rng = np.random.default_rng(seed)
    hour = idx.hour + idx.minute / 60
    bell = np.clip(np.sin(np.pi * (hour - 5) / 14), 0, None)
    k = np.empty(len(idx))
    level = 0.7
    for t in range(len(idx)):
        level = 0.7 + 0.97 * (level - 0.7) + 0.04 * rng.standard_normal()
        k[t] = np.clip(level, 0.05, 1.2)
    df = pd.DataFrame({"solar": 0.5 * bell * k, "farm": 30 * bell * np.clip(k + 0.1 * rng.standard_normal(len(k)),
                                                                             0, None)}, index=idx)
    if gaps:
        df.iloc[100:104, 0] = np.nan
    return df


def test_streamed_hourly_std_is_the_per_hour_deviation_and_round_trips():
    df = solar_frame(days=12)
    ds = tabular.from_pandas(df)
    stats = fit_statistics(ds, normalise="location", max_bytes=3000)  # many blocks of time steps
    clim = stats.climatology(std=True)
    enc = pd.DataFrame(stats.codec.encode(ds), index=df.index)
    slot = df.index.hour * 2 + df.index.minute // 30
    per_slot = enc.groupby(slot).std(ddof=0).to_numpy()
    # each half hour takes the largest deviation within an hour of it (widen_hours: the daylight's edges move)
    want = np.max([np.roll(per_slot, k, axis=0) for k in (-2, -1, 0, 1, 2)], axis=0)
    assert (want > per_slot).any()
    got = clim.std.astype(np.float64)
    rms = np.sqrt(np.nanmean(want ** 2, axis=0))
    day = want > STD_FLOOR * rms  # hours that vary by more than the floor: the deviation itself
    np.testing.assert_allclose(got[day], want[day], rtol=1e-5)
    night = want == 0  # never varied, nor did the half hours next to it: kept at 0, the anomaly is 0 there
    assert night.sum() >= 2 * 13 and (got[night] == 0).all()
    dim = (want > 0) & ~day
    np.testing.assert_allclose(got[dim], np.broadcast_to(STD_FLOOR * rms, want.shape)[dim], rtol=1e-5)
    times = df.index.values
    z = clim.remove(enc.to_numpy(np.float32), times)
    assert np.nanmax(np.abs(z[slot.to_numpy() < 6])) == 0  # before 03:00: no anomaly at all
    np.testing.assert_allclose(clim.restore(z, times)[np.isfinite(z)], enc.to_numpy()[np.isfinite(z)], atol=1e-5)
    # the ensemble's member axis (I, M, L, C) against valid times (I, L)
    valid = times[:96].reshape(2, 48)
    zz = np.stack([z[:96].reshape(2, 48, 2)] * 3, axis=1)
    back = clim.restore(zz, valid, axis=1)
    np.testing.assert_allclose(back[:, 1], clim.restore(z[:96], times[:96]).reshape(2, 48, 2), atol=1e-6)
    state = HourlyClimatology.from_state(clim.state())
    np.testing.assert_array_equal(state.std, clim.std)
    assert "std" not in stats.climatology().state()  # the default: mean only, as older runs have it


def test_floor_and_features_without_values():
    sd = np.array([[0.0, np.nan, 0.0], [0.01, np.nan, 0.0], [1.0, np.nan, 0.0]])
    got = hourly_std_floor(sd)
    rms = np.sqrt((0.01 ** 2 + 1) / 3)
    np.testing.assert_allclose(got[:, 0], [0.0, STD_FLOOR * rms, 1.0], rtol=1e-6)
    assert (got[:, 1] == 1).all() and (got[:, 2] == 0).all()
    half = np.zeros((48, 1))
    half[12:36, 0], half[10, 0] = 1.0, np.nan  # daylight 06:00-17:30, no value at 05:00
    np.testing.assert_array_equal(widen_hours(half, np.arange(0, 24, 0.5))[:, 0],
                                  np.r_[np.zeros(10), np.ones(28), np.zeros(10)])  # an hour each way
    six = np.array([[0.0], [1.0], [0.0], [0.0]])
    np.testing.assert_array_equal(widen_hours(six, np.array([0.0, 6, 12, 18])), six)  # 6-hourly: no neighbours
    with pytest.raises(DataError, match="std of shape"):
        HourlyClimatology(np.arange(3.0), np.zeros((3, 2)), np.ones((2, 2)))


def test_standardised_anomalies_carry_the_morning_into_the_afternoon():
    """On a series whose departures scale with the daily cycle, an AR(2) on standardised anomalies forecasts six
    hours ahead (12 steps) with a smaller error than the same AR on plain anomalies, which carries an absolute
    morning departure into the dim evening and night."""
    df = solar_frame(days=60, seed=1, gaps=False)[["solar"]]
    ds = tabular.from_pandas(df)
    train = np.arange(48 * 45)
    stats = fit_statistics(ds.isel(time=train), normalise="location")
    times, ctx, lead = df.index.values, 24, 12
    starts = np.arange(48 * 45, len(df) - ctx - lead, 3)
    err = {}
    for name, std in (("plain", False), ("standardised", True)):
        clim = stats.climatology(std=std)
        z = EncodedValues(ds, stats.codec, clim)[:]
        ar = ARBase.fit(z, train, 2)
        w = torch.from_numpy(np.stack([z[s:s + ctx + lead] for s in starts]))
        base = ar.window_base(w, ctx).numpy()[:, -1]
        t_last = times[starts + ctx + lead - 1]
        pred = clim.restore(base, t_last)
        truth = stats.codec.encode(ds)[starts + ctx + lead - 1]
        err[name] = float(np.sqrt(((pred - truth) ** 2).mean()))
    assert err["standardised"] < 0.9 * err["plain"], err  # 0.271 against 0.317 here


def test_auto_standardises_the_daylight_series_only():
    df = solar_frame(days=12)
    df["temp"] = 10 + 3 * np.sin(np.arange(len(df)) * 2 * np.pi / 48) + np.random.default_rng(2).normal(size=len(df))
    stats = fit_statistics(tabular.from_pandas(df), normalise="location")
    auto, every = stats.climatology(std="auto"), stats.climatology(std=True)
    assert (auto.std[:, 2] == 1).all() and (every.std[:, 2] != 1).all()  # varies at every hour: left as it was
    np.testing.assert_array_equal(auto.std[:, :2], every.std[:, :2])  # zero every night: standardised
    assert stats.climatology(std=False).std is None
    only_temp = fit_statistics(tabular.from_pandas(df[["temp"]]), normalise="location")
    assert only_temp.climatology(std="auto").std is None  # nothing to standardise: the state stays as before
    with pytest.raises(ConfigError, match="hourly_std='yes'"):
        stats.climatology(std="yes")


def test_a_run_with_hourly_std_keeps_it_and_forecasts_the_night_exactly(tmp_path, capsys):
    df = solar_frame(days=10)
    kw = dict(context="12h", horizon="12h", train_period="2024-05-01:2024-05-08", **TINY)
    timeseries.train(df, tmp_path / "std", **kw)  # hourly_std="auto": both series are 0 at night
    timeseries.train(df, tmp_path / "plain", hourly_std=False, **kw)
    assert json.loads((tmp_path / "std" / "config.json").read_text())["hourly_std"] == "auto"
    run, plain = load_run(tmp_path / "std"), load_run(tmp_path / "plain")
    assert run.climatology.std is not None and plain.climatology.std is None
    assert run.climatology.std.shape == run.climatology.mean.shape == (48, 2)
    fc = {name: timeseries.forecast(tmp_path / name, df, init_period="2024-05-09T12:00:2024-05-09T12:00",
                                    members=3, lead="12h", progress=False) for name in ("std", "plain")}
    for name, tidy in fc.items():
        valid = pd.to_datetime(tidy["init_time"]) + pd.to_timedelta(tidy["lead_time"])
        night = (valid.dt.hour < 4) | (valid.dt.hour >= 21)
        assert night.any() and (~night).any() and tidy["value"].notna().all()
        if name == "std":  # the night never varied in training: every member gives its climatology, 0
            np.testing.assert_allclose(tidy.loc[night, "value"], 0.0, atol=1e-6)
            assert tidy.loc[~night, "value"].std() > 0
        else:  # plain anomalies spill the afternoon's departure into the night
            assert np.abs(tidy.loc[night, "value"]).max() > 1e-4
    with pytest.raises(ConfigError, match="hourly_std"):
        timeseries.train(df, tmp_path / "bad", hourly_std="sometimes", **kw)
    df.to_csv(tmp_path / "s.csv", index_label="time")
    base = ["train", "timeseries", "--data", str(tmp_path / "s.csv"), "--context", "12h", "--horizon", "6h",
            "--steps", "2", "--batch-size", "8", "--width", "8", "--quiet"]
    for flag, want in (("on", True), ("off", False)):
        assert cli.main(base + ["--hourly-std", flag, "--out", str(tmp_path / flag)]) == 0
        assert json.loads((tmp_path / flag / "config.json").read_text())["hourly_std"] is want
