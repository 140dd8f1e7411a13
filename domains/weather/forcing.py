"""A synthetic land-surface forcing dataset shaped like WFDE5 (Cucchi et al. 2020): hourly near-surface fields on a
0.5-degree grid, several variables, NaN over the sea, for exercising multi-variable gridded training and forecasting
where the real data cannot ship (WFDE5 is a Copernicus download).

The fields are not a climate model, but they have the structure that matters to a forecaster: a land-sea mask of
coherent coasts (about half the cells sea), synoptic anomalies that travel east and decorrelate over days, a diurnal
cycle in local solar time, and physically tied variables (specific humidity from temperature and relative humidity,
surface pressure lowered by orography, wind from the pressure gradient, shortwave from the solar zenith angle and
cloud). Variable names, units and attributes follow WFDE5's (Tair K, Qair kg kg-1, PSurf Pa, Wind m s-1, SWdown
W m-2), and the dims are (time, lat, lon) with lat ascending, as in WFDE5's files.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from gendiff.errors import ConfigError

VARIABLES = {  # WFDE5 name: (long name, units)
    "Tair": ("Near-surface air temperature", "K"),
    "Qair": ("Near-surface specific humidity", "kg kg-1"),
    "PSurf": ("Surface air pressure", "Pa"),
    "Wind": ("Near-surface wind speed", "m s-1"),
    "SWdown": ("Surface downwelling shortwave radiation", "W m-2"),
}


def _smooth_field(rng, shape, scale_cells: float) -> np.ndarray:
    """A unit-variance Gaussian random field with correlation length about `scale_cells` cells (periodic)."""
    ny, nx = shape
    ky = np.fft.fftfreq(ny)[:, None]
    kx = np.fft.fftfreq(nx)[None, :]
    spectrum = np.exp(-0.5 * (2 * np.pi * scale_cells) ** 2 * (kx**2 + ky**2))
    f = np.fft.ifft2(np.fft.fft2(rng.standard_normal(shape)) * spectrum).real
    return (f - f.mean()) / (f.std() + 1e-12)


def _travelling_anomalies(rng, n_times: int, shape, scale_cells: float, hours_to_decorrelate: float,
                          cells_per_hour: float) -> np.ndarray:
    """(T, ny, nx) anomalies: an AR(1) in time of smooth random fields, advected east by `cells_per_hour`
    (a phase shift in Fourier space, so the pattern moves without smearing), unit variance."""
    ny, nx = shape
    ky = np.fft.fftfreq(ny)[:, None]
    kx = np.fft.fftfreq(nx)[None, :]
    spectrum = np.exp(-0.5 * (2 * np.pi * scale_cells) ** 2 * (kx**2 + ky**2))
    spectrum /= np.sqrt((spectrum**2).mean())
    rho = np.exp(-1.0 / hours_to_decorrelate)
    shift = np.exp(-2j * np.pi * kx * cells_per_hour)
    state = np.fft.fft2(rng.standard_normal(shape)) * spectrum
    out = np.empty((n_times, ny, nx), dtype=np.float64)
    for t in range(n_times):
        state = rho * shift * state + np.sqrt(1 - rho**2) * np.fft.fft2(rng.standard_normal(shape)) * spectrum
        out[t] = np.fft.ifft2(state).real
    return out / out.std()


def _cos_zenith(times: pd.DatetimeIndex, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """(T, ny, nx) cosine of the solar zenith angle (declination and hour angle; no equation of time)."""
    doy = times.dayofyear.to_numpy()[:, None, None]
    hours = (times.hour.to_numpy() + times.minute.to_numpy() / 60)[:, None, None]
    decl = np.deg2rad(23.44) * np.sin(2 * np.pi * (284 + doy) / 365)
    hour_angle = np.deg2rad(15 * (hours - 12) + lon[None, None, :])
    phi = np.deg2rad(lat)[None, :, None]
    return np.sin(phi) * np.sin(decl) + np.cos(phi) * np.cos(decl) * np.cos(hour_angle)


def wfde5_like_dataset(nlat: int = 40, nlon: int = 60, days: int = 31, *, start: str = "2019-03-01",
                       lat0: float = 40.25, lon0: float = -9.75, sea_fraction: float = 0.5,
                       variables=tuple(VARIABLES), seed: int = 0) -> xr.Dataset:
    """Hourly WFDE5-shaped forcing on an nlat x nlon 0.5-degree grid from (lat0, lon0) (cell centres), `days` days from
    `start`; a `sea_fraction` of the cells is sea (NaN in every variable at every time) and the dataset carries the
    land-sea mask as `lsm` (1 land, 0 sea; no time dim)."""
    unknown = [v for v in variables if v not in VARIABLES]
    if unknown:
        raise ConfigError(f"wfde5_like_dataset: unknown variables {unknown} (known: {', '.join(VARIABLES)})")
    if not 0 <= sea_fraction < 1:
        raise ConfigError(f"wfde5_like_dataset: sea_fraction={sea_fraction} must lie in [0, 1)")
    rng = np.random.default_rng(seed)
    lat = lat0 + 0.5 * np.arange(nlat)
    lon = lon0 + 0.5 * np.arange(nlon)
    times = pd.date_range(start, periods=24 * days, freq="h")
    shape = (nlat, nlon)
    coast = _smooth_field(rng, shape, scale_cells=max(2.0, min(shape) / 8))
    land = coast > np.quantile(coast, sea_fraction)
    orography = np.clip(_smooth_field(rng, shape, scale_cells=3.0), 0, None) * land  # in km, say
    synoptic = _travelling_anomalies(rng, len(times), shape, scale_cells=6.0, hours_to_decorrelate=72.0,
                                     cells_per_hour=0.25)
    moisture = _travelling_anomalies(rng, len(times), shape, scale_cells=3.0, hours_to_decorrelate=36.0,
                                     cells_per_hour=0.3)
    cos_z = _cos_zenith(times, lat, lon)
    local_hour = (times.hour.to_numpy()[:, None, None] + lon[None, None, :] / 15.0) % 24
    diurnal = np.cos(2 * np.pi * (local_hour - 15) / 24) * np.where(land, 1.0, 0.3)[None]  # land heats, sea barely
    tair = (283.0 - 0.7 * (lat[None, :, None] - 50.0) - 6.5 * orography[None] + 5.0 * diurnal + 3.5 * synoptic
            + 0.3 * rng.standard_normal(synoptic.shape))
    rh = np.clip(0.75 + 0.12 * moisture - 0.12 * diurnal, 0.15, 1.0)
    tc = tair - 273.15
    e = rh * 611.2 * np.exp(17.67 * tc / (tc + 243.5))  # Bolton (1980), Pa
    pressure_anom = 900.0 * synoptic + 150.0 * _travelling_anomalies(rng, len(times), shape, 2.0, 12.0, 0.3)
    psurf = 101325.0 * np.exp(-orography[None] / 8.4) + pressure_anom
    q = 0.622 * e / (psurf - 0.378 * e)
    gy, gx = np.gradient(pressure_anom, axis=(1, 2))
    wind = 1.5 + 0.012 * np.hypot(gx, gy) + 0.4 * np.abs(rng.standard_normal(synoptic.shape))
    cloud = 1 / (1 + np.exp(-(1.5 * moisture - 0.5)))
    swdown = 1361.0 * 0.75 * np.clip(cos_z, 0, None) * (1 - 0.7 * cloud)
    fields = {"Tair": tair, "Qair": q, "PSurf": psurf, "Wind": wind, "SWdown": swdown}
    sea = ~land
    data_vars = {}
    for name in variables:
        values = fields[name].astype(np.float32)
        values[:, sea] = np.nan
        long_name, units = VARIABLES[name]
        data_vars[name] = (("time", "lat", "lon"), values, {"long_name": long_name, "units": units})
    ds = xr.Dataset(data_vars, coords={"time": times, "lat": ("lat", lat, {"units": "degrees_north"}),
                                       "lon": ("lon", lon, {"units": "degrees_east"})})
    ds["lsm"] = (("lat", "lon"), land.astype(np.float32), {"long_name": "land-sea mask", "units": "1"})
    ds.attrs.update(title="Synthetic WFDE5-like forcing (gendiff.domains.weather.forcing)", seed=int(seed))
    return ds
