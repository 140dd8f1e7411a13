"""Time series: probabilistic forecasting and imputation of many series with one diffusion model (the engine that
the gridded weather adapter, gendiff.domains.weather, sits on).

    from gendiff.domains import timeseries
    timeseries.train(df, "runs/ts", context="48h", horizon="24h")   # df: a DatetimeIndex and one column per series
    timeseries.forecast("runs/ts", df, members=16)                    # -> tidy DataFrame (init_time, lead_time,
                                                                      #    series, member, value); quantiles=[...]
    timeseries.evaluate(fc, df, train_period=...)                     # CRPS, RMSE, SSR against the baselines
    timeseries.impute(run, df)                                        # gaps filled with draws (task="impute" runs)

Data: a pandas DataFrame / Series, a CSV / Parquet file (`time_column=`), an xarray Dataset, or a netCDF / zarr
file; the codec turns (time, series, variable) values with a mask into training windows (data.Codec), the network
generates the horizon as departures from a base (base.ARBase), and the run folder is the core format
(gendiff.runs). The modules and the data path are drawn in docs/architecture.md.
"""
from __future__ import annotations

from gendiff.extras import require

require("timeseries", ["pandas", "xarray", "scipy"])  # one line naming the extra, before any module needs them

from .demo_co2 import demo  # noqa: E402
from .tabular import from_pandas, from_tidy, to_frame, to_tidy  # noqa: E402
from .verbs import evaluate, evaluate_imputation, forecast, impute, require_task, resolve_data, sample, train  # noqa: E402

__all__ = ["train", "forecast", "sample", "evaluate", "impute", "evaluate_imputation", "demo", "resolve_data",
           "require_task", "from_pandas", "to_tidy", "from_tidy", "to_frame"]
