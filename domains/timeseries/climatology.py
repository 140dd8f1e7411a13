"""The hourly climatology removed from the normalised values before the AR base and the network, and put back on
their forecasts: the mean by hour of day, and optionally the hour-of-day standard deviation (standardised
anomalies), both summed in one streaming pass over the training period.

Data flow: data.Codec (normalised values) -> climatology (removed) -> base (AR mean forecast) -> windows -> inputs."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch

from gendiff.errors import ConfigError, DataError

from .blocks import row_blocks
from .data import hour_of_day
from .insolation import REF_MIN, SolarScale


class HourlySums:
    """Sums and counts of the finite values per hour of day and feature, added block by block of time steps (in
    float64): the hourly climatology in one streaming pass. `hours` is None when the time step does not divide a
    day (no daily cycle to remove)."""

    def __init__(self, times: np.ndarray, n_features: int):
        self.hours, self.n_features, self.times = None, int(n_features), np.asarray(times)
        if len(times) > 1 and pd.Timedelta(days=1) % pd.Timedelta(times[1] - times[0]) == pd.Timedelta(0):
            self.hours = np.unique(hour_of_day(times))
            self.sum = np.zeros((len(self.hours), n_features))
            self.sumsq = np.zeros((len(self.hours), n_features))
            self.count = np.zeros((len(self.hours), n_features), dtype=np.int64)

    def add(self, x: np.ndarray, finite: np.ndarray, times: np.ndarray, cols=slice(None)) -> None:
        """x (n, c) float64 with 0 where not `finite`, at `times` (n,), into the features `cols`."""
        if self.hours is None:
            return
        pos = np.searchsorted(self.hours, hour_of_day(times))
        for k in np.unique(pos):
            rows = pos == k
            self.sum[k, cols] += x[rows].sum(0)
            self.sumsq[k, cols] += (x[rows] * x[rows]).sum(0)
            self.count[k, cols] += finite[rows].sum(0)

    def mean(self) -> np.ndarray:
        """(H, C) mean per hour and feature; NaN where a feature has no value at that hour."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.sum / np.maximum(self.count, 1), np.nan)

    def std(self) -> np.ndarray:
        """(H, C) standard deviation per hour and feature (population, from the float64 sums); NaN where a
        feature has fewer than two values at that hour."""
        with np.errstate(invalid="ignore", divide="ignore"):
            m = self.sum / np.maximum(self.count, 1)
            var = np.maximum(self.sumsq / np.maximum(self.count, 1) - m * m, 0.0)
            return np.where(self.count > 1, np.sqrt(var), np.nan)

    def climatology(self, offset=0.0, scale=1.0, std=False, coords=None) -> "HourlyClimatology":
        """The climatology of (value - offset) / scale (per feature; the codec's normalisation of raw sums), 0
        where a feature has no value at an hour. `std`: also the hour-of-day standard deviation in the same
        units (HourlyClimatology.std: the anomalies are then standardised): True for every feature, "auto" for
        the daylight features (those that never vary at some hour of the day: solar power, shortwave radiation,
        0 every night), the others keeping a deviation of 1; None when no feature takes one. `coords`: (lat, lon)
        of every feature (insolation.feature_coordinates): the daylight features' mean and deviation then follow
        the sun through the season (insolation.SolarScale)."""
        check_hourly_std(std)
        if self.hours is None:
            return HourlyClimatology(np.zeros(1), np.zeros((1, self.n_features), np.float32),
                                     np.ones((1, self.n_features), np.float32) if std is True else None)
        mean = np.nan_to_num((self.mean() - offset) / scale).astype(np.float32)
        if std is False and coords is None:
            return HourlyClimatology(self.hours, mean)
        raw = self.std() / scale
        sd = hourly_std_floor(widen_hours(raw, self.hours))
        daylight = (sd == 0).any(0) & (sd > 0).any(0)
        solar = None
        if coords is not None and daylight.any():
            cols = np.flatnonzero(daylight)
            zero = np.broadcast_to(-np.asarray(offset, np.float64) / scale, (self.n_features,))[cols]
            solar = SolarScale.fit(self.hours, self.times, coords[0][cols], coords[1][cols], cols, zero)
            # where the sun's path is followed, an hour keeps its own deviation: widening stands in for the
            # moving edges of daylight only at the hours the sun was too rarely up in training to scale
            followed = np.zeros_like(sd, dtype=bool)
            followed[:, cols] = solar.ref >= REF_MIN
            sd = np.where(followed, hourly_std_floor(raw), sd)
        if std is False:
            return HourlyClimatology(self.hours, mean, None, solar)
        if std == "auto":
            if not daylight.any():
                return HourlyClimatology(self.hours, mean, None, solar)
            sd = np.where(daylight[None, :], sd, np.float32(1.0))
        return HourlyClimatology(self.hours, mean, sd, solar)


HOURLY_STD = (False, True, "auto")


def check_hourly_std(value) -> None:
    if not any(value is v or (isinstance(v, str) and value == v) for v in HOURLY_STD):
        raise ConfigError(f"hourly_std={value!r}: expected True, False or 'auto'")


WIDEN_HOURS = 1.0  # an hour's deviation is the largest of the hours this close (circular, in hours of the day)


def widen_hours(sd: np.ndarray, hours: np.ndarray, within: float = WIDEN_HOURS) -> np.ndarray:
    """(H, C) each hour's deviation replaced by the largest among the hours within `within` of it (NaN ignored):
    the edges of the daylight move through the season (in March the sun rises an hour and a half earlier at the
    end than at the start), so the hour after a dark one in the training period must not be taken for certain
    in the weeks after it. Hours that are still, and whose neighbours are still too, stay 0."""
    hours = np.asarray(hours, dtype=np.float64)
    gap = np.abs(hours[:, None] - hours[None, :])
    near = np.minimum(gap, 24.0 - gap) <= within + 1e-9  # (H, H)
    sd = np.asarray(sd, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a feature with no value near an hour: NaN, as before
        out = np.stack([np.nanmax(np.where(near[h][:, None], sd, np.nan), axis=0) for h in range(len(hours))])
    return out


STD_FLOOR = 0.1  # the smallest hourly deviation, as a fraction of the feature's RMS over the hours
CONSTANT = 1e-6  # an hourly deviation below this fraction of that RMS is rounding: the hour never varied


def hourly_std_floor(sd: np.ndarray) -> np.ndarray:
    """(H, C) hourly deviations made safe to divide by: at least STD_FLOOR x the feature's RMS deviation over the
    hours (a dawn hour of solar power barely varies), 0 where an hour never varied in training (below CONSTANT x
    that RMS: night-time solar power, whose anomaly is then 0 and whose climatology comes back exactly), the RMS
    where a feature has fewer than two values at an hour, and 1 where it has no deviation at all."""
    sd = np.asarray(sd, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        known = np.isfinite(sd)
        rms = np.sqrt(np.where(known, sd * sd, 0.0).sum(0) / np.maximum(known.sum(0), 1))
        floor = np.where(rms > 0, STD_FLOOR * rms, 1.0)
        still = sd <= CONSTANT * np.where(rms > 0, rms, 1.0)[None, :]  # rounding of a constant: 1e-17 of 1
        out = np.where(known, np.where(still, 0.0, np.maximum(sd, floor[None, :])),
                       np.where(rms > 0, rms, 1.0)[None, :])
    return out.astype(np.float32)


class HourlyClimatology:
    """Per-feature mean by hour of day over the training period (normalised units), subtracted before the network.

    The static fine-scale pattern and the local diurnal cycle then bypass the network's low-rank projections; the
    model forecasts anomalies (relative to their last context step when `residual`).

    With `std` (H, C; train(hourly_std=True)) the anomalies are also divided by the hour-of-day standard deviation
    (standardised anomalies): a series whose variability follows the daily cycle (solar power, shortwave
    radiation: none at night, most at noon) then has anomalies of one size at every hour, so that the AR base
    carries a relative departure (a clear-sky index) from the morning into the afternoon instead of an absolute
    one into the evening. remove() and restore() apply and undo it.

    With `solar` (insolation.SolarScale) the mean and std of the daylight features are scaled at each time by the
    sun's elevation relative to its mean at that hour over the training period, so that they follow the season."""

    def __init__(self, hours: np.ndarray, mean: np.ndarray, std: np.ndarray | None = None, solar=None):
        self.hours, self.mean = np.asarray(hours, dtype=np.float64), np.asarray(mean, dtype=np.float32)
        self.std = None if std is None else np.asarray(std, dtype=np.float32)
        self.solar = solar
        if self.std is not None and self.std.shape != self.mean.shape:
            raise DataError(f"hourly climatology: std of shape {self.std.shape} for a mean of {self.mean.shape}")
        if solar is not None and (solar.ref.shape[0] != len(self.hours) or solar.cols.max() >= self.mean.shape[1]):
            raise DataError(f"hourly climatology: a solar scale of {solar.ref.shape[0]} hours for features up to "
                            f"{solar.cols.max()}, a table of {len(self.hours)} hours x {self.mean.shape[1]}")

    def select(self, features) -> "HourlyClimatology":
        """The climatology of the given features (a subregion)."""
        features = np.arange(self.mean.shape[1])[features]
        return HourlyClimatology(self.hours, self.mean[:, features],
                                 None if self.std is None else self.std[:, features],
                                 None if self.solar is None else self.solar.select(features, self.mean.shape[1]))

    def remove(self, x: np.ndarray, times) -> np.ndarray:
        """Anomalies of normalised values x (*times.shape, C): x minus the mean at `times`, divided by the hourly
        std when there is one."""
        mean, s = self._tables(times)
        out = x - mean
        if s is None:
            return out
        return out / np.where(s > 0, s, np.inf).astype(np.float32)  # an hour that never varied: anomaly 0

    def restore(self, z: np.ndarray, times, axis: int | None = None) -> np.ndarray:
        """The inverse of remove(): normalised values from anomalies z. `axis`: a dim of z that `times` lacks
        (the ensemble member: z (I, M, L, C) against times (I, L)). Daylight features (`solar`) are their
        physical 0 where the sun is down (insolation.SolarScale.night)."""
        mean, scale = self._tables(times)
        if axis is not None:
            mean = np.expand_dims(mean, axis)
            scale = None if scale is None else np.expand_dims(scale, axis)
        out = z + mean if scale is None else z * scale + mean
        return out if self.solar is None else self.solar.night(out, times, axis)  # daylight features: 0 at night

    @classmethod
    def fit(cls, values, times: np.ndarray, index: np.ndarray) -> "HourlyClimatology":
        """From normalised values (T, C) (an array or stream.EncodedValues) over the contiguous `index`, read in
        blocks of time steps (stream.STREAM_BYTES)."""
        sums = HourlySums(times[index], values.shape[1])
        if sums.hours is None:
            return cls(np.zeros(1), np.zeros((1, values.shape[1]), np.float32))  # no daily cycle to remove
        for a, b in row_blocks(int(index[0]), int(index[-1]) + 1, values.shape[1]):
            x = np.asarray(values[a:b], dtype=np.float64)
            finite = np.isfinite(x)
            sums.add(np.where(finite, x, 0.0), finite, times[a:b])
        return sums.climatology()

    def at(self, times) -> np.ndarray:
        """(*times.shape, C) climatological mean at the given times."""
        return self._tables(times)[0]

    def _positions(self, times) -> np.ndarray | None:
        """The row of each time's hour in the tables (None: one row, no daily cycle); a DataError for an hour
        training never saw."""
        if len(self.hours) == 1:
            return None
        h = hour_of_day(times)
        pos = np.clip(np.searchsorted(self.hours, h), 0, len(self.hours) - 1)
        if not np.allclose(self.hours[pos], h):
            raise DataError(f"times at hour(s) {sorted(set(h[~np.isclose(self.hours[pos], h)]))[:3]} of day were "
                            f"not seen in training (hours {self.hours.tolist()})")
        return pos

    def _tables(self, times) -> tuple[np.ndarray, np.ndarray | None]:
        """The mean and std (None without one) at `times`, each hour looked up once and the sun's scale computed
        once for both."""
        pos = self._positions(times)
        mean = self._take(self.mean, pos, times)
        std = None if self.std is None else self._take(self.std, pos, times)
        return (mean, std) if self.solar is None else self.solar.apply(mean, std, times, pos)

    @staticmethod
    def _take(table: np.ndarray, pos: np.ndarray | None, times) -> np.ndarray:
        if pos is None:
            return np.broadcast_to(table[0], (*np.shape(times), table.shape[1]))
        return table[pos]

    def state(self) -> dict:
        out = {"hours": torch.from_numpy(self.hours), "mean": torch.from_numpy(self.mean)}
        if self.std is not None:
            out["std"] = torch.from_numpy(self.std)
        if self.solar is not None:
            out.update(self.solar.state())
        return out

    @classmethod
    def from_state(cls, state: dict) -> "HourlyClimatology":
        std = state.get("std")
        return cls(state["hours"].numpy(), state["mean"].numpy(), None if std is None else std.numpy(),
                   SolarScale.from_state(state))
