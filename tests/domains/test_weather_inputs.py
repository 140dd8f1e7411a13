"""Item 4 of the weather model's inputs and loss: variables balanced per variable, a missing-data flag channel, and
the forecast data's coordinates checked against the run's."""
import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from gendiff.errors import DataError
from gendiff.spaces import MaskedSpace
from gendiff.domains.timeseries.inputs import cond_channels, make_inputs
from gendiff.domains.timeseries.loss import VariableBalancedSpace
from gendiff.domains.timeseries.stream import fit_codec

torch.set_num_threads(1)


def test_balanced_loss_is_the_mean_of_per_variable_means():
    g = torch.Generator().manual_seed(0)
    err = torch.rand(2, 5, 3, generator=g)  # features: variable a = 4 cells, variable b = 1 station
    mask = torch.ones(2, 5, 3, dtype=torch.bool)
    mask[0, 0] = False  # one cell of a never valid in window 0
    mask[1, 4, :2] = False  # two steps of b missing in window 1
    out = VariableBalancedSpace([4, 1]).reduce(err, mask)
    e, m = err.numpy(), mask.numpy()
    for i in range(2):
        a = e[i, :4][m[i, :4]].mean()
        b = e[i, 4:][m[i, 4:]].mean()
        assert out[i].item() == pytest.approx((a + b) / 2, rel=1e-6)
    # a variable with no valid cell in a window drops out of that window's mean
    mask[0, 4] = False
    out = VariableBalancedSpace([4, 1]).reduce(err, mask)
    assert out[0].item() == pytest.approx(e[0, :4][mask[0, :4].numpy()].mean(), rel=1e-6)
    # one variable: MaskedSpace's mean over valid elements; per cell, the big variable would dominate
    torch.testing.assert_close(VariableBalancedSpace([5]).reduce(err, mask), MaskedSpace().reduce(err, mask))
    assert not torch.allclose(VariableBalancedSpace([4, 1]).reduce(err, mask[:, :, :] | True),
                              MaskedSpace().reduce(err, mask | True))
    with pytest.raises(DataError, match="5 features"):
        VariableBalancedSpace([2, 2]).reduce(err, mask)


def test_missing_flag_marks_context_gaps_only():
    window = torch.randn(1, 6, 3)  # (B, L, C)
    window[0, 1, 2] = float("nan")  # a gap in the context
    window[0, 4, 0] = float("nan")  # a gap in the horizon (not input; masked from the loss)
    cal = torch.zeros(1, 6, 4)
    valid = torch.ones(3, dtype=torch.bool)
    _, _, plain = make_inputs(window, cal, 3, valid, residual=False)
    x0, mask, cond = make_inputs(window, cal, 3, valid, residual=False, missing_flag=True)
    assert plain.shape[1] == cond_channels(3) and cond.shape[1] == cond_channels(3, True) == 3 + 1 + 4 + 3
    torch.testing.assert_close(cond[:, :plain.shape[1]], plain)
    flag = cond[0, plain.shape[1]:]
    expect = torch.zeros(3, 6)
    expect[2, 1] = 1.0
    torch.testing.assert_close(flag, expect)
    # the known values carry 0 at the gap, the same as a value at climatology: only the flag tells them apart
    filled = window.clone()
    filled[0, 1, 2] = 0.0
    _, _, cond_filled = make_inputs(filled, cal, 3, valid, residual=False, missing_flag=True)
    torch.testing.assert_close(cond_filled[:, :3], cond[:, :3])
    assert not torch.equal(cond_filled, cond)
    assert not mask[0, 0, 4] and mask[0, 1, 4]


def _grid(lat, lon=(0.0, 1.0)):
    time = pd.date_range("2021-01-01", periods=10, freq="1h")
    v = np.random.default_rng(0).normal(size=(10, len(lat), len(lon))).astype(np.float32)
    return xr.Dataset({"t": (("time", "lat", "lon"), v)}, coords={"time": time, "lat": list(lat), "lon": list(lon)})


def test_coordinates_checked_against_the_run():
    ds = _grid([52.0, 51.0, 50.0])
    codec = fit_codec(ds)
    codec.encode(ds)
    codec.encode(ds.transpose("time", "lon", "lat"))  # the dims' order is the codec's business, not an error
    codec.encode(ds.assign_coords(lat=ds["lat"].astype(np.float32)))  # float32 storage of the same grid
    with pytest.raises(DataError, match=r"fc.nc: coordinate 'lat' is reversed.*sortby\('lat', ascending=False\)"):
        codec.encode(ds.sortby("lat"), "fc.nc")
    with pytest.raises(DataError, match="coordinate 'lat' of variable 't' differs.*another grid: 52.5 at index 0"):
        codec.encode(ds.assign_coords(lat=[52.5, 51.0, 50.0]))
    with pytest.raises(DataError, match="has no coordinate 'lon'"):
        codec.encode(ds.drop_vars("lon"))
    stations = xr.Dataset({"t": (("time", "station"), np.ones((10, 3), np.float32))},
                          coords={"time": ds["time"], "station": ["A", "B", "C"],
                                  "station_lat": ("station", [50.0, 51.0, 52.0])})
    codec = fit_codec(stations)
    codec.encode(stations)
    with pytest.raises(DataError, match="coordinate 'station' .*the same values in another order: 'B' at index 0"):
        codec.encode(stations.isel(station=[1, 0, 2]).assign_coords(station_lat=stations["station_lat"]))
    with pytest.raises(DataError, match="coordinate 'station_lat' .*another grid"):
        codec.encode(stations.assign_coords(station_lat=("station", [50.0, 51.0, 53.0])))
