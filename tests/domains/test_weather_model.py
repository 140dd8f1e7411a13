"""Weather model path: masks keep NaN out of the loss, the U-Net's shapes, and a tiny train/forecast/evaluate run."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from gendiff.domains.timeseries.calibrate import LIMITS
from gendiff.errors import ConfigError, DataError
from gendiff.losses import diffusion_loss
from gendiff.schedules import get_schedule
from gendiff.spaces import MaskedSpace
from gendiff.domains import weather
from gendiff.domains.timeseries.data import calendar_features
from gendiff.domains.timeseries.model import ARBase, WindowDataset, build_denoiser, cond_channels
from gendiff.domains.timeseries.unet1d import UNet1D
from gendiff.domains.timeseries.stream import fit_codec

torch.set_num_threads(1)
ERA5 = Path(__file__).parents[2] / "../shared/data/era5_uk_t2m_2019-03.nc"


def hourly_dataset(days=8, seed=0):
    rng = np.random.default_rng(seed)
    time = pd.date_range("2021-06-01", periods=24 * days, freq="1h")
    hour = np.asarray(time.hour)
    lat, lon = np.array([52.0, 51.0, 50.0]), np.array([0.0, 1.0, 2.0, 3.0])
    base = 15 + 5 * np.sin(2 * np.pi * (hour - 9) / 24)[:, None, None]
    t2m = (base + rng.normal(0, 0.5, (len(time), 3, 4)) + lat[None, :, None] * 0.1).astype(np.float32)
    t2m[:, 0, 0] = np.nan  # sea point: never valid
    t2m[30:33, 2, 3] = np.nan  # a gap
    return xr.Dataset({"t2m": (("time", "latitude", "longitude"), t2m, {"units": "degC", "long_name": "temp"})},
                      coords={"time": time, "latitude": lat, "longitude": lon}, attrs={"title": "toy"})


def test_nan_cells_never_reach_the_loss():
    ds = hourly_dataset()
    codec = fit_codec(ds)
    values = codec.encode(ds)
    data = WindowDataset(values, calendar_features(ds["time"].values), np.arange(20, 30), 6, 6)
    batch = torch.utils.data.default_collate([data[i] for i in range(len(data))])
    x0, mask, cond = batch["x0"], batch["mask"], batch["cond"]
    assert torch.isfinite(x0).all() and torch.isfinite(cond).all()
    assert not mask[:, 0].any()  # the never-valid feature
    assert not mask[:, :, :6].any()  # context is conditioning, not generated
    gap = torch.from_numpy(~np.isfinite(np.stack([values[s:s + 12] for s in range(20, 30)]))).transpose(1, 2)
    assert not (mask & gap).any() and gap[:, :, 6:].any()
    config = {"net": {"channels": 12, "cond_channels": cond_channels(12), "width": 16, "mults": [1, 2],
                      "known_in_cond": True}, "schedule": {"name": "cosine", "num_train_steps": 1000},
              "prediction": "x0"}
    den = build_denoiser(config)
    sched, space = get_schedule("cosine"), MaskedSpace()
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    kw = dict(mask=mask, cond=cond, t=torch.full((10,), 0.5), noise=noise)
    loss = diffusion_loss(den, x0, sched, space, **kw)
    poisoned = torch.where(mask, x0, torch.full_like(x0, 1e6))
    loss_poisoned = diffusion_loss(den, poisoned, sched, space, **{**kw, "noise": kw["noise"] * 1})
    assert torch.isfinite(loss).all()
    torch.testing.assert_close(loss, loss_poisoned)


def test_ar_base_recovers_coefficients_and_rolls_the_recursion():
    rng = np.random.default_rng(0)
    phi = np.array([[1.5, -0.6], [0.5, 0.2], [0.0, 0.0]])  # (C, p): two stationary AR(2) features, one white
    a = np.zeros((5000, 3))
    for i in range(2, len(a)):
        a[i] = phi[:, 0] * a[i - 1] + phi[:, 1] * a[i - 2] + rng.normal(0, 1, 3)
    a[100:103, 1] = np.nan  # gaps are left out of the fit
    ar = ARBase.fit(a.astype(np.float32), np.arange(len(a)), order=2)
    np.testing.assert_allclose(ar.phi.numpy(), phi, atol=0.05)
    window = torch.from_numpy(a[None, 1000:1012].astype(np.float32))
    window[:, 6:] = float("nan")  # horizon unknown
    window[0, 5, 2] = float("nan")  # a missing context value counts as 0 (the anomaly mean)
    base = ar.window_base(window, 6)
    assert base.shape == window.shape and torch.isfinite(base).all()
    torch.testing.assert_close(base[:, :6], torch.nan_to_num(window[:, :6]))
    x = base[0, :6].double().tolist()
    p = ar.phi.double()
    for j in range(6, 12):
        x.append((p[:, 0] * torch.tensor(x[-1]) + p[:, 1] * torch.tensor(x[-2])).tolist())
        torch.testing.assert_close(base[0, j].double(), torch.tensor(x[-1], dtype=torch.float64), atol=1e-5, rtol=1e-5)
    with pytest.raises(DataError, match="context of at least 2"):
        ar.window_base(window, 1)
    flat = ar.window_base(window, 6, level_only=True)  # chained horizons: from the context's level, no slope
    torch.testing.assert_close(flat[:, :6], base[:, :6])
    lvl = base[0, 4:6].double().mean(0)
    y = [lvl, lvl]
    for j in range(6, 12):
        y.append(p[:, 0] * y[-1] + p[:, 1] * y[-2])
        torch.testing.assert_close(flat[0, j].double(), y[-1], atol=1e-5, rtol=1e-5)


def test_spread_calibration_rescales_about_the_mean():
    from types import SimpleNamespace

    from gendiff.domains.timeseries.calibrate import apply, calibration_inits

    rng = np.random.default_rng(1)
    values = rng.normal(size=(5, 8, 4, 3)).astype(np.float32)
    values[:, :, :, 2] = np.nan  # a never-valid feature
    codec = SimpleNamespace(variables=["a", "b"], sizes=[2, 1])
    out = apply(values, {"factors": {"a": [2.0, 0.5], "b": [3.0]}}, codec)
    np.testing.assert_allclose(out.mean(1)[..., :2], values.mean(1)[..., :2], atol=1e-5)  # mean kept
    dev, dev0 = out - out.mean(1, keepdims=True), values - values.mean(1, keepdims=True)
    np.testing.assert_allclose(dev[:, :, 0, :2], 2.0 * dev0[:, :, 0, :2], atol=1e-5)
    np.testing.assert_allclose(dev[:, :, 3, :2], 0.5 * dev0[:, :, 3, :2], atol=1e-5)  # beyond: the last factor
    assert np.isnan(out[..., 2]).all()
    np.testing.assert_array_equal(apply(values[:, :1], {"factors": {"a": [2.0]}}, codec), values[:, :1])
    base = rng.normal(size=(5, 4, 3)).astype(np.float32)  # shrinkage pulls the mean towards the base forecast
    out = apply(values, {"factors": {"a": [1.0]}, "shrink": {"a": [0.25]}}, codec, base)
    want = base[..., :2] + 0.25 * (values.mean(1)[..., :2] - base[..., :2])
    np.testing.assert_allclose(out.mean(1)[..., :2], want, atol=1e-5)
    np.testing.assert_allclose(out - out.mean(1, keepdims=True), values - values.mean(1, keepdims=True), atol=1e-5)
    inits = calibration_inits(np.arange(100, 130), horizon=6, last=129, n=4)
    assert len(inits) == 4 and inits.min() >= 100 and inits.max() + 6 <= 129


def test_variance_model_fit_and_apply():
    from types import SimpleNamespace

    from gendiff.domains.timeseries.calibrate import apply, fit_variance

    rng = np.random.default_rng(3)
    s = rng.uniform(0.1, 1.0, size=(40, 3))  # (I, H) ensemble variances
    y = np.stack([0.3 + 2.0 * s[:, 0], 0.8 - 0.5 * s[:, 1], 1.5 * s[:, 2] - 0.1], 1)
    c, g = fit_variance(s, y)
    np.testing.assert_allclose([c[0], g[0]], [0.3, 2.0], atol=1e-9)  # exact linear relation recovered
    assert g[1] == 0 and c[1] == pytest.approx(y[:, 1].mean())  # spread anti-correlated with error: constant
    assert c[2] == 0 and g[2] == pytest.approx((s[:, 2] * y[:, 2]).sum() / (s[:, 2] ** 2).sum())  # c < 0: origin
    use = np.ones_like(s, dtype=bool)
    use[::2, 0], use[:, 1] = False, False  # inits without valid cells take no part; a lead without any gives (0, 0)
    c_u, g_u = fit_variance(s, y, use)
    c_sub, g_sub = fit_variance(s[1::2], y[1::2])
    assert (c_u[0], g_u[0]) == pytest.approx((c_sub[0], g_sub[0])) and (c_u[1], g_u[1]) == (0.0, 0.0)

    m = 10
    values = rng.normal(size=(6, m, 2, 4)) * np.array([0.5, 1, 2, 3, 1, 1])[:, None, None, None]
    values[..., 3] = np.nan  # a never-valid cell
    codec = SimpleNamespace(variables=["t"], sizes=[4])
    calib = {"var_const": {"t": [0.4, 0.9]}, "var_slope": {"t": [0.5, 0.0]}, "factors": {"t": [9.0]}}
    out = apply(values.astype(np.float32), calib, codec)
    corr = (m + 1) / m
    s_in = corr * np.var(values[..., :3], axis=1, ddof=1).mean(-1)
    s_out = corr * np.var(out[..., :3], axis=1, ddof=1).mean(-1)
    want = np.clip(np.stack([0.4 + 0.5 * s_in[:, 0], np.full(6, 0.9)], 1) / s_in, LIMITS[0] ** 2, LIMITS[1] ** 2) * s_in
    np.testing.assert_allclose(s_out, want, rtol=1e-4)  # per init and lead: variance c + g S (k within LIMITS)
    np.testing.assert_allclose(out.mean(1)[..., :3], values.mean(1)[..., :3], atol=1e-5)
    assert np.isnan(out[..., 3]).all()


def test_ar_base_error_level_by_time_of_day():
    rng = np.random.default_rng(4)
    times = pd.date_range("2021-01-01", periods=24 * 60, freq="h").values
    hour = pd.DatetimeIndex(times).hour.to_numpy()
    amp = np.where((hour >= 6) & (hour < 12), 3.0, 1.0)  # innovations three times larger from 06 to 12 UTC
    a = np.zeros((len(times), 4))
    for i in range(1, len(a)):
        a[i] = 0.8 * a[i - 1] + amp[i] * rng.normal(0, 1, 4)
    a = a.astype(np.float32)
    context, horizon = 3, 2
    starts = np.arange(len(a) - context - horizon)
    ar = ARBase.fit(a, np.arange(len(a)), 1, starts, context, horizon, times, groups=[2, 2])
    assert ar.diurnal.shape == (24, horizon, 4) and ar.step_seconds == 3600
    init_hour = pd.DatetimeIndex(times[starts + context - 1]).hour.to_numpy()
    err = a[starts + context] - ar.phi[:, 0].numpy() * a[starts + context - 1]  # lead-1 errors
    for h in (3, 8):
        want = np.sqrt((err[init_hour == h] ** 2).mean(0)) / np.sqrt((err ** 2).mean(0))
        np.testing.assert_allclose(ar.diurnal[h, 0].numpy(), want.mean(), rtol=0.1)
    assert ar.diurnal[8, 0, 0] > 2 * ar.diurnal[3, 0, 0]  # 09 UTC valid time sits in the noisy hours
    torch.testing.assert_close(ar.diurnal[:, :, 0], ar.diurnal[:, :, 1])  # pooled over a variable's features
    scale = ar.window_scale(context + horizon, context, ar.slots(times[[10, 5]]))
    assert scale.shape == (2, context + horizon, 4) and (scale[:, :context] == 1).all()
    torch.testing.assert_close(scale[0, context:], ar.scale * ar.diurnal[10])
    torch.testing.assert_close(ar.window_scale(context + horizon, context)[context:], ar.scale)
    back = ARBase.from_state(ar.state())
    assert back.step_seconds == 3600 and torch.equal(back.diurnal, ar.diurnal)
    daily = ARBase.fit(a[::24], np.arange(60), 1, np.arange(50), context, horizon, times[::24])
    assert daily.diurnal is None and (daily.slots(times[:3]) == 0).all()  # a daily step has no time of day


def test_unet1d_shapes_and_odd_lengths():
    net = UNet1D(5, 3, width=16, mults=(1, 2, 2))
    for length in (7, 16, 33):
        out = net(torch.randn(2, 5, length), torch.rand(2), cond=torch.randn(2, 3, length))
        assert out.shape == (2, 5, length)


def test_tiny_end_to_end(tmp_path):
    ds = hourly_dataset()
    summary = weather.train(ds, tmp_path / "run", train_period="2021-06-01:2021-06-06", context="6h", horizon="6h",
                            net={"width": 16, "mults": [1, 2]}, max_steps=15, batch_size=8, sample_steps=4,
                            progress=False)
    assert summary["step"] == 15 and np.isfinite(summary["loss"])
    assert json.loads((tmp_path / "run" / "config.json").read_text())["calibration_inits"] == 48
    tiny = dict(train_period="2021-06-01:2021-06-06", context="6h", horizon="6h", net={"width": 8, "mults": [1, 2]},
                max_steps=1, batch_size=8, sample_steps=2, progress=False, calibration=0.3)
    for n, want in ((None, 37), (5, 5)):  # 43 held-out steps, 37 of them with the horizon inside: all, or 5
        weather.train(ds, tmp_path / f"cal{n}", **tiny, **({} if n is None else {"calibration_inits": n}))
        held = json.loads((tmp_path / f"cal{n}" / "calibration.json").read_text())["inits"]
        assert len(held) == want == len(set(held))
    with pytest.raises(ConfigError, match="calibration_inits=1"):
        weather.train(ds, tmp_path / "bad", calibration_inits=1, progress=False)
    fc = weather.forecast(tmp_path / "run", ds, init_period="2021-06-07:2021-06-07T06:00", init_every="6h",
                          members=3, lead="9h", out=tmp_path / "fc.nc", progress=False)
    assert dict(fc.sizes) == {"init_time": 2, "member": 3, "lead_time": 9, "latitude": 3, "longitude": 4}
    assert fc["t2m"].attrs["units"] == "degC" and fc.attrs["title"] == "toy"
    assert fc["t2m"].isel(latitude=0, longitude=0).isnull().all()
    assert fc["t2m"].isel(latitude=slice(1, None)).notnull().all()
    assert (fc["valid_time"].values[1, 0] == np.datetime64("2021-06-07T07:00"))
    on_disk = xr.open_dataset(tmp_path / "fc.nc")
    xr.testing.assert_allclose(on_disk.load(), fc)
    records = weather.evaluate(tmp_path / "fc.nc", ds, out=tmp_path / "scores")
    assert {r["system"] for r in records} == {"model", "persistence", "climatology", "linear"}
    assert len(records) == 4 * 9
    assert all(r["crps"] is not None and r["crps"] >= 0 for r in records)
    assert set(records[0]) >= {"variable", "lead_time_hours", "system", "crps", "rmse", "spread", "ssr"}
    calib = json.loads((tmp_path / "run" / "calibration.json").read_text())
    assert len(calib["factors"]["t2m"]) == 6 and fc.attrs["spread_calibration"] == 1
    assert all(LIMITS[0] <= k <= LIMITS[1] for k in calib["factors"]["t2m"])
    assert len(calib["var_const"]["t2m"]) == len(calib["var_slope"]["t2m"]) == 6
    assert all(c >= 0 for c in calib["var_const"]["t2m"] + calib["var_slope"]["t2m"])
    assert any(c + g > 0 for c, g in zip(calib["var_const"]["t2m"], calib["var_slope"]["t2m"]))
    assert len(calib["shrink"]["t2m"]) == 6 and all(0.0 <= a <= 1.0 for a in calib["shrink"]["t2m"])
    for name in ("skill.png", "rank_histogram.png", "rank_histogram_by_lead.png", "maps_t2m.png", "scores.json"):
        assert (tmp_path / "scores" / name).stat().st_size > 0
    with pytest.raises(DataError, match="outside the data"):
        weather.forecast(tmp_path / "run", ds, init_period="2021-06-01:2021-06-01T03:00", progress=False)
    assert fc.attrs["chain_base"] == "level"
    ar_chain = weather.forecast(tmp_path / "run", ds, init_period="2021-06-07:2021-06-07T06:00", members=3, lead="9h",
                                progress=False, chain_base="ar")
    xr.testing.assert_allclose(ar_chain["t2m"].isel(lead_time=slice(0, 6)), fc["t2m"].isel(lead_time=slice(0, 6)))
    assert not np.allclose(ar_chain["t2m"].isel(lead_time=slice(6, None)).fillna(0),
                           fc["t2m"].isel(lead_time=slice(6, None)).fillna(0))  # the chained horizon differs
    with pytest.raises(ConfigError, match="chain_base"):
        weather.forecast(tmp_path / "run", ds, init_period="2021-06-07:2021-06-07T06:00", progress=False,
                         chain_base="smooth")
    with pytest.raises(DataError, match="coordinate 'latitude' is reversed"):  # checked against the run's grid
        weather.forecast(tmp_path / "run", ds.sortby("latitude"), init_period="2021-06-07:2021-06-07T06:00",
                         progress=False)
    with pytest.raises(DataError, match="coordinate 'longitude' .*another grid"):
        weather.forecast(tmp_path / "run", ds.assign_coords(longitude=ds["longitude"] + 0.5),
                         init_period="2021-06-07:2021-06-07T06:00", progress=False)
    with pytest.raises(DataError, match="new_locations needs a gridnet run"):
        weather.forecast(tmp_path / "run", ds, init_period="2021-06-07:2021-06-07T06:00", progress=False,
                         new_locations=True)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["missing_flag"] and config["loss_balance"] == "variable"
    # 12 cells, one of them never valid: it is no channel (compact codec), and comes back NaN (checked above)
    assert config["codec"]["compact"] and config["net"]["channels"] == 11
    assert config["net"]["cond_channels"] == 2 * 11 + 5


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "gendiff.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def test_cli_bad_input_exit_2_one_line(tmp_path):
    ds = hourly_dataset().drop_vars("t2m").assign(q=lambda d: d["latitude"] * 0)  # no time dim anywhere
    ds.to_netcdf(tmp_path / "notime.nc")
    r = _cli("train", "weather", "--data", tmp_path / "notime.nc", "--out", tmp_path / "run", "--quiet")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gendiff: error:") and "notime.nc" in lines[0]
    r = _cli("evaluate", "weather", "--forecast", tmp_path / "missing.nc", "--json")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("gendiff: error:")
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(not ERA5.exists(), reason=f"ERA5 sample not found at {ERA5} (shared data folder absent)")
def test_era5_sample_round_trip():
    era5 = weather.resolve_data(str(ERA5))
    from gendiff.domains.timeseries.data import open_data

    ds = open_data(era5, "t2m")
    codec = fit_codec(ds.isel(time=slice(0, 48)))
    values = codec.encode(ds.isel(time=slice(0, 48)))
    assert values.shape == (48, 33 * 49)
    back = codec.decode(values, ("time",), {"time": ds["time"].values[:48]})
    xr.testing.assert_allclose(back, ds.isel(time=slice(0, 48)).load(), atol=1e-4)
    assert back["t2m"].attrs["units"] == "K"


def test_ar_base_damping_is_the_direct_multistep_correction():
    """An MA(1) series has no predictability past one step, but the one-step AR(2) fitted to it carries its anomaly
    on (an alternating, decaying recursion): undamped, its forecast from lead 2 on errs more than climatology (the
    series' own RMS). The fitted damping takes those leads back towards 0 and the error level to that of
    climatology, leaves lead 1 alone, and is pooled over each variable's features; a true AR(1) keeps factors near 1."""
    rng = np.random.default_rng(7)
    e = rng.normal(0, 1, (6001, 4))
    ma = (e[1:] + 0.9 * e[:-1]).astype(np.float32)
    context, horizon = 3, 6
    starts = np.arange(len(ma) - context - horizon)
    raw = ARBase.fit(ma, np.arange(len(ma)), 2, starts, context, horizon, groups=[2, 2], damp=False)
    ar = ARBase.fit(ma, np.arange(len(ma)), 2, starts, context, horizon, groups=[2, 2])
    assert raw.damp is None and ar.damp.shape == (horizon, 4)
    torch.testing.assert_close(ar.damp[:, 0], ar.damp[:, 1])  # pooled over a variable's features
    assert abs(float(ar.damp[0, 0]) - 1.0) < 0.02 and (ar.damp[2:] < 0.35).all() and ar.damp[2:4].max() < 0.1
    rms = float(np.sqrt((ma.astype(np.float64) ** 2).mean()))
    assert (raw.scale[1:3].mean(1) > 1.01 * rms).all()  # the iterated forecast is worse than climatology
    assert (ar.scale[1:].mean(1) < 1.005 * rms).all()
    assert (ar.scale.pow(2).mean(1) <= raw.scale.pow(2).mean(1) + 1e-5).all()
    # the damping is what window_base applies, lead by lead; longer windows reuse the last factor
    w = torch.from_numpy(ma[100:100 + context + horizon + 2]).unsqueeze(0)
    got, plain = ar.window_base(w, context), raw.window_base(w, context)
    torch.testing.assert_close(got[:, :context], plain[:, :context])
    lead = torch.clamp(torch.arange(horizon + 2), max=horizon - 1)
    torch.testing.assert_close(got[:, context:], plain[:, context:] * ar.damp[lead])
    # stored once per variable, rebuilt per feature; a subset of the features keeps its factors
    state = ar.state([2, 2])
    assert "damp_groups" in state and state["damp_groups"].shape == (horizon, 2)
    torch.testing.assert_close(ARBase.from_state(state).damp, ar.damp)
    torch.testing.assert_close(ar.select([1, 3]).damp, ar.damp[:, [1, 3]])
    x = np.zeros((6000, 2), dtype=np.float32)
    for i in range(1, len(x)):
        x[i] = 0.9 * x[i - 1] + rng.normal(0, 1, 2)
    well = ARBase.fit(x, np.arange(len(x)), 1, np.arange(len(x) - 9), 3, 6)
    assert (well.damp > 0.9).all()
