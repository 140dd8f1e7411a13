"""Peer forecasts from statsforecast (AutoETS, AutoARIMA, MSTL, SeasonalNaive, Naive), called as the library, in
gendiff's forecast layout, so that scoring.evaluate scores them through the same code path as the model.

Each series (every non-time cell of every variable) gets its own model of each system, fitted ONCE on the training
period (`model.fit`); at every init time of the forecast the fitted model is applied to the data up to and
including the init (`model.forward(y=history, h=..., level=[80])`: the fitted parameters, the states re-run over
the history; SeasonalNaive and Naive have no parameters, so theirs is the plain forecast of the history).

The predictive distribution: statsforecast gives a point forecast and prediction intervals, not samples. Each
(init, lead, series) becomes the Gaussian N(mean, sigma^2) with sigma from the central 80% interval,
sigma = (hi_80 - lo_80) / (2 z_0.9), z_0.9 = 1.2816 (the intervals of these models are Gaussian, so this is their
own predictive distribution, not an approximation of it), and the `members` are independent draws from it,
seeded per system. peer_moments gives the mean and sigma themselves.

Gaps (NaN) are filled for fitting and for each init's history by linear interpolation between the valid values on
either side, the nearest valid value held at the ends; a history is filled from itself only, so nothing after the
init is used. A series with no valid value in the training period (or before an init) forecasts NaN.

statsforecast is an optional dependency (`pip install statsforecast`, in gendiff's `test` extra); a missing one is
a ConfigError naming it when a peer forecast is asked for.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from gendiff.errors import ConfigError, DataError

from .layout import _lead_steps

from .timeaxis import TIME, period_indices

PEERS = ("auto_ets", "auto_arima", "mstl", "seasonal_naive", "naive")
Z90 = 1.2815515655446004  # the standard normal's 0.9 quantile: an 80% central interval is mean +- Z90 sigma
LEVEL = 80


def statsforecast_models():
    """statsforecast.models, or one ConfigError naming the package when it is not installed."""
    try:
        from statsforecast import models
    except ImportError:
        raise ConfigError("the peer forecasts (" + ", ".join(PEERS) + ") need statsforecast, which is not "
                          "installed: pip install statsforecast (or pip install 'gendiff[peers]')") from None
    return models


def _seasons(season_length) -> list[int]:
    seasons = [int(s) for s in np.atleast_1d(season_length)]
    if not seasons or min(seasons) < 1:
        raise ConfigError(f"season_length: {season_length!r}: give one or more positive numbers of steps")
    return seasons


def make_model(system: str, season_length):
    """A fresh statsforecast model for `system` (one of PEERS). `season_length`: the season in steps, or several
    (hourly data: [24, 168]); MSTL takes them all, AutoETS, AutoARIMA and SeasonalNaive the first."""
    m = statsforecast_models()
    seasons = _seasons(season_length)
    first = seasons[0]
    if system == "auto_ets":
        return m.AutoETS(season_length=first)
    if system == "auto_arima":
        return m.AutoARIMA(season_length=first)
    if system == "mstl":
        return m.MSTL(season_length=seasons if len(seasons) > 1 else first)
    if system == "seasonal_naive":
        return m.SeasonalNaive(season_length=first)
    if system == "naive":
        return m.Naive()
    raise ConfigError(f"peer system {system!r}: unknown (choose from {', '.join(PEERS)})")


def fill_gaps(y: np.ndarray) -> np.ndarray:
    """NaN filled by linear interpolation between the valid neighbours, the nearest valid value at the ends;
    float64; a series without a valid value is returned as it is."""
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(y)
    if ok.all() or not ok.any():
        return y
    idx = np.arange(len(y))
    return np.interp(idx, idx[ok], y[ok])


def forecast_series(model, y: np.ndarray, train_idx: np.ndarray, init_idx: np.ndarray, horizon: int,
                    history: int | None = None, label: str = "series") -> tuple[np.ndarray, np.ndarray]:
    """One series y (T,): `model` fitted once on y[train_idx], then at each init index i applied to y[..i]
    (the last `history` steps of it; None: all) for `horizon` steps. Returns mean and sigma, each (I, horizon)."""
    mean = np.full((len(init_idx), horizon), np.nan)
    sigma = np.full((len(init_idx), horizon), np.nan)
    train = fill_gaps(y[train_idx])
    if not np.isfinite(train).any():
        return mean, sigma
    try:
        model.fit(train)
    except Exception as exc:
        raise DataError(f"{label}: {type(model).__name__} could not be fitted on the {len(train)} training steps "
                        f"({type(exc).__name__}: {exc})") from None
    for k, i in enumerate(init_idx):
        hist = fill_gaps(y[0 if history is None else max(0, i + 1 - history):i + 1])
        if not np.isfinite(hist).any():
            continue
        try:
            out = model.forward(y=hist, h=horizon, level=[LEVEL])
        except Exception as exc:
            raise DataError(f"{label}: {type(model).__name__} could not forecast from the {len(hist)} steps up to "
                            f"init index {i} ({type(exc).__name__}: {exc})") from None
        mean[k] = np.asarray(out["mean"], dtype=np.float64)
        sigma[k] = (np.asarray(out[f"hi-{LEVEL}"], dtype=np.float64)
                    - np.asarray(out[f"lo-{LEVEL}"], dtype=np.float64)) / (2 * Z90)
    return mean, sigma


def _series_dataarray(values: np.ndarray, template: xr.DataArray, init, lead) -> xr.DataArray:
    """(I, L, n) -> DataArray(init_time, lead_time, <template dims>) with the template's coordinates."""
    dims = tuple(str(d) for d in template.dims)
    coords = {k: c for k, c in template.coords.items() if set(c.dims) <= set(dims)}
    coords.update(init_time=init, lead_time=lead)
    return xr.DataArray(values.reshape(len(init), len(lead), *template.shape), dims=("init_time", "lead_time", *dims),
                        coords=coords)


def _check_systems(systems) -> list[str]:
    systems = [systems] if isinstance(systems, str) else list(systems)
    bad = [s for s in systems if s not in PEERS]
    if bad:
        raise ConfigError(f"peer systems: unknown {', '.join(map(str, bad))} (choose from {', '.join(PEERS)})")
    return systems


def peer_moments(truth: xr.Dataset, fc: xr.Dataset, train_period, systems=PEERS, season_length=24,
                 history: int | None = None, label: str = "truth") -> dict[str, tuple[xr.Dataset, xr.Dataset]]:
    """{system: (mean, sigma)}: each peer's point forecast and Gaussian standard deviation at the forecast's init
    and lead times, Datasets (init_time, lead_time, <series dims>) with a valid_time coordinate, one variable per
    variable of `fc` (in gendiff's layout) that `truth` holds. Leads may skip steps of the truth (every 6 h of an
    hourly truth: the models forecast every step to the last lead and keep those leads). `history`: at most this
    many steps up to each init are given to the models (None: all; MSTL re-decomposes its history at each init)."""
    systems = _check_systems(systems)
    statsforecast_models()  # one ConfigError before any work when statsforecast is missing

    _, lead_steps = _lead_steps(truth, fc, label)
    horizon = int(lead_steps[-1])
    train_idx = period_indices(truth, train_period, label, "training period")
    tindex = pd.DatetimeIndex(truth[TIME].values)
    init = np.asarray(fc["init_time"].values, dtype="datetime64[ns]")
    init_idx = tindex.get_indexer(pd.DatetimeIndex(init))
    if (init_idx < 0).any():
        raise DataError(f"{label}: init time {init[init_idx < 0][0]} of the forecast is not in the truth data")
    lead = fc["lead_time"].values
    variables = [str(v) for v in fc.data_vars if v in truth.data_vars and {"init_time", "lead_time"} <= set(fc[v].dims)]
    if not variables:
        raise DataError(f"{label}: holds none of the forecast's variables ({', '.join(map(str, fc.data_vars))})")
    out: dict[str, tuple[dict, dict]] = {s: ({}, {}) for s in systems}
    for v in variables:
        da = truth[v]
        dims = [d for d in da.dims if d != TIME]
        y = da.transpose(TIME, *dims).values.reshape(len(tindex), -1)
        template = da.isel({TIME: 0}, drop=True).transpose(*dims)
        for s in systems:
            mean = np.empty((len(init), len(lead), y.shape[1]))
            sigma = np.empty_like(mean)
            for c in range(y.shape[1]):
                mu, sd = forecast_series(make_model(s, season_length), y[:, c], train_idx, init_idx, horizon, history,
                                         f"{label}: {v} series {c} ({s})")
                mean[:, :, c], sigma[:, :, c] = mu[:, lead_steps - 1], sd[:, lead_steps - 1]
            out[s][0][v] = _series_dataarray(mean, template, init, lead)
            out[s][1][v] = _series_dataarray(sigma, template, init, lead)
    valid = (("init_time", "lead_time"), fc["valid_time"].values if "valid_time" in fc.coords  # calendar months
             else init[:, None] + lead[None, :])
    attrs = {"predictive": f"Gaussian, sigma from statsforecast's {LEVEL}% interval", "train_period": str(train_period)}

    def dataset(d: dict, s: str) -> xr.Dataset:
        return xr.Dataset(d).assign_coords(valid_time=valid).assign_attrs(peer=s, **attrs)

    return {s: (dataset(out[s][0], s), dataset(out[s][1], s)) for s in systems}


def gaussian_members(mean: xr.Dataset, sigma: xr.Dataset, members: int, rng: np.random.Generator) -> xr.Dataset:
    """Members drawn from N(mean, sigma^2): Dataset (init_time, member, lead_time, ...) with mean's coordinates."""
    if members < 1:
        raise ConfigError(f"members: {members}: need at least 1")
    out = {}
    for v in mean.data_vars:
        mu = mean[v].transpose("init_time", "lead_time", ...)
        sd = sigma[v].transpose(*mu.dims).values
        z = rng.standard_normal((mu.shape[0], members, *mu.shape[1:]))
        out[v] = xr.DataArray(mu.values[:, None] + sd[:, None] * z, dims=("init_time", "member", *mu.dims[1:]),
                              coords={k: c for k, c in mu.coords.items() if k != "valid_time"})
    ds = xr.Dataset(out).assign_coords(member=np.arange(members), valid_time=mean["valid_time"])
    return ds.assign_attrs(mean.attrs)


def peer_forecasts(truth: xr.Dataset, fc: xr.Dataset, train_period, systems=PEERS, members: int = 50,
                   season_length=24, seed: int = 0, history: int | None = None,
                   label: str = "truth") -> dict[str, xr.Dataset]:
    """{system: forecast}: statsforecast's AutoETS, AutoARIMA, MSTL, SeasonalNaive and Naive (those of `systems`,
    names in PEERS) at the init and lead times of `fc` (gendiff's layout), fitted once per series on
    `train_period`, as ensembles of `members` draws from the Gaussian of each model's 80% interval (peer_moments;
    the module docstring says how), in the layout forecasting.forecast_dataset makes: (init_time, member,
    lead_time, <series dims>) with valid_time. `season_length`: steps (several for MSTL: [24, 168] hourly). The
    draws of each system come from their own generator seeded by (seed, the system's place in PEERS), so a system
    draws the same members whichever others are asked for."""
    moments = peer_moments(truth, fc, train_period, systems, season_length, history, label)
    return {s: gaussian_members(mean, sigma, members, np.random.default_rng([seed, PEERS.index(s)]))
            for s, (mean, sigma) in moments.items()}
