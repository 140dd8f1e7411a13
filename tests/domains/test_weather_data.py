"""Weather codec (stack/unstack), input validation errors, calendar features, Lorenz-96 and baselines."""
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from gendiff.errors import ConfigError, DataError
from gendiff.domains.timeseries import baselines
from gendiff.domains.timeseries.data import (Codec, calendar_features, open_data, parse_duration, parse_period,
                                          period_indices, write_dataset)
from gendiff.domains.timeseries.data import init_indices
from gendiff.domains.weather.lorenz96 import integrate, lorenz96_dataset, tendency
from gendiff.domains.timeseries.stream import fit_codec


def multi_var_dataset(n_time=30, seed=0):
    rng = np.random.default_rng(seed)
    time = pd.date_range("2020-01-01", periods=n_time, freq="3h")
    lat, lon, level = np.array([55.0, 52.5, 50.0]), np.array([-2.0, 0.0]), np.array([850, 500])
    t = rng.normal(280, 3, (n_time, 2, 3, 2)).astype(np.float32)
    t[:, :, 0, 0] = np.nan  # a cell that is never valid (land-sea mask)
    t[5, 1, 2, 1] = np.nan  # a gap
    station = xr.DataArray(rng.normal(1000, 5, (n_time, 4)), dims=("time", "station"),
                           coords={"station": ["a", "b", "c", "d"]}, attrs={"units": "hPa", "long_name": "pressure"})
    ds = xr.Dataset(
        {"t": xr.DataArray(t, dims=("time", "level", "latitude", "longitude"),
                           attrs={"units": "K", "long_name": "temperature"}),
         "p": station},
        coords={"time": time, "latitude": ("latitude", lat, {"units": "degrees_north"}),
                "longitude": ("longitude", lon, {"units": "degrees_east"}), "level": ("level", level, {"units": "hPa"}),
                "height": ((), 2.0, {"units": "m"})},
        attrs={"title": "synthetic", "Conventions": "CF-1.7"})
    return ds


def test_stack_unstack_round_trip_restores_coords_and_attrs(tmp_path):
    ds = multi_var_dataset()
    codec = fit_codec(ds)
    values = codec.encode(ds)
    assert values.shape == (30, 2 * 3 * 2 + 4)
    assert np.isnan(values).sum() == 30 * 2 + 1
    back = codec.decode(values, ("time",), {"time": ds["time"].values})
    xr.testing.assert_allclose(back, ds)
    for v in ds.data_vars:
        assert back[v].attrs == ds[v].attrs and back[v].dims == ds[v].dims and back[v].dtype == ds[v].dtype
    for c in ("latitude", "longitude", "level"):
        assert back[c].attrs == ds[c].attrs
    assert back.attrs == ds.attrs
    # the saved codec (netCDF template) restores the same
    codec.save(tmp_path / "codec.nc")
    again = Codec.load(tmp_path / "codec.nc", codec.to_config())
    xr.testing.assert_allclose(again.decode(values, ("time",), {"time": ds["time"].values}), ds)
    # per-variable normalisation
    assert abs(np.nanmean(values[:, :12])) < 1e-5 and abs(np.nanstd(values[:, :12]) - 1) < 1e-4


def test_dataarray_input_and_write_atomic(tmp_path):
    ds = multi_var_dataset()
    opened = open_data(ds["p"])
    assert list(opened.data_vars) == ["p"]
    path = write_dataset(ds, tmp_path / "x.nc")
    assert [p.name for p in tmp_path.iterdir()] == ["x.nc"]
    xr.testing.assert_identical(open_data(path).load(), ds[["t", "p"]])


def test_zarr_round_trip(tmp_path):
    pytest.importorskip("zarr")
    ds = multi_var_dataset()
    path = write_dataset(ds, tmp_path / "x.zarr")
    assert [p.name for p in tmp_path.iterdir()] == ["x.zarr"]  # no temporary store left behind
    back = open_data(path, ["t"]).load()
    xr.testing.assert_allclose(back, ds[["t"]])
    assert back["t"].attrs == ds["t"].attrs and back.attrs == ds.attrs
    write_dataset(ds.isel(time=slice(0, 5)), path)  # overwriting replaces the store
    assert open_data(path, ["t"]).sizes["time"] == 5


def _err(excinfo, *words):
    msg = str(excinfo.value)
    for w in words:
        assert w in msg, msg


def _write_grib(path, values, times, lats, lons):
    """GRIB2 2 m temperature messages (one per time) written with ecCodes from its regular lat-lon sample."""
    eccodes = pytest.importorskip("eccodes")
    with open(path, "wb") as f:
        for t, field in zip(pd.DatetimeIndex(times), values):
            h = eccodes.codes_grib_new_from_samples("regular_ll_sfc_grib2")
            for key, val in (("paramId", 167), ("Ni", len(lons)), ("Nj", len(lats)),
                             ("latitudeOfFirstGridPointInDegrees", float(lats[0])),
                             ("latitudeOfLastGridPointInDegrees", float(lats[-1])),
                             ("longitudeOfFirstGridPointInDegrees", float(lons[0])),
                             ("longitudeOfLastGridPointInDegrees", float(lons[-1])),
                             ("iDirectionIncrementInDegrees", float(lons[1] - lons[0])),
                             ("jDirectionIncrementInDegrees", float(lats[0] - lats[1])),
                             ("dataDate", int(t.strftime("%Y%m%d"))), ("dataTime", int(t.strftime("%H%M"))),
                             ("bitsPerValue", 24)):
                eccodes.codes_set(h, key, val)
            eccodes.codes_set_values(h, np.asarray(field, dtype=np.float64).ravel())
            eccodes.codes_write(h, f)
            eccodes.codes_release(h)


def test_grib_input(tmp_path):
    pytest.importorskip("cfgrib")
    times = pd.date_range("2021-06-01", periods=30, freq="h")
    lats, lons = np.array([52.0, 51.5, 51.0]), np.array([0.0, 0.5, 1.0, 1.5])
    vals = 280 + np.random.default_rng(0).normal(size=(30, 3, 4))
    path = tmp_path / "t2m.grib2"
    _write_grib(path, vals, times, lats, lons)
    ds = open_data(path, ["t2m"])
    assert ds["t2m"].dims == ("time", "latitude", "longitude") and ds["t2m"].attrs["units"] == "K"
    np.testing.assert_array_equal(ds["time"].values, times.values)
    np.testing.assert_allclose(ds["latitude"].values, lats)
    np.testing.assert_allclose(ds["longitude"].values, lons)
    np.testing.assert_allclose(ds["t2m"].values, vals, atol=1e-3)  # 24-bit packing
    codec = fit_codec(ds)  # GRIB data go through the same stacking as netCDF
    enc = codec.encode(ds, "grib")
    assert enc.shape == (30, 12) and np.isfinite(enc).all()
    back = codec.decode(enc, ("time",), {"time": ds["time"].values})
    np.testing.assert_allclose(back["t2m"].transpose(*ds["t2m"].dims).values, ds["t2m"].values, atol=1e-3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t2m.grib2"]  # no .idx index left beside the data
    (tmp_path / "bad.grib2").write_bytes(b"GRIB" + b"\0" * 64)
    with pytest.raises(DataError, match="bad.grib2"):
        open_data(tmp_path / "bad.grib2", ["t2m"])


def test_bad_inputs_raise_data_errors(tmp_path):
    ds = multi_var_dataset()
    with pytest.raises(DataError) as e:
        open_data(ds.isel(time=0), name="f.nc")
    _err(e, "f.nc", "no 'time' dimension")
    shuffled = ds.isel(time=[0, 2, 1] + list(range(3, 30)))
    with pytest.raises(DataError) as e:
        open_data(shuffled, name="f.nc")
    _err(e, "f.nc", "not strictly increasing", "index 2")
    irregular = ds.isel(time=[0, 1, 2, 4, 5, 6])
    with pytest.raises(DataError) as e:
        open_data(irregular, name="f.nc")
    _err(e, "f.nc", "irregular", "index 3")
    with pytest.raises(DataError) as e:
        open_data(ds, ["t", "q"], name="f.nc")
    _err(e, "f.nc", "unknown variable 'q'", "available: t, p")
    ds2 = ds.copy()
    ds2["p"] = ds2["p"] * np.nan
    with pytest.raises(DataError) as e:
        open_data(ds2, ["p"], name="f.nc")
    _err(e, "f.nc", "'p' is all NaN")
    with pytest.raises(DataError) as e:
        open_data(tmp_path / "missing.nc")
    _err(e, "missing.nc", "no such file")
    with pytest.raises(DataError) as e:
        period_indices(ds, "2021-01-01:2021-02-01", "f.nc", "forecast period")
    _err(e, "f.nc", "forecast period", "outside the data")
    with pytest.raises(DataError) as e:
        init_indices(ds, "2020-01-01:2020-01-02", "3h", 4, "f.nc")
    _err(e, "f.nc", "outside the data", "context")
    with pytest.raises(ConfigError):
        parse_duration("5h", pd.Timedelta("3h"), "horizon")
    with pytest.raises(ConfigError):
        parse_period("2020-01-01")


def test_periods_and_durations():
    ds = multi_var_dataset()
    assert parse_duration("24h", pd.Timedelta("3h"), "x") == 8
    assert parse_period("2020-01-01T06:00:2020-01-02") == ("2020-01-01T06:00", "2020-01-02")
    idx = period_indices(ds, "2020-01-01:2020-01-01", "d", "p")
    assert list(idx) == list(range(8))  # the end date is inclusive
    assert list(init_indices(ds, "2020-01-02:2020-01-03", "6h", 8, "d")) == list(range(8, 24, 2))


def test_calendar_features():
    f = calendar_features(pd.to_datetime(["2019-01-01T00:00", "2019-01-01T06:00", "2019-07-02T12:00"]).values)
    np.testing.assert_allclose(f[:, 0], [0, 1, 0], atol=1e-6)
    np.testing.assert_allclose(f[:, 1], [1, 0, -1], atol=1e-6)
    assert f[2, 3] < -0.99  # early July: cos(day of year) near -1


def test_lorenz96_tendency_and_rk4_order():
    x = np.random.default_rng(0).normal(size=(3, 40))
    k = np.arange(40)
    brute = np.stack([[(xi[(j + 1) % 40] - xi[j - 2]) * xi[j - 1] - xi[j] + 8.0 for j in k] for xi in x])
    np.testing.assert_allclose(tendency(x, 8.0), brute, atol=1e-12)
    x0 = lorenz96_dataset(10)["x"].values[-1].astype(np.float64)
    ref = integrate(x0, 1, out_dt=0.05, dt=0.05 / 64)[0]
    e1 = np.abs(integrate(x0, 1, out_dt=0.05, dt=0.05 / 2)[0] - ref).max()
    e2 = np.abs(integrate(x0, 1, out_dt=0.05, dt=0.05 / 4)[0] - ref).max()
    assert 10 < e1 / e2 < 25  # fourth order: error ratio ~ 2^4
    ds = lorenz96_dataset(500)
    assert ds["x"].dims == ("time", "site") and ds.sizes["site"] == 40
    assert 3.0 < float(ds["x"].std()) < 4.3 and 1.8 < float(ds["x"].mean()) < 3.0  # the known F=8 climate


def test_baselines():
    times = pd.date_range("2020-01-01", periods=24 * 20, freq="1h").values
    rng = np.random.default_rng(0)
    n = len(times)
    a = np.zeros((n, 3))
    for t in range(2, n):
        a[t] = 1.2 * a[t - 1] - 0.4 * a[t - 2] + rng.normal(0, 0.1, 3)
    diurnal = np.sin(2 * np.pi * np.arange(n) / 24)[:, None] * np.array([1.0, 2.0, 0.5])
    values = (a + diurnal).astype(np.float32)
    train = np.arange(24 * 15)
    ar = baselines.LinearAR().fit(values, times, train)
    np.testing.assert_allclose(ar.phi, [[1.2, -0.4]] * 3, atol=0.1)
    init = np.array([400, 420])
    p = baselines.persistence(values, init, 5)
    assert p.shape == (2, 1, 5, 3) and (p[:, 0, 3] == values[init]).all()
    valid = times[init][:, None] + np.timedelta64(1, "h") * np.arange(1, 6)
    clim = baselines.hourly_climatology(values, times, train, valid)
    assert clim.shape == (2, 15, 5, 3)
    np.testing.assert_array_equal(np.sort(clim[0, :, 0, 1]), np.sort(values[train][(train % 24) == 17, 1]))
    fc = ar.forecast(values, times, init, 5, members=200, seed=1)
    assert fc.shape == (2, 200, 5, 3)
    assert np.abs(fc[:, :, 0].std(1) - 0.1).max() < 0.03  # one-step spread = residual std
