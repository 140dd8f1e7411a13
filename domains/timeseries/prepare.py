"""The data half of a training run: open the data, fit the codec, the hourly climatology and the statistics on the
training period, encode the values (in memory or streamed from disk), hold out the calibration's end of the period
and find the training windows. One pass: each step reads what the one before it made."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from gendiff.errors import ConfigError, DataError

from .base import ARBase
from .peerbase import is_peer
from .codec import Codec
from . import covariates as cov_mod
from . import frequency
from .climatology import HourlyClimatology
from .config import DataConfig, ModelConfig
from .data import is_lazy, open_data, source_label
from .stream import EncodedValues, decide_in_memory, fit_statistics
from .timeaxis import CalendarStep, parse_duration, period_indices, time_step
from .windows import window_starts


def parse_seasons(seasons, step) -> list[int]:
    """Season lengths (None, one, a list, or a comma-separated text of durations or step counts) -> steps."""
    if seasons is None or seasons == "" or seasons == []:
        return []
    items = seasons.split(",") if isinstance(seasons, str) else (
        list(seasons) if isinstance(seasons, (list, tuple)) else [seasons])
    out = []
    for item in items:
        text = item.strip() if isinstance(item, str) else item
        if isinstance(text, str) and text.isdigit():
            text = int(text)
        out.append(parse_duration(text, step, "season"))  # at least 2 steps: checked by ARBase.lags_for
    return sorted(set(out))


@dataclass
class Prepared:
    """The training data, ready for windows: encoded `values` (climatology removed), the codec, the training
    period's indices `idx` (the network's `idx_net`, the calibration's `idx_hold`), the window `starts`, and the
    context / horizon / AR lags in steps."""

    label: str
    times: np.ndarray
    step: pd.Timedelta | CalendarStep
    codec: Codec
    climatology: HourlyClimatology
    values: object
    in_memory: bool
    idx: np.ndarray
    idx_net: np.ndarray
    idx_hold: np.ndarray
    starts: np.ndarray
    context: int
    horizon: int
    seasons: list
    lags: tuple
    day_of_year: bool
    why: dict
    model: ModelConfig  # the model options with arch='auto' resolved
    covariates: cov_mod.Covariates | None = None  # future-known covariates (covariates.py) and their
    cov_values: np.ndarray | None = None  # values (T, K x N) encoded

    def period(self, index: np.ndarray) -> list[str]:
        return [str(pd.Timestamp(self.times[index[0]])), str(pd.Timestamp(self.times[index[-1]]))]


def steps_of(cfg: DataConfig, model: ModelConfig, ds: xr.Dataset, idx: np.ndarray,
             step: pd.Timedelta | CalendarStep) -> tuple[int, int, list, tuple, dict]:
    """(context, horizon, seasons, AR lags, why) in steps; a None context / horizon and 'auto' seasons follow the
    frequency and the training data (frequency.py); imputation generates its whole window, with no context."""
    impute = cfg.task == "impute"
    horizon, seasons_in, why = (cfg.horizon, None, {}) if impute else frequency.choose(ds, idx, step, cfg.horizon,
                                                                                        cfg.seasons)
    hor = parse_duration(cfg.window if impute else horizon, step, "window" if impute else "horizon")
    seasons = parse_seasons(seasons_in, step)
    auto = isinstance(cfg.seasons, str) and cfg.seasons.strip().lower() == frequency.AUTO
    if auto and cfg.context is not None and not impute:  # auto seasons only as far back as the given context reaches
        reach = parse_duration(cfg.context, step, "context")
        longer = [s for s in seasons if s + 1 > reach]
        seasons = [s for s in seasons if s + 1 <= reach]
        if longer:
            why["seasons"]["beyond_context"] = longer
    peer = is_peer(model.base)
    if seasons and (impute or not (model.base == "linear" or peer)):
        raise ConfigError("seasons= are lags of the AR base or the statsforecast base's seasons: they need "
                          "base='linear' or a statsforecast base, and task='forecast'")
    if impute:
        ctx = 0
    elif cfg.context is None:
        ctx = frequency.default_context(hor, seasons)
        why["context"] = f"{ctx} steps: twice the horizon, and the longest season + 2"
    else:
        ctx = parse_duration(cfg.context, step, "context")
    lags = (1,) if peer else ARBase.lags_for(int(model.ar_order), seasons)  # peer: a zero AR holding the scale
    if seasons and not peer and ctx < lags[-1]:
        raise ConfigError(f"seasons={cfg.seasons!r}: the AR base reads {lags[-1]} steps back (season "
                          f"{max(seasons)} + 1); the context is {ctx} steps: pass a context of at least {lags[-1]} "
                          "steps")
    return ctx, hor, seasons, lags, why


def prepare(data, cfg: DataConfig, model: ModelConfig, batch_size: int) -> Prepared:
    """data -> Prepared: codec, climatology and statistics on the training period, values, split, windows."""
    label = source_label(data)
    names = cov_mod.names_of(data, cfg.covariates)
    data, cov_ds = cov_mod.split(data, names, label)  # known covariates: read, never generated
    if names and cfg.task == "impute":
        raise ConfigError(f"covariates {', '.join(names)}: they go with task='forecast'")
    ds = open_data(data, cfg.variables, name=label, chunks=cfg.chunks)
    step = time_step(ds)
    idx = period_indices(ds, cfg.train_period, label, "training period")
    ctx, hor, seasons, lags, why = steps_of(cfg, model, ds, idx, step)
    stats = fit_statistics(ds.isel(time=idx), label, normalise=cfg.normalise)
    codec = stats.codec
    model, why_arch = model.resolve_arch(codec.num_features)  # 'auto': by the number of series
    if why_arch:
        why["arch"] = why_arch
    if model.arch == "unet1d" and not codec.valid.all():  # never-valid cells (sea) are no channels of the network
        codec = Codec(codec.template, codec.mean, codec.std, compact=True)
    for v in codec.variables:
        if not stats.counts[v]:
            raise DataError(f"{label}: variable '{v}' is all NaN in the training period {cfg.train_period}")
    times = ds["time"].values
    has_data = np.zeros(len(times), dtype=bool)
    has_data[idx] = stats.has_data
    clim = stats.climatology(codec, std=cfg.hourly_std, insolation=cfg.insolation)
    reopen = None
    if isinstance(data, (str, Path, list, tuple)):  # each DataLoader worker opens the files itself
        reopen = functools.partial(open_data, data, codec.variables, name=label, chunks=cfg.chunks)
    values = EncodedValues(ds, codec, clim, label, reopen)
    in_memory = True if cfg.task == "impute" else cfg.in_memory  # imputation windows take their values in memory
    in_memory = decide_in_memory(in_memory, values, cfg.chunks is not None or (isinstance(data, xr.Dataset)
                                                                               and is_lazy(data)))
    if in_memory:
        values = values.load()
    n_hold = int(round(len(idx) * cfg.calibration))
    idx_net, idx_hold = idx[:len(idx) - n_hold], idx[len(idx) - n_hold:]
    starts = window_starts(len(times), idx_net, ctx + hor, None, ctx, has_data)
    if len(starts) < batch_size:
        raise DataError(f"{label}: training period {cfg.train_period} holds {len(starts)} windows of "
                        f"{ctx + hor} steps, fewer than batch_size={batch_size}")
    # day of year only when the training data span a year: with less it is a key to memorise single days
    day_of_year = bool(pd.Timedelta(times[idx[-1]] - times[idx[0]]) >= pd.Timedelta(days=365))
    cov = cov_values = None
    if cov_ds is not None:
        raw = cov_mod.raw_values(cov_ds, names, codec.template, codec.variables, label)
        cov = cov_mod.Covariates.fit(names, raw, idx, label)
        cov_values = cov.encode(raw)
    return Prepared(label, times, step, codec, clim, values, bool(in_memory), idx, idx_net, idx_hold, starts, ctx,
                    hor, seasons, lags, day_of_year, why, model, cov, cov_values)
