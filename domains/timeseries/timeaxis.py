"""The time axis of a series: its step, durations and periods in steps, init times, calendar features."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import xarray as xr

from gendiff.errors import ConfigError, DataError

TIME = "time"


def check_time(ds: xr.Dataset, label: str) -> np.timedelta64:
    """Require a datetime `time` axis that increases with one constant step; return the step."""
    t = ds[TIME].values
    if not np.issubdtype(t.dtype, np.datetime64):
        raise DataError(f"{label}: '{TIME}' must hold datetimes (dtype {t.dtype})")
    if len(t) < 2:
        raise DataError(f"{label}: '{TIME}' has {len(t)} value(s); need at least 2")
    dt = np.diff(t)
    if (dt <= np.timedelta64(0)).any():
        i = int(np.argmax(dt <= np.timedelta64(0)))
        raise DataError(f"{label}: '{TIME}' is not strictly increasing at index {i + 1} ({t[i]} -> {t[i + 1]})")
    if (dt != dt[0]).any():
        i = int(np.argmax(dt != dt[0]))
        raise DataError(f"{label}: '{TIME}' step is irregular at index {i + 1} ({t[i]} -> {t[i + 1]}, "
                        f"expected step {pd.Timedelta(dt[0])})")
    return dt[0]


def time_step(ds: xr.Dataset) -> pd.Timedelta:
    return pd.Timedelta(ds[TIME].values[1] - ds[TIME].values[0])


def parse_duration(text, step: pd.Timedelta, field: str) -> int:
    """'24h' / '1d' / '30min' (or a plain int = steps) -> a number of data steps; must be a positive multiple of step."""
    if isinstance(text, (int, np.integer)):
        n = int(text)
    else:
        try:
            td = pd.Timedelta(re.sub(r"(?<=\d)d$", "D", str(text).strip()))  # '2d': pandas 4 drops the lower-case 'd'
        except (ValueError, TypeError):
            raise ConfigError(f"{field}: '{text}' is not a duration (examples: 24h, 6h, 2d)") from None
        n, rem = divmod(td, step)
        if rem != pd.Timedelta(0):
            raise ConfigError(f"{field}: {text} is not a multiple of the data time step {step}")
    if n <= 0:
        raise ConfigError(f"{field}: {text} must be positive")
    return int(n)


def parse_period(text) -> tuple[str | None, str | None]:
    """'2019-03-01:2019-03-24' -> (start, end); either side may be empty; ends are inclusive (pandas slicing)."""
    if text is None:
        return None, None
    if isinstance(text, (tuple, list)):
        return tuple(text)
    parts = str(text).split(":") if "T" not in str(text) else _split_iso(str(text))
    if len(parts) != 2:
        raise ConfigError(f"period '{text}' must look like START:END (e.g. 2019-03-01:2019-03-24)")
    for p in parts:
        if p:
            try:
                pd.Timestamp(p)
            except ValueError:
                raise ConfigError(f"period '{text}': '{p}' is not a date") from None
    return parts[0] or None, parts[1] or None


def _split_iso(text: str) -> list[str]:
    """Split START:END where START/END may contain 'HH:MM' times: split on the ':' that precedes a date."""
    for i, ch in enumerate(text):
        if ch == ":" and i + 5 <= len(text) and text[i + 1:i + 5].isdigit() and text[i + 5:i + 6] in ("-", ""):
            return [text[:i], text[i + 1:]]
        if ch == ":" and i == 0:
            return ["", text[1:]]
    return [text[:-1], ""] if text.endswith(":") else [text]


def period_indices(ds: xr.Dataset, period, label: str, what: str) -> np.ndarray:
    """Indices along `time` of the inclusive period; DataError naming the period if it misses the data."""
    start, end = parse_period(period)
    t = pd.DatetimeIndex(ds[TIME].values)
    lo = t[0] if start is None else pd.Timestamp(start)
    hi = t[-1] if end is None else pd.Timestamp(end)
    if end is not None and len(str(end)) <= 10:
        hi = hi + pd.Timedelta(days=1) - pd.Timedelta(1, "ns")
    idx = np.nonzero((t >= lo) & (t <= hi))[0]
    if len(idx) == 0 or lo < t[0] or hi > t[-1] + pd.Timedelta(days=1) - pd.Timedelta(1, "ns"):
        raise DataError(f"{label}: {what} {start or ''}:{end or ''} lies outside the data ({t[0]} to {t[-1]})")
    return idx


def init_indices(ds: xr.Dataset, init_period, init_every, context: int, label: str) -> np.ndarray:
    """Init times in the period, every `init_every`, each with `context` steps of data up to and including it."""
    step = time_step(ds)
    every = parse_duration(init_every, step, "init_every")
    idx = period_indices(ds, init_period, label, "forecast period")
    t = pd.DatetimeIndex(ds["time"].values)
    idx = idx[((t[idx] - t[idx[0]]) // step) % every == 0] if every > 1 else idx
    if (idx - context + 1 < 0).any():
        first_ok = t[context - 1]
        raise DataError(f"{label}: forecast period starts at {t[idx[0]]}, but {context} steps of context are needed "
                        f"before it; the data allow inits from {first_ok} (forecast period outside the data)")
    return idx


def hour_of_day(times) -> np.ndarray:
    t = pd.DatetimeIndex(np.asarray(times).ravel())
    return np.round(t.hour + t.minute / 60.0, 4).to_numpy().reshape(np.shape(times))


def calendar_features(times, day_of_year: bool = True) -> np.ndarray:
    """(T, 4) sin/cos of hour of day and of day of year (zeros when day_of_year is False)."""
    t = pd.DatetimeIndex(np.asarray(times).ravel())
    hour = (t.hour + t.minute / 60.0 + t.second / 3600.0).to_numpy() / 24.0
    doy = (t.day_of_year - 1 + hour).to_numpy() / 365.25
    on = 1.0 if day_of_year else 0.0
    f = np.stack([np.sin(2 * np.pi * hour), np.cos(2 * np.pi * hour),
                  on * np.sin(2 * np.pi * doy), on * np.cos(2 * np.pi * doy)], axis=-1)
    return f.astype(np.float32).reshape(*np.shape(times), 4)
