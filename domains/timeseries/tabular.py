"""Tables <-> the weather pipeline: pandas DataFrame / Series and CSV / Parquet files in, tidy DataFrames out.

In: statsforecast's long table (unique_id, ds, y; longtable.py), or a table with a time axis (a DatetimeIndex, or a datetime column: `time_column`, default the first one) and one
numeric column per series, NaN where a value is missing. It becomes the Dataset the weather pipeline takes: one
variable `value` with dims (time, series), on a regular time grid (the most common step between rows; rows the
table skips become NaN). Out: a forecast Dataset (init_time, member, lead_time, ...) as a tidy DataFrame with
columns init_time, lead_time, series, member, value, or with `quantiles` the ensemble's quantiles in place of the
members (columns init_time, lead_time, series, quantile, value).

Bad input raises one DataError naming the file or table, the column and the timestamp or row at fault.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from gendiff.errors import ConfigError, DataError
from gendiff.io import atomic_path

from .ensquantile import ensemble_quantile
from .longtable import attach_covariates, covariate_frames, is_long, to_wide as long_to_wide
from .timeaxis import CalendarStep, month_rule, on_month_rule, regular_grid, table_calendar_step

TIME, SERIES, VALUE = "time", "series", "value"
FORECAST_DIMS = ("init_time", "member", "lead_time")
TIDY_COLUMNS = ["init_time", "lead_time", "series", "member", "value"]
QUANTILE_COLUMNS = ["init_time", "lead_time", "series", "quantile", "value"]
FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".nc": "netcdf", ".netcdf": "netcdf"}
TABLE_FORMATS = ("csv", "parquet")


class TableFile(str):
    """A CSV / Parquet path (a str) that carries how to read it: `time_column` (None: the first datetime column)."""

    def __new__(cls, path, time_column: str | None = None):
        obj = super().__new__(cls, str(path))
        obj.time_column = time_column
        return obj


class TableOutput(str):
    """An output path (a str) that carries the table format ('csv' or 'parquet') and the quantiles to write."""

    def __new__(cls, path, fmt: str, quantiles=None):
        obj = super().__new__(cls, str(path))
        obj.table_format, obj.quantiles = fmt, quantiles
        return obj


def file_format(path) -> str | None:
    """'csv', 'parquet' or 'netcdf' from the suffix of `path`; None for anything else."""
    return FORMATS.get(Path(str(path)).suffix.lower())


def is_table(source) -> bool:
    """True for a pandas DataFrame / Series, a TableFile, or a path ending in .csv / .parquet / .pq."""
    if isinstance(source, (pd.DataFrame, pd.Series, TableFile)):
        return True
    return isinstance(source, (str, Path)) and file_format(source) in TABLE_FORMATS


def read_table(path) -> pd.DataFrame:
    """Read a CSV or Parquet file as it is (no validation yet; from_pandas does that)."""
    path = Path(str(path))
    fmt = file_format(path)
    if fmt not in TABLE_FORMATS:
        raise DataError(f"{path}: not a CSV or Parquet file (suffix {path.suffix or 'none'}; expected .csv, .parquet)")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        if fmt == "csv":
            return pd.read_csv(path)
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise DataError(f"{path}: reading Parquet needs the 'pyarrow' package (pip install pyarrow)") from None
        return pd.read_parquet(path)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: cannot be read as {fmt} ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''})") from None


def _parse_times(values, label: str, column: str) -> pd.DatetimeIndex | None:
    """Datetimes from a column's values (tz-aware ones in UTC, without the zone); None if they are not datetimes."""
    if isinstance(values, pd.DatetimeIndex) or pd.api.types.is_datetime64_any_dtype(values):
        t = pd.DatetimeIndex(values)
    elif pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return None
    else:
        t = None
        # ISO 8601 first, then pandas' inference; utc=True reads offsets that change (daylight saving time)
        for kw in ({"format": "ISO8601"}, {"format": "ISO8601", "utc": True}, {}, {"utc": True}):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    t = pd.DatetimeIndex(pd.to_datetime(pd.Series(values).astype(object), **kw))
                    break
                except (ValueError, TypeError, OverflowError):
                    continue
        if t is None:
            return None
    if t.tz is not None:
        t = t.tz_convert("UTC").tz_localize(None)
    return t.as_unit("ns")


def _time_axis(df: pd.DataFrame, time_column, label: str) -> tuple[pd.DatetimeIndex, pd.DataFrame]:
    """(times, the value columns): from `time_column`, else a DatetimeIndex, else the first datetime column."""
    if time_column is not None:
        if time_column not in df.columns:
            raise DataError(f"{label}: no column '{time_column}' (columns: {', '.join(map(str, df.columns))})")
        t = _parse_times(df[time_column], label, time_column)
        if t is None:
            bad = df[time_column].dropna()
            raise DataError(f"{label}: time column '{time_column}' does not hold datetimes "
                            f"(first value {bad.iloc[0]!r})" if len(bad) else f"{label}: time column "
                            f"'{time_column}' is empty")
        return t, df.drop(columns=[time_column])
    if isinstance(df.index, pd.DatetimeIndex):
        return _parse_times(df.index, label, "index"), df
    for col in df.columns:
        if df[col].notna().any():
            t = _parse_times(df[col], label, str(col))
            if t is not None:
                return t, df.drop(columns=[col])
    raise DataError(f"{label}: no datetime column or DatetimeIndex (columns: {', '.join(map(str, df.columns))}); "
                    "name the time column (time_column= / --time-column)")


def infer_step(times: pd.DatetimeIndex, label: str, freq=None) -> pd.Timedelta | CalendarStep:
    """The regular step: `freq` if given, else the most common difference between consecutive rows (the smallest
    of equally common ones). Every difference must be a whole number of steps (skipped rows are gaps). Rows all on
    month starts (or all on month ends) take a calendar step of whole months (timeaxis.table_calendar_step; freq
    'MS', 'ME', 'QS', 'QE', 'YS', 'YE')."""
    calendar = None if freq is None else CalendarStep.parse(freq)
    if calendar is not None or (freq is None and month_rule(times) is not None):
        return table_calendar_step(times, label, calendar)
    diffs = pd.TimedeltaIndex(np.diff(times.values))
    if freq is not None:
        try:
            step = pd.Timedelta(freq)
        except (ValueError, TypeError):
            raise ConfigError(f"freq={freq!r} is not a fixed duration or calendar step (examples: 1h, 30min, 7D, "
                              "MS, QS, YS)") from None
        if step <= pd.Timedelta(0):
            raise ConfigError(f"freq={freq!r} must be positive")
    else:
        counts = pd.Series(diffs).value_counts()
        step = min(counts.index[counts == counts.max()])
    off = np.nonzero((diffs.values % step.to_timedelta64()) != np.timedelta64(0, "ns"))[0]
    if len(off):
        for end in (False, True):  # mostly month starts (ends): name the first row that is not one
            if freq is None and on_month_rule(times, end).mean() >= 0.5:
                table_calendar_step(times, label, end=end)
        i = int(off[0]) + 1
        raise DataError(f"{label}: irregular time step at {times[i]} (row {i}): {pd.Timedelta(diffs[i - 1])} after "
                        f"the previous row, not a whole number of the data step {step}")
    return step


def from_pandas(table, *, time_column: str | None = None, freq=None, name: str | None = None) -> xr.Dataset:
    """DataFrame / Series (or a CSV / Parquet path) -> Dataset with `value` (time, series) on a regular grid.

    Columns are series (their names, as strings, label the `series` coordinate; a Series is one series named by
    its name, or 'value'). Errors name `name` (default: the file, or 'DataFrame'), the column and the timestamp."""
    if isinstance(table, (str, Path)):
        label = name or str(table)
        time_column = getattr(table, "time_column", None) if time_column is None else time_column
        table = read_table(table)
    else:
        label = name or type(table).__name__
    covariates = None
    if is_long(table):  # statsforecast's unique_id, ds, y (other columns: covariates, longtable.py)
        covariates, table, time_column = covariate_frames(table, label), long_to_wide(table, label), None
    if isinstance(table, pd.Series):
        table = table.to_frame(name=VALUE if table.name is None else table.name)
    if not isinstance(table, pd.DataFrame):
        raise DataError(f"{label}: expected a pandas DataFrame or Series, got {type(table).__name__}")
    times, values = _time_axis(table, time_column, label)
    if len(values.columns) == 0:
        raise DataError(f"{label}: no series columns besides the time column")
    if times.hasnans:
        i = int(np.argmax(times.isna()))
        raise DataError(f"{label}: missing timestamp at row {i}")
    dup = times.duplicated()
    if dup.any():
        i = int(np.argmax(dup))
        first = int(np.argmax(times == times[i]))
        raise DataError(f"{label}: duplicated timestamp {times[i]} (rows {first} and {i})")
    if len(times) < 2:
        raise DataError(f"{label}: {len(times)} row(s); need at least 2 timestamps")
    back = np.nonzero(np.diff(times.values) < np.timedelta64(0, "ns"))[0]
    if len(back):
        i = int(back[0]) + 1
        raise DataError(f"{label}: timestamps are not sorted: {times[i]} (row {i}) comes after {times[i - 1]} "
                        "(sort the table by time)")
    step = infer_step(times, label, freq)
    labels = [str(c) for c in values.columns]
    if len(set(labels)) != len(labels):
        dupe = next(c for c in labels if labels.count(c) > 1)
        raise DataError(f"{label}: column '{dupe}' appears twice")
    cols = []
    for col, lab in zip(values.columns, labels):
        s = values[col]
        if not (pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)):
            num = pd.to_numeric(s, errors="coerce")
            bad = s.notna() & num.isna()
            if bad.any():
                i = int(np.argmax(bad.to_numpy()))
                raise DataError(f"{label}: column '{lab}' is not numeric (value {s.iloc[i]!r} at {times[i]})")
            s = num
        arr = s.to_numpy(dtype=np.float64, na_value=np.nan)
        if not np.isfinite(arr).any():
            raise DataError(f"{label}: series '{lab}' is all NaN")
        if np.isinf(arr).any():
            i = int(np.argmax(np.isinf(arr)))
            raise DataError(f"{label}: series '{lab}' holds an infinite value at {times[i]}")
        cols.append(arr)
    grid = regular_grid(times[0], times[-1], step)
    data = pd.DataFrame(np.stack(cols, axis=1), index=times, columns=labels).reindex(grid)
    ds = xr.Dataset({VALUE: ((TIME, SERIES), data.to_numpy())},
                    coords={TIME: grid.as_unit("ns").values, SERIES: np.asarray(labels, dtype=object).astype(str)})
    ds.attrs["source"] = label
    return attach_covariates(ds, covariates)


def to_dataset(source, *, time_column: str | None = None, freq=None, name: str | None = None):
    """Tables (see is_table) -> Dataset via from_pandas; anything else is returned as it is."""
    if is_table(source):
        return from_pandas(source, time_column=time_column, freq=freq, name=name)
    if time_column is not None:
        raise ConfigError(f"time_column={time_column!r} applies to DataFrames and CSV / Parquet files only")
    return source


def to_frame(ds: xr.Dataset, variable: str = VALUE) -> pd.DataFrame:
    """The inverse of from_pandas: a (time, series) variable -> a DataFrame with a DatetimeIndex, one column each."""
    da = ds[variable].transpose(TIME, SERIES)
    return pd.DataFrame(da.values, index=pd.DatetimeIndex(ds[TIME].values, name=TIME),
                        columns=pd.Index([str(s) for s in ds[SERIES].values], name=SERIES))


def _series_blocks(fc: xr.Dataset):
    """(series label, DataArray (init_time, lead_time, member)) for every series of every variable of a forecast."""
    for v in fc.data_vars:
        da = fc[v]
        missing = [d for d in FORECAST_DIMS if d not in da.dims]
        if missing:
            raise DataError(f"forecast: variable '{v}' has no '{missing[0]}' dimension (not a gendiff forecast)")
        other = [d for d in da.dims if d not in FORECAST_DIMS]
        da = da.transpose("init_time", "lead_time", *other, "member")
        if not other:
            yield str(v), da
            continue
        stacked = da.stack(_point=other)
        for k in range(stacked.sizes["_point"]):
            key = stacked["_point"].values[k]
            key = key if isinstance(key, tuple) else (key,)
            if str(v) == VALUE and other == [SERIES]:
                lab = str(key[0])
            else:
                lab = f"{v}[" + ",".join(f"{d}={c}" for d, c in zip(other, key)) + "]"
            yield lab, stacked.isel(_point=k)


def parse_quantiles(text) -> list[float] | None:
    """'0.1,0.5,0.9' or a sequence -> sorted floats in (0, 1); None / '' -> None."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        qs = [float(q) for q in items if str(q).strip()]
    except ValueError:
        raise ConfigError(f"quantiles {text!r}: expected numbers in (0, 1) separated by commas") from None
    bad = [q for q in qs if not 0.0 < q < 1.0]
    if bad or not qs:
        raise ConfigError(f"quantiles {text!r}: {bad[0] if bad else 'none given'} is not in (0, 1)")
    return sorted(set(qs))


def to_tidy(fc: xr.Dataset, quantiles=None) -> pd.DataFrame:
    """Forecast Dataset -> tidy DataFrame: one row per init_time, lead_time, series, member (or quantile).

    Dtypes: init_time datetime64[ns], lead_time timedelta64[ns], series str, member int64 / quantile float64,
    value float64. A series of a variable other than `value` (time, series) is labelled 'var' or 'var[dim=c,...]'.
    A forecast whose valid times are not init_time + lead_time (calendar months: lead_time counts a nominal month,
    timeaxis.CalendarStep) has a valid_time column (datetime64[ns]) after lead_time."""
    qs = parse_quantiles(quantiles)
    init = np.asarray(fc["init_time"].values, dtype="datetime64[ns]")
    lead = np.asarray(pd.to_timedelta(fc["lead_time"].values), dtype="timedelta64[ns]")
    valid = _calendar_valid(fc, init, lead)
    frames = []
    for lab, da in _series_blocks(fc):
        vals = np.asarray(da.values, dtype=np.float64)  # (I, L, M)
        if qs is not None:
            vals = np.moveaxis(ensemble_quantile(vals, qs, axis=-1), 0, -1)  # (I, L, Q); all-NaN members: NaN
            inner, inner_name = np.asarray(qs, dtype=np.float64), "quantile"
        else:
            inner, inner_name = np.asarray(fc["member"].values, dtype=np.int64), "member"
        n_i, n_l, n_k = vals.shape
        frames.append(pd.DataFrame({
            "init_time": np.repeat(init, n_l * n_k), "lead_time": np.tile(np.repeat(lead, n_k), n_i),
            "series": np.full(n_i * n_l * n_k, lab, dtype=object), inner_name: np.tile(inner, n_i * n_l),
            "value": vals.reshape(-1), **({} if valid is None else {"valid_time": np.repeat(valid.ravel(), n_k)})}))
    out = pd.concat(frames, ignore_index=True)
    out["series"] = out["series"].astype(object)
    position = np.repeat(np.arange(len(frames)), [len(f) for f in frames])  # series in the forecast's order
    order = ["init_time", "lead_time", *([] if valid is None else ["valid_time"]), "series", inner_name]
    out = out.assign(_position=position).sort_values(["init_time", "lead_time", "_position", inner_name],
                                                     kind="stable", ignore_index=True)
    return out[order + ["value"]]


def _calendar_valid(fc: xr.Dataset, init: np.ndarray, lead: np.ndarray) -> np.ndarray | None:
    """The forecast's valid times (I, L) where they are not init + lead (calendar steps), else None."""
    if "valid_time" not in fc.coords:
        return None
    valid = np.asarray(fc["valid_time"].transpose("init_time", "lead_time").values, dtype="datetime64[ns]")
    return None if np.array_equal(valid, init[:, None] + lead[None, :]) else valid


def from_tidy(df: pd.DataFrame, name: str = "forecast") -> xr.Dataset:
    """Tidy members (init_time, lead_time, series, member, value) -> forecast Dataset `value` (init_time, member,
    lead_time, series) with its valid_time coordinate, as forecast() returns for a from_pandas table: a valid_time
    column's (to_tidy writes one for calendar months), else init_time + lead_time."""
    missing = [c for c in TIDY_COLUMNS if c not in df.columns]
    if missing:
        hint = " (quantiles cannot be scored as an ensemble)" if "quantile" in df.columns else ""
        raise DataError(f"{name}: no column(s) {', '.join(missing)} (a tidy forecast has {', '.join(TIDY_COLUMNS)})"
                        f"{hint}")
    df = df.assign(init_time=pd.to_datetime(df["init_time"]).astype("datetime64[ns]"),
                   lead_time=pd.to_timedelta(df["lead_time"]).astype("timedelta64[ns]"),
                   series=df["series"].astype(str))
    keys = ["init_time", "member", "lead_time", "series"]
    dup = df.duplicated(keys)
    if dup.any():
        row = df[dup].iloc[0]
        raise DataError(f"{name}: duplicated row for init_time {row['init_time']}, lead_time {row['lead_time']}, "
                        f"series {row['series']}, member {row['member']}")
    da = df.set_index(keys)["value"].astype(np.float64).to_xarray()
    if da.isnull().all():
        raise DataError(f"{name}: every value is missing")
    ds = da.to_dataset(name=VALUE).reindex(series=pd.unique(df["series"]))  # series in their order in the table
    valid = ds["init_time"].values[:, None] + ds["lead_time"].values[None, :]
    if "valid_time" in df.columns:
        valid = _valid_column(df, name, ds).fillna(valid).values.astype("datetime64[ns]")
    return ds.assign_coords(valid_time=(("init_time", "lead_time"), valid))


def _valid_column(df: pd.DataFrame, name: str, ds: xr.Dataset) -> xr.DataArray:
    """A tidy table's valid_time column as (init_time, lead_time) on `ds`'s coordinates (NaT where none); one valid
    time per init and lead, else a DataError naming them."""
    pairs = pd.DataFrame({"init_time": df["init_time"], "lead_time": df["lead_time"],
                          "valid_time": pd.to_datetime(df["valid_time"]).astype("datetime64[ns]")}).drop_duplicates()
    two = pairs.duplicated(["init_time", "lead_time"])
    if two.any():
        row = pairs[two].iloc[0]
        raise DataError(f"{name}: two valid times for init_time {row['init_time']}, lead_time {row['lead_time']}")
    valid = pairs.set_index(["init_time", "lead_time"])["valid_time"].to_xarray()
    return valid.reindex(init_time=ds["init_time"], lead_time=ds["lead_time"]).transpose("init_time", "lead_time")


def write_table(df: pd.DataFrame, path, fmt: str | None = None):
    """Write a DataFrame as CSV or Parquet (from `fmt` or the suffix), atomically; returns the path."""
    fmt = fmt or file_format(path)
    if fmt not in TABLE_FORMATS:
        raise ConfigError(f"{path}: output format {fmt or 'unknown'}; choose csv or parquet (or a .csv / .parquet "
                          "suffix)")
    path = Path(str(path))
    with atomic_path(path) as tmp:
        if fmt == "csv":
            df.to_csv(tmp, index=False)
        else:
            try:
                df.to_parquet(tmp, index=False)
            except ImportError:
                raise ConfigError(f"{path}: writing Parquet needs the 'pyarrow' package (pip install pyarrow)") \
                    from None
    return path


def read_forecast_table(path) -> xr.Dataset:
    """A tidy forecast written by write_table (CSV or Parquet) -> forecast Dataset (from_tidy)."""
    df = read_table(path)
    return from_tidy(df, name=str(path))
