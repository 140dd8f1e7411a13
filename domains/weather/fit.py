"""Train the temporal U-Net on windows of an xarray Dataset (context known, horizon generated) with the core Trainer."""
from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr

from gendiff.device import resolve_device
from gendiff.errors import ConfigError, DataError
from gendiff import runs
from gendiff.io import torch_load_safe, write_json_atomic
from gendiff.losses import constant_weight
from gendiff.schedules import get_schedule, schedule_config
from gendiff.training import TrainConfig, Trainer

from .base import ARBase
from .climatology import check_hourly_std
from .data import Codec, calendar_features, is_lazy, open_data, parse_duration, period_indices, source_label, time_step
from .inputs import cond_channels
from .loss import VariableBalancedSpace, make_step_fn
from .network import build_denoiser, compile_network, is_old_state
from .run import save_state
from .stream import EncodedValues, decide_in_memory, fit_statistics
from .windows import GridWindowDataset, WindowDataset, window_starts

NET_DEFAULTS = {"width": 64, "mults": (1, 2, 2), "blocks_per_level": 1, "heads": 4, "dropout": 0.1,
                "learned_skip": True}
GRID_DEFAULTS = {"width": 32, "mults": (1, 2, 2), "blocks_per_level": 1, "heads": 4, "dropout": 0.0,
                 "neighbours": 16, "mix_levels": 1, "learned_skip": True, "checkpoint": True}
TRAIN_DEFAULTS = {"max_steps": 500, "batch_size": 32, "lr": 5e-4, "warmup_steps": 100, "weight_decay": 0.0,
                  "grad_clip": 1.0, "log_every": 50, "ckpt_every": 500, "seed": 0}


def open_static(static, label: str):
    """`static` (an xarray Dataset / DataArray or a file) -> a Dataset of time-free fields; DataError otherwise."""
    from .data import _open_path

    if isinstance(static, xr.DataArray):
        static = static.to_dataset(name=static.name or "static")
    elif not isinstance(static, xr.Dataset):
        static = _open_path(Path(static))
    if "time" in static.dims:
        raise DataError(f"{label}: static fields must not have a 'time' dimension ({', '.join(static.data_vars)})")
    if not static.data_vars:
        raise DataError(f"{label}: static= holds no variables")
    return static


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


def train(data, out, *, variables=None, train_period=None, context="24h", horizon="24h", schedule="cosine",
          prediction="x0", precondition=True, residual=True, base: str | None = "linear", ar_order: int = 2,
          seasons=None, normalise: str = "variable", hourly_std="auto", insolation: bool = True,
          net: dict | None = None, sampler=None, sample_steps=None, context_noise: float = 0.0,
          calibration: float = 0.15, calibration_inits: int = 48, resume=False, progress=True, device="auto",
          bf16: bool = False,
          compile=False, card: dict | None = None, missing_flag: bool = True, arch: str = "unet1d",
          static=None, patch: int | None = None, task: str = "forecast", window=64, chunks=None, workers: int = 0,
          in_memory: bool | None = None, **config) -> dict:
    """Fit a weather forecast model on `data` (path, Dataset or DataArray); writes a run folder `out`; returns a summary.

    The network generates the horizon as departures from `base`: "linear" (a per-feature AR(`ar_order`) mean
    forecast fitted on the training period, base.ARBase; with `seasons`, one or more season lengths (durations
    such as '7d' or '52W', or numbers of steps), the AR also takes the lags s and s + 1 of each season: the
    value a week or a year back, which the context must then reach), or None (from the last context step when `residual`,
    else the anomalies themselves). `context_noise`: see make_step_fn. `missing_flag`: a conditioning channel per
    feature marking missing context values (inputs.make_inputs). The loss weighs variables equally, not cells
    (loss.VariableBalancedSpace). With arch="unet1d" the cells that have no value in the training period (the
    sea of land-only forcing) are left out of the channels (data.Codec compact) and come back NaN. `normalise`: "variable" (one mean and standard deviation per variable, the
    gridded default) or "location" (per feature: each series of a table, or each cell, on its own scale; the
    default for tables, see gendiff.domains.weather.train). `hourly_std`: divide the anomalies by their
    hour-of-day standard deviation as well (standardised anomalies, climatology.HourlyClimatology), for variables whose
    variability follows the daily cycle: "auto" (the default) for the features that never vary at some hour of the
    day in the training period (solar power, shortwave radiation: 0 every night), True for every feature, False
    for none. `insolation`: on data with latitude and longitude, the hourly mean and deviation of those daylight
    features follow the sun's elevation through the season instead of staying at the training period's
    (insolation.SolarScale); False keeps them fixed.

    `arch`: "unet1d" (every feature a channel of one temporal U-Net; the shipped runs') or "gridnet" (one temporal
    U-Net shared by every location, with neighbourhood attention across locations: gridnet.py; its parameters do
    not depend on the grid, and the run forecasts any part of its grid). For gridnet, `static`: time-free fields on
    the locations (land-sea mask, orography; an xarray Dataset or a file) fed as inputs beside the position
    encoding; `patch`: train on windows of that many neighbouring locations drawn at random (None: the whole grid).
    `calibration`: the fraction of the training
    period, at its end, kept from the network and used to fit the ensemble spread calibration (calibrate.py);
    0 turns it off; `calibration_inits`: how many inits of that part it forecasts from (evenly spaced, at most one
    per step; 48 by default: with 16, CO2's per-lead shrinkage came out noisy enough to lose to persistence at 1
    week). The codec, climatology and AR base use the whole period.

    `sampler` / `sample_steps`: the run's default sampler (None: dpm_solver_pp with 20 steps for forecasts, which
    on ERA5 scores the CRPS of euler_maruyama with 100 at a fifth of the cost; euler_maruyama with 100 for
    task="impute"); the spread calibration is fitted with it.

    `device`: where the network trains and the calibration forecasts run ('auto', 'cpu', 'cuda', 'cuda:N', 'mps');
    the windows are built on the CPU and moved there by the Trainer. `bf16`: bfloat16 autocast in the training
    steps (TrainConfig.bf16); `compile`: torch.compile the network for training (True: inductor, or a backend
    name; model.compile_network). `time_budget` (seconds, TrainConfig.time_budget): stop before a step would
    overrun it (the CLI's --minutes).

    The run folder is the core format (gendiff.runs): config.json, weights.safetensors (EMA), card.json, plus
    state.safetensors (codec template, climatology, AR base) and calibration.json; checkpoint.pt only for resuming.
    `card`: fields for card.json overriding the defaults (`name`, `data`, `split`, `command`, ...).

    `task`: "forecast" (the default) or "impute": windows of `window` steps (a duration or a number of steps) in
    which random observed entries are hidden and generated from the others (imputation.py; CSDI's training), for
    impute(); no AR base, residual or spread calibration then (context, horizon, base, residual and calibration
    are not used). With arch="gridnet" each series (location) is a sequence of the shared U-Net, so the
    network's size does not depend on the number of series."""
    resolve_device(device)  # a bad --device or compile option fails before any work
    if sampler is None:  # forecasts: the ODE solver (ERA5: the CRPS of 100 Euler-Maruyama steps in 20)
        sampler = "euler_maruyama" if task == "impute" else "dpm_solver_pp"
    if sample_steps is None:
        sample_steps = 100 if task == "impute" else 20
    if task not in ("forecast", "impute"):
        raise ConfigError(f"task={task!r}: expected 'forecast' or 'impute'")
    if task == "impute":
        if not missing_flag:
            raise ConfigError("task='impute' takes the per-entry known flags: missing_flag must be True")
        base, residual, calibration = None, False, 0.0
    if not (isinstance(compile, (bool, str)) or callable(compile)):
        raise ConfigError(f"compile={compile!r}: expected True/False, a torch.compile backend name or callable")
    if not 0.0 <= calibration < 0.5:
        raise ConfigError(f"calibration={calibration!r} must be in [0, 0.5)")
    if isinstance(calibration_inits, bool) or not isinstance(calibration_inits, (int, np.integer)) \
            or calibration_inits < 2:
        raise ConfigError(f"calibration_inits={calibration_inits!r} must be a whole number >= 2")
    if not context_noise >= 0:
        raise ConfigError(f"context_noise={context_noise!r} must be >= 0")
    if base not in (None, "linear"):
        raise ConfigError(f"base={base!r}: expected 'linear' or None")
    check_hourly_std(hourly_std)
    if not isinstance(insolation, bool):
        raise ConfigError(f"insolation={insolation!r}: expected True or False")
    label = source_label(data)
    ds = open_data(data, variables, name=label, chunks=chunks)
    step = time_step(ds)
    ctx_steps = 0 if task == "impute" else parse_duration(context, step, "context")
    hor_steps = parse_duration(window if task == "impute" else horizon, step,  # impute: the whole window generated
                               "window" if task == "impute" else "horizon")
    season_steps = parse_seasons(seasons, step)
    if season_steps and (task == "impute" or base != "linear"):
        raise ConfigError("seasons= are lags of the AR base: they need base='linear' and task='forecast'")
    lags = ARBase.lags_for(int(ar_order), season_steps)
    if season_steps and ctx_steps < lags[-1]:
        raise ConfigError(f"seasons={seasons!r}: the AR base reads {lags[-1]} steps back (season {max(season_steps)}"
                          f" + 1); the context is {ctx_steps} steps: pass a context of at least {lags[-1]} steps")
    idx = period_indices(ds, train_period, label, "training period")
    stats = fit_statistics(ds.isel(time=idx), label, normalise=normalise)
    codec = stats.codec
    if arch == "unet1d" and not codec.valid.all():  # never-valid cells (sea) are no channels of the network
        codec = Codec(codec.template, codec.mean, codec.std, compact=True)
    for v in codec.variables:
        if not stats.counts[v]:
            raise DataError(f"{label}: variable '{v}' is all NaN in the training period {train_period}")
    times = ds["time"].values
    has_data = np.zeros(len(times), dtype=bool)
    has_data[idx] = stats.has_data
    clim = stats.climatology(codec, std=hourly_std, insolation=insolation)
    reopen = None
    if isinstance(data, (str, Path, list, tuple)):  # each DataLoader worker opens the files itself
        reopen = functools.partial(open_data, data, codec.variables, name=label, chunks=chunks)
    values = EncodedValues(ds, codec, clim, label, reopen)
    if task == "impute":  # imputation.ImputeWindowDataset takes its values in memory
        in_memory = True
    in_memory = decide_in_memory(in_memory, values, chunks is not None or (isinstance(data, xr.Dataset)
                                                                          and is_lazy(data)))
    if in_memory:
        values = values.load()
    n_hold = int(round(len(idx) * calibration))
    idx_net, idx_hold = idx[:len(idx) - n_hold], idx[len(idx) - n_hold:]
    starts = window_starts(len(times), idx_net, ctx_steps + hor_steps, None, ctx_steps, has_data)
    if not isinstance(workers, (int, np.integer)) or isinstance(workers, bool) or workers < 0:
        raise ConfigError(f"workers={workers!r} must be a whole number >= 0 (DataLoader worker processes)")
    if "num_workers" in config and int(config["num_workers"]) != int(workers) and workers:
        raise ConfigError("pass workers= or num_workers=, not both")
    config.setdefault("num_workers", int(workers))
    unknown = sorted(set(config) - set(TRAIN_DEFAULTS) - {f for f in TrainConfig.__dataclass_fields__})
    if unknown:
        raise ConfigError(f"train: unknown option(s) {', '.join(unknown)}")
    steps = int(config.get("max_steps", TRAIN_DEFAULTS["max_steps"]))
    ema = min(0.999, max(0.9, 1.0 - 10.0 / steps))  # EMA time constant ~ a tenth of the run (no EMA warm-up in core)
    tcfg = TrainConfig(**{**TRAIN_DEFAULTS, "ema_decay": ema, "progress": progress, **config,
                          "device": str(device), "bf16": bool(bf16)})
    if len(starts) < tcfg.batch_size:
        raise DataError(f"{label}: training period {train_period} holds {len(starts)} windows of "
                        f"{ctx_steps + hor_steps} steps, fewer than batch_size={tcfg.batch_size}")
    if arch not in ("unet1d", "gridnet"):
        raise ConfigError(f"arch={arch!r}: expected 'unet1d' or 'gridnet'")
    static_values = locations = None
    if arch == "gridnet":
        from .gridnet import static_inputs

        fields = None if static is None else open_static(static, label)
        static_values, locations = static_inputs(codec.template, codec.variables, fields, label)
        unknown_net = sorted(set(net or {}) - set(GRID_DEFAULTS))
        if unknown_net:
            raise ConfigError(f"net: unknown gridnet option(s) {', '.join(unknown_net)} "
                              f"(options: {', '.join(GRID_DEFAULTS)})")
        if not missing_flag:
            raise ConfigError("arch='gridnet' always takes the missing-data flags: missing_flag must be True")
        if patch is not None and int(patch) < 1:
            raise ConfigError(f"patch={patch!r} must be a positive number of locations")
        net_cfg = {**GRID_DEFAULTS, **(net or {})}
        net_cfg.update(channels=locations["channels"], static=int(static_values.shape[1]),
                       pos_dims=locations["pos_dims"])
        locations["patch"] = None if patch is None or int(patch) >= locations["locations"] else int(patch)
    else:
        if static is not None or patch is not None:
            raise ConfigError("static= and patch= are options of arch='gridnet'")
        net_cfg = {**NET_DEFAULTS, **(net or {})}
        net_cfg.update(channels=codec.num_features, cond_channels=cond_channels(codec.num_features, missing_flag),
                       known_in_cond=True)
    net_cfg["mults"] = list(net_cfg["mults"])
    sched = get_schedule(schedule)
    run_cfg = {
        "source": label, "task": task, "variables": codec.variables,
        "train_period": [str(pd.Timestamp(times[idx[0]])), str(pd.Timestamp(times[idx[-1]]))],
        "time_step_seconds": step.total_seconds(), "context_steps": ctx_steps, "horizon_steps": hor_steps,
        "schedule": schedule_config(sched), "prediction": prediction, "precondition": bool(precondition),
        "sigma_data": 1.0,
        "arch": arch, "missing_flag": bool(missing_flag), "loss_balance": "variable",
        "residual": bool(residual), "base": base, "ar_order": int(ar_order),
        "ar_seasons": list(season_steps), "hourly_std": hourly_std,
        "insolation": clim.solar is not None,
        "context_noise": float(context_noise), "calibration": float(calibration),
        "calibration_inits": int(calibration_inits),
        "network_period": [str(pd.Timestamp(times[idx_net[0]])), str(pd.Timestamp(times[idx_net[-1]]))],
        # day of year only when the training data span a year: with less it is a key to memorise single days
        "day_of_year": bool(pd.Timedelta(times[idx[-1]] - times[idx[0]]) >= pd.Timedelta(days=365)),
        "net": net_cfg, "codec": codec.to_config(), **({"locations": locations} if locations else {}),
        "sampler": sampler, "sample_steps": int(sample_steps), "train": tcfg.to_dict(), "windows": int(len(starts)),
    }
    out = Path(out)
    if (out / "checkpoint.pt").exists() and not resume:
        raise ConfigError(f"{out}: already holds a trained run; pass resume=True (--resume) or choose another --out")
    if resume and (out / "checkpoint.pt").is_file():
        ckpt = torch_load_safe(out / "checkpoint.pt")
        if isinstance(ckpt, dict) and is_old_state(ckpt.get("model", {}), run_cfg):
            raise DataError(f"{out / 'checkpoint.pt'}: written by an older gendiff (network keys net.net.*); "
                            "it cannot be resumed: retrain the run")
    if resume and (out / "config.json").exists():
        old = json.loads((out / "config.json").read_text())
        if old.get("net") != json.loads(json.dumps(net_cfg)) or old.get("variables") != codec.variables:
            raise ConfigError(f"{out}: --resume with a different network or variables than the saved run")
    previous_card = None
    if resume and (out / runs.CARD).is_file():
        previous_card = json.loads((out / runs.CARD).read_text())
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("codec.nc", "climatology.pt", "ar.pt"):  # the older format's files
        (out / stale).unlink(missing_ok=True)
    torch.manual_seed(tcfg.seed)
    denoiser = build_denoiser(run_cfg)
    ar = None
    if base == "linear":
        ar = ARBase.fit(values, idx, lags, starts, ctx_steps, hor_steps, times, codec.sizes)
    run_cfg["codec_template"] = save_state(out, codec, clim, ar, static_values)
    write_json_atomic(out / runs.CONFIG, {"format": runs.FORMAT, "domain": "weather", **run_cfg})
    calendar = calendar_features(times, run_cfg["day_of_year"])
    groups = codec.sizes
    if arch == "gridnet":
        n_loc, n_patch = locations["locations"], locations["patch"]
        grid = {"static": static_values, "locations": n_loc, "pos_dims": locations["pos_dims"], "patch": n_patch,
                "seed": int(tcfg.seed)}
        if task == "impute":
            from .imputation import GridImputeWindowDataset

            dataset = GridImputeWindowDataset(values, calendar, starts, hor_steps, **grid)
        else:
            dataset = GridWindowDataset(values, calendar, starts, ctx_steps, hor_steps, residual=bool(residual),
                                        base=ar, times=times, valid=codec.valid, **grid)
        if n_patch is not None:  # each variable's features in a patch: its channels x the patch's locations
            groups = [size // n_loc * n_patch for size in codec.sizes]
    elif task == "impute":
        from .imputation import ImputeWindowDataset

        dataset = ImputeWindowDataset(values, calendar, starts, hor_steps, seed=int(tcfg.seed))
    else:
        dataset = WindowDataset(values, calendar, starts, ctx_steps, hor_steps, residual=bool(residual), base=ar,
                                times=times, missing_flag=bool(missing_flag), valid=codec.valid)
    weighting = constant_weight() if precondition else None
    trainer = Trainer(denoiser, make_step_fn(sched, VariableBalancedSpace(groups), float(context_noise), weighting),
                      dataset, tcfg, out, resume="auto" if resume == "auto" else bool(resume))
    if compile:
        compile_network(trainer.model, compile)  # after the Trainer made its EMA copy: that stays eager
    summary = trainer.fit()
    summary.update(parameters=int(sum(p.numel() for p in denoiser.parameters())), windows=int(len(starts)),
                   run=str(out), in_memory=bool(in_memory), workers=int(tcfg.num_workers))
    from . import calibrate

    (out / calibrate.FILE).unlink(missing_ok=True)
    inits = (calibrate.calibration_inits(idx_hold, hor_steps, int(idx[-1]), int(calibration_inits)) if n_hold
             else np.empty(0, int))
    t_fmt = lambda i: str(pd.Timestamp(times[i]))[:16]  # noqa: E731
    split = (f"training period {t_fmt(idx[0])} to {t_fmt(idx[-1])} ({len(idx)} steps): codec, hourly climatology "
             f"and AR base on all of it; the network on {t_fmt(idx_net[0])} to {t_fmt(idx_net[-1])} "
             f"({len(starts)} windows of {ctx_steps} + {hor_steps} steps)")
    if len(inits) >= 2:
        split += (f"; the ensemble calibration on {len(inits)} inits {t_fmt(inits[0])} to {t_fmt(inits[-1])} "
                  "(held out from the network)")
    card_fields = {"data": label, "split": split, **(card or {})}
    name = card_fields.pop("name", out.name)
    new = runs.new_card(name, "weather", summary=summary, seed=int(tcfg.seed), device=trainer.device,
                        previous=previous_card, **card_fields)
    new.update(parameters=summary["parameters"], windows=int(len(starts)),
               train_config={k: v for k, v in tcfg.to_dict().items() if k not in ("progress",)})
    runs.save_run(out, "weather", run_cfg, trainer.ema_model, new)
    if len(inits) >= 2:
        summary["calibration"] = calibrate.fit_calibration(out, values, times, inits, device=trainer.device)
    elif n_hold:
        warnings.warn(f"{label}: the last {calibration:.0%} of the training period holds {len(inits)} init time(s) "
                      "with a full horizon; the ensemble spread is left uncalibrated")
    return summary
