"""Weather and climate: xarray in, calibrated ensemble forecasts and WeatherBench2-style skill scores out.

Public verbs (same shapes as the other domains):
    train(data=..., out=..., device="auto", bf16=False, compile=False, **config) -> summary dict; writes a run folder
    forecast(run, data, init_period=..., members=..., lead=..., out=None, device=None, bf16=False, compile=False)
                                                  -> xarray.Dataset
    sample(...)                                   -> forecast alias (the model is a conditional forecaster)
    evaluate(forecast, truth, out=None)           -> list of score records (model and baselines; numpy, no device)
    demo(out, device="auto", from_scratch=False)  -> pretrained:lorenz96 forecast / evaluate / plots in seconds;
                                                     from_scratch: train first (about two minutes)
`run` is a run folder or `pretrained:NAME` (shipped in gendiff/domains/weather/pretrained/: lorenz96,
era5-uk-t2m; `gendiff list`).
`data` is a path (netCDF, zarr, GRIB with cfgrib), an xarray Dataset or DataArray, or "lorenz96" (the default).
`device`: 'auto' (CUDA, else MPS, else CPU), 'cpu', 'cuda', 'cuda:N' or 'mps' (gendiff.device.resolve_device);
the network, its inputs, the AR base and the random draws live there, and results come back to the CPU only
where they become xarray.
"""
from __future__ import annotations

LORENZ96 = "lorenz96"


def resolve_data(data, lorenz96_kwargs: dict | None = None):
    """'lorenz96' / None -> the embedded Lorenz-96 Dataset; anything else passes through."""
    if data is None or (isinstance(data, str) and data.lower() == LORENZ96):
        from .lorenz96 import lorenz96_dataset

        return lorenz96_dataset(**(lorenz96_kwargs or {}))
    return data


def train(data=None, out="runs/weather", **config) -> dict:
    """Train a forecast model; see gendiff.domains.weather.train.train for options."""
    from .fit import train as _train

    return _train(resolve_data(data), out, **config)


def forecast(run, data=None, **kwargs):
    """Ensemble forecast as xarray (init_time, member, lead_time, <data dims>); see forecast.forecast."""
    from .forecasting import forecast as _forecast

    return _forecast(run, resolve_data(data), **kwargs)


def sample(run, data=None, **kwargs):
    """Alias of forecast: every sample is a member conditioned on its init time's context."""
    return forecast(run, data, **kwargs)


def evaluate(forecast, truth=None, **kwargs) -> list[dict]:
    """Score records per variable, lead time and system (model, persistence, climatology, linear)."""
    from .scoring import evaluate as _evaluate

    return _evaluate(forecast, resolve_data(truth), **kwargs)


def demo(out="runs/weather-demo", device="auto", from_scratch: bool = False, **kwargs) -> dict:
    """The shipped pretrained:lorenz96 forecasting fresh Lorenz-96 data, scored against the baselines, with a plume
    and a skill-against-lead plot (seconds, no training); `from_scratch`: train a small model first, forecast,
    evaluate, plot (about two minutes on two CPU cores)."""
    from .demo_l96 import run_demo, run_pretrained_demo

    if from_scratch:
        return run_demo(out, device=device, **kwargs)
    return run_pretrained_demo(out, device=device, **kwargs)


__all__ = ["train", "forecast", "sample", "evaluate", "demo", "resolve_data"]
