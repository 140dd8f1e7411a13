"""Reading statsforecast's long table (`unique_id`, `ds`, `y`: one row per series and time) into the wide one the
engine's tables take (a time index, a column per series); forecasts go back out in longformat.py. Extra numeric
columns are future-known covariates (covariates.py): each becomes a (time, series) variable of the Dataset, and a
forecast's `X_df` (unique_id, ds and those columns over the steps to forecast) extends them past each series' end."""
from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from gendiff.errors import ConfigError, DataError

ID, DS, Y = "unique_id", "ds", "y"
COVARIATES = "covariates"


def is_long(table) -> bool:
    """True for a DataFrame with the columns unique_id, ds and y (statsforecast's long format)."""
    return isinstance(table, pd.DataFrame) and {ID, DS, Y} <= set(map(str, table.columns))


def exogenous(df: pd.DataFrame) -> list:
    """The columns besides unique_id, ds and y: the covariates."""
    return [c for c in df.columns if str(c) not in (ID, DS, Y)]


def _numbers(df: pd.DataFrame, column, label: str) -> pd.Series:
    """A column as float64; DataError naming the column and the row of a value that is not a number."""
    s = df[column]
    if pd.api.types.is_bool_dtype(s):
        return s.astype(np.float64)
    num = pd.to_numeric(s, errors="coerce")
    bad = num.isna() & s.notna()
    if bad.any():
        i = int(np.argmax(bad.to_numpy()))
        what = "y" if str(column) == Y else f"column '{column}'"
        raise DataError(f"{label}: row {i}: {what} {s.iloc[i]!r} is not a number"
                        + ("" if str(column) == Y else " (exogenous columns are numeric covariates)"))
    return num.astype(np.float64)


def _keys(df: pd.DataFrame, label: str) -> tuple[pd.Series, pd.Series]:
    """(unique_id as text, ds as timestamps); DataError naming the row of a bad ds or a duplicated pair."""
    ds = pd.to_datetime(df[DS], errors="coerce")
    if ds.isna().any():
        i = int(np.argmax(ds.isna().to_numpy()))
        raise DataError(f"{label}: row {i}: ds {df[DS].iloc[i]!r} is not a timestamp")
    ids = df[ID].astype(str)
    dup = pd.DataFrame({ID: ids, DS: ds}).duplicated()
    if dup.any():
        i = int(np.argmax(dup.to_numpy()))
        raise DataError(f"{label}: row {i}: series {ids.iloc[i]!r} has two rows at {ds.iloc[i]}")
    return ids, ds


def to_wide(df: pd.DataFrame, label: str = "DataFrame", column=Y) -> pd.DataFrame:
    """Long (unique_id, ds, y) -> wide (a DatetimeIndex `ds`, one column per unique_id, NaN where a series has no
    row) of `column` (y, or a covariate); DataError naming the row of a duplicated (unique_id, ds) or a value that
    is not a number."""
    ids, ds = _keys(df, label)
    y = _numbers(df, column, label)
    order = list(dict.fromkeys(ids))  # the series in their first appearance
    wide = pd.DataFrame({ID: ids, DS: ds, Y: y}).pivot(index=DS, columns=ID, values=Y)
    return wide.reindex(columns=order).rename_axis(index=DS, columns=None)


def covariate_frames(df: pd.DataFrame, label: str = "DataFrame") -> dict:
    """{column: its wide frame} for every exogenous column (DataError naming a non-numeric one)."""
    return {str(c): to_wide(df, label, c) for c in exogenous(df)}


def attach_covariates(ds: xr.Dataset, frames: dict | None) -> xr.Dataset:
    """The (time, series) Dataset of from_pandas with each covariate frame as a variable on its grid, named in
    attrs['covariates']; `ds` as it is without any."""
    if not frames:
        return ds
    time, series = ds["time"].values, [str(s) for s in ds["series"].values]
    for name, frame in frames.items():
        if name in ds.data_vars:
            raise DataError(f"{ds.attrs.get('source', 'DataFrame')}: covariate column '{name}' clashes with a "
                            "variable of the data; rename it")
        values = frame.rename(columns=str).reindex(index=pd.DatetimeIndex(time), columns=series).to_numpy()
        ds[name] = (("time", "series"), values.astype(np.float64))
    ds.attrs[COVARIATES] = list(frames)
    return ds


def with_future(df: pd.DataFrame, future, label: str = "X_df") -> pd.DataFrame:
    """The long table `df` followed by the rows of `future` (statsforecast's X_df: unique_id, ds and covariate
    columns for the steps to forecast; y left missing); DataError for rows that repeat df's or series df lacks."""
    if future is None:
        return df
    if not isinstance(future, pd.DataFrame) or not {ID, DS} <= set(map(str, future.columns)):
        raise ConfigError(f"{label}: expected a long table with unique_id, ds and the covariate columns")
    future = future.drop(columns=[Y]) if Y in future.columns else future
    f_ids, f_ds = _keys(future, label)
    h_ids, h_ds = _keys(df, "DataFrame")
    unknown = sorted(set(f_ids) - set(h_ids))
    if unknown:
        raise DataError(f"{label}: series '{unknown[0]}' is not in the data")
    both = pd.MultiIndex.from_arrays([f_ids, f_ds]).isin(pd.MultiIndex.from_arrays([h_ids, h_ds]))
    if both.any():
        i = int(np.argmax(both))
        raise DataError(f"{label}: row {i}: series {f_ids.iloc[i]!r} at {f_ds.iloc[i]} is in the data already "
                        "(X_df holds the future steps only)")
    future = future.assign(**{ID: f_ids.to_numpy(), DS: f_ds.to_numpy(), Y: np.nan})
    return pd.concat([df.assign(**{ID: h_ids.to_numpy(), DS: h_ds.to_numpy()}), future], ignore_index=True)
