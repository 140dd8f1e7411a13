"""Real time series that ship inside PyPI packages (nothing is downloaded), as DataFrames for tabular.from_pandas.

    co2     statsmodels: weekly Mauna Loa atmospheric CO2 (ppm), 1958-03-29 to 2001-12-29, 2,284 weeks, 59 missing
    solar   sktime: half-hourly GB solar generation (fraction of capacity), 2021-05-01 to 2021-05-07, 289 steps
    taylor  pmdarima: half-hourly electricity demand of England and Wales (MW), 12 weeks from Monday 2000-06-05,
            4,032 steps (Taylor 2003, "Short-term electricity demand forecasting using double seasonal exponential
            smoothing"; the package stores the values only, the dates are the paper's)
    wine    pmdarima: monthly Australian wine sales (bottles <= 1 litre), January 1980 to August 1994, 176 month
            starts (a calendar step: timeaxis.CalendarStep)
    sunspots statsmodels: yearly mean sunspot number, 1700 to 2008, 309 year starts (the solar cycle, about 11
            years, is no calendar season: its reference season is 11 steps)
    elnino  statsmodels: monthly sea surface temperature of the El Nino region (deg C), January 1950 to December
            2010, 732 month starts (the package stores a year x month table)

Each loader returns a DataFrame with a DatetimeIndex named `time` and one column per series; `SEASON` gives the
season length in steps used by the seasonal-naive reference (a year of weeks, a day of half hours, a week, a year
of months).
"""
from __future__ import annotations

import importlib
import warnings

import numpy as np
import pandas as pd
import xarray as xr

from gendiff.errors import ConfigError, DataError

from .timeaxis import add_steps, nominal, time_step

SEASON = {"co2": 52, "solar": 48, "taylor": 336, "wine": 12, "sunspots": 11, "elnino": 12}
PACKAGES = {"co2": "statsmodels", "solar": "sktime", "taylor": "pmdarima", "wine": "pmdarima",
            "sunspots": "statsmodels", "elnino": "statsmodels"}


def _need(name: str):
    try:
        return importlib.import_module(PACKAGES[name])
    except ImportError:
        raise DataError(f"dataset '{name}' ships with the '{PACKAGES[name]}' package, which is not installed "
                        f"(pip install {PACKAGES[name]}, or pip install 'gendiff[test]')") from None


def co2_weekly() -> pd.DataFrame:
    """statsmodels.datasets.co2: weekly (Saturday) Mauna Loa CO2 in ppm; NaN for the 59 weeks without a value."""
    _need("co2")
    from statsmodels.datasets import co2

    df = co2.load_pandas().data[["co2"]].astype(np.float64)
    df.index = pd.DatetimeIndex(df.index, name="time").as_unit("ns")
    df.index.freq = None
    return df


def gb_solar() -> pd.DataFrame:
    """sktime.datasets.load_solar(api_version=None): the copy stored in the package (no call to the Sheffield Solar
    API); half-hourly, UTC, normalised by capacity."""
    _need("solar")
    from sktime.datasets import load_solar

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = load_solar(api_version=None)
    idx = pd.DatetimeIndex(y.index)
    idx = (idx.tz_convert("UTC").tz_localize(None) if idx.tz is not None else idx).as_unit("ns")
    return pd.DataFrame({"solar_gen": y.to_numpy(dtype=np.float64)}, index=pd.DatetimeIndex(idx, name="time"))


def taylor_demand() -> pd.DataFrame:
    """pmdarima.datasets.load_taylor: half-hourly demand in MW, Monday 5 June 2000 00:00 onwards (local time)."""
    _need("taylor")
    from pmdarima.datasets import load_taylor

    y = np.asarray(load_taylor(as_series=False), dtype=np.float64)
    idx = pd.date_range("2000-06-05", periods=len(y), freq="30min", name="time")
    return pd.DataFrame({"demand": y}, index=idx)


def wine_monthly() -> pd.DataFrame:
    """pmdarima.datasets.load_wineind: monthly Australian wine sales, on month starts from January 1980."""
    _need("wine")
    from pmdarima.datasets import load_wineind

    y = np.asarray(load_wineind(as_series=False), dtype=np.float64)
    idx = pd.date_range("1980-01-01", periods=len(y), freq="MS", name="time").as_unit("ns")
    return pd.DataFrame({"wine": y}, index=idx)


def sunspots_yearly() -> pd.DataFrame:
    """statsmodels.datasets.sunspots: the yearly sunspot number on year starts from 1700."""
    _need("sunspots")
    from statsmodels.datasets import sunspots

    d = sunspots.load_pandas().data
    idx = pd.DatetimeIndex([pd.Timestamp(int(y), 1, 1) for y in d["YEAR"]], name="time").as_unit("ns")
    return pd.DataFrame({"sunspots": d["SUNACTIVITY"].to_numpy(dtype=np.float64)}, index=idx)


def elnino_monthly() -> pd.DataFrame:
    """statsmodels.datasets.elnino: its year x month table of sea surface temperature as one monthly series on
    month starts."""
    _need("elnino")
    from statsmodels.datasets import elnino

    d = elnino.load_pandas().data
    values = d.drop(columns="YEAR").to_numpy(dtype=np.float64).ravel()  # row by row: January to December
    idx = pd.date_range(f"{int(d['YEAR'].iloc[0])}-01-01", periods=len(values), freq="MS", name="time").as_unit("ns")
    return pd.DataFrame({"sst": values}, index=idx)


LOADERS = {"co2": co2_weekly, "solar": gb_solar, "taylor": taylor_demand, "wine": wine_monthly,
           "sunspots": sunspots_yearly, "elnino": elnino_monthly}


def load(name: str) -> pd.DataFrame:
    """One of LOADERS by name; ConfigError listing them for an unknown one."""
    if name not in LOADERS:
        raise ConfigError(f"unknown dataset '{name}' (known: {', '.join(LOADERS)})")
    return LOADERS[name]()


def seasonal_naive(truth, init_times, n_lead: int, season: int, variable: str = "value"):
    """The seasonal-naive forecast (Hyndman & Athanasopoulos, FPP3 5.2): for lead h the value one season before the
    valid time, `season` * ceil(h / season) steps back, so that it is known at the init. A one-member forecast
    Dataset (init_time, member, lead_time, series) with valid_time, like forecast() returns for a table."""
    if season < 1:
        raise ConfigError(f"season={season} must be >= 1 step")
    t = pd.DatetimeIndex(truth["time"].values)
    step = time_step(truth)
    init = pd.DatetimeIndex(np.atleast_1d(np.asarray(init_times, dtype="datetime64[ns]")))
    pos = t.get_indexer(init)
    if (pos < 0).any():
        raise DataError(f"seasonal naive: init time {init[pos < 0][0]} is not in the data")
    h = np.arange(1, n_lead + 1)
    back = h - season * np.ceil(h / season).astype(int)  # offset of the source step from the init, <= 0
    src = pos[:, None] + back[None, :]
    da = truth[variable].transpose("time", ...)
    vals = da.values  # (T, S)
    out = np.where((src >= 0)[..., None], vals[np.clip(src, 0, len(t) - 1)], np.nan)  # (I, L, S)
    lead = pd.to_timedelta(h * nominal(step)).to_numpy().astype("timedelta64[ns]")
    other = [d for d in da.dims if d != "time"]
    fc = xr.Dataset({variable: (("init_time", "member", "lead_time", *other), out[:, None])},
                    coords={"init_time": init.values, "member": [0], "lead_time": lead,
                            **{d: da[d].values for d in other}})
    return fc.assign_coords(valid_time=(("init_time", "lead_time"), add_steps(init.values[:, None], h[None, :], step)))
