"""statsforecast's long format: a table of `unique_id`, `ds`, `y` (one row per series and time; series may start and
end at different times and have gaps) in, and forecasts out as statsforecast writes them: `unique_id`, `ds`,
`cutoff`, the point forecast in a column named after the model (`gendiff`: the ensemble mean), `gendiff-lo-80` /
`gendiff-hi-80` for each `level`, `gendiff-q-0.1` for each requested quantile, and with `samples` one row per member.

The table itself is read by longtable.py. `cross_validation(run, df, h, n_windows, step_size)` forecasts from rolling origins as statsforecast's does, with
the verifying `y` beside each forecast."""
from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from gendiff import runs
from gendiff.errors import ConfigError, DataError

from .ensquantile import ensemble_quantile
from .forecasting import forecast
from .longtable import DS, ID, Y, with_future
from .tabular import SERIES, VALUE, from_pandas

MODEL = "gendiff"
DEFAULT_LEVELS = (80, 95)


def long_dataset(df: pd.DataFrame, label: str = "DataFrame", X_df=None) -> xr.Dataset:
    """Long table -> the engine's (time, series) Dataset on a regular grid (tabular.from_pandas), its exogenous
    columns as covariates; `X_df` (unique_id, ds and the covariates of the steps to forecast) appended, y missing."""
    return from_pandas(with_future(df, X_df), name=label)


def parse_levels(level) -> list[int | float]:
    """Prediction-interval levels in percent, (0, 100): a number, a list or '80,95'; None -> DEFAULT_LEVELS."""
    if isinstance(level, str):
        try:
            level = [float(v) for v in level.split(",") if v.strip()]
        except ValueError:
            raise ConfigError(f"level {level!r}: expected percentages separated by commas (e.g. 80,95)") from None
    levels = list(DEFAULT_LEVELS if level is None else ([level] if np.isscalar(level) else level))
    bad = [v for v in levels if not 0 < float(v) < 100]
    if bad:
        raise ConfigError(f"level {bad[0]!r}: prediction-interval levels are percentages in (0, 100)")
    return levels


def to_long(fc: xr.Dataset, level=None, quantiles=None, samples: bool = False,
            cutoffs: dict | None = None) -> pd.DataFrame:
    """A forecast Dataset (init_time, member, lead_time, series) -> statsforecast's long forecast table, one row
    per series, cutoff (the init time) and ds (the valid time); `cutoffs`: {series: init time} to keep only each
    series' own cutoff."""
    da = fc[VALUE].transpose("init_time", "member", "lead_time", SERIES)
    vals = np.asarray(da.values, dtype=np.float64)  # (I, M, L, S)
    init = pd.DatetimeIndex(fc["init_time"].values)
    valid = np.asarray(fc["valid_time"].values)  # (I, L)
    series = [str(s) for s in fc[SERIES].values]
    columns = {MODEL: np.nanmean(vals, axis=1)}
    for lv in parse_levels(level):
        lo, hi = (100 - float(lv)) / 200, 1 - (100 - float(lv)) / 200
        q = ensemble_quantile(vals, [lo, hi], axis=1)
        columns[f"{MODEL}-lo-{lv:g}"], columns[f"{MODEL}-hi-{lv:g}"] = q[0], q[1]
    for q in quantiles or ():
        columns[f"{MODEL}-q-{float(q):g}"] = ensemble_quantile(vals, float(q), axis=1)
    rows = []
    for i, t0 in enumerate(init):
        for j, name in enumerate(series):
            if cutoffs is not None and cutoffs.get(name) != t0:
                continue
            block = {ID: name, DS: valid[i], "cutoff": t0, **{k: v[i, :, j] for k, v in columns.items()}}
            if samples:
                for m in range(vals.shape[1]):
                    block[f"{MODEL}-sample-{m}"] = vals[i, m, :, j]
            rows.append(pd.DataFrame(block))
    if not rows:
        raise DataError("forecast: no series has a cutoff among the forecast's init times")
    return pd.concat(rows, ignore_index=True)


def series_cutoffs(data: xr.Dataset) -> dict:
    """{series: the time of its last observed value}: statsforecast forecasts each series from its own end."""
    values = data[VALUE].transpose("time", SERIES).values
    times = data["time"].values
    out = {}
    for j, name in enumerate(data[SERIES].values):
        seen = np.flatnonzero(np.isfinite(values[:, j]))
        if len(seen):
            out[str(name)] = pd.Timestamp(times[seen[-1]])
    return out


def forecast_long(run, df: pd.DataFrame, h=None, level=None, quantiles=None, samples: bool = False,
                  label: str = "DataFrame", X_df=None, **options) -> pd.DataFrame:
    """Forecast every series `h` steps (default: the run's horizon) from its own last observation, as
    StatsForecast.forecast(df, h, level, X_df) does: a run trained with covariates (the training table's extra
    columns) reads them from `X_df` over each series' next h steps; the other options are
    forecasting.ForecastConfig's."""
    data = long_dataset(df, label, X_df)
    cutoffs = series_cutoffs(data)
    lead = run_horizon(run) if h is None else h
    # each series from its own last value: none of its verifying values can have been trained on, even where its
    # cutoff falls before the end of the (longest series') training period
    options = {**options, "allow_in_sample": True, "cutoffs": cutoffs}
    fc = forecast(run, data, init_times=sorted(set(cutoffs.values())), lead=lead, **options)
    return to_long(fc, level, quantiles, samples, cutoffs)


def cross_validation(run, df: pd.DataFrame, h: int, n_windows: int = 1, step_size: int | None = None, level=None,
                     label: str = "DataFrame", **options) -> pd.DataFrame:
    """Rolling-origin evaluation as StatsForecast.cross_validation: `n_windows` cutoffs `step_size` steps apart
    (default h), the last h steps before the end of the data; every series forecast h steps from each cutoff, with
    its verifying `y` (NaN where it has none)."""
    if int(h) < 1 or int(n_windows) < 1:
        raise ConfigError(f"h={h} and n_windows={n_windows} must be at least 1")
    step_size = int(h) if step_size is None else int(step_size)
    data = long_dataset(df, label)
    times = data["time"].values
    last = len(times) - 1 - int(h)
    idx = [last - k * step_size for k in range(int(n_windows))][::-1]
    if idx[0] < 1:
        raise DataError(f"{label}: {n_windows} windows of {h} steps, {step_size} apart, need more than the data's "
                        f"{len(times)} steps")
    fc = forecast(run, data, init_times=times[idx], lead=int(h), **options)
    out = to_long(fc, level)
    frame = data[VALUE].transpose("time", SERIES).to_pandas()
    rows = frame.index.get_indexer(pd.DatetimeIndex(out[DS]))
    cols = pd.Index([str(c) for c in frame.columns]).get_indexer(out[ID])
    out[Y] = np.where(rows >= 0, frame.to_numpy()[rows.clip(0), cols], np.nan)
    return out


def run_horizon(run) -> int:
    """The run's horizon in steps (a Run, a run folder or pretrained:NAME)."""
    if hasattr(run, "horizon"):
        return int(run.horizon)
    return int(runs.read_run(run, domain="weather").config["horizon_steps"])
