"""The time axis of a series: its step, durations and periods in steps, init times, calendar features.

A step is a fixed pd.Timedelta (hourly, daily, weekly, ...) or a CalendarStep: whole calendar months on month
starts or month ends (monthly 'MS' / 'ME', quarterly 'QS' / 'QE', yearly 'YS' / 'YE'), whose length varies;
add_steps gives the time k steps on for both kinds."""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from gendiff.errors import ConfigError, DataError

TIME = "time"
MONTH = pd.Timedelta(seconds=2629746)  # the mean Gregorian month (365.2425 / 12 days): a calendar step's nominal length
UNITS = {"M": 1, "Q": 3, "Y": 12}
_ALIAS = re.compile(r"^(\d*)\s*(M|Q|Y)(S|E)?(-[A-Z]{3})?$")
_WORDS = re.compile(r"^(\d*)\s*(month|quarter|year)s?$", re.IGNORECASE)


@dataclass(frozen=True)
class CalendarStep:
    """A step of `months` calendar months, the times on month starts (`end` False) or month ends (`end` True).

    Its length varies, so times k steps on come from add_steps; `nominal` (its months of a mean Gregorian month)
    is the unit of a calendar forecast's lead_time coordinate, whose real times are its valid_time."""

    months: int
    end: bool = False

    @property
    def alias(self) -> str:
        """pandas' name: 'MS' / 'ME' monthly, 'QS' / 'QE' quarterly, 'YS' / 'YE' yearly, else e.g. '2MS'."""
        unit = {1: "M", 3: "Q", 12: "Y"}.get(self.months)
        tail = "E" if self.end else "S"
        return f"{unit}{tail}" if unit else f"{self.months}M{tail}"

    @property
    def nominal(self) -> pd.Timedelta:
        return MONTH * self.months

    def __str__(self) -> str:
        what = {1: "a month", 3: "a quarter", 12: "a year"}.get(self.months, f"{self.months} months")
        return f"{self.alias} ({what}, on month {'ends' if self.end else 'starts'})"

    @classmethod
    def parse(cls, alias) -> CalendarStep | None:
        """'MS', 'ME', 'QS', 'QE-DEC', 'YS', '2MS', 'M' (month end, as pandas' old alias) -> a CalendarStep; None for
        anything else."""
        m = _ALIAS.match(str(alias).strip())
        if m is None:
            return None
        return cls(int(m.group(1) or 1) * UNITS[m.group(2)], m.group(3) != "S")


def _months(t) -> np.ndarray:
    """Months since 1970-01 of each datetime64."""
    return np.asarray(t, dtype="datetime64[ns]").astype("datetime64[M]").astype(np.int64)


def on_month_rule(t, end: bool) -> np.ndarray:
    """Whether each time is the first (`end` False) or the last day of its month, at the first time's time of day."""
    t = np.asarray(t, dtype="datetime64[ns]").ravel()
    day = t.astype("datetime64[D]")
    same_hour = (t - day) == (t[:1] - day[:1])
    if end:
        return same_hour & ((day + 1).astype("datetime64[M]") != t.astype("datetime64[M]"))
    return same_hour & (day == t.astype("datetime64[M]").astype("datetime64[D]"))


def month_rule(t) -> bool | None:
    """True when every time is the last day of its month, False when every one is the first, at one time of day
    for all; None otherwise (a fixed step, or mixed)."""
    t = np.asarray(t, dtype="datetime64[ns]").ravel()
    if len(t) < 2:
        return None
    for end in (False, True):
        if on_month_rule(t, end).all():
            return end
    return None


def calendar_step(t) -> CalendarStep | None:
    """The CalendarStep of times on one month rule (month_rule) whose first two are whole months apart."""
    end = month_rule(t)
    if end is None:
        return None
    k = int(np.diff(_months(np.asarray(t).ravel()[:2]))[0])
    return CalendarStep(k, end) if k > 0 else None


def add_steps(times, k, step) -> np.ndarray:
    """times + k steps (numpy broadcasting of `times` and `k`) as datetime64[ns]: a fixed step added, a calendar
    one counted in months (month starts stay month starts, month ends month ends, the time of day kept)."""
    t = np.asarray(times, dtype="datetime64[ns]")
    k = np.asarray(k, dtype=np.int64)
    if not isinstance(step, CalendarStep):
        return t + k * pd.Timedelta(step).to_timedelta64()
    month = t.astype("datetime64[M]")
    moved = month + k * step.months
    if step.end:
        day = (moved + 1).astype("datetime64[D]") - np.timedelta64(1, "D")
        return (day + (t - t.astype("datetime64[D]"))).astype("datetime64[ns]")
    return (moved.astype("datetime64[ns]") + (t - month.astype("datetime64[ns]"))).astype("datetime64[ns]")


def lead_times(init_times, n_lead: int, step) -> np.ndarray:
    """(I, n_lead) valid times of leads 1..n_lead from each init time (add_steps: calendar steps count months)."""
    return add_steps(np.asarray(init_times)[:, None], np.arange(1, int(n_lead) + 1)[None, :], step)


def table_calendar_step(times, label: str, step: CalendarStep | None = None, end: bool | None = None) -> CalendarStep:
    """The calendar step of a table's sorted times (`step`: the one asked for, freq='MS' ...; `end`: the month rule
    the rows should follow, default the one they do): the most common number of months between rows (the smallest
    of equally common ones); every row on the month rule and every difference a whole number of steps (skipped rows
    are gaps), else a DataError naming the row."""
    times = pd.DatetimeIndex(times)
    end = bool(step.end if step is not None else month_rule(times) if end is None else end)
    on = on_month_rule(times, end)
    if not on.all():
        i = int(np.argmin(on))
        like = "like the other rows" if step is None else f"as freq {step.alias} asks"
        raise DataError(f"{label}: irregular time step at {times[i]} (row {i}): not on a month "
                        f"{'end' if end else 'start'} at {times[0].time()} {like} (a calendar step has every row on a "
                        "month start, or every one on a month end)")
    diffs = np.diff(_months(times))
    if step is None:
        counts = pd.Series(diffs).value_counts()
        step = CalendarStep(int(min(counts.index[counts == counts.max()])), end)
    off = np.nonzero(diffs % step.months)[0]
    if len(off):
        i = int(off[0]) + 1
        raise DataError(f"{label}: irregular time step at {times[i]} (row {i}): {int(diffs[i - 1])} month(s) after "
                        f"the previous row, not a whole number of the data step {step}")
    return step


def regular_grid(first, last, step) -> pd.DatetimeIndex:
    """Every time from `first` to `last` (inclusive) `step` apart, a fixed or a calendar step."""
    if not isinstance(step, CalendarStep):
        return pd.date_range(first, last, freq=step)
    n = int(np.diff(_months([first, last]))[0]) // step.months + 1
    return pd.DatetimeIndex(add_steps(first, np.arange(n), step))


def nominal(step) -> pd.Timedelta:
    """A fixed step itself, a calendar step's nominal length (the unit of its lead_time)."""
    return step.nominal if isinstance(step, CalendarStep) else pd.Timedelta(step)


def step_config(step) -> dict:
    """How a run's config.json stores its step: time_step_seconds for a fixed one, time_step ('MS', ...) else."""
    if isinstance(step, CalendarStep):
        return {"time_step": step.alias}
    return {"time_step_seconds": pd.Timedelta(step).total_seconds()}


def run_step(config: dict):
    """A run's time step from its config.json (step_config)."""
    if config.get("time_step"):
        return CalendarStep.parse(config["time_step"])
    return pd.Timedelta(seconds=float(config["time_step_seconds"]))


def check_run_step(step, config: dict, label: str, whose: str = "the model's"):
    """DataError when the data's step is not the run's (config.json); returns the step."""
    want = run_step(config)
    if step != want:
        raise DataError(f"{label}: time step {step} differs from {whose} {want}")
    return step


def check_time(ds: xr.Dataset, label: str):
    """Require a datetime `time` axis that increases with one constant step (a fixed one, or whole calendar months
    on month starts or ends); return the step."""
    t = ds[TIME].values
    if not np.issubdtype(t.dtype, np.datetime64):
        raise DataError(f"{label}: '{TIME}' must hold datetimes (dtype {t.dtype})")
    if len(t) < 2:
        raise DataError(f"{label}: '{TIME}' has {len(t)} value(s); need at least 2")
    dt = np.diff(t)
    if (dt <= np.timedelta64(0)).any():
        i = int(np.argmax(dt <= np.timedelta64(0)))
        raise DataError(f"{label}: '{TIME}' is not strictly increasing at index {i + 1} ({t[i]} -> {t[i + 1]})")
    cal = calendar_step(t)
    if cal is not None:
        dt, expected = np.diff(_months(t)), cal
    else:
        expected = pd.Timedelta(dt[0])
    if (dt != dt[0]).any():
        i = int(np.argmax(dt != dt[0]))
        raise DataError(f"{label}: '{TIME}' step is irregular at index {i + 1} ({t[i]} -> {t[i + 1]}, "
                        f"expected step {expected})")
    return expected


def time_step(ds):
    """The step of a Dataset's `time` axis (or of an array of times): a CalendarStep for times on month starts or
    ends, else the first difference."""
    t = np.asarray(ds[TIME].values if isinstance(ds, (xr.Dataset, xr.DataArray)) else ds).ravel()
    cal = calendar_step(t[:3])
    if cal is not None and len(t) > 3:
        cal = calendar_step(t)  # the first steps on a month rule: all of them must be
    return cal if cal is not None else pd.Timedelta(t[1] - t[0])


def parse_duration(text, step, field: str) -> int:
    """'24h' / '1d' / '30min' (or a plain int or digits = steps) -> a number of data steps; must be a positive
    multiple of step. A calendar step takes steps, or months, quarters and years ('12MS', '4QS', '1YS', '2 years')."""
    if isinstance(text, str) and text.strip().isdigit():
        text = int(text.strip())
    if isinstance(text, (int, np.integer)):
        n = int(text)
    elif isinstance(step, CalendarStep):
        n = _calendar_duration(text, step, field)
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


def _calendar_duration(text, step: CalendarStep, field: str) -> int:
    """Months, quarters or years ('12MS', '12 months', '2YS') in steps of a calendar step."""
    s = str(text).strip()
    cal = CalendarStep.parse(s)
    words = _WORDS.match(s)
    if cal is None and words is not None:
        cal = CalendarStep(int(words.group(1) or 1) * UNITS[words.group(2)[0].upper()])
    if cal is None:
        raise ConfigError(f"{field}: '{text}' is no number of steps of the data's calendar step {step} (examples: "
                          f"12, 12MS, 4QS, 1YS)")
    n, rem = divmod(cal.months, step.months)
    if rem:
        raise ConfigError(f"{field}: {text} is not a multiple of the data time step {step}")
    return n


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


def _whole_month_end(text) -> pd.Timestamp | None:
    """The last instant of a month ('2009-12') or year ('2009') given as such, else None."""
    s = str(text).strip()
    if re.fullmatch(r"\d{4}(-\d{2})?", s) is None:
        return None
    return pd.Timestamp(s) + pd.DateOffset(months=1 if "-" in s else 12) - pd.Timedelta(1, "ns")


def period_indices(ds: xr.Dataset, period, label: str, what: str) -> np.ndarray:
    """Indices along `time` of the inclusive period; DataError naming the period if it misses the data. A month
    ('2009-12') or year ('2009') as either end stands for all of it, as in pandas' slicing (month ends included)."""
    start, end = parse_period(period)
    t = pd.DatetimeIndex(ds[TIME].values)
    lo = t[0] if start is None else pd.Timestamp(start)
    hi = t[-1] if end is None else pd.Timestamp(end)
    if end is not None and len(str(end)) <= 10:
        hi = hi + pd.Timedelta(days=1) - pd.Timedelta(1, "ns")
    idx = np.nonzero((t >= lo) & (t <= (end is not None and _whole_month_end(end) or hi)))[0]
    first = start is not None and _whole_month_end(start) or lo  # a month given as the start: data within it
    if len(idx) == 0 or first < t[0] or hi > t[-1] + pd.Timedelta(days=1) - pd.Timedelta(1, "ns"):
        raise DataError(f"{label}: {what} {start or ''}:{end or ''} lies outside the data ({t[0]} to {t[-1]})")
    return idx


def init_indices(ds: xr.Dataset, init_period, init_every, context: int, label: str) -> np.ndarray:
    """Init times in the period, every `init_every`, each with `context` steps of data up to and including it."""
    every = parse_duration(init_every, time_step(ds), "init_every")
    idx = period_indices(ds, init_period, label, "forecast period")
    t = pd.DatetimeIndex(ds["time"].values)
    idx = idx[(idx - idx[0]) % every == 0] if every > 1 else idx  # the axis is regular: steps are positions
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
