"""Ensemble forecasts: one diffusion sample per member per horizon, rolled out autoregressively, returned as xarray."""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import xarray as xr
from tqdm.auto import tqdm

from gendiff.device import make_generator, resolve_device
from gendiff.errors import ConfigError, DataError
from gendiff.samplers import prior_sample, sample

from .data import (Codec, calendar_features, init_indices, open_data, parse_duration, source_label, time_step,
                   write_dataset)
from .inputs import anchor_of, grid_cond, make_inputs
from .network import compile_network
from . import calibrate
from . import recalibrate as recalibration
from . import covariates as cov_mod
from .heldout import check_held_out
from .regions import regrid, subregion
from .run import Run, load_run
from .stream import EncodedValues
from .timeaxis import CalendarStep, add_steps, check_run_step, lead_times, nominal


GRID_SEQUENCES = 8192  # gridnet runs: at most this many (window, location) sequences per network call


def sequence_batch(run: Run, batch_size: int) -> int:
    """The windows per network call: `batch_size`, bounded for a gridnet run, which runs over windows x locations
    sequences, by GRID_SEQUENCES."""
    if run.arch == "gridnet":
        return max(1, min(batch_size, GRID_SEQUENCES // max(1, int(run.static.shape[0]))))
    return batch_size


def use_run(run, device=None) -> Run:
    """`run` (a Run, a run folder or pretrained:NAME) ready to sample on `device` ('auto', 'cpu', 'cuda', ...;
    None: a Run's own device, 'auto' for a folder); a bad device name fails before anything is read."""
    if device is not None:
        device = resolve_device(device)
    if isinstance(run, Run):
        if device is not None:
            run.to(device)
        return run
    return load_run(run, device="auto" if device is None else device)


def check_time_step(ds: xr.Dataset, run: Run, label: str) -> pd.Timedelta | CalendarStep:
    """The data's time step; DataError when it is not the one the run was trained on."""
    return check_run_step(time_step(ds), run.config, label)


def nonnegative_variables(run: Run) -> tuple[str, ...]:
    """The run's daylight variables (shortwave radiation: its climatology's insolation.SolarScale), floored at 0
    when decoded."""
    solar = run.climatology.solar
    return () if solar is None else solar.variables(run.codec.variables, run.codec.sizes)


def forecast_dataset(codec: Codec, values: np.ndarray, init_times, step, attrs: dict | None = None,
                     nonnegative=()):
    """(I, M, L, C) normalised -> Dataset(init_time, member, lead_time, <data dims>) with a valid_time coordinate.
    A calendar step's lead_time counts its nominal length (timeaxis.CalendarStep); valid_time holds the real months.
    `nonnegative`: variables floored at 0 (nonnegative_variables)."""
    n_init, members, n_lead = values.shape[:3]
    lead = pd.to_timedelta(np.arange(1, n_lead + 1) * nominal(step)).to_numpy()
    init = np.asarray(init_times, dtype="datetime64[ns]")
    out = codec.decode(values, ("init_time", "member", "lead_time"),
                       {"init_time": init, "member": np.arange(members), "lead_time": lead}, nonnegative)
    valid = lead_times(init, n_lead, step)
    out = out.assign_coords(valid_time=(("init_time", "lead_time"), valid))
    out["lead_time"].attrs["long_name"] = "forecast lead time"
    out.attrs.update(attrs or {})
    return out


def sample_windows(run: Run, window: torch.Tensor, calendar: torch.Tensor, *, sampler: str, steps: int,
                   generator: torch.Generator | None, progress: bool = False, init_times=None,
                   level_only_base: bool = False, bf16: bool = False,
                   covariates: torch.Tensor | None = None) -> torch.Tensor:
    """Fill the horizon of windows (B, L, C) whose first `context` steps are known; returns (B, L, C).

    Everything is computed on the device of `window` (and `calendar`), where the run's network must be too
    (Run.to). `init_times` (B,): the time of each window's last context step, which sets the AR base's time-of-day
    error level (ARBase.diurnal); without it the all-hours level is used. `level_only_base`: see
    ARBase.window_base. `bf16`: the network under bfloat16 autocast (the sampler's updates stay float32).
    `covariates` (B, L, F): the run's future-known covariates over the windows, encoded (covariates.py)."""
    device = window.device
    valid = torch.from_numpy(run.codec.valid).to(device)
    residual = bool(run.config.get("residual", False))
    base = scale = None
    if run.ar is not None:
        slots = None if init_times is None else run.ar.slots(init_times)
        base = run.ar.window_base(window, run.context, level_only_base)
        scale = run.ar.window_scale(window.shape[1], run.context, slots)
    _, mask, cond = make_inputs(window, calendar, run.context, valid, residual, base, scale,
                                bool(run.config.get("missing_flag", False)), covariates)
    if run.arch == "gridnet":
        cond = grid_cond(cond, run.static)
    horizon = torch.zeros(run.context + run.horizon, dtype=torch.bool, device=device)
    horizon[run.context:] = True
    gen_mask = valid[None, :, None] & horizon[None, None, :]
    gen_mask = gen_mask.expand(window.shape[0], -1, -1)
    like = torch.zeros(window.shape[0], window.shape[2], window.shape[1], device=device)
    x_T = prior_sample(run.denoiser.schedule, run.space, like, mask=gen_mask, generator=generator)
    precision = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with precision:
        x0 = sample(sampler, run.denoiser, x_T, run.denoiser.schedule, run.space, steps, mask=gen_mask, cond=cond,
                    generator=generator, progress=progress)
    out = x0.float().transpose(1, 2).clone()
    if base is not None:
        out = out * scale.to(out) + base
    elif residual:
        out = out + anchor_of(window, run.context)[:, None, :]
    out[:, :run.context] = window[:, :run.context]
    out[:, :, ~valid] = float("nan")
    return out


def peer_trajectory(run: Run, values: np.ndarray, times, init_idx: np.ndarray, n_lead: int) -> np.ndarray | None:
    """(I, n_lead, C): a statsforecast base's forecast from each init, in anomalies (None for other runs)."""
    if run.peer is None:
        return None
    if n_lead > run.horizon:
        raise ConfigError(f"{run.spec or run.path}: a run with a statsforecast base ({run.config.get('base')}) "
                          f"forecasts up to its horizon of {run.horizon} steps, not {n_lead}")
    if times is None:
        raise ConfigError("base_trajectory: a run with a statsforecast base needs the data's times")
    return run.peer.forecasts(values, np.asarray(times), run.climatology, init_idx, n_lead, label=str(run.spec))


def base_trajectory(run: Run, values: np.ndarray, init_idx: np.ndarray, n_lead: int,
                    times=None) -> np.ndarray | None:
    """(I, n_lead, C): the base forecast from each init's context (None for runs without a base): the AR base's,
    or a statsforecast base's (peer_trajectory; `times`: the data's, which it needs)."""
    if run.ar is None:
        return None
    if run.peer is not None:
        return peer_trajectory(run, values, times, init_idx, n_lead)
    ctx = run.context
    w = np.full((len(init_idx), ctx + n_lead, values.shape[1]), np.nan, dtype=np.float32)
    w[:, :ctx] = np.stack([values[i - ctx + 1:i + 1] for i in init_idx])
    with torch.no_grad():
        return run.ar.window_base(torch.from_numpy(w).to(run.ar.device), ctx)[:, ctx:].cpu().numpy()


def initial_history(values: np.ndarray, times: np.ndarray, init_idx: np.ndarray, ctx: int, hor: int, n_lead: int,
                    members: int, device) -> tuple[torch.Tensor, np.ndarray, int]:
    """(history, init time per trajectory, chunks) of an autoregressive rollout: each init's last `ctx` observed
    steps repeated per member, then NaN for the chunks of `hor` steps that cover `n_lead`, on `device`."""
    chunks = math.ceil(n_lead / hor)
    ctx_vals = torch.from_numpy(np.stack([values[i - ctx + 1:i + 1] for i in init_idx]).astype(np.float32))
    hist = torch.full((len(init_idx) * members, ctx + chunks * hor, values.shape[1]), float("nan"), device=device)
    hist[:, :ctx] = ctx_vals.to(device).repeat_interleave(members, 0)
    return hist, np.repeat(times[init_idx], members), chunks


def rollout_tensor(run: Run, values: np.ndarray, times: np.ndarray, init_idx: np.ndarray, n_lead: int,
                   members: int, *, sampler: str, steps: int, seed: int = 0, batch_size: int = 256,
                   progress: bool = True, chain_base: str = "level", bf16: bool = False,
                   covariates: np.ndarray | None = None) -> torch.Tensor:
    """rollout's ensemble as a tensor (I, M, n_lead, C) on the run's device (Run.device), where the whole history,
    calendar and draws live; the generator is gendiff.device.make_generator's for that device and `seed`.
    `covariates` (T, F) on `times`, encoded: each window reads them over its context and horizon (0 past the
    data's end)."""
    if chain_base not in ("level", "ar"):
        raise ConfigError(f"chain_base={chain_base!r}: expected 'level' or 'ar'")
    device = run.device
    ctx, hor = run.context, run.horizon
    step = time_step(times)
    batch_size = sequence_batch(run, batch_size)
    peer = peer_trajectory(run, values, times, init_idx, n_lead)
    hist, t0, chunks = initial_history(values, times, init_idx, ctx, hor, n_lead, members, device)
    n_traj = hist.shape[0]
    offsets = np.arange(-ctx + 1, chunks * hor + 1)
    cal_times = add_steps(t0[:, None], offsets[None, :], step)  # (n_traj, ctx + chunks * hor)
    cal = torch.from_numpy(calendar_features(cal_times, bool(run.config.get("day_of_year", True)))).to(device)
    cov = None
    if covariates is not None:
        cov = torch.from_numpy(cov_mod.rollout_windows(covariates, init_idx, offsets)).to(device)
        cov = cov.repeat_interleave(members, 0)
    generator = make_generator(device, seed)
    bar = tqdm(total=chunks * math.ceil(n_traj / batch_size), disable=not progress, desc="forecast", leave=False)
    with torch.no_grad():
        for c in range(chunks):
            sl = slice(c * hor, c * hor + ctx + hor)
            for b in range(0, n_traj, batch_size):
                w = hist[b:b + batch_size, sl].clone()
                w[:, ctx:] = float("nan")
                filled = sample_windows(run, w, cal[b:b + batch_size, sl], sampler=sampler, steps=steps,
                                        generator=generator, init_times=add_steps(t0[b:b + batch_size], c * hor, step),
                                        level_only_base=c > 0 and chain_base == "level", bf16=bf16,
                                        covariates=None if cov is None else cov[b:b + batch_size, sl])
                hist[b:b + batch_size, c * hor + ctx:c * hor + ctx + hor] = filled[:, ctx:]
                bar.update(1)
    bar.close()
    out = hist[:, ctx:ctx + n_lead].reshape(len(init_idx), members, n_lead, values.shape[1])
    if peer is not None:  # the network generated departures from the statsforecast base
        out = out + torch.from_numpy(peer).to(out)[:, None]
    return out


def rollout(run: Run, values: np.ndarray, times: np.ndarray, init_idx: np.ndarray, n_lead: int, members: int, *,
            sampler: str, steps: int, seed: int = 0, batch_size: int = 256, progress: bool = True,
            chain_base: str = "level", bf16: bool = False, covariates: np.ndarray | None = None) -> np.ndarray:
    """Autoregressive ensemble: (I, M, n_lead, C); each chunk conditions on the last `context` steps so far, and
    on the run's `covariates` (T, F), encoded, when it has some.

    Computed on the run's device (rollout_tensor); the result comes back to the CPU as numpy here.
    `chain_base`: how the AR base of the chunks after the first starts from their generated context: "level"
    (the mean of its last steps, ARBase.window_base(level_only=True)) or "ar" (its last steps, as for real data)."""
    out = rollout_tensor(run, values, times, init_idx, n_lead, members, sampler=sampler, steps=steps, seed=seed,
                         batch_size=batch_size, progress=progress, chain_base=chain_base, bf16=bf16,
                         covariates=covariates)
    return out.cpu().numpy()


class HoursDefault(str):
    """ForecastConfig's default `lead` (24h) and `init_every` (6h): data on a calendar step (months, quarters,
    years; timeaxis.CalendarStep) take the run's horizon for either instead."""


@dataclass(frozen=True)
class ForecastConfig:
    """The options of forecast(), validated once where built: which inits (`init_period` START:END with
    `init_every`, None: one per horizon; or `init_times`), `members`, `lead` (the defaults 6h and 24h: the run's
    horizon on calendar steps, HoursDefault), the sampler (`sampler`, `steps`; None: the run's), `seed`,
    `batch_size`, `calibrated`, `chain_base`, where and how the network runs (`device`, `bf16`, `compile`),
    `progress`, a gridnet run on other locations (`new_locations`, `static`), lazy reading (`chunks`), the
    `command` kept in the output's attributes, and `allow_in_sample`: forecast from inits inside the run's training
    period (refused otherwise: heldout.py), marking the output in-sample. `cutoffs` ({series: init time}): a run
    with covariates needs them over each series' forecast from its own cutoff only (the long table's forecast).
    `recalibrate="past"`: the spread calibration refitted for each init on the network's forecasts of the
    `recalibrate_days` before it (recalibrate.py), instead of the run's fixed one."""

    init_period: object = None
    init_times: object = None
    init_every: object = HoursDefault("6h")
    members: int = 16
    lead: object = HoursDefault("24h")
    sampler: str | None = None
    steps: int | None = None
    seed: int = 0
    batch_size: int = 256
    progress: bool = True
    calibrated: bool = True
    chain_base: str = "level"
    device: object = None
    bf16: bool = False
    compile: object = False
    command: str | None = None
    new_locations: bool = False
    static: object = None
    chunks: object = None
    allow_in_sample: bool = False
    cutoffs: dict | None = None
    recalibrate: str | None = None
    recalibrate_days: float = recalibration.DAYS

    def __post_init__(self):
        if self.members < 1:
            raise ConfigError(f"members={self.members} must be >= 1")
        recalibration.check_recalibrate(self.recalibrate, self.recalibrate_days)
        if self.chain_base not in ("level", "ar"):
            raise ConfigError(f"chain_base={self.chain_base!r}: expected 'level' or 'ar'")


def forecast(run, data, *, config: ForecastConfig | None = None, out=None, **options) -> xr.Dataset:
    """Ensemble forecasts from every init time in init_period (or the given init_times); optionally written to out.

    `calibrated`: rescale members about their mean by the run's spread calibration (calibrate.py), when it has one.
    `chain_base`: the AR base of horizons rolled out past the first (see rollout). `device`: where the network
    samples ('auto', 'cpu', 'cuda', 'cuda:N', 'mps'; None: a Run's own device, 'auto' for a run folder); the draws
    come from a generator on that device, so forecasts are reproducible per device (CPU and CUDA differ).
    `bf16`: the network under bfloat16 autocast; `compile`: torch.compile the network first (True: inductor, or a
    backend name; model.compile_network). `run`: a Run, a run folder or `pretrained:NAME`. `command`: the
    command line that made this forecast, kept in the file's attributes (`gendiff_command`) so that
    `gendiff evaluate weather --record` can write both onto the run's card.

    A gridnet run (arch='gridnet') forecasts any part of its grid as it is. `new_locations`: a gridnet run on
    locations it was not trained on (a larger or another region of the same kind of data): the per-location state
    (codec template, hourly climatology, AR base and its error level) is fitted on the data before the first init
    time (run.regrid), the network and the spread calibration are the run's; `static`: the static fields
    (land-sea mask, ...) of the new locations, when the run was trained with some.

    `data` is read lazily (data.open_data; `chunks` as there): only each init's context is read from it
    (stream.EncodedValues), so it may be larger than memory."""
    if config is not None and options:
        raise ConfigError("forecast: pass config= or keyword options, not both")
    unknown = sorted(set(options) - set(ForecastConfig.__dataclass_fields__))
    if unknown:
        raise ConfigError(f"forecast: unknown option(s) {', '.join(unknown)}")
    cfg = config if config is not None else ForecastConfig(**options)
    run = use_run(run, cfg.device)
    if cfg.compile:
        compile_network(run.denoiser, cfg.compile)
    label = source_label(data)
    ds = open_data(data, run.codec.variables, name=label, chunks=cfg.chunks)
    run = subregion(run, ds, label)  # a gridnet run on a part of its grid
    step = check_time_step(ds, run, label)
    n_lead = parse_duration(_or_horizon(cfg.lead, step, run), step, "lead")
    idx = _init_indices(ds, cfg, run, step, label)
    times = ds["time"].values
    in_sample = check_held_out(times[idx], run.config["train_period"], label, "the run's training period",
                               cfg.allow_in_sample)
    if cfg.new_locations:  # a gridnet run on another region: its per-location state from the data before the inits
        run = regrid(run, ds, int(np.min(idx)) - run.context + 1, cfg.static, label)
    values = EncodedValues(ds, run.codec, run.climatology, label)
    covariates = _covariates(run, data, ds, idx, n_lead, step, cfg, label)
    sampler = cfg.sampler or run.config["sampler"]
    steps = int(cfg.steps or run.config["sample_steps"])
    t0 = time.perf_counter()
    arr = rollout(run, values, times, idx, n_lead, cfg.members, sampler=sampler, steps=steps, seed=cfg.seed,
                  batch_size=cfg.batch_size, progress=cfg.progress, chain_base=cfg.chain_base, bf16=cfg.bf16,
                  covariates=covariates)
    own = calibrate.load(run.path)
    calib = own if cfg.calibrated else None
    recal: dict = {}
    if cfg.recalibrate is not None:  # refitted per init on the days before it (recalibrate.py)
        past = recalibration.past_indices(times, idx, n_lead, cfg.recalibrate_days, run.context,
                                          after=recalibration.network_end(run.config))
        hist = rollout(run, values, times, past, n_lead, cfg.members, sampler=sampler, steps=steps,
                       seed=cfg.seed + recalibration.SEED_OFFSET, batch_size=cfg.batch_size, progress=cfg.progress,
                       chain_base=cfg.chain_base, bf16=cfg.bf16, covariates=covariates) if len(past) else arr[:0]
        arr, recal = recalibration.recalibrate_past(run, values, times, idx, arr, past, hist,
                                                    lambda ix: base_trajectory(run, values, ix, n_lead, times),
                                                    own, cfg.recalibrate_days)
    elif calib is not None:
        arr = calibrate.apply(arr, calib, run.codec, base_trajectory(run, values, idx, n_lead, times))
    seconds = time.perf_counter() - t0
    valid = lead_times(times[idx], n_lead, step)
    arr = run.climatology.restore(arr, valid, axis=1)
    attrs = {"gendiff_run": str(run.spec or run.path), "gendiff_model_source": run.config["source"],
             "train_period": " to ".join(run.config["train_period"]), "sampler": sampler, "sampler_steps": steps,
             "seed": cfg.seed, "forecast_seconds": round(seconds, 3), "spread_calibration": int(calib is not None),
             "chain_base": cfg.chain_base, "device": str(run.device), "bf16": int(bool(cfg.bf16)),
             "compiled": int(bool(cfg.compile)), "in_sample": int(in_sample), **recal,
             "history": f"gendiff weather forecast, {len(idx)} inits x {cfg.members} members x {n_lead} leads"}
    if cfg.command:
        attrs["gendiff_command"] = cfg.command
    result = forecast_dataset(run.codec, arr, ds["time"].values[idx], step, attrs=attrs,
                              nonnegative=nonnegative_variables(run))
    if out is not None:
        write_dataset(result, out)
    return result


def _covariates(run: Run, data, ds: xr.Dataset, idx: np.ndarray, n_lead: int, step, cfg: ForecastConfig,
                label: str) -> np.ndarray | None:
    """The run's covariates (T, F) encoded, checked over every forecast step (covariates.py); None without."""
    raw = cov_mod.for_forecast(run, data, ds, label)
    if raw is None:
        return None
    cov = cov_mod.Covariates.from_config(run.config)
    tmpl = run.codec.template
    loc = tmpl[run.codec.variables[0]].dims
    series = [str(s) for s in tmpl[loc[0]].values] if len(loc) == 1 and loc[0] in tmpl.coords else None
    cov_mod.check_known(raw, cov.names, ds["time"].values, idx, n_lead, step, label, series, cfg.cutoffs)
    return cov.encode(raw)


def _or_horizon(duration, step, run: Run):
    """The run's horizon for a default in hours (HoursDefault) on a calendar step, else the duration given."""
    return run.horizon if isinstance(duration, HoursDefault) and isinstance(step, CalendarStep) else duration


def _init_indices(ds: xr.Dataset, cfg: ForecastConfig, run: Run, step, label: str) -> np.ndarray:
    """Indices of the init times: cfg.init_times (each in the data, with a full context before it), else every
    cfg.init_every in cfg.init_period."""
    if cfg.init_times is None:
        every = run.horizon if cfg.init_every is None else _or_horizon(cfg.init_every, step, run)
        return init_indices(ds, cfg.init_period, every, run.context, label)
    t = pd.DatetimeIndex(ds["time"].values)
    want = pd.DatetimeIndex(np.atleast_1d(np.asarray(cfg.init_times, dtype="datetime64[ns]")))
    missing = want.difference(t)
    if len(missing):
        raise DataError(f"{label}: init time(s) {', '.join(map(str, missing[:3]))} are not in the data "
                        f"({t[0]} to {t[-1]}) (forecast period outside the data)")
    idx = t.get_indexer(want)
    if (idx - run.context + 1 < 0).any():
        raise DataError(f"{label}: init time {want[0]} needs {run.context} steps of context before it "
                        f"(forecast period outside the data)")
    return idx
