"""Defaults that follow the data's frequency: the horizon, the context and the candidate seasons come from the time
step (hourly: a day ahead, seasons of a day and a week; daily: two weeks ahead, a week and a year; weekly: a
quarter ahead, a year; monthly: a year ahead, a year of 12 months; quarterly: 8 quarters ahead, a year of 4;
yearly: 8 years ahead, no season; ...), and a candidate season is kept only when the training data show it: the
autocorrelation at that lag of the once-differenced series (the trend removed), averaged over the series, is at
least KEEP_ACF, and the training period holds at least MIN_CYCLES of it. A step with no calendar season (yearly
data) takes the lag where that autocorrelation peaks, when the peak reaches KEEP_ACF (natural_season: the
sunspots' 11-year cycle). The choice and its reasons go on the run's
config.json and card (`defaults`). Calendar steps (whole months on month starts or ends: timeaxis.CalendarStep)
count their seasons and horizons in months."""
from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from .timeaxis import CalendarStep

DAY, WEEK, YEAR = pd.Timedelta(days=1), pd.Timedelta(days=7), pd.Timedelta(days=365)
KEEP_ACF = 0.2  # a season whose lag autocorrelation of the differences is below this is not in the data
MIN_CYCLES = 3  # the training period must hold this many cycles of a season to judge it
MAX_SEASON = 400  # steps; longer seasons (a year of 6-hourly data) make windows too long to learn from
MAX_FEATURES = 256  # series looked at to judge a season (evenly spread over the features)
AUTO = "auto"


def _steps(period: pd.Timedelta, step: pd.Timedelta) -> int | None:
    """A period in whole steps, None when it is not a whole number of steps of at least 2."""
    n, rem = divmod(period, step)
    return int(n) if rem == pd.Timedelta(0) and n >= 2 else None


def candidate_seasons(step: pd.Timedelta | CalendarStep) -> list[int]:
    """The periods of a day, a week and a year in steps (those that are whole numbers of steps, 2 to MAX_SEASON);
    of calendar steps the year (12 months, 4 quarters)."""
    if isinstance(step, CalendarStep):  # a year of months or quarters
        n, rem = divmod(12, step.months)
        return [n] if rem == 0 and n >= 2 else []
    out = []
    for period in (DAY, WEEK, YEAR):
        n = _steps(period, step)
        if n is None and period == YEAR and step == WEEK:
            n = 52  # weekly data: the year is 52 weeks and a day; its lag 52 and 53 both enter the AR base
        if n is not None and n <= MAX_SEASON and n not in out:
            out.append(n)
    return out


def default_horizon(step: pd.Timedelta | CalendarStep) -> int:
    """A day ahead below daily data, two weeks of daily data, a quarter (13 steps) of weekly data, a year of
    monthly data, else 8 steps (8 quarters, 8 years)."""
    if isinstance(step, CalendarStep):
        return 12 if step.months == 1 else 8
    if step < DAY:
        return _steps(DAY, step) or max(1, int(DAY / step))
    if step == DAY:
        return 14
    if step == WEEK:
        return 13
    return 8


def season_strength(values: np.ndarray, season: int) -> float:
    """Mean over the series (columns of `values`, (T, N), NaN missing) of the lag-`season` autocorrelation of the
    first differences; NaN where no series has enough pairs."""
    d = np.diff(values, axis=0)
    if d.shape[0] <= season + 2:
        return float("nan")
    d = d - np.nanmean(d, axis=0, keepdims=True)
    a, b = d[season:], d[:-season]
    ok = np.isfinite(a) & np.isfinite(b)
    num = np.where(ok, a * b, 0.0).sum(0)
    den = np.sqrt(np.where(ok, a * a, 0.0).sum(0) * np.where(ok, b * b, 0.0).sum(0))
    good = (ok.sum(0) > season) & (den > 0)
    return float(np.mean(num[good] / den[good])) if good.any() else float("nan")


def natural_season(values: np.ndarray) -> tuple[int | None, dict]:
    """(season, why) for a step with no calendar season (yearly data): the lag, from 2 steps up to a third of the
    training period (MIN_CYCLES cycles) and MAX_SEASON, where the autocorrelation of the differences peaks, when the
    peak is at least KEEP_ACF and 4 / sqrt(T) (four standard errors of a white-noise autocorrelation over T steps:
    the best of many lags of a short random walk is not a season). The 11-year cycle of yearly sunspot numbers: lag
    11, 0.47 over 1700-1950. None when no lag reaches it."""
    top = min(MAX_SEASON, values.shape[0] // MIN_CYCLES)
    lags = np.arange(2, top + 1)
    acf = np.array([season_strength(values, int(s)) for s in lags])
    if not np.isfinite(acf).any():
        return None, {"rule": "no lag to judge"}
    best = int(np.nanargmax(acf))
    floor = max(KEEP_ACF, 4.0 / np.sqrt(values.shape[0]))
    keep = bool(acf[best] >= floor)
    return (int(lags[best]) if keep else None), {
        "lag": int(lags[best]), "acf": round(float(acf[best]), 3), "kept": keep,
        "rule": f"the peak of the lag autocorrelation of the differences over lags 2..{top}, kept when >= "
                f"{floor:.3g}"}


def training_sample(ds: xr.Dataset, idx: np.ndarray) -> np.ndarray:
    """(T, N) float64 values of up to MAX_FEATURES series of the training period, evenly spread over every
    variable's features."""
    cols = []
    for v in ds.data_vars:
        da = ds[v].isel(time=idx).transpose("time", ...)
        flat = np.asarray(da.values, dtype=np.float64).reshape(len(idx), -1)
        cols.append(flat)
    values = np.concatenate(cols, axis=1)
    if values.shape[1] > MAX_FEATURES:
        values = values[:, np.linspace(0, values.shape[1] - 1, MAX_FEATURES).round().astype(int)]
    return values


def choose(ds: xr.Dataset, idx: np.ndarray, step: pd.Timedelta | CalendarStep, horizon,
           seasons) -> tuple[object, object, dict]:
    """(horizon, seasons, why): a None horizon and 'auto' seasons chosen from the frequency and the training data
    (idx); the given ones kept ('none' -> None: no season)."""
    why: dict = {"step": str(step)}
    if horizon is None:
        horizon = default_horizon(step)
        why["horizon"] = f"{horizon} steps: the default for a {step} step"
    if isinstance(seasons, str) and seasons.strip().lower() == AUTO:
        values = training_sample(ds, idx)
        judged, kept = {}, []
        for s in candidate_seasons(step):
            cycles = len(idx) / s
            strength = season_strength(values, s) if cycles >= MIN_CYCLES else float("nan")
            keep = bool(np.isfinite(strength) and strength >= KEEP_ACF)
            judged[str(s)] = {"acf": None if not np.isfinite(strength) else round(strength, 3),
                              "cycles": round(cycles, 1), "kept": keep}
            kept += [s] if keep else []
        why["seasons"] = {"candidates": judged, "rule": f"kept when the lag autocorrelation of the differences is "
                                                        f">= {KEEP_ACF} over >= {MIN_CYCLES} cycles"}
        if not candidate_seasons(step):  # no calendar cycle at this step (yearly data): the data's own, if any
            found, how = natural_season(values)
            why["seasons"]["natural"] = how
            kept += [found] if found is not None else []
        seasons = kept
    elif isinstance(seasons, str) and seasons.strip().lower() == "none":
        seasons = None
    return horizon, seasons, why


def default_context(horizon: int, seasons) -> int:
    """Twice the horizon, and at least the longest season + 2 (the AR base reads lags s and s + 1)."""
    return max(2 * int(horizon), max((int(s) for s in seasons or ()), default=0) + 2, 3)
