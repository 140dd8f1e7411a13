"""WeatherBench2 scores against brute-force oracles (fair and standard CRPS by double loops over members, SSR by
direct numpy, cell-area latitude weights by hand, a tiny example worked on paper), forecasts read in
WeatherBench2's layout, and the `ar_calibrated` baseline (the run's calibrated AR base without its network)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from gendiff import runs
from gendiff.cli import main
from gendiff.domains import weather
from gendiff.domains.timeseries import calibrate
from gendiff.domains.weather import metrics as M
from gendiff.domains.timeseries.forecasting import base_trajectory
from gendiff.domains.weather.lorenz96 import lorenz96_dataset
from gendiff.domains.timeseries.model import load_run
from gendiff.errors import ConfigError, DataError

torch.set_num_threads(1)


def _ensemble(seed=0, members=6, lats=(58.0, 55.5, 51.0, 50.0), lons=3, leads=2):
    rng = np.random.default_rng(seed)
    coords = {"lead_time": np.arange(leads), "latitude": np.asarray(lats), "longitude": np.arange(lons)}
    shape = (leads, len(lats), lons)
    f = xr.DataArray(rng.normal(size=(members, *shape)), dims=("member", *coords), coords=coords)
    y = xr.DataArray(rng.normal(size=shape) + 0.3, dims=tuple(coords), coords=coords)
    return f, y


# ---------------------------------------------------------------- CRPS, SSR, weights against oracles

def test_crps_fair_and_standard_by_double_loops_over_members():
    f, y = _ensemble(members=5)
    x, yv = f.values, y.values
    m = x.shape[0]
    fair, standard = np.empty_like(yv), np.empty_like(yv)
    for idx in np.ndindex(yv.shape):
        skill = sum(abs(x[(i, *idx)] - yv[idx]) for i in range(m)) / m
        pairs = 0.0
        for i in range(m):
            for j in range(m):
                pairs += abs(x[(i, *idx)] - x[(j, *idx)])
        fair[idx] = skill - pairs / (2 * m * (m - 1))
        standard[idx] = skill - pairs / (2 * m * m)
    got_default = M.crps_ensemble(f, y).transpose(*y.dims).values
    np.testing.assert_allclose(got_default, fair, atol=1e-12)  # fair is the default
    np.testing.assert_allclose(M.crps_ensemble(f, y, fair=False).transpose(*y.dims).values, standard, atol=1e-12)
    assert (fair < standard).all()  # the fair spread term is larger by M / (M - 1)


def test_one_member_crps_is_the_absolute_error():
    f, y = _ensemble(members=1)
    for fair in (True, False):
        np.testing.assert_allclose(M.crps_ensemble(f, y, fair=fair).transpose(*y.dims).values,
                                   abs(f.values[0] - y.values), atol=1e-12)


def test_ssr_is_spread_over_rmse_without_factors():
    f, y = _ensemble(members=4, lats=(60.0, 50.0, 30.0))
    s = M.score(f, y)
    lat = y.latitude.values  # 60, 50, 30: edges 65, 55, 40, 20
    up, lo = np.array([65.0, 55.0, 40.0]), np.array([55.0, 40.0, 20.0])
    w = np.sin(np.deg2rad(up)) - np.sin(np.deg2rad(lo))
    w = (w / w.mean())[:, None] * np.ones((len(lat), y.sizes["longitude"]))
    x, yv = f.values, y.values
    for k in range(y.sizes["lead_time"]):
        var = x[:, k].var(axis=0, ddof=1)
        se = (x[:, k].mean(0) - yv[k]) ** 2
        spread = np.sqrt((w * var).sum() / w.sum())
        rmse = np.sqrt((w * se).sum() / w.sum())
        assert s["spread"].values[k] == pytest.approx(spread, rel=1e-12)
        assert s["rmse"].values[k] == pytest.approx(rmse, rel=1e-12)
        assert s["ssr"].values[k] == pytest.approx(spread / rmse, rel=1e-12)


def test_cell_area_weights_by_hand():
    # pole to pole: cells -90..-45, -45..45, 45..90
    da = xr.DataArray(np.zeros(3), dims="latitude", coords={"latitude": [-90.0, 0.0, 90.0]})
    w = M.latitude_weights(da).values
    r = np.sqrt(0.5)
    hand = np.array([1 - r, 2 * r, 1 - r])
    np.testing.assert_allclose(w, hand / hand.mean(), rtol=1e-12)
    # irregular spacing 0, 10, 40: edges -5, 5, 25, 55
    da = xr.DataArray(np.zeros(3), dims="lat", coords={"lat": [0.0, 10.0, 40.0]})
    s = np.sin(np.deg2rad([-5.0, 5.0, 25.0, 55.0]))
    hand = np.diff(s)
    np.testing.assert_allclose(M.latitude_weights(da).values, hand / hand.mean(), rtol=1e-12)
    # descending (as ERA5 files store them): the same weight per latitude
    desc = xr.DataArray(np.zeros(3), dims="lat", coords={"lat": [40.0, 10.0, 0.0]})
    np.testing.assert_allclose(M.latitude_weights(desc).values, (hand / hand.mean())[::-1], rtol=1e-12)
    # the outer edge past a pole is clipped: 85 and 89 -> edges 83, 87, 90 (not 91)
    da = xr.DataArray(np.zeros(2), dims="latitude", coords={"latitude": [85.0, 89.0]})
    hand = np.diff(np.sin(np.deg2rad([83.0, 87.0, 90.0])))
    np.testing.assert_allclose(M.latitude_weights(da).values, hand / hand.mean(), rtol=1e-12)


def test_cell_area_weights_of_a_global_grid_have_mean_one_and_cover_the_sphere():
    lat = np.linspace(-90, 90, 121)  # 1.5 degrees, both poles
    w = M.latitude_weights(xr.DataArray(lat, dims="latitude", coords={"latitude": lat}))
    assert float(w.mean()) == pytest.approx(1.0, rel=1e-12)
    lower, upper = M.cell_edges(lat)
    assert lower[0] == -90 and upper[-1] == 90 and np.allclose(upper[:-1], lower[1:])
    area = np.sin(np.deg2rad(upper)) - np.sin(np.deg2rad(lower))
    assert area.sum() == pytest.approx(2.0, rel=1e-12)  # the whole sphere, in units of 2 pi R^2
    # away from the poles the cells of a regular grid are proportional to cos(latitude)
    cos = np.cos(np.deg2rad(lat[1:-1]))
    np.testing.assert_allclose(w.values[1:-1] / cos, (w.values[1:-1] / cos)[0], rtol=1e-10)
    assert w.values[0] < 0.5 * cos[0] / cos.mean()  # the polar cap is a half cell, not cos(90) = 0


def test_tiny_worked_example():
    """Two cells at 0 and 60 N (edges -30, 30, 90: areas 1 and 1/2, weights 4/3 and 2/3), two members:
    cell 1 members 0, 2 and truth 1; cell 2 members 1, 1 and truth 3. Worked by hand:
    fair CRPS (4/3 * 0 + 2/3 * 2) / 2 = 2/3; standard (4/3 * 1/2 + 2/3 * 2) / 2 = 1; RMSE sqrt((2/3 * 4) / 2);
    spread sqrt((4/3 * 2) / 2); SSR 1."""
    coords = {"latitude": [0.0, 60.0]}
    f = xr.DataArray([[0.0, 1.0], [2.0, 1.0]], dims=("member", "latitude"), coords=coords)
    y = xr.DataArray([1.0, 3.0], dims=("latitude",), coords=coords)
    np.testing.assert_allclose(M.latitude_weights(y).values, [4 / 3, 2 / 3], rtol=1e-12)
    s = M.score(f, y, keep_dims=())
    assert float(s["crps"]) == pytest.approx(2 / 3, rel=1e-12)
    assert float(s["crps_standard"]) == pytest.approx(1.0, rel=1e-12)
    assert float(s["rmse"]) == pytest.approx(np.sqrt(4 / 3), rel=1e-12)
    assert float(s["spread"]) == pytest.approx(np.sqrt(4 / 3), rel=1e-12)
    assert float(s["ssr"]) == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("lat", [[95.0, 50.0], [50.0, 50.0], [np.nan, 1.0]])
def test_bad_latitudes_are_one_line_errors(lat):
    da = xr.DataArray(np.zeros(2), dims="latitude", coords={"latitude": lat})
    with pytest.raises(DataError, match="latitude"):
        M.latitude_weights(da)


# ---------------------------------------------------------------- WeatherBench2 layout

def _grid_truth(n=24 * 12):
    """An hourly (time, latitude, longitude) field with a diurnal cycle and an AR(1) anomaly."""
    rng = np.random.default_rng(5)
    t = pd.date_range("2020-01-01", periods=n, freq="h")
    a = np.zeros((n, 3, 4))
    for i in range(1, n):
        a[i] = 0.9 * a[i - 1] + rng.normal(scale=0.3, size=(3, 4))
    diurnal = 2 * np.sin(2 * np.pi * t.hour.to_numpy() / 24)[:, None, None]
    return xr.Dataset({"t2m": (("time", "latitude", "longitude"), 280 + diurnal + a)},
                      coords={"time": t, "latitude": [56.0, 54.0, 51.0], "longitude": [-3.0, -2.0, -1.0, 0.0]})


def _gendiff_forecast(truth, inits, members=5, leads=6):
    """A synthetic ensemble in gendiff's layout: truth plus noise growing with lead."""
    rng = np.random.default_rng(9)
    init = truth["time"].values[inits]
    lead = pd.to_timedelta(np.arange(1, leads + 1), "h").to_numpy()
    valid = init[:, None] + lead[None, :]
    y = truth["t2m"].sel(time=valid.ravel()).values.reshape(len(inits), leads, 3, 4)
    x = y[:, None] + rng.normal(size=(len(inits), members, leads, 3, 4)) * np.sqrt(np.arange(1, leads + 1))[
        None, None, :, None, None] * 0.3
    return xr.Dataset({"t2m": (("init_time", "member", "lead_time", "latitude", "longitude"), x)},
                      coords={"init_time": init, "member": np.arange(members), "lead_time": lead,
                              "latitude": truth.latitude.values, "longitude": truth.longitude.values,
                              "valid_time": (("init_time", "lead_time"), valid)},
                      attrs={"train_period": "2020-01-01 00:00:00 to 2020-01-08 23:00:00"})


def _as_wb2(fc: xr.Dataset, ens: str = "number", lead0: bool = True) -> xr.Dataset:
    """The same forecast as WeatherBench2 stores it: time = init time, prediction_timedelta, `ens`, no valid_time
    coordinate, dims in its order, with the lead-0 analysis it often carries."""
    out = fc.drop_vars("valid_time").rename(init_time="time", lead_time="prediction_timedelta", member=ens)
    if lead0:
        zero = out.isel(prediction_timedelta=[0]).assign_coords(prediction_timedelta=[np.timedelta64(0, "ns")])
        out = xr.concat([zero, out], dim="prediction_timedelta")
    out.attrs = {}
    return out.transpose("time", "prediction_timedelta", ens, "latitude", "longitude")


@pytest.mark.parametrize("ens", ["number", "realization"])
def test_wb2_layout_file_scores_like_the_gendiff_layout(tmp_path, ens):
    truth = _grid_truth()
    truth.to_netcdf(tmp_path / "truth.nc")
    fc = _gendiff_forecast(truth, [24 * 9, 24 * 9 + 6, 24 * 10])
    fc.to_netcdf(tmp_path / "gendiff.nc")
    _as_wb2(fc, ens).to_netcdf(tmp_path / "wb2.nc")
    with xr.open_dataset(tmp_path / "wb2.nc") as raw:
        assert "prediction_timedelta" in raw.dims and ens in raw.dims and "init_time" not in raw.dims
    kw = dict(train_period=("2020-01-01", "2020-01-08"), systems=["model", "persistence", "climatology", "linear"],
              plots=False)
    ours = weather.evaluate(str(tmp_path / "gendiff.nc"), str(tmp_path / "truth.nc"), **kw)
    wb2 = weather.evaluate(str(tmp_path / "wb2.nc"), str(tmp_path / "truth.nc"), **kw)
    assert len(ours) == len(wb2) == 4 * 6  # lead 0 is dropped
    for a, b in zip(ours, wb2):
        assert a["system"] == b["system"] and a["lead_time_hours"] == b["lead_time_hours"]
        for k in ("crps", "crps_standard", "rmse", "spread", "ssr"):
            assert a[k] == pytest.approx(b[k], rel=1e-10, abs=1e-12), (k, a, b)


def test_wb2_layout_on_the_cli_with_sparse_leads_and_a_point_forecast(tmp_path, capsys):
    """Every 2nd lead only, and no ensemble dim (a deterministic forecast: one member, CRPS = MAE)."""
    truth = _grid_truth()
    truth.to_netcdf(tmp_path / "truth.nc")
    fc = _gendiff_forecast(truth, [24 * 9, 24 * 10], members=1)
    wb2 = _as_wb2(fc.isel(lead_time=[1, 3, 5]), lead0=False).isel(number=0, drop=True)
    assert "number" not in wb2.dims
    wb2.to_netcdf(tmp_path / "wb2.nc")
    code = main(["evaluate", "weather", "--forecast", str(tmp_path / "wb2.nc"), "--truth", str(tmp_path / "truth.nc"),
                 "--train-period", "2020-01-01:2020-01-08", "--systems", "model,persistence", "--json", "--quiet"])
    assert code == 0
    records = json.loads(capsys.readouterr().out)
    assert sorted({r["lead_time_hours"] for r in records}) == [2.0, 4.0, 6.0]
    model = {r["lead_time_hours"]: r for r in records if r["system"] == "model"}
    y = truth["t2m"].sel(time=fc["valid_time"].values.ravel()).values.reshape(2, 6, 3, 4)
    w = M.latitude_weights(truth).values[None, :, None] * np.ones((2, 3, 4))
    for j, h in ((1, 2.0), (3, 4.0), (5, 6.0)):
        mae = (np.abs(fc["t2m"].values[:, 0, j] - y[:, j]) * w).sum() / w.sum()
        assert model[h]["crps"] == pytest.approx(mae, rel=1e-9) and model[h]["crps_standard"] == model[h]["crps"]
    persistence = {r["lead_time_hours"]: r["crps"] for r in records if r["system"] == "persistence"}
    x0 = truth["t2m"].sel(time=fc["init_time"].values).values
    mae = (np.abs(x0 - y[:, 3]) * w).sum() / w.sum()
    assert persistence[4.0] == pytest.approx(mae, rel=1e-6)


def test_cli_baselines_are_fitted_on_the_forecasts_train_period(tmp_path, capsys):
    """Without --train-period the CLI fits the baselines on the model's training period (the forecast's
    attribute), as the Python API does, not on the whole truth file (which holds the verifying days)."""
    truth = _grid_truth()
    truth.to_netcdf(tmp_path / "truth.nc")
    _gendiff_forecast(truth, [24 * 9, 24 * 10]).to_netcdf(tmp_path / "fc.nc")
    assert main(["evaluate", "weather", "--forecast", str(tmp_path / "fc.nc"), "--truth", str(tmp_path / "truth.nc"),
                 "--systems", "climatology", "--json", "--quiet", "--allow-in-sample"]) == 0
    cli = [r["crps"] for r in json.loads(capsys.readouterr().out)]
    own = [r["crps"] for r in weather.evaluate(str(tmp_path / "fc.nc"), str(tmp_path / "truth.nc"),
                                               systems=["climatology"], plots=False, allow_in_sample=True)]
    whole = [r["crps"] for r in weather.evaluate(str(tmp_path / "fc.nc"), str(tmp_path / "truth.nc"),
                                                 systems=["climatology"], plots=False, allow_in_sample=True,
                                                 train_period=("2020-01-01", "2020-01-12"))]
    assert cli == pytest.approx(own, rel=1e-12) and cli != pytest.approx(whole, rel=1e-3)


def test_not_a_forecast_is_one_line(tmp_path, capsys):
    truth = _grid_truth()
    truth.to_netcdf(tmp_path / "truth.nc")
    code = main(["evaluate", "weather", "--forecast", str(tmp_path / "truth.nc"), "--truth",
                 str(tmp_path / "truth.nc"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("gendiff: error: ")
    assert "prediction_timedelta" in err[0] and "lead_time" in err[0]


# ---------------------------------------------------------------- ar_calibrated: what the network adds

@pytest.fixture(scope="module")
def l96():
    return load_run("pretrained:lorenz96")


@pytest.fixture(scope="module")
def l96_data():
    return lorenz96_dataset(160, seed=11)


def test_ar_calibrated_has_the_calibrated_variance_about_the_ar_base(l96, l96_data):
    """Many members from one init: the ensemble mean is the run's AR base (up to the shrunk sampling error of the
    noise mean) and the grid-mean member variance per lead is the calibration's (c + g S) / ((M + 1) / M), S the
    corrected variance of the N(0, level^2) noise it starts from."""
    from gendiff.domains.timeseries.ar_calibrated import ar_calibrated

    members, n_lead = 200, l96.horizon
    times = l96_data["time"].values
    values = l96.codec.encode(l96_data, "l96") - l96.climatology.at(times)
    idx = np.array([40])
    out = ar_calibrated(l96, values, times, idx, n_lead, members, seed=3)
    assert out.shape == (1, members, n_lead, 40)
    valid = times[idx][:, None] + (times[1] - times[0]) * np.arange(1, n_lead + 1)[None, :]
    anomaly = out - l96.climatology.at(valid)[:, None]
    base = base_trajectory(l96, values, idx, n_lead)[0]  # (L, C)
    calib = calibrate.load(l96.path)
    level2 = (l96.ar.level(l96.ar.slots(times[idx])).double().numpy() ** 2).mean(1)  # (L,) noise variance
    corr = (members + 1) / members
    want = (np.asarray(calib["var_const"]["x"]) + np.asarray(calib["var_slope"]["x"]) * corr * level2) / corr
    got = anomaly[0].var(axis=0, ddof=1).mean(-1)
    np.testing.assert_allclose(got, want, rtol=0.08)
    dev = np.abs(anomaly[0].mean(0) - base).mean(-1)  # noise mean, shrunk by a <= 1
    assert (dev < 4 * np.sqrt(want / members)).all(), (dev, np.sqrt(want / members))
    again = ar_calibrated(l96, values, times, idx, n_lead, members, seed=3)
    np.testing.assert_array_equal(out, again)
    assert not np.array_equal(out, ar_calibrated(l96, values, times, idx, n_lead, members, seed=4))


def test_ar_calibrated_fits_its_own_calibration_on_the_held_out_inits(l96, tmp_path):
    """Given data that hold the run's held-out inits, the baseline calibrates its Gaussian ensemble there itself
    (calibrate.fit_parameters), so the run's parameters (fitted to the network's spread) do not enter: scaling
    them a hundredfold changes nothing. Without those inits it falls back to the run's, and the scaling shows."""
    from gendiff.domains.timeseries.ar_calibrated import ar_calibrated

    run_dir = tmp_path / "l96"
    shutil.copytree(l96.path, run_dir)
    long = lorenz96_dataset(int(4 * 365 * 2.5), seed=5)  # 2000-01-01 on, past the held-out inits of 2001-2002
    times = long["time"].values
    values = l96.codec.encode(long, "l96") - l96.climatology.at(times)
    idx, members, n_lead = np.array([3500, 3520]), 64, l96.horizon
    before = ar_calibrated(load_run(run_dir), values, times, idx, n_lead, members, seed=1)
    calib = json.loads((run_dir / "calibration.json").read_text())
    for key in ("var_const", "var_slope"):
        calib[key] = {v: [100 * x for x in xs] for v, xs in calib[key].items()}
    (run_dir / "calibration.json").write_text(json.dumps(calib))
    scaled = load_run(run_dir)
    np.testing.assert_array_equal(ar_calibrated(scaled, values, times, idx, n_lead, members, seed=1), before)
    late = slice(3400, None)  # the held-out inits are not in these data: the run's (scaled) parameters are used
    unscaled = ar_calibrated(l96, values[late], times[late], idx - 3400, n_lead, members, seed=1).var(1).mean()
    fallback = ar_calibrated(scaled, values[late], times[late], idx - 3400, n_lead, members, seed=1).var(1).mean()
    assert fallback > 20 * unscaled


def test_ar_calibrated_is_scored_like_the_others_on_the_cli(l96, l96_data, tmp_path, capsys):
    """Rolled past the horizon (12 steps, horizon 8), same members as the model, the run from the forecast's
    gendiff_run attribute."""
    fc = weather.forecast("pretrained:lorenz96", l96_data, init_times=l96_data["time"].values[[30, 70]], members=4,
                          lead="72h", steps=3, seed=0, progress=False, allow_in_sample=True)  # a fresh trajectory
    fc.to_netcdf(tmp_path / "fc.nc")
    l96_data.to_netcdf(tmp_path / "truth.nc")
    code = main(["evaluate", "weather", "--forecast", str(tmp_path / "fc.nc"), "--truth", str(tmp_path / "truth.nc"),
                 "--systems", "model,linear,ar_calibrated", "--train-period", "2000-01-01:2000-01-31", "--json",
                 "--quiet", "--allow-in-sample"])
    assert code == 0
    records = json.loads(capsys.readouterr().out)
    ar = [r for r in records if r["system"] == "ar_calibrated"]
    assert len(ar) == 12 and all(r["crps"] > 0 and r["spread"] > 0 for r in ar)
    api = weather.evaluate(fc, l96_data, systems=["model", "linear", "ar_calibrated"], run=l96, plots=False,
                           train_period=("2000-01-01", "2000-01-31"), allow_in_sample=True)
    for a, b in zip(records, api):
        assert a["system"] == b["system"] and a["crps"] == pytest.approx(b["crps"], rel=1e-5)
    # persistence-like skill early on: the calibrated AR base is a good short-range forecast of Lorenz-96
    linear = {r["lead_time_hours"]: r["crps"] for r in records if r["system"] == "linear"}
    assert ar[0]["crps"] < 1.5 * linear[6.0]


def test_ar_calibrated_needs_the_run_and_its_calibration(l96_data, tmp_path, capsys):
    fc = weather.forecast("pretrained:lorenz96", l96_data, init_times=l96_data["time"].values[[30]], members=2,
                          lead="12h", steps=2, seed=0, progress=False, allow_in_sample=True)
    anon = fc.copy()
    anon.attrs.pop("gendiff_run")
    with pytest.raises(ConfigError, match="--run"):
        weather.evaluate(anon, l96_data, systems=["ar_calibrated"], plots=False, allow_in_sample=True)
    folder = shutil.copytree(runs.read_run("pretrained:lorenz96").path, tmp_path / "l96")
    (folder / calibrate.FILE).unlink()
    anon.to_netcdf(tmp_path / "fc.nc")
    l96_data.to_netcdf(tmp_path / "truth.nc")
    code = main(["evaluate", "weather", "--forecast", str(tmp_path / "fc.nc"), "--truth", str(tmp_path / "truth.nc"),
                 "--systems", "model,ar_calibrated", "--run", str(folder), "--quiet", "--allow-in-sample"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("gendiff: error: ") and "calibration.json" in err[0]
