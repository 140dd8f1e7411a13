"""The sun's elevation as a seasonal scale of the hourly climatology, for daylight variables (shortwave radiation,
solar power: 0 every night) on grids and station sets with latitude and longitude.

An hour-of-day climatology fitted over a few weeks is the mean of those weeks. In spring the noon sun climbs every
day, so a week after training the noon mean is too low by as much as the whole error of the forecast (about 15% at
50 N at the end of March). Shortwave radiation at the surface is the top-of-atmosphere insolation times a
clear-sky fraction, and only the second is weather. SolarScale multiplies the mean and the standard deviation of
the hourly climatology at each time by cos+(zenith at that time) / (mean cos+(zenith) at that hour of day over the
training period): a ratio estimator that leaves the training period's hourly means where they were on average and
follows the sun outside it, like the top-of-atmosphere insolation that GraphCast and other learned forecasters
take as an input.

Solar position: Meeus's low-precision solar coordinates (NOAA's solar calculator), checked against NREL's SPA."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from gendiff.errors import DataError

from .data import hour_of_day

LAT_NAMES = ("latitude", "lat")  # the coordinate names that place a series on the globe
LON_NAMES = ("longitude", "lon")
REF_MIN = 0.1  # the mean cos(zenith) at an hour below which the sun was too low in training to scale by (dawn and
# dusk, where the data's time convention, an instant or an hour's mean, moves the ratio most)
FACTOR_MAX = 5.0  # the largest scale; the mean's smallest is 0 (the sun has set)
STD_FACTOR_MIN = 0.5  # the smallest scale of a deviation, which anomalies are divided by


def cos_zenith(times, lat, lon) -> np.ndarray:
    """(*times.shape, K) cosine of the solar zenith angle at UTC `times` for K locations at `lat`, `lon` (degrees;
    negative below the horizon): the sun's declination and the equation of time from its mean longitude and
    anomaly (Meeus's low-precision solar coordinates, as in NOAA's solar calculator; within 0.02 degrees of
    NREL's SPA over 1950-2050), no refraction."""
    t = pd.DatetimeIndex(np.asarray(times).ravel())
    seconds = (t - pd.Timestamp("2000-01-01T12:00")).total_seconds().to_numpy()
    jc = seconds / 86400.0 / 36525.0  # Julian centuries from J2000.0
    rad = np.deg2rad
    l0 = np.mod(280.46646 + jc * (36000.76983 + jc * 0.0003032), 360.0)  # geometric mean longitude
    m = rad(357.52911 + jc * (35999.05029 - 0.0001537 * jc))  # mean anomaly
    e = 0.016708634 - jc * (0.000042037 + 0.0000001267 * jc)  # eccentricity of the Earth's orbit
    centre = (np.sin(m) * (1.914602 - jc * (0.004817 + 0.000014 * jc)) + np.sin(2 * m) * (0.019993 - 0.000101 * jc)
              + np.sin(3 * m) * 0.000289)
    omega = rad(125.04 - 1934.136 * jc)
    apparent = rad(l0 + centre - 0.00569 - 0.00478 * np.sin(omega))
    obliquity = rad(23 + (26 + (21.448 - jc * (46.815 + jc * (0.00059 - jc * 0.001813))) / 60) / 60
                    + 0.00256 * np.cos(omega))
    decl = np.arcsin(np.sin(obliquity) * np.sin(apparent))
    y = np.tan(obliquity / 2) ** 2
    l0r = rad(l0)
    eot = 4 * np.rad2deg(y * np.sin(2 * l0r) - 2 * e * np.sin(m) + 4 * e * y * np.sin(m) * np.cos(2 * l0r)
                         - 0.5 * y * y * np.sin(4 * l0r) - 1.25 * e * e * np.sin(2 * m))  # minutes
    minutes = (t.hour * 60 + t.minute + t.second / 60.0).to_numpy()
    lat = rad(np.asarray(lat, dtype=np.float64))[None, :]
    lon = np.asarray(lon, dtype=np.float64)[None, :]
    hour_angle = rad((minutes[:, None] + eot[:, None] + 4 * lon) / 4 - 180)
    out = np.sin(lat) * np.sin(decl)[:, None] + np.cos(lat) * np.cos(decl)[:, None] * np.cos(hour_angle)
    return out.reshape(*np.shape(times), lat.shape[1])


def feature_coordinates(template, variables) -> tuple[np.ndarray, np.ndarray] | None:
    """(lat, lon) in degrees of every feature of a codec template (the variables' cells stacked in order, the
    uncompacted layout), or None when the data have no latitude and longitude coordinates over their dims."""
    lats, lons = [], []
    for v in variables:
        da = template[v]

        def find(names):
            for name in names:
                if name in template.coords and template[name].dims and set(template[name].dims) <= set(da.dims):
                    return template[name].broadcast_like(da).transpose(*da.dims).values.ravel().astype(np.float64)
            return None

        lat, lon = find(LAT_NAMES), find(LON_NAMES)
        if lat is None or lon is None:
            return None
        lats.append(lat)
        lons.append(lon)
    return np.concatenate(lats), np.concatenate(lons)


class SolarScale:
    """The factor by which the hourly climatology of the features `cols` is scaled at given times: cos+(zenith) at
    the time over `ref`, its mean at that hour of day over the training period (H, K), in [0, FACTOR_MAX]; 1 at
    hours whose `ref` is below REF_MIN (the sun was up too rarely in training) and for every other feature.

    The tables are in the codec's normalised units, where a raw 0 (no sun) is `zero` (K,) = -mean / std: a mean m
    becomes zero + f (m - zero), a deviation s becomes max(f, STD_FACTOR_MIN) s, as the raw values' would scale
    (the deviation never by less than half: the anomalies are divided by it, and the data's sun may be up a little
    earlier than this one)."""

    def __init__(self, cols, lat, lon, ref, zero):
        self.cols = np.asarray(cols, dtype=np.int64)
        self.lat, self.lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
        self.ref = np.asarray(ref, dtype=np.float64)
        self.zero = np.asarray(zero, dtype=np.float32)
        if not (self.cols.shape == self.lat.shape == self.lon.shape == self.zero.shape
                and self.ref.shape[1:] == self.cols.shape):
            raise DataError(f"solar scale: {self.cols.size} features with {self.lat.size} latitudes, "
                            f"{self.lon.size} longitudes, {self.zero.size} zeros and a reference of shape "
                            f"{self.ref.shape}")

    @classmethod
    def fit(cls, hours: np.ndarray, times: np.ndarray, lat, lon, cols, zero, block: int = 256) -> "SolarScale":
        """`ref` from the training `times` (hours of day `hours`, as in climatology.HourlySums) for the features
        `cols` at `lat`, `lon` (their own, (K,) each; `zero`: their normalised 0), in blocks of `block` times."""
        pos = np.searchsorted(hours, hour_of_day(times))
        total = np.zeros((len(hours), len(cols)))
        count = np.zeros(len(hours))
        for a in range(0, len(times), block):
            cz = np.clip(cos_zenith(times[a:a + block], lat, lon), 0, None)
            p = pos[a:a + block]
            np.add.at(total, p, cz)
            np.add.at(count, p, 1)
        return cls(cols, lat, lon, total / np.maximum(count, 1)[:, None], zero)

    def factor(self, times, pos: np.ndarray | None) -> np.ndarray:
        """(*times.shape, K) the scale of the features `cols` at `times`, whose rows in the hourly tables are
        `pos` (HourlyClimatology._positions)."""
        ref = self.ref[pos] if pos is not None else np.broadcast_to(self.ref[0], (*np.shape(times), self.cols.size))
        cz = np.clip(cos_zenith(times, self.lat, self.lon), 0, None)
        f = np.where(ref >= REF_MIN, np.minimum(cz / np.maximum(ref, REF_MIN), FACTOR_MAX), 1.0)
        return f.astype(np.float32)

    def apply(self, mean: np.ndarray, std: np.ndarray | None, times, pos) -> tuple[np.ndarray, np.ndarray | None]:
        """The hourly `mean` and `std` (or None) taken at `times` ((*times.shape, C) each) with the features `cols`
        scaled, by one factor computed once for both."""
        f = self.factor(times, pos)
        mean = np.array(mean, dtype=np.float32, copy=True)
        mean[..., self.cols] = self.zero + f * (mean[..., self.cols] - self.zero)
        if std is not None:
            std = np.array(std, dtype=np.float32, copy=True)
            std[..., self.cols] *= np.maximum(f, np.float32(STD_FACTOR_MIN))
        return mean, std

    def night(self, x: np.ndarray, times, axis: int | None = None) -> np.ndarray:
        """x (normalised values at `times`, (*times.shape, C); with `axis` a dim times lacks, such as the member)
        with the features `cols` set to their physical 0 where the sun is below the horizon at the time and one
        step before it: dark for an instant and for the step's accumulation ending there (ERA5's hourly
        radiation). The scale of the deviation is floored (STD_FACTOR_MIN) so that anomalies can be divided by
        it; without this, generated anomalies came back as radiation at night (ERA5 Berlin in November: up to
        90,000 J/m^2 at 06 UTC, where the truth is 0)."""
        t = pd.DatetimeIndex(np.asarray(times).ravel())
        gaps = np.diff(np.unique(t.values))
        gaps = np.sort(gaps[gaps > np.timedelta64(0)])
        step = pd.Timedelta(gaps[len(gaps) // 2]) if len(gaps) else pd.Timedelta(hours=1)  # one time: an hour
        before = t - step
        dark = (cos_zenith(t, self.lat, self.lon) <= 0) & (cos_zenith(before, self.lat, self.lon) <= 0)
        dark = dark.reshape(*np.shape(times), self.cols.size)
        if axis is not None:
            dark = np.expand_dims(dark, axis)
        out = np.array(x, copy=True)
        out[..., self.cols] = np.where(dark, self.zero.astype(out.dtype), out[..., self.cols])
        return out

    def select(self, features, n_features: int) -> "SolarScale | None":
        """The scale of a part of the features (indices into the n_features); None when none of them is scaled."""
        lookup = np.full(n_features, -1, dtype=np.int64)
        lookup[self.cols] = np.arange(self.cols.size)
        sel = lookup[np.asarray(features)]
        keep = sel >= 0
        if not keep.any():
            return None
        k = sel[keep]
        return SolarScale(np.flatnonzero(keep), self.lat[k], self.lon[k], self.ref[:, k], self.zero[k])

    def variables(self, names, sizes) -> tuple[str, ...]:
        """The variables (`names`, each of `sizes` features, in the codec's order) whose features this scale
        follows: daylight radiation, physically never below 0."""
        ends = np.cumsum(np.asarray(sizes, dtype=np.int64))
        owner = np.searchsorted(ends, self.cols, side="right")
        return tuple(names[i] for i in np.unique(owner))

    def state(self) -> dict:
        return {"solar_cols": torch.from_numpy(self.cols), "solar_lat": torch.from_numpy(self.lat),
                "solar_lon": torch.from_numpy(self.lon), "solar_ref": torch.from_numpy(self.ref),
                "solar_zero": torch.from_numpy(self.zero)}

    @classmethod
    def from_state(cls, state: dict) -> "SolarScale | None":
        if "solar_cols" not in state:
            return None
        return cls(*(state[f"solar_{k}"].numpy() for k in ("cols", "lat", "lon", "ref", "zero")))
