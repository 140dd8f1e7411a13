"""Weather and climate: xarray in, calibrated ensemble forecasts and WeatherBench2-style skill scores out.

Public verbs (same shapes as the other domains):
    train(data=..., out=..., device="auto", bf16=False, compile=False, **config) -> summary dict; writes a run folder
    forecast(run, data, init_period=..., members=..., lead=..., out=None, device=None, bf16=False, compile=False)
                                                  -> xarray.Dataset
    sample(...)                                   -> forecast alias (the model is a conditional forecaster)
    evaluate(forecast, truth, out=None)           -> list of score records (model and baselines; numpy, no device)
    impute(run, data, members=16, ...)            -> every interior gap filled with independent draws from a run
                                                     trained with task="impute" (gapfill.py); observed values as given
    evaluate_imputation(run, data, fraction=0.1)  -> hide observed values, impute, score against linear
                                                     interpolation and a seasonal baseline (impute_eval.py)
    demo(out, device="auto", from_scratch=False)  -> pretrained:lorenz96 forecast / evaluate / plots in seconds;
                                                     from_scratch: train first (about two minutes)
`run` is a run folder or `pretrained:NAME` (shipped in gendiff/domains/weather/pretrained/: lorenz96,
era5-uk-t2m; `gendiff list`).
`data` is a path (netCDF, zarr, GRIB with cfgrib), an xarray Dataset or DataArray, or "lorenz96" (the default);
or a time-series table: a pandas DataFrame / Series (DatetimeIndex or a datetime column, one column per series, NaN
missing) or a CSV / Parquet file, with `time_column=` naming its time column (tabular.py). For a DataFrame or Series,
forecast returns a tidy DataFrame (init_time, lead_time, series, member, value; `quantiles=` for quantiles),
`output="xarray"` the Dataset; an `out` ending in .csv / .parquet is written as that table.
`gendiff.domains.timeseries` is this module under its time-series name.
`device`: 'auto' (CUDA, else MPS, else CPU), 'cpu', 'cuda', 'cuda:N' or 'mps' (gendiff.device.resolve_device);
the network, its inputs, the AR base and the random draws live there, and results come back to the CPU only
where they become xarray.
"""
from __future__ import annotations

from pathlib import Path

LORENZ96 = "lorenz96"


def resolve_data(data, lorenz96_kwargs: dict | None = None, time_column: str | None = None):
    """'lorenz96' / None -> the embedded Lorenz-96 Dataset; DataFrames, Series and CSV / Parquet files -> the
    (time, series) Dataset of tabular.from_pandas; anything else passes through."""
    if data is None or (isinstance(data, str) and data.lower() == LORENZ96):
        from .lorenz96 import lorenz96_dataset

        return lorenz96_dataset(**(lorenz96_kwargs or {}))
    from .tabular import to_dataset

    return to_dataset(data, time_column=time_column)


def train(data=None, out="runs/weather", time_column: str | None = None, **config) -> dict:
    """Train a forecast model; see gendiff.domains.weather.fit.train for options. A table (DataFrame, Series,
    CSV or Parquet) is normalised per series unless `normalise="variable"` is passed."""
    from .fit import train as _train
    from .tabular import is_table

    if is_table(data) and isinstance(data, (str, Path)):
        config["card"] = {"data": str(data), **(config.get("card") or {})}
    if is_table(data):  # each series on its own scale: a table may mix megawatts and fractions
        config.setdefault("normalise", "location")
    return _train(resolve_data(data, time_column=time_column), out, **config)


def forecast(run, data=None, *, time_column: str | None = None, quantiles=None, output: str | None = None,
             out=None, **kwargs):
    """Ensemble forecast (init_time, member, lead_time, <data dims>); see forecasting.forecast. `output`: 'xarray'
    or 'frame' (tidy, tabular.to_tidy); default 'frame' for a DataFrame / Series or with `quantiles`, else 'xarray'.
    An `out` ending in .csv / .parquet (or a tabular.TableOutput) is written as the tidy table."""
    import pandas as pd

    from .forecasting import forecast as _forecast
    from .tabular import TableOutput, file_format, parse_quantiles, to_tidy, write_table

    if output not in (None, "xarray", "frame"):
        from gendiff.errors import ConfigError

        raise ConfigError(f"output={output!r}: expected 'xarray' or 'frame'")
    quantiles = parse_quantiles(quantiles)
    if output is None:
        output = "frame" if isinstance(data, (pd.DataFrame, pd.Series)) or quantiles is not None else "xarray"
    table_out = out is not None and (isinstance(out, TableOutput) or file_format(out) in ("csv", "parquet"))
    _require_task(run, "forecast")
    ds = _forecast(run, resolve_data(data, time_column=time_column), out=None if table_out else out, **kwargs)
    if table_out:
        file_q = quantiles if quantiles is not None else parse_quantiles(getattr(out, "quantiles", None))
        write_table(to_tidy(ds, file_q), out, getattr(out, "table_format", None))
    return to_tidy(ds, quantiles) if output == "frame" else ds


def _require_task(run, task: str) -> None:
    """ConfigError when `run` (a Run, run folder or pretrained:NAME) was trained for another task (fit.train's
    `task`: a forecast run cannot impute, an imputation run has no context to forecast from)."""
    from gendiff import runs
    from gendiff.errors import ConfigError

    config = run.config if hasattr(run, "config") else runs.read_run(run, domain="weather").config
    have = config.get("task", "forecast")
    if have != task:
        verb = {"impute": "gendiff train timeseries --task impute", "forecast": "task='forecast'"}[task]
        raise ConfigError(f"{getattr(run, 'spec', None) or run}: a run trained with task '{have}'; "
                          f"{'imputation' if task == 'impute' else 'forecasting'} needs one trained with "
                          f"task='{task}' ({verb})")


def sample(run, data=None, **kwargs):
    """Alias of forecast: every sample is a member conditioned on its init time's context."""
    return forecast(run, data, **kwargs)


def evaluate(forecast, truth=None, *, time_column: str | None = None, **kwargs) -> list[dict]:
    """Score records per variable, lead time and system (model, persistence, climatology, linear). `forecast` may
    be a tidy DataFrame or CSV / Parquet file of members (pass train_period then), `truth` a table."""
    import pandas as pd

    from .scoring import evaluate as _evaluate
    from .tabular import from_tidy, is_table, read_forecast_table

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
    import pandas as pd

    from .data import write_dataset
    from .gapfill import impute as _impute, to_tidy, to_wide
    from .tabular import TableOutput, file_format, parse_quantiles, write_table

    if output not in (None, "xarray", "frame", "wide"):
        from gendiff.errors import ConfigError

        raise ConfigError(f"output={output!r}: expected 'xarray', 'frame' or 'wide'")
    quantiles = parse_quantiles(quantiles if quantiles is not None else getattr(out, "quantiles", None))
    if quantiles is not None and (output == "wide" or getattr(out, "wide", False)):
        from gendiff.errors import ConfigError

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
        frame = to_wide(result, ds) if wide else to_tidy(result, ds, quantiles)
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
    from .impute_eval import evaluate_imputation as _evaluate

    if isinstance(data, (str, Path)) and "label" not in kwargs:
        kwargs["label"] = str(data)
    return _evaluate(run, resolve_data(data, time_column=time_column), **kwargs)


def demo(out="runs/weather-demo", device="auto", from_scratch: bool = False, **kwargs) -> dict:
    """The shipped pretrained:lorenz96 forecasting fresh Lorenz-96 data, scored against the baselines, with a plume
    and a skill-against-lead plot (seconds, no training); `from_scratch`: train a small model first, forecast,
    evaluate, plot (about two minutes on two CPU cores)."""
    from .demo_l96 import run_demo, run_pretrained_demo

    if from_scratch:
        return run_demo(out, device=device, **kwargs)
    return run_pretrained_demo(out, device=device, **kwargs)


_TABULAR = ("from_pandas", "to_tidy", "from_tidy", "to_frame")


def __getattr__(name):
    """The table converters of tabular.py, imported on first use (the CLI imports this package for every verb)."""
    if name in _TABULAR:
        from . import tabular

        return getattr(tabular, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["train", "forecast", "sample", "evaluate", "impute", "evaluate_imputation", "demo", "resolve_data",
           "from_pandas", "to_tidy", "from_tidy",
           "to_frame"]
