"""The engine's public verbs over tables and datasets: train, forecast (sample), evaluate, impute,
evaluate_imputation. A table (DataFrame, Series, CSV or Parquet) goes through tabular.py both ways; an xarray
Dataset or a netCDF / zarr file through data.open_data; the work itself is training.py, forecasting.py,
scoring.py, gapfill.py and impute_eval.py."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from gendiff.errors import ConfigError

from .config import AUTO_SERIES
from .data import write_dataset
from .forecasting import forecast as _forecast
from .gapfill import impute as _impute, to_tidy as _impute_tidy, to_wide
from .run import require_task
from .longformat import forecast_long, long_dataset, parse_levels, to_long
from .longtable import is_long
from .impute_eval import evaluate_imputation as _evaluate_imputation
from .scoring import evaluate as _evaluate
from .tabular import (TableOutput, file_format, from_tidy, is_table, parse_quantiles, read_forecast_table, read_table,
                      to_dataset,
                      to_tidy, write_table)
from .training import train as _train


TABLE_SECONDS = 30.0  # the default training time of a table of few series (train)


def resolve_data(data, time_column: str | None = None):
    """DataFrames, Series and CSV / Parquet files -> the (time, series) Dataset of tabular.from_pandas; anything
    else (a Dataset, DataArray, netCDF / zarr path) passes through to data.open_data."""
    if data is None:
        raise ConfigError("data: pass a table (DataFrame, CSV, Parquet), an xarray Dataset or a file")
    return to_dataset(data, time_column=time_column)


def train(data, out="runs/timeseries", time_column: str | None = None, **config) -> dict:
    """Train a forecast (or imputation) model; see training.train for options. A table (DataFrame, Series,
    CSV or Parquet) is normalised per series unless `normalise="variable"` is passed, takes arch 'auto' (a network
    shared by the series above 64 of them), and, with at most 64 series and neither `max_steps` nor `time_budget`
    given, trains for TABLE_SECONDS (or the 500 default steps, whichever comes first): with the defaults one series
    trains, calibrates and forecasts in about a minute, as fast as a user tries a statistical model; pass
    `time_budget` (--minutes) or `max_steps` (--steps) to train longer."""

    if is_table(data) and isinstance(data, (str, Path)):
        config["card"] = {"data": str(data), **(config.get("card") or {})}
    if not is_table(data) or config.get("config") is not None:
        return _train(resolve_data(data, time_column=time_column), out, **config)
    config.setdefault("normalise", "location")  # each series on its own scale: a table may mix MW and fractions
    config.setdefault("arch", "auto")  # many series: one network shared by them (config.ModelConfig)
    ds = resolve_data(data, time_column=time_column)
    few = int(ds.sizes.get("series", 1)) <= AUTO_SERIES
    if few and config.get("max_steps") is None and config.get("time_budget") is None:
        config["time_budget"] = TABLE_SECONDS
    return _train(ds, out, **config)


def forecast(run, data, *, time_column: str | None = None, quantiles=None, output: str | None = None,
             out=None, h=None, level=None, samples: bool = False, X_df=None, **kwargs):
    """Ensemble forecast (init_time, member, lead_time, <data dims>); see forecasting.forecast. `output`: 'xarray'
    or 'frame' (tidy, tabular.to_tidy); default 'frame' for a DataFrame / Series or with `quantiles`, else 'xarray'.
    An `out` ending in .csv / .parquet (or a tabular.TableOutput) is written as the tidy table.

    A long table (statsforecast's unique_id, ds, y; a DataFrame or a CSV / Parquet file) gets statsforecast's long
    forecast back (longformat.py): every series `h` steps ahead (default: the run's horizon) from its own last
    value, with the ensemble mean and `level` intervals (default 80 and 95), `quantiles` and `samples` on request;
    with init_period / init_times, from those inits instead, a `cutoff` each. `X_df` (a long table or its CSV /
    Parquet file: unique_id, ds and the covariate columns over the steps to forecast): the future-known covariates
    of a run trained with some (the training table's extra columns; covariates.py)."""
    table = read_table(data) if isinstance(data, (str, Path)) and is_table(data) else data  # a file read once
    if isinstance(X_df, (str, Path)):
        X_df = read_table(X_df)
    if isinstance(table, pd.DataFrame) and is_long(table):
        return _forecast_long(run, table, str(data) if isinstance(data, (str, Path)) else "DataFrame", out, h,
                              level, quantiles, samples, {**kwargs, "X_df": X_df})
    if X_df is not None:
        raise ConfigError("X_df= goes with a long table (unique_id, ds, y and covariate columns)")
    if table is not data:  # a wide table file: its frame, under the file's name
        time_column = getattr(data, "time_column", None) if time_column is None else time_column
        table = to_dataset(table, time_column=time_column, name=str(data))
    if h is not None or level is not None or samples:
        raise ConfigError("h=, level= and samples= go with a long table (unique_id, ds, y); use lead= and "
                          "quantiles= otherwise")
    if output not in (None, "xarray", "frame"):
        raise ConfigError(f"output={output!r}: expected 'xarray' or 'frame'")
    quantiles = parse_quantiles(quantiles)
    if output is None:
        output = "frame" if isinstance(data, (pd.DataFrame, pd.Series)) or quantiles is not None else "xarray"
    table_out = out is not None and (isinstance(out, TableOutput) or file_format(out) in ("csv", "parquet"))
    require_task(run, "forecast")
    ds = _forecast(run, resolve_data(table, time_column=None if table is not data else time_column),
                   out=None if table_out else out, **kwargs)
    if table_out:
        file_q = quantiles if quantiles is not None else parse_quantiles(getattr(out, "quantiles", None))
        write_table(to_tidy(ds, file_q), out, getattr(out, "table_format", None))
    return to_tidy(ds, quantiles) if output == "frame" else ds


def _forecast_long(run, table: pd.DataFrame, label: str, out, h, level, quantiles, samples, options: dict):
    require_task(run, "forecast")
    quantiles = parse_quantiles(quantiles if quantiles is not None else getattr(out, "quantiles", None))
    level = parse_levels(level)
    if options.get("init_period") not in (None, (None, None)) or options.get("init_times") is not None:
        if h is not None:
            options["lead"] = int(h)
        future = options.pop("X_df", None)
        frame = to_long(_forecast(run, long_dataset(table, label, future), **options), level, quantiles, samples)
    else:
        if "lead" in options and h is None:
            h = options.pop("lead")
        frame = forecast_long(run, table, h=h, level=level, quantiles=quantiles, samples=samples, label=label,
                              **options)
    if out is not None:
        if file_format(out) not in ("csv", "parquet") and not isinstance(out, TableOutput):
            raise ConfigError(f"{out}: a long table's forecast is a table: name the file .csv or .parquet")
        write_table(frame, out, getattr(out, "table_format", None))
    return frame


def sample(run, data, **kwargs):
    """Alias of forecast: every sample is a member conditioned on its init time's context."""
    return forecast(run, data, **kwargs)


def evaluate(forecast, truth, *, time_column: str | None = None, **kwargs) -> list[dict]:
    """Score records per variable, lead time and system (model, persistence, climatology, linear). `forecast` may
    be a tidy DataFrame or CSV / Parquet file of members (pass train_period then), `truth` a table."""


    tidy = isinstance(forecast, pd.DataFrame) or is_table(forecast)
    if tidy:
        forecast = from_tidy(forecast) if isinstance(forecast, pd.DataFrame) else read_forecast_table(forecast)
    truth = resolve_data(truth, time_column=time_column)
    if tidy and "series" in getattr(truth, "dims", ()) and set(truth["series"].values) == set(forecast["series"].values):
        forecast = forecast.reindex(series=truth["series"].values)  # a table's rows may list the series in any order
    return _evaluate(forecast, truth, **kwargs)


def impute(run, data, *, members: int = 16, time_column: str | None = None, quantiles=None,
           output: str | None = None, out=None, **kwargs):
    """Fill every interior gap of `data` with `members` draws from a run trained with task='impute'; see
    gapfill.impute (observed values come back bit for bit). `output`: 'xarray' (member, time, <data dims>),
    'frame' (tidy: time, series, member, value, observed; `quantiles=` for quantiles) or 'wide' (the input's
    shape, gaps filled with the members' median); default 'frame' for a DataFrame / Series or with `quantiles`,
    else 'xarray'. An `out` ending in .csv / .parquet is written as that table, .nc as the Dataset."""


    if output not in (None, "xarray", "frame", "wide"):
        raise ConfigError(f"output={output!r}: expected 'xarray', 'frame' or 'wide'")
    quantiles = parse_quantiles(quantiles if quantiles is not None else getattr(out, "quantiles", None))
    if quantiles is not None and (output == "wide" or getattr(out, "wide", False)):
        raise ConfigError("quantiles go with the tidy table (output='frame'), not the wide one (the median)")
    if output is None:
        output = "frame" if isinstance(data, (pd.DataFrame, pd.Series)) or quantiles is not None else "xarray"
    table_out = out is not None and (isinstance(out, TableOutput) or file_format(out) in ("csv", "parquet"))
    ds = resolve_data(data, time_column=time_column)
    if isinstance(data, (str, Path)) and "label" not in kwargs:
        kwargs["label"] = str(data)
    result = _impute(run, ds, members=members, **kwargs)
    frame = None
    if output != "xarray" or table_out:
        wide = output == "wide" or getattr(out, "wide", False)
        frame = to_wide(result, ds) if wide else _impute_tidy(result, ds, quantiles)
    if out is not None:
        if table_out:
            write_table(frame.reset_index() if isinstance(frame.index, pd.DatetimeIndex) else frame, out,
                        getattr(out, "table_format", None))
        else:
            write_dataset(result, out)
    return result if output == "xarray" else frame


def evaluate_imputation(run, data, *, time_column: str | None = None, **kwargs) -> dict:
    """Hide a fraction of the observed values (default 10%, seeded), impute them, score model, linear
    interpolation and seasonal baseline on them (CRPS fair and standard, normalised CRPS exact and CSDI's
    19-quantile one, MAE of the median); see impute_eval.evaluate_imputation."""

    if isinstance(data, (str, Path)) and "label" not in kwargs:
        kwargs["label"] = str(data)
    return _evaluate_imputation(run, resolve_data(data, time_column=time_column), **kwargs)
