"""The location-shared network (gridnet): parameters independent of the number of locations, equivariance to the
order of stations, a tiny trained run that forecasts a subregion of its grid, and a pass on the meta device."""
import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from gendiff.errors import ConfigError, DataError
from gendiff.domains import weather
from gendiff.domains.timeseries.sharednet import GridNet, neighbour_graph, static_inputs
from gendiff.domains.timeseries.run import load_run
from gendiff.domains.timeseries.stream import fit_codec

torch.set_num_threads(1)


def _inputs(n, k=2, s=3, length=12, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, k * n, length, generator=g)
    cond = {"seq": torch.randn(b, 2 * k * n + 5, length, generator=g), "static": torch.randn(1, n, s, generator=g)}
    return x, cond


def _randomised(net):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():  # zero-initialised outputs would make every check trivially pass
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return net


def test_parameters_do_not_depend_on_the_number_of_locations():
    counts = set()
    net = GridNet(2, static=3, pos_dims=3, width=16, mults=[1, 2], neighbours=4)
    for n in (3, 10, 50):
        x, cond = _inputs(n)
        assert net(x, torch.rand(2), cond=cond).shape == x.shape  # one network, any number of locations
        counts.add(sum(p.numel() for p in GridNet(2, static=3, pos_dims=3, width=16, mults=[1, 2]).parameters()))
    assert len(counts) == 1
    with pytest.raises(DataError, match="gridnet: x has 20 features"):
        net(x[:, :20], torch.rand(2), cond=cond)


def test_station_order_does_not_matter():
    n, k = 12, 2
    net = _randomised(GridNet(k, static=3, pos_dims=3, width=16, mults=[1, 2], neighbours=5)).eval()
    x, cond = _inputs(n, k)
    t = torch.tensor([0.3, 0.8])
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(3))

    def permute(a):
        return a.reshape(a.shape[0], -1, n, a.shape[-1])[:, :, perm].reshape(a.shape)

    seq = cond["seq"]
    seq_p = torch.cat([permute(seq[:, :k * n]), seq[:, k * n:k * n + 5], permute(seq[:, k * n + 5:])], 1)
    with torch.no_grad():
        out = net(x, t, cond=cond)
        out_p = net(permute(x), t, cond={"seq": seq_p, "static": cond["static"][:, perm]})
    torch.testing.assert_close(out_p, permute(out), rtol=1e-5, atol=1e-5)
    # and the locations do talk to each other: changing one station's input moves its neighbours' outputs
    x2 = x.clone()
    x2[:, 0] += 1.0
    with torch.no_grad():
        moved = (net(x2, t, cond=cond) - out).abs().reshape(2, k, n, -1).amax((0, 1, 3))
    assert (moved[1:] > 1e-6).any()


def test_neighbour_graph_nearest_first_and_scaled():
    pos = torch.tensor([[[0.0], [1.0], [3.0], [3.5]]])
    idx, rel = neighbour_graph(pos, 2)
    assert idx[0].tolist() == [[0, 1], [1, 0], [2, 3], [3, 2]]
    # offsets in units of the median nearest-neighbour distance (median of 1, 1, 0.5, 0.5 = 0.75... torch: lower)
    unit = torch.tensor([1.0, 1.0, 0.5, 0.5]).median()
    torch.testing.assert_close(rel[0, 2, 1], torch.tensor([0.5, 0.5]) / unit)
    idx, rel = neighbour_graph(pos[..., :0], 2)  # no positions: all locations, no offsets
    assert idx.shape == (1, 4, 4) and not rel.any()


def _grid_data(days=8, nlat=4, nlon=5, seed=0):
    rng = np.random.default_rng(seed)
    time = pd.date_range("2021-06-01", periods=24 * days, freq="1h")
    lat, lon = np.linspace(55.0, 52.0, nlat), np.linspace(-2.0, 2.0, nlon)
    hour = np.asarray(time.hour)
    field = (10 + 4 * np.sin(2 * np.pi * (hour - 9) / 24)[:, None, None] + lat[None, :, None] * 0.2
             + np.cumsum(rng.normal(0, 0.3, (len(time), 1, 1)), 0) + rng.normal(0, 0.3, (len(time), nlat, nlon)))
    return xr.Dataset({"t2m": (("time", "latitude", "longitude"), field.astype(np.float32), {"units": "degC"}),
                       "u10": (("time", "latitude", "longitude"), rng.normal(0, 1, field.shape).astype(np.float32))},
                      coords={"time": time, "latitude": lat, "longitude": lon})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A gridnet run trained for a few steps on a 4 x 5 grid of two variables with a land-sea mask."""
    tmp_path = tmp_path_factory.mktemp("gridnet")
    ds = _grid_data()
    lsm = xr.Dataset({"lsm": (("latitude", "longitude"), (np.arange(20).reshape(4, 5) % 3 == 0).astype(float))},
                     coords={"latitude": ds["latitude"], "longitude": ds["longitude"]})
    summary = weather.train(ds, tmp_path / "run", arch="gridnet", static=lsm, patch=8,
                            train_period="2021-06-01:2021-06-06", context="6h", horizon="6h",
                            net={"width": 8, "mults": [1, 2], "neighbours": 4}, max_steps=6, batch_size=4,
                            sample_steps=3, progress=False)
    return tmp_path, ds, lsm, summary


def test_tiny_gridnet_run_forecasts_its_grid_and_a_subregion(tiny):
    tmp_path, ds, lsm, summary = tiny
    assert np.isfinite(summary["loss"])
    run = load_run(tmp_path / "run")
    assert run.arch == "gridnet" and tuple(run.static.shape) == (20, 4)  # unit vector + land-sea mask
    assert run.config["locations"] == {"location_dims": ["latitude", "longitude"], "locations": 20, "channels": 2,
                                       "pos_dims": 3, "pos_kind": "sphere", "fields": ["lsm"], "patch": 8}
    kw = dict(init_period="2021-06-07:2021-06-07T06:00", init_every="6h", members=2, lead="6h", progress=False)
    fc = weather.forecast(tmp_path / "run", ds, **kw)
    assert dict(fc.sizes) == {"init_time": 2, "member": 2, "lead_time": 6, "latitude": 4, "longitude": 5}
    assert fc["t2m"].notnull().all() and fc["u10"].notnull().all()
    sub = ds.isel(latitude=slice(1, 3), longitude=[0, 2, 3])
    fc_sub = weather.forecast(tmp_path / "run", sub, **kw)
    assert dict(fc_sub.sizes) == {"init_time": 2, "member": 2, "lead_time": 6, "latitude": 2, "longitude": 3}
    assert fc_sub["t2m"].notnull().all()
    np.testing.assert_array_equal(fc_sub["longitude"].values, ds["longitude"].values[[0, 2, 3]])
    with pytest.raises(DataError, match="coordinate 'latitude' is reversed"):
        weather.forecast(tmp_path / "run", ds.sortby("latitude"), **kw)
    with pytest.raises(DataError, match="coordinate 'longitude'"):  # not a part of the grid: named, not guessed
        weather.forecast(tmp_path / "run", ds.assign_coords(longitude=ds["longitude"] + 0.3), **kw)
    # another region: the per-location state from the data before the first init, the network the run's
    other = ds.assign_coords(longitude=ds["longitude"] + 0.3).isel(latitude=slice(0, 3))
    with pytest.raises(DataError, match="pass static= with them"):
        weather.forecast(tmp_path / "run", other, new_locations=True, **kw)
    other_lsm = lsm.assign_coords(longitude=other["longitude"]).isel(latitude=slice(0, 3))
    fc_other = weather.forecast(tmp_path / "run", other, new_locations=True, static=other_lsm, **kw)
    assert dict(fc_other.sizes) == {"init_time": 2, "member": 2, "lead_time": 6, "latitude": 3, "longitude": 5}
    assert fc_other["t2m"].notnull().all()
    np.testing.assert_allclose(fc_other["longitude"].values, other["longitude"].values)
    spread = float(fc_other["t2m"].std("member").mean())
    assert 0 < spread < 5 * float(other["t2m"].std())
    with pytest.raises(ConfigError, match="arch='gridnet'"):
        weather.train(ds, tmp_path / "bad", patch=4, max_steps=1, progress=False)


def test_gridnet_training_step_and_forecast_on_a_virtual_device(tiny):
    """Patch windows through the balanced loss, and a forecast of a subregion, with every tensor on the device
    (tests._device_check.VirtualDevice: any op mixing device and CPU tensors raises)."""
    from gendiff.device import make_generator
    from gendiff.losses import constant_weight
    from gendiff.schedules import schedule_from_config
    from gendiff.domains.timeseries.data import calendar_features
    from gendiff.domains.timeseries.forecasting import rollout_tensor
    from gendiff.domains.timeseries.loss import VariableBalancedSpace, make_step_fn
    from gendiff.domains.timeseries.network import build_denoiser
    from gendiff.domains.timeseries.regions import subregion
    from gendiff.domains.timeseries.windows import GridWindowDataset, window_starts
    from tests._device_check import VirtualDevice

    tmp_path, ds, _, _ = tiny
    run = load_run(tmp_path / "run")
    times = ds["time"].values
    values = run.codec.encode(ds) - run.climatology.at(times)
    starts = window_starts(len(times), np.arange(100), 12, values, 6)
    data = GridWindowDataset(values, calendar_features(times, False), starts[:4], 6, 6, base=run.ar, times=times,
                             static=run.static.numpy(), locations=20, pos_dims=3, patch=8)
    batch = torch.utils.data.default_collate([data[i] for i in range(4)])
    assert batch["x0"].shape == (4, 16, 12) and batch["cond"]["static"].shape == (4, 8, 4)
    sub = subregion(run, ds.isel(latitude=slice(1, 3)))
    init = np.array([150, 160])
    sub_values = sub.codec.encode(ds.isel(latitude=slice(1, 3))) - sub.climatology.at(times)
    with VirtualDevice("meta") as check:
        den = build_denoiser(run.config).train().to(check.device)
        moved = {"x0": batch["x0"].to(check.device), "mask": batch["mask"].to(check.device),
                 "cond": {k: v.to(check.device) for k, v in batch["cond"].items()}}
        step_fn = make_step_fn(schedule_from_config(run.config["schedule"]), VariableBalancedSpace([8, 8]), 0.1,
                               constant_weight())
        loss = step_fn(den, moved, make_generator(check.device, 0))
        loss.backward()
        assert check.is_on_device(loss) and torch.isfinite(loss.cpu())
        sub.to(check.device)
        out = rollout_tensor(sub, sub_values, times, init, 8, 2, sampler="euler_maruyama", steps=2, progress=False)
        assert check.is_on_device(out) and out.shape == (2, 2, 8, 20)
        vals = out.cpu()
    assert torch.isfinite(vals).all()


def test_static_inputs_of_stations_and_series():
    time = pd.date_range("2021-01-01", periods=5, freq="1h")
    st = xr.Dataset({"t": (("time", "station"), np.ones((5, 3), np.float32))},
                    coords={"time": time, "station": ["A", "B", "C"], "lat": ("station", [50.0, 51.0, 52.0]),
                            "lon": ("station", [0.0, 1.0, -1.0])})
    static, info = static_inputs(fit_codec(st).template, ["t"])
    assert info["pos_kind"] == "sphere" and static.shape == (3, 3)
    np.testing.assert_allclose(static[0], [np.cos(np.deg2rad(50)), 0.0, np.sin(np.deg2rad(50))], atol=1e-6)
    series = st.drop_vars(["lat", "lon"])
    static, info = static_inputs(fit_codec(series).template, ["t"])
    assert info["pos_kind"] == "none" and static.shape == (3, 0)


def test_gridnet_on_the_meta_device():
    net = GridNet(2, static=3, pos_dims=3, width=8, mults=[1, 2], neighbours=3).to("meta")
    x, cond = _inputs(6)
    x, cond = x.to("meta"), {k: v.to("meta") for k, v in cond.items()}
    out = net(x, torch.rand(2, device="meta"), cond=cond)
    assert out.device.type == "meta" and out.shape == x.shape


def test_tiny_gridnet_run_on_a_station_set(tmp_path):
    rng = np.random.default_rng(0)
    time = pd.date_range("2021-06-01", periods=24 * 6, freq="1h")
    n = 6
    temp = (10 + 3 * np.sin(2 * np.pi * np.asarray(time.hour) / 24)[:, None] + rng.normal(0, 0.5, (len(time), n)))
    temp[40:45, 2] = np.nan  # a station outage
    ds = xr.Dataset({"t": (("time", "station"), temp.astype(np.float32))},
                    coords={"time": time, "station": [f"S{i}" for i in range(n)],
                            "lat": ("station", rng.uniform(50, 55, n)), "lon": ("station", rng.uniform(-3, 2, n))})
    weather.train(ds, tmp_path / "run", arch="gridnet", train_period="2021-06-01:2021-06-05", context="6h",
                  horizon="6h", net={"width": 8, "mults": [1, 2], "neighbours": 3}, max_steps=3, batch_size=4,
                  sample_steps=2, calibration=0.0, progress=False)
    run = load_run(tmp_path / "run")
    assert run.config["locations"]["pos_kind"] == "sphere" and run.config["locations"]["locations"] == n
    kw = dict(init_period="2021-06-06:2021-06-06T06:00", init_every="6h", members=2, lead="6h", progress=False)
    fc = weather.forecast(tmp_path / "run", ds, **kw)
    assert dict(fc.sizes) == {"init_time": 2, "member": 2, "lead_time": 6, "station": n} and fc["t"].notnull().all()
    part = weather.forecast(tmp_path / "run", ds.isel(station=[1, 4]), **kw)  # a subset of the stations
    assert list(part["station"].values) == ["S1", "S4"] and part["t"].notnull().all()
    with pytest.raises(DataError, match="coordinate 'station'"):
        weather.forecast(tmp_path / "run", ds.isel(station=[4, 1]), **kw)  # another order is not a subset
