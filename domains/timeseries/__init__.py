"""Time series: gendiff.domains.weather under its time-series name (the same pipeline, run format and models).

    from gendiff.domains import timeseries
    timeseries.train(df, "runs/ts", context=..., horizon=...)   # df: DatetimeIndex, one column per series, NaN missing
    timeseries.forecast("runs/ts", df, ...)                      # -> tidy DataFrame (init_time, lead_time, series,
                                                                 #    member, value); quantiles=[...]; output="xarray"
See gendiff.domains.weather for the verbs and gendiff.domains.weather.tabular for the table conversions.
"""
from __future__ import annotations

from gendiff.domains import weather as _weather
from gendiff.domains.weather import demo, evaluate, evaluate_imputation, forecast, impute, resolve_data, sample, train

__all__ = list(_weather.__all__)


def __getattr__(name):
    """The weather package's lazily imported names (the table converters) under this name too."""
    return getattr(_weather, name)
