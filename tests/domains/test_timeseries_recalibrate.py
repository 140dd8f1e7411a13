"""Recalibration on the recent past (recalibrate.py): which past inits are forecast, which verified forecasts each
init's window holds, and on a tiny run that the forecast uses nothing after its init."""
import numpy as np
import pandas as pd
import pytest
import torch

from gendiff.domains import weather
from gendiff.domains.timeseries import recalibrate
from gendiff.errors import ConfigError

from .test_weather_model import hourly_dataset


class _Codec:
    variables, sizes = ["x"], [5]


class _Run:
    codec, ar, path = _Codec(), None, None


def test_the_spread_follows_the_error_level_of_the_recent_window():
    """Forecasts whose errors triple halfway through while the raw members keep one spread: each init's
    recalibrated spread is the error level of its own window, 1 early and 3 late (the fixed calibration of the
    first half would keep 1)."""
    rng = np.random.default_rng(0)
    n_t, lead, members = 24 * 200, 6, 8
    times = pd.date_range("2021-01-01", periods=n_t, freq="h").values
    values = rng.normal(0, 1, (n_t, 5)).astype(np.float32)
    idx_all = np.arange(24, n_t - lead, 12)
    scale = np.where(times[idx_all] < times[n_t // 2], 1.0, 3.0)  # the error level of each init's forecast
    truth = np.stack([values[i + 1:i + 1 + lead] for i in idx_all]).astype(np.float64)
    mean = truth + scale[:, None, None] * rng.standard_normal(truth.shape)  # errors of that level
    ens = mean[:, None] + 0.5 * rng.standard_normal((len(idx_all), members, lead, 5))
    run = _Run()
    ask = np.array([np.searchsorted(idx_all, 24 * 70), np.searchsorted(idx_all, 24 * 190)])
    past = np.setdiff1d(np.arange(len(idx_all)), ask)
    out, summary = recalibrate.recalibrate_past(run, values, times, idx_all[ask], ens[ask], idx_all[past], ens[past],
                                                lambda ix: None, None, days=40)  # no calibration of its own
    assert summary["window_cases_min"] >= 79 and summary["inits_on_run_calibration"] == 0
    spread = out.std(1, ddof=1).mean((1, 2))  # per asked init
    assert 0.7 < spread[0] < 1.4 and 2.2 < spread[1] < 4.0

torch.set_num_threads(1)


def test_past_inits_reach_back_the_window_and_its_horizon():
    times = pd.date_range("2021-01-01", periods=24 * 60, freq="h").values
    idx = np.arange(24 * 50, 24 * 55, 12)  # inits every 12 h from day 50
    past = recalibrate.past_indices(times, idx, n_lead=24, days=10, context=6)
    assert np.all(np.diff(past) == 12) and past[-1] == idx[0] - 12 and not np.isin(past, idx).any()
    assert times[past[0]] <= times[idx[0]] - np.timedelta64(10 * 24 + 24 - 12, "h")  # the window plus a horizon
    late = recalibrate.past_indices(times, idx, 24, 10, 6, after=times[idx[0] - 48])
    assert np.all(times[late] > times[idx[0] - 48]) and len(late) == 3
    early = recalibrate.past_indices(times, np.array([60]), 24, 10, context=20)
    assert early.tolist() == [36]  # a single init: spaced by the horizon, and never without a context before it


def test_window_holds_only_verified_forecasts_of_the_days_before():
    times = pd.date_range("2021-01-01", periods=24 * 30, freq="h").values
    all_idx = np.arange(24, 24 * 29, 6)
    init = 24 * 20
    sel = recalibrate.window_cases(times, all_idx, init, n_lead=12, days=5)
    assert np.all(all_idx[sel] + 12 <= init) and np.all(times[all_idx[sel]] >= times[init] - np.timedelta64(5, "D"))
    assert len(sel) == 5 * 4 - 1  # 6-hourly inits over 5 days, less the last one whose 12 h are not yet verified
    with pytest.raises(ConfigError, match="recalibrate="):
        recalibrate.check_recalibrate("rolling", 40)
    with pytest.raises(ConfigError, match="recalibrate_days"):
        recalibrate.check_recalibrate("past", 0)


def test_a_recalibrated_forecast_uses_nothing_after_its_init(tmp_path):
    ds = hourly_dataset(days=12)
    weather.train(ds, tmp_path / "run", train_period="2021-06-01:2021-06-05", context="6h", horizon="6h",
                  net={"width": 8, "mults": [1, 2]}, max_steps=2, batch_size=8, sample_steps=2, progress=False)
    kw = dict(init_period="2021-06-11T00:00:2021-06-11T12:00", init_every="6h", members=4, lead="6h",
              progress=False, recalibrate="past", recalibrate_days=4)
    fc = weather.forecast(tmp_path / "run", ds, **kw)
    assert fc.attrs["recalibrate"] == "past" and fc.attrs["past_inits"] > 0
    assert fc.attrs["window_cases_min"] >= recalibrate.MIN_CASES and fc.attrs["inits_on_run_calibration"] == 0
    raw = weather.forecast(tmp_path / "run", ds, **{**kw, "recalibrate": None, "calibrated": False})
    assert float(fc["t2m"].std("member").mean()) > 2 * float(raw["t2m"].std("member").mean())
    last = fc["init_time"].values[-1]
    cut = ds.sel(time=slice(None, last + np.timedelta64(6, "h")))  # the data end with the last init's horizon
    again = weather.forecast(tmp_path / "run", cut, **kw)
    np.testing.assert_allclose(again["t2m"].values, fc["t2m"].values, rtol=1e-6, atol=1e-6)
    with pytest.raises(ConfigError, match="recalibrate="):
        weather.forecast(tmp_path / "run", ds, **{**kw, "recalibrate": "rolling"})
