"""The daylight variables' hourly climatology follows the sun through the season (insolation.SolarScale, train's
insolation=True): issue 12's shortwave radiation, whose noon mean in the week after a March training period is
higher than any training week's."""
import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from gendiff import cli
from gendiff.domains.timeseries.climatology import HourlyClimatology
from gendiff.domains.timeseries.forecasting import nonnegative_variables
from gendiff.domains.timeseries.insolation import SolarScale, cos_zenith, feature_coordinates
from gendiff.domains.timeseries.run import load_run
from gendiff.domains.timeseries.stream import fit_codec, fit_statistics
from gendiff.domains.weather import forecast, train
from gendiff.errors import ConfigError, DataError

NET = {"width": 8, "mults": [1, 2], "blocks_per_level": 1, "heads": 2, "dropout": 0.0}
TINY = dict(net=NET, max_steps=3, batch_size=8, sample_steps=3, progress=False)


# reference elevations (degrees, no refraction) from NREL's SPA as implemented in pvlib 0.16.1
# (pvlib.solarposition.get_solarposition(..., method="nrel_numpy")["elevation"])
@pytest.mark.parametrize("when, lat, lon, elevation", [
    ("2019-06-21T12:00", 51.5, 0.0, 61.932),  # London, June solstice
    ("2019-12-21T12:00", 51.5, 0.0, 15.062),  # London, December solstice
    ("2019-03-20T12:00", 40.4, -3.7, 49.116),  # Madrid, equinox
    ("2019-03-20T00:00", 51.5, 0.0, -38.838),  # London at midnight, below the horizon
    ("2019-03-28T07:00", 50.0, -9.75, 4.755),  # dawn west of Ireland, the WFDE5-shaped grid's corner
    ("2020-01-15T03:00", -33.9, 151.2, 72.348),  # Sydney, southern summer
    ("2035-09-01T18:30", 35.7, 139.7, -20.667),  # Tokyo, night, 16 years on
])
def test_solar_elevation_matches_nrel_spa(when, lat, lon, elevation):
    cz = cos_zenith(np.array([when], dtype="datetime64[ns]"), [lat], [lon])
    assert cz.shape == (1, 1)
    assert np.degrees(np.arcsin(cz[0, 0])) == pytest.approx(elevation, abs=0.02)


def sunny_grid(days=31, seed=0, nlat=3, nlon=4, start="2019-03-01", shift="0min"):
    """Hourly shortwave radiation on a small lat/lon grid: the top-of-atmosphere insolation times a cloudiness
    that drifts from hour to hour, and a temperature beside it; one cell has no value (sea). `shift`: the data's
    sun is that much ahead of the stamps (an hour's mean stamped at its end is half an hour behind)."""
    times = pd.date_range(start, periods=24 * days, freq="h")
    lat, lon = 48.0 + 2.0 * np.arange(nlat), -4.0 + 2.0 * np.arange(nlon)
    rng = np.random.default_rng(seed)
    cz = np.clip(cos_zenith((times + pd.Timedelta(shift)).values, np.repeat(lat, nlon), np.tile(lon, nlat)), 0,
                 None)
    cz = cz.reshape(len(times), nlat, nlon)
    k = np.empty(cz.shape)
    level = np.full((nlat, nlon), 0.6)
    for t in range(len(times)):
        level = 0.6 + 0.9 * (level - 0.6) + 0.05 * rng.standard_normal((nlat, nlon))
        k[t] = np.clip(level, 0.1, 1.0)
    sw = 1000.0 * cz * k
    tair = 280 + 3 * np.sin(2 * np.pi * (times.hour.to_numpy() - 9) / 24)[:, None, None] + rng.standard_normal(cz.shape)
    sw[:, 0, 0] = tair[:, 0, 0] = np.nan
    return xr.Dataset({"SWdown": (("time", "lat", "lon"), sw), "Tair": (("time", "lat", "lon"), tair)},
                      coords={"time": times, "lat": lat, "lon": lon})


def test_feature_coordinates_follow_the_stacked_cells():
    ds = sunny_grid(days=2)
    stats = fit_statistics(ds)
    lat, lon = feature_coordinates(stats.codec.template, stats.codec.variables)
    grid_lat, grid_lon = np.meshgrid(ds.lat.values, ds.lon.values, indexing="ij")
    np.testing.assert_array_equal(lat, np.tile(grid_lat.ravel(), 2))
    np.testing.assert_array_equal(lon, np.tile(grid_lon.ravel(), 2))
    assert feature_coordinates(ds.rename(lat="y", lon="x")[["Tair"]], ["Tair"]) is None


def test_the_climatology_follows_the_sun_after_the_training_period():
    ds = sunny_grid()
    train_ds, later = ds.sel(time=slice("2019-03-01", "2019-03-24")), ds.sel(time=slice("2019-03-25", None))
    stats = fit_statistics(train_ds)
    fixed, solar = stats.climatology(std="auto"), stats.climatology(std="auto", insolation=True)
    assert fixed.solar is None and solar.solar is not None
    n = stats.codec.sizes[0]
    np.testing.assert_array_equal(solar.solar.cols, np.arange(1, n))  # SWdown's land cells only, not Tair
    enc = stats.codec.encode(later)
    times = later.time.values
    noon = pd.DatetimeIndex(times).hour == 12
    for clim in (fixed, solar):  # the round trip is exact wherever the hour varies
        back = clim.restore(clim.remove(enc, times), times)
        day = clim.std is None or (clim.std[clim._positions(times)] > 0)
        np.testing.assert_allclose(np.where(day, back, enc)[:, 1:], enc[:, 1:], atol=1e-5)
    bias = {name: float(np.nanmean((enc - c.at(times))[noon][:, 1:n]))
            for name, c in (("fixed", fixed), ("solar", solar))}
    # the noon sun of 25-31 March is higher than the training period's mean: the fixed climatology is too low
    assert bias["fixed"] > 0.1 and abs(bias["solar"]) < 0.25 * bias["fixed"]
    # the training period itself keeps its mean (a ratio estimator)
    in_train = train_ds.time.values
    np.testing.assert_allclose(solar.at(in_train)[:, 1:n].reshape(-1, 24, n - 1).mean(0),
                               fixed.at(in_train)[:, 1:n].reshape(-1, 24, n - 1).mean(0), atol=0.02)
    # Tair has no still hour: untouched
    np.testing.assert_array_equal(solar.at(times)[:, n:], fixed.at(times)[:, n:])
    sub = solar.select(np.array([0, 3, n + 2, 5]))
    np.testing.assert_allclose(sub.at(times), solar.at(times)[:, [0, 3, n + 2, 5]], rtol=1e-6)
    np.testing.assert_array_equal(sub.solar.cols, [1, 3])


@pytest.mark.parametrize("shift", ["-40min", "40min"])
def test_anomalies_stay_bounded_when_the_data_keep_another_time_convention(shift):
    ds = sunny_grid(shift=shift)
    train_ds = ds.sel(time=slice("2019-03-01", "2019-03-24"))
    stats = fit_statistics(train_ds)
    n = stats.codec.sizes[0]
    for insolation in (False, True):
        clim = stats.climatology(std="auto", insolation=insolation)
        z = clim.remove(stats.codec.encode(ds), ds.time.values)[:, 1:n]
        # dawn: the geometry's sun still down (factor 0) while the data's is up; the deviation is not shrunk to 0
        assert np.nanmax(np.abs(z)) < 8, (insolation, np.nanmax(np.abs(z)))


def test_restored_radiation_is_zero_where_the_sun_was_down_over_the_step():
    """Berlin, 1 November 2017, hourly: sunrise about 06:10 UTC, sunset about 15:40 UTC. Members far from the
    hour's mean come back as the physical 0 at 06 UTC (dark at 05 and 06: the hour ending there is dark) and at
    night, but not at 07 (the sun up) nor at 16 (the sun set within the hour ending there)."""
    scale = SolarScale([1], [52.5], [13.4], np.full((24, 1), 0.5), [-1.5])
    clim = HourlyClimatology(np.arange(24.0), np.zeros((24, 2), np.float32), np.ones((24, 2), np.float32), scale)
    times = pd.date_range("2017-11-01T00:00", periods=24, freq="h").values
    z = np.full((3, 24, 2), 2.0, np.float32)  # three members, an anomaly of 2 everywhere
    out = clim.restore(z, np.broadcast_to(times, (3, 24)))
    hours = pd.DatetimeIndex(times).hour
    zero = out[0, :, 1] == np.float32(-1.5)
    assert zero[hours.isin([0, 3, 5, 6, 17, 22])].all() and not zero[hours.isin([7, 12, 15, 16])].any()
    np.testing.assert_array_equal(out[..., 0], 2.0)  # a feature without a solar scale: untouched
    per_member = clim.restore(z[:, None], times[None, None].repeat(3, 0)[:, 0], axis=1)  # the member axis
    np.testing.assert_array_equal(per_member[:, 0], out)


def test_solar_scale_names_its_variables_and_the_codec_floors_them():
    scale = SolarScale([2, 3, 7], [50.0] * 3, [0.0] * 3, np.ones((24, 3)), [0.0] * 3)
    assert scale.variables(["t2m", "ssrd", "fdir"], [2, 4, 2]) == ("ssrd", "fdir")
    data = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
    grid = xr.Dataset({"t2m": (("time", "x"), data), "ssrd": (("time", "x"), data)},
                      coords={"time": pd.date_range("2019-03-01", periods=3, freq="h"), "x": [0, 1]})
    codec = fit_codec(grid)
    values = np.array([[-5.0, 1.0, -5.0, 1.0]], np.float32)  # normalised: far below 0 in data units, and above
    out = codec.decode(values, ("lead",), {}, nonnegative=("ssrd",))
    assert out["t2m"].values[0, 0] < 0 and out["ssrd"].values[0, 0] == 0
    np.testing.assert_array_equal(out["t2m"].values[0, 1], out["ssrd"].values[0, 1])  # above 0: untouched


def test_solar_scale_checks_its_shapes():
    with pytest.raises(DataError, match="solar scale"):
        SolarScale([0, 1], [50.0], [0.0, 1.0], np.ones((24, 2)), [0.0, 0.0])


def test_a_run_keeps_the_solar_scale_and_the_cli_turns_it_off(tmp_path):
    ds = sunny_grid(days=12)
    path = tmp_path / "sw.nc"
    ds.to_netcdf(path)
    kw = dict(context="12h", horizon="12h", train_period="2019-03-01:2019-03-10", **TINY)
    train(path, tmp_path / "sun", **kw)
    train(path, tmp_path / "fixed", insolation=False, **kw)
    assert json.loads((tmp_path / "sun" / "config.json").read_text())["insolation"] is True
    run, fixed = load_run(tmp_path / "sun"), load_run(tmp_path / "fixed")
    assert run.climatology.solar is not None and fixed.climatology.solar is None
    np.testing.assert_array_equal(run.climatology.solar.cols, np.arange(run.codec.sizes[0]))  # compact: land only
    out = forecast(tmp_path / "sun", path, init_period="2019-03-11T12:00:2019-03-11T12:00", members=3, lead="12h",
                   progress=False)
    sw = out["SWdown"].values  # (init, member, lead, lat, lon)
    hour = pd.DatetimeIndex(out.valid_time.values[0]).hour
    night = (hour >= 20) | (hour < 6)  # still in training, and so are the hours beside them
    land = np.isfinite(ds["SWdown"].isel(time=0).values)
    assert night.any() and np.isnan(sw[..., ~land]).all() and np.isfinite(sw[..., land]).all()
    np.testing.assert_array_equal(sw[:, :, night][..., land], 0.0)  # no sun: exactly 0, not float32 round-off
    assert (sw[..., land] >= 0).all()  # radiation is floored at its physical 0 (nonnegative_variables)
    assert nonnegative_variables(run) == ("SWdown",) and nonnegative_variables(fixed) == ()
    assert sw[:, :, ~night][..., land].std() > 0
    with pytest.raises(ConfigError, match="insolation"):
        train(path, tmp_path / "bad", insolation="auto", **kw)
    base = ["train", "weather", "--data", str(path), "--context", "12h", "--horizon", "6h", "--steps", "2",
            "--batch-size", "8", "--width", "8", "--quiet", "--train-period", "2019-03-01:2019-03-10"]
    assert cli.main(base + ["--insolation", "off", "--out", str(tmp_path / "off")]) == 0
    assert json.loads((tmp_path / "off" / "config.json").read_text())["insolation"] is False
