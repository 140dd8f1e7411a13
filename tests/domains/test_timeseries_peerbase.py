"""A statsforecast model as the base the network departs from (peerbase.py): parity of the base with statsforecast
itself, the choice per series on the validation inits, the training windows' departures, and a run that trains,
reloads, forecasts and scores its own base."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from gendiff.domains import timeseries
from gendiff.domains.timeseries import peerbase
from gendiff.domains.timeseries.climatology import HourlyClimatology
from gendiff.domains.timeseries.config import ModelConfig
from gendiff.domains.timeseries.scoring import ar_base_forecast
from gendiff.domains.timeseries.windows import WindowDataset
from gendiff.errors import ConfigError

torch.set_num_threads(1)
FLAT = HourlyClimatology(np.zeros(1), np.zeros((1, 2), np.float32))  # no daily cycle: anomalies = values


def monthly(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(T, 2) values and month-start times: series 0 a random walk, series 1 a yearly cycle repeated exactly."""
    rng = np.random.default_rng(seed)
    t = pd.date_range("2000-01-01", periods=n, freq="MS").to_numpy()
    walk = np.cumsum(rng.normal(0, 1, n))
    cycle = np.tile(rng.normal(0, 1, 12), n // 12 + 1)[:n]
    return np.stack([walk, cycle], 1).astype(np.float32), t


def test_base_forecasts_equal_statsforecast_fitted_and_applied_from_each_init():
    models = pytest.importorskip("statsforecast.models")  # the peers extra (CI keeps pandas 3 without it)
    AutoETS, SeasonalNaive = models.AutoETS, models.SeasonalNaive
    values, times = monthly()
    base = peerbase.PeerBase(["auto_ets", "seasonal_naive"], [12])
    inits = np.array([80, 95, 110])
    fit_idx = np.arange(0, 80)
    got = base.forecasts(values, times, FLAT, inits, 6, fit_idx=fit_idx)
    ets = AutoETS(season_length=12).fit(values[fit_idx, 0].astype(np.float64))
    for k, i in enumerate(inits):
        want = ets.forward(y=values[:i + 1, 0].astype(np.float64), h=6)["mean"]
        np.testing.assert_allclose(got[k, :, 0], want, rtol=1e-5, atol=1e-5)
        sn = SeasonalNaive(season_length=12).fit(values[:i + 1, 1].astype(np.float64)).predict(h=6)["mean"]
        np.testing.assert_allclose(got[k, :, 1], sn, rtol=1e-5, atol=1e-5)


def test_combination_weights_each_lead_by_inverse_validation_error():
    pytest.importorskip("statsforecast")
    values, times = monthly(144)
    idx = np.arange(144)
    base, mae = peerbase.choose(peerbase.CHOOSE, values, times, FLAT, idx, np.empty(0, int), [12], 6)
    assert set(mae) == {*peerbase.SYSTEMS, "combination"}
    assert mae["seasonal_naive"][1] < 1e-6 and mae["combination"][1] < 1e-5  # the exact cycle: exact models
    w = base.lead_weights(6)
    assert w.shape == (len(base.names), 6, 2)
    np.testing.assert_allclose(w.sum(0), 1.0, atol=1e-9)
    assert mae["seasonal_naive"][0] > min(mae["auto_ets"][0], mae["auto_arima"][0])  # the walk: no season in it
    # the walk's combination is no worse than its average model (in sample of its own weights)
    assert mae["combination"][0] <= np.mean([mae[s][0] for s in peerbase.SYSTEMS])
    again = peerbase.PeerBase.from_config(json.loads(json.dumps(base.to_config())))
    np.testing.assert_allclose(again.lead_weights(6), w, atol=1e-5)
    assert again.names == base.names


def test_combine_is_inverse_mse_per_lead_and_drops_the_negligible():
    rng = np.random.default_rng(0)
    errors = np.stack([rng.normal(0, 1, (400, 2, 1)), rng.normal(0, 2, (400, 2, 1)),
                       rng.normal(0, 30, (400, 2, 1))])  # (S=3, I, H=2, C=1): MSE 1, 4, 900
    errors[1, :, 1] *= 0.25  # the second model is the better one at the second lead (MSE 0.25)
    w = peerbase.combine(errors)
    np.testing.assert_allclose(w[:, 0, 0], [0.8, 0.2, 0.0], atol=0.05)  # 1/1 : 1/4; 1/900 is under MIN_WEIGHT
    np.testing.assert_allclose(w[:, 1, 0], [0.2, 0.8, 0.0], atol=0.05)
    np.testing.assert_allclose(w.sum(0), 1.0)
    nan = errors.copy()
    nan[2] = np.nan  # a model that failed to forecast: weight 0
    assert peerbase.combine(nan)[2].max() == 0.0


def test_base_names_and_seasons_are_checked():
    with pytest.raises(ConfigError, match="base='prophet'"):
        ModelConfig(base="prophet")
    with pytest.raises(ConfigError, match="needs a season"):
        peerbase.candidates("mstl", [])
    assert peerbase.candidates(peerbase.CHOOSE, []) == peerbase.NO_SEASON
    assert "auto_arima" not in peerbase.candidates(peerbase.CHOOSE, [48])  # its seasonal search: too slow there
    # the daily cycle the AR leaves to the climatology is a season of the models; a week only with two of them
    assert peerbase.peer_seasons([], pd.Timedelta("30min"), 200) == [48]
    assert peerbase.peer_seasons([], pd.Timedelta("30min"), 700) == [48, 336]


def test_training_windows_are_capped_evenly():
    starts = np.arange(5, 5000)
    few = peerbase.training_starts(starts, 100)
    assert len(few) == 100 and few[0] == 5 and few[-1] == 4999 and np.all(np.diff(few) > 0)
    np.testing.assert_array_equal(peerbase.training_starts(starts[:50], 100), starts[:50])


def test_training_windows_are_departures_from_the_base_over_the_horizon():
    values, times = monthly()
    calendar = np.zeros((len(values), 4), np.float32)
    starts = np.array([0, 10, 30])
    offsets = np.random.default_rng(1).normal(size=(3, 6, 2)).astype(np.float32)
    plain = WindowDataset(values, calendar, starts, 24, 6, residual=False)
    shifted = WindowDataset(values, calendar, starts, 24, 6, residual=False, offsets=offsets)
    for i in range(3):
        a, b = plain[i], shifted[i]
        np.testing.assert_allclose(a["x0"][:, 24:] - b["x0"][:, 24:], offsets[i].T, atol=1e-6)
        np.testing.assert_array_equal(a["x0"][:, :24], b["x0"][:, :24])
        np.testing.assert_array_equal(a["cond"], b["cond"])  # the network sees the real context


@pytest.fixture(scope="module")
def peer_run(tmp_path_factory):
    pytest.importorskip("statsforecast")
    values, times = monthly(150)
    df = pd.DataFrame(values + 10, index=pd.DatetimeIndex(times, name="time"), columns=["walk", "cycle"])
    out = tmp_path_factory.mktemp("peer") / "run"
    timeseries.train(df, out, base="statsforecast", train_period=("2000-01-01", "2009-12-01"), max_steps=2,
                     batch_size=4, net={"width": 8, "mults": [1]}, sample_steps=2, progress=False,
                     calibration=0.25, calibration_inits=4)
    return df, out


def test_run_keeps_its_choice_forecasts_around_its_base_and_scores_it(peer_run):
    df, run = peer_run
    config = json.loads((run / "config.json").read_text())
    assert config["base"] == "statsforecast" and config["peer_base"]["seasons"] == [12]
    assert set(config["peer_base"]["combination"]["models"]) <= set(peerbase.SYSTEMS)
    fc = timeseries.forecast(run, df, output="xarray", init_period=("2010-03-01", "2011-06-01"), members=4,
                             steps=2, progress=False, seed=0)
    cycle = fc["value"].sel(series="cycle").values  # (init, member, lead)
    assert fc.sizes["lead_time"] == 12 and np.isfinite(cycle).all()
    # the exact cycle: the base is exact, so the members sit on the truth within the network's small departures
    truth = df["cycle"].to_numpy()
    init = pd.DatetimeIndex(fc["init_time"].values)
    i0 = df.index.get_loc(init[0])
    err = np.abs(cycle[0].mean(0) - truth[i0 + 1:i0 + 13])
    assert np.median(err) < 0.5 * truth.std()
    truth_ds = timeseries.resolve_data(df)
    own = ar_base_forecast(str(run), truth_ds, fc)  # the base alone, as evaluate's `ar_base` competitor
    got = own["value"].sel(series="cycle").values[:, 0]  # (init, lead)
    idx = df.index.get_indexer(init)
    want = np.stack([truth[i + 1:i + 13] for i in idx])
    np.testing.assert_allclose(got, want, atol=1e-3)  # the exact cycle: the base is exact on it
    records = timeseries.evaluate(fc, df, train_period=("2000-01-01", "2009-12-01"), systems=["model", "ar_base"],
                                  plots=False, joint=True)
    assert {r["system"] for r in records} == {"model", "ar_base"}
    joint = [r for r in records if r["variable"] == "joint"]  # both series at once: energy score, CRPS-sum
    assert len(joint) == 2 * 12 and all(r["energy_score"] > 0 and r["features"] == 2 for r in joint)
    assert all("vs_model_energy" in r for r in joint if r["system"] == "ar_base")
    with pytest.raises(ConfigError, match="up to its horizon"):
        timeseries.forecast(run, df, output="xarray", init_period=("2010-03-01", "2010-04-01"), lead=13,
                            members=2, steps=2, progress=False)
