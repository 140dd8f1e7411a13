"""Weather and climate: the gridded face of the time-series engine (gendiff.domains.timeseries). xarray in,
calibrated ensemble forecasts and WeatherBench2-style skill scores out, with dims, coords and attrs intact.

Public verbs (the engine's, with the gridded defaults):
    train(data=..., out=..., device="auto", **config)  -> summary dict; writes a run folder (timeseries.training)
    forecast(run, data, init_period=..., members=..., lead=..., out=None)    -> xarray.Dataset
    sample(...)                                        -> forecast alias (the model is a conditional forecaster)
    evaluate(forecast, truth, out=None)                -> score records, averaged with cell-area latitude weights
    impute(run, data, members=16, ...)                 -> gaps filled with draws from a run trained with task="impute"
    evaluate_imputation(run, data, fraction=0.1)       -> hide, impute and score against the baselines
    demo(out, device="auto", from_scratch=False)       -> pretrained:lorenz96 forecast / evaluate / plots in seconds
`run` is a run folder or `pretrained:NAME` (shipped in gendiff/domains/weather/pretrained/: lorenz96,
era5-uk-t2m, ncep-air; `gendiff list`). `data` is a path (netCDF, zarr, GRIB with cfgrib, a quoted glob), an xarray Dataset
or DataArray, "lorenz96" (the default: the embedded Lorenz-96 system), or a table as the engine takes it.
"""
from __future__ import annotations

import importlib
import types
import warnings

from gendiff.extras import require

require("weather", ["netCDF4"])  # the engine checks its own (timeseries) packages

from gendiff.domains import timeseries  # noqa: E402

from .demo_l96 import run_demo, run_pretrained_demo  # noqa: E402
from .lorenz96 import lorenz96_dataset  # noqa: E402
from .metrics import latitude_weights  # noqa: E402

LORENZ96 = "lorenz96"
# gridded runs keep a day of context and horizon and no AR season unless asked (the engine's defaults follow the
# frequency: timeseries.frequency); the shipped runs and their recorded forecasts were trained with these
TRAIN_DEFAULTS = {"context": "24h", "horizon": "24h", "seasons": None}
CLI_DEFAULTS = {"train": {"context": "24h", "horizon": "24h", "season": None},
                "forecast": {"init_every": "6h", "lead": "24h"}}


def resolve_data(data, lorenz96_kwargs: dict | None = None, time_column: str | None = None):
    """'lorenz96' / None -> the embedded Lorenz-96 Dataset; tables -> the engine's (time, series) Dataset;
    anything else passes through."""
    if data is None or (isinstance(data, str) and data.lower() == LORENZ96):
        return lorenz96_dataset(**(lorenz96_kwargs or {}))
    return timeseries.resolve_data(data, time_column=time_column)


def _gridded(data):
    return lorenz96_dataset() if data is None or (isinstance(data, str) and data.lower() == LORENZ96) else data


def train(data=None, out="runs/weather", time_column: str | None = None, **config) -> dict:
    """Train a forecast model on gridded data; see gendiff.domains.timeseries.training.train for the options
    (TRAIN_DEFAULTS where not given)."""
    if config.get("task", "forecast") == "forecast" and "config" not in config:
        config = {**TRAIN_DEFAULTS, **config}
    return timeseries.train(_gridded(data), out, time_column=time_column, **config)


def forecast(run, data=None, **kwargs):
    """Ensemble forecast (init_time, member, lead_time, <data dims>); see timeseries.forecast."""
    return timeseries.forecast(run, _gridded(data), **kwargs)


def sample(run, data=None, **kwargs):
    """Alias of forecast: every sample is a member conditioned on its init time's context."""
    return forecast(run, data, **kwargs)


def evaluate(forecast, truth=None, **kwargs) -> list[dict]:
    """Score records per variable, lead time and system, averaged over the grid with cell-area latitude weights
    (WeatherBench2); see timeseries.evaluate."""
    return timeseries.evaluate(forecast, _gridded(truth), weights=latitude_weights, **kwargs)


def impute(run, data, **kwargs):
    """Every interior gap filled with draws from a run trained with task='impute'; see timeseries.impute."""
    return timeseries.impute(run, _gridded(data), **kwargs)


def evaluate_imputation(run, data, **kwargs) -> dict:
    """Hide observed values, impute them, score against the baselines; see timeseries.evaluate_imputation."""
    return timeseries.evaluate_imputation(run, _gridded(data), **kwargs)


def demo(out="runs/weather-demo", device="auto", from_scratch: bool = False, **kwargs) -> dict:
    """The shipped pretrained:lorenz96 forecasting fresh Lorenz-96 data, scored against the baselines, with a plume
    and a skill-against-lead plot (seconds, no training); `from_scratch`: train a small model first, forecast,
    evaluate, plot (about two minutes on two CPU cores)."""
    if from_scratch:
        return run_demo(out, device=device, **kwargs)
    return run_pretrained_demo(out, device=device, **kwargs)


# modules that moved to the engine (issue 27): the old import paths still work and warn once each
MOVED = {"fit": "training", "gridnet": "sharednet", **{m: m for m in (
    "base", "baselines", "calibrate", "climatology", "data", "forecasting", "gapfill", "imputation", "impute_eval",
    "impute_cli", "inputs", "insolation", "loss", "model", "network", "plots", "real_series", "run", "scoring",
    "stream", "tabular", "tabular_cli", "unet1d", "windows")}}


class _MovedModule(types.ModuleType):
    """gendiff.domains.weather.<old> standing for gendiff.domains.timeseries.<new>: attributes come from there."""

    def __init__(self, name: str, target: str):
        super().__init__(name, f"moved to {target}")
        self._target, self._warned = target, False

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        if not self._warned:
            self._warned = True
            warnings.warn(f"{self.__name__} moved to {self._target}: import it from there", FutureWarning,
                          stacklevel=2)
        return getattr(importlib.import_module(self._target), attr)


def _install_aliases() -> None:
    import sys

    for old, new in MOVED.items():
        sys.modules.setdefault(f"{__name__}.{old}",
                               _MovedModule(f"{__name__}.{old}", f"gendiff.domains.timeseries.{new}"))


_install_aliases()


def __getattr__(name):
    """The engine's table converters under this name too (from_pandas, to_tidy, from_tidy, to_frame)."""
    if name in ("from_pandas", "to_tidy", "from_tidy", "to_frame"):
        return getattr(timeseries, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["train", "forecast", "sample", "evaluate", "impute", "evaluate_imputation", "demo", "resolve_data",
           "from_pandas", "to_tidy", "from_tidy", "to_frame"]
