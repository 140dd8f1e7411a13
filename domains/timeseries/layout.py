"""Forecast layouts: gendiff's (init_time, member, lead_time, ..., with valid_time) and WeatherBench2's (time,
prediction_timedelta, number / realization) read into gendiff's; the truth at a forecast's valid times; leads in
steps of the truth."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from gendiff.errors import DataError

from .timeaxis import CalendarStep, add_steps, nominal, time_step

ENSEMBLE_DIMS = ("member", "number", "realization")


def _open_forecast(forecast) -> xr.Dataset:
    if isinstance(forecast, xr.Dataset):
        return to_gendiff_layout(forecast, "forecast")
    path = Path(forecast)
    if not path.exists():
        raise DataError(f"{path}: no such forecast file")
    try:
        ds = xr.open_zarr(path) if path.suffix == ".zarr" else xr.open_dataset(path)
    except Exception as exc:
        raise DataError(f"{path}: not a readable forecast file ({type(exc).__name__}: {exc})") from None
    return to_gendiff_layout(ds, str(path))


def to_gendiff_layout(ds: xr.Dataset, label: str = "forecast") -> xr.Dataset:
    """A forecast in gendiff's layout (init_time, member, lead_time, with valid_time = init_time + lead_time) from
    gendiff's or WeatherBench2's (`time` = init time, `prediction_timedelta`, ensemble dim `number` or
    `realization`; a forecast without an ensemble dim is a one-member point forecast). Leads of zero or less (the
    analysis WeatherBench2 files often carry) are dropped: they are not forecasts."""
    rename = {}
    if "lead_time" not in ds.dims and "prediction_timedelta" in ds.dims:
        rename["prediction_timedelta"] = "lead_time"
    if "init_time" not in ds.dims and "time" in ds.dims:
        rename["time"] = "init_time"
    ens = [d for d in ENSEMBLE_DIMS if d in ds.dims]
    if len(ens) > 1:
        raise DataError(f"{label}: more than one ensemble dimension ({', '.join(ens)}); keep one")
    if ens and ens[0] != "member":
        rename[ens[0]] = "member"
    if rename:
        clash = [new for old, new in rename.items() if new in ds.variables and new not in ds.dims]
        ds = ds.drop_vars(clash).rename(rename)
    for d in ("init_time", "lead_time"):
        if d not in ds.dims:
            raise DataError(f"{label}: not a forecast: no '{d}' dimension (gendiff layout) or "
                            f"'{'time' if d == 'init_time' else 'prediction_timedelta'}' (WeatherBench2 layout); "
                            f"dims are {', '.join(map(str, ds.dims))}")
    if not np.issubdtype(ds["lead_time"].dtype, np.timedelta64):
        raise DataError(f"{label}: lead times are {ds['lead_time'].dtype}, not time deltas")
    if not np.issubdtype(ds["init_time"].dtype, np.datetime64):
        raise DataError(f"{label}: init times are {ds['init_time'].dtype}, not dates")
    ds = ds.sel(lead_time=ds["lead_time"] > np.timedelta64(0, "ns"))
    if ds.sizes["lead_time"] == 0:
        raise DataError(f"{label}: no lead time above zero")
    if "member" not in ds.dims:
        ds = ds.expand_dims(member=[0])
    ds = ds.transpose("init_time", "member", "lead_time", ...)
    if "valid_time" not in ds.coords or set(ds["valid_time"].dims) != {"init_time", "lead_time"}:
        ds = ds.drop_vars("valid_time", errors="ignore")
        ds = ds.assign_coords(valid_time=ds["init_time"] + ds["lead_time"])
    return ds


def truth_at_valid_time(truth: xr.DataArray, valid_time: xr.DataArray) -> xr.DataArray:
    """truth(time, ...) -> truth(init_time, lead_time, ...) at the forecast's valid times (NaN beyond the data)."""
    wanted = np.unique(valid_time.values.ravel())
    return truth.reindex(time=wanted).sel(time=valid_time).drop_vars("time", errors="ignore")


def lead_steps(truth: xr.Dataset, fc: xr.Dataset, label: str) -> tuple[pd.Timedelta, np.ndarray]:
    """The truth's time step and the forecast's leads in whole steps of it (1-based, increasing; a calendar step's
    leads count its nominal length, timeaxis.CalendarStep)."""
    step = time_step(truth)
    lead_steps = (pd.to_timedelta(fc["lead_time"].values) / nominal(step)).to_numpy()
    whole = np.round(lead_steps)
    if not np.allclose(lead_steps, whole) or (whole < 1).any() or (np.diff(whole) <= 0).any():
        raise DataError(f"{label}: forecast lead times {fc['lead_time'].values[:3]}... are not increasing whole "
                        f"multiples of the truth's time step {step}")
    return step, whole.astype(int)



def calendar_valid_time(fc: xr.Dataset, truth: xr.Dataset, label: str) -> xr.Dataset:
    """`fc` with valid_time = init_time + its leads in steps of a calendar truth (months, quarters, years), counted
    in calendar months: a tidy table or another layout carries the nominal leads only. Other truths: `fc` as is."""
    step = time_step(truth)
    if not isinstance(step, CalendarStep):
        return fc
    _, k = lead_steps(truth, fc, label)
    valid = add_steps(fc["init_time"].values[:, None], k[None, :], step)
    return fc.assign_coords(valid_time=(("init_time", "lead_time"), valid))


_lead_steps = lead_steps  # the name scoring used
