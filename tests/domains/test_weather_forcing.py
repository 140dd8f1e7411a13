"""The WFDE5-shaped synthetic forcing (several variables, about half the cells sea) and the CLI on it: training and
forecasting keep NaN over the sea and nowhere else, every variable is scored."""
import json

import numpy as np
import pytest
import xarray as xr

from gendiff import cli
from gendiff.domains.weather.forcing import VARIABLES, wfde5_like_dataset
from gendiff.errors import ConfigError


def test_fields_are_shaped_like_wfde5():
    ds = wfde5_like_dataset(nlat=12, nlon=16, days=3, seed=1)
    assert list(ds.data_vars) == [*VARIABLES, "lsm"] and ds["Tair"].dims == ("time", "lat", "lon")
    assert ds.sizes == {"time": 72, "lat": 12, "lon": 16} and np.allclose(np.diff(ds["lat"]), 0.5)
    land = ds["lsm"].values > 0
    assert 0.4 <= land.mean() <= 0.6
    for name, (_, units) in VARIABLES.items():
        v = ds[name].values
        assert ds[name].attrs["units"] == units
        assert np.isnan(v[:, ~land]).all() and np.isfinite(v[:, land]).all()  # NaN exactly over the sea
    assert 240 < np.nanmin(ds["Tair"]) and np.nanmax(ds["Tair"]) < 320 and 0 < np.nanmin(ds["Qair"])
    assert np.nanmin(ds["SWdown"]) == 0 and np.nanmax(ds["SWdown"]) > 200  # night and day
    t = ds["Tair"].values[:, land]
    a = t - t.mean(0)
    assert np.mean(a[1:] * a[:-1]) / np.mean(a * a) > 0.8  # hourly fields evolve smoothly
    again = wfde5_like_dataset(nlat=12, nlon=16, days=3, seed=1)
    xr.testing.assert_identical(ds, again)
    with pytest.raises(ConfigError, match="Rainf"):
        wfde5_like_dataset(variables=("Tair", "Rainf"))


def test_cli_multi_variable_grid_keeps_nan_over_sea(tmp_path, capsys):
    ds = wfde5_like_dataset(nlat=6, nlon=8, days=6, variables=("Tair", "Qair", "Wind"), seed=2)
    path = tmp_path / "forcing.nc"
    ds.to_netcdf(path)
    run, fc = tmp_path / "run", tmp_path / "fc.nc"
    assert cli.main(["train", "weather", "--data", str(path), "--train-period", "2019-03-01:2019-03-04",
                     "--context", "12h", "--horizon", "6h", "--out", str(run), "--steps", "3", "--batch-size", "4",
                     "--width", "8", "--sample-steps", "3", "--quiet"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["variables"] == ["Tair", "Qair", "Wind"]  # lsm: no time
    land = ds["lsm"].values > 0
    # the sea is no channel of the network: the codec is compact, 3 variables x the land cells
    assert cfg["codec"]["compact"] is True and cfg["net"]["channels"] == 3 * int(land.sum()) < 3 * land.size
    assert cli.main(["forecast", "weather", "--run", str(run), "--data", str(path), "--init-period",
                     "2019-03-05:2019-03-05T06:00", "--members", "3", "--lead", "9h", "--out", str(fc),
                     "--quiet"]) == 0
    out = xr.open_dataset(fc)
    for name in ("Tair", "Qair", "Wind"):
        v = out[name].values  # (init, member, lead, lat, lon)
        assert np.isnan(v[..., ~land]).all() and np.isfinite(v[..., land]).all()
    capsys.readouterr()
    assert cli.main(["evaluate", "weather", "--forecast", str(fc), "--truth", str(path), "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert {r["variable"] for r in records} == {"Tair", "Qair", "Wind"}
    assert all(np.isfinite(r["crps"]) for r in records if r["system"] == "model")


def test_compact_codec_leaves_the_sea_out_and_puts_it_back(tmp_path):
    from gendiff.domains.timeseries.data import Codec
    from gendiff.domains.timeseries.run import read_state, save_state
    from gendiff.domains.timeseries.stream import fit_statistics

    src = wfde5_like_dataset(nlat=6, nlon=8, days=2, variables=("Tair", "Wind"), seed=3)
    ds, land = src[["Tair", "Wind"]], src["lsm"].values > 0
    for normalise in ("variable", "location"):
        stats = fit_statistics(ds, normalise=normalise)
        full = stats.codec
        compact = Codec(full.template, full.mean, full.std, compact=True)
        assert compact.sizes == [int(land.sum())] * 2 and compact.valid.all()
        enc_full, enc = full.encode(ds), compact.encode(ds)
        np.testing.assert_array_equal(enc, enc_full[:, compact.full_index])  # the land columns, unchanged
        assert np.isfinite(enc).all()
        back = compact.decode(enc, ("time",), {"time": ds["time"].values})
        xr.testing.assert_allclose(back, ds, rtol=1e-5)  # NaN over the sea again
        clim_full, clim = stats.climatology(full), stats.climatology(compact)
        np.testing.assert_array_equal(clim.mean, clim_full.mean[:, compact.full_index])
        save_state(tmp_path, compact, clim, None)
        meta = compact.to_state()[1]
        state = read_state(tmp_path / "state.safetensors")
        again = Codec.from_state({f"codec.{k}": v.numpy() for k, v in state["codec"].items()}, meta,
                                 compact.to_config())
        assert again.compact and again.sizes == compact.sizes
        np.testing.assert_array_equal(again.encode(ds), enc)
