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
    assert json.loads((run / "config.json").read_text())["variables"] == ["Tair", "Qair", "Wind"]  # lsm: no time
    assert cli.main(["forecast", "weather", "--run", str(run), "--data", str(path), "--init-period",
                     "2019-03-05:2019-03-05T06:00", "--members", "3", "--lead", "9h", "--out", str(fc),
                     "--quiet"]) == 0
    out = xr.open_dataset(fc)
    land = ds["lsm"].values > 0
    for name in ("Tair", "Qair", "Wind"):
        v = out[name].values  # (init, member, lead, lat, lon)
        assert np.isnan(v[..., ~land]).all() and np.isfinite(v[..., land]).all()
    capsys.readouterr()
    assert cli.main(["evaluate", "weather", "--forecast", str(fc), "--truth", str(path), "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert {r["variable"] for r in records} == {"Tair", "Qair", "Wind"}
    assert all(np.isfinite(r["crps"]) for r in records if r["system"] == "model")
