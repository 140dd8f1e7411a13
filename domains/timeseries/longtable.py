"""Reading statsforecast's long table (`unique_id`, `ds`, `y`: one row per series and time) into the wide one the
engine's tables take (a time index, a column per series); forecasts go back out in longformat.py."""
from __future__ import annotations

import numpy as np
import pandas as pd

from gendiff.errors import ConfigError, DataError

ID, DS, Y = "unique_id", "ds", "y"


def is_long(table) -> bool:
    """True for a DataFrame with the columns unique_id, ds and y (statsforecast's long format)."""
    return isinstance(table, pd.DataFrame) and {ID, DS, Y} <= set(map(str, table.columns))


def to_wide(df: pd.DataFrame, label: str = "DataFrame") -> pd.DataFrame:
    """Long (unique_id, ds, y) -> wide (a DatetimeIndex `ds`, one column per unique_id, NaN where a series has no
    row); DataError naming the row of a duplicated (unique_id, ds) or a non-numeric y; ConfigError for exogenous
    columns, which gendiff does not use yet."""
    extra = [c for c in df.columns if str(c) not in (ID, DS, Y)]
    if extra:
        raise ConfigError(f"{label}: column(s) {', '.join(map(str, extra))} besides unique_id, ds, y: gendiff does "
                          "not use exogenous covariates yet (calendar features are built in); drop them")
    ds = pd.to_datetime(df[DS], errors="coerce")
    if ds.isna().any():
        i = int(np.argmax(ds.isna().to_numpy()))
        raise DataError(f"{label}: row {i}: ds {df[DS].iloc[i]!r} is not a timestamp")
    y = pd.to_numeric(df[Y], errors="coerce")
    bad = y.isna() & df[Y].notna()
    if bad.any():
        i = int(np.argmax(bad.to_numpy()))
        raise DataError(f"{label}: row {i}: y {df[Y].iloc[i]!r} is not a number")
    ids = df[ID].astype(str)
    dup = pd.DataFrame({ID: ids, DS: ds}).duplicated()
    if dup.any():
        i = int(np.argmax(dup.to_numpy()))
        raise DataError(f"{label}: row {i}: series {ids.iloc[i]!r} has two rows at {ds.iloc[i]}")
    order = list(dict.fromkeys(ids))  # the series in their first appearance
    wide = pd.DataFrame({ID: ids, DS: ds, Y: y}).pivot(index=DS, columns=ID, values=Y)
    return wide.reindex(columns=order).rename_axis(index=DS, columns=None)
