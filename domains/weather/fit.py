"""Train the temporal U-Net on windows of an xarray Dataset (context known, horizon generated) with the core Trainer."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from gendiff.errors import ConfigError, DataError
from gendiff.io import torch_save_atomic, write_json_atomic
from gendiff.losses import diffusion_loss
from gendiff.schedules import get_schedule, schedule_config
from gendiff.spaces import MaskedSpace
from gendiff.training import TrainConfig, Trainer

from .data import Codec, calendar_features, open_data, parse_duration, period_indices, time_step
from .model import HourlyClimatology, WindowDataset, build_denoiser, cond_channels, window_starts

NET_DEFAULTS = {"width": 64, "mults": (1, 2, 2), "blocks_per_level": 1, "heads": 4, "dropout": 0.1,
                "learned_skip": True}
TRAIN_DEFAULTS = {"max_steps": 3000, "batch_size": 32, "lr": 5e-4, "warmup_steps": 100, "weight_decay": 0.0,
                  "grad_clip": 1.0, "log_every": 50, "ckpt_every": 500, "seed": 0}


def make_step_fn(schedule, space):
    """Per-window masked eps/x0 loss (core diffusion_loss) averaged over the batch."""
    def step_fn(model, batch, generator):
        loss = diffusion_loss(model, batch["x0"], schedule, space, mask=batch["mask"], cond=batch["cond"],
                              generator=generator)
        return loss.mean()

    return step_fn


def train(data, out, *, variables=None, train_period=None, context="24h", horizon="24h", schedule="cosine",
          prediction="x0", precondition=False, residual=True, net: dict | None = None, sampler="ancestral",
          sample_steps=50, resume=False, progress=True, **config) -> dict:
    """Fit a weather forecast model on `data` (path, Dataset or DataArray); writes a run folder `out`; returns a summary."""
    label = str(data) if isinstance(data, (str, Path)) else "data"
    ds = open_data(data, variables, name=label)
    step = time_step(ds)
    ctx_steps = parse_duration(context, step, "context")
    hor_steps = parse_duration(horizon, step, "horizon")
    idx = period_indices(ds, train_period, label, "training period")
    train_ds = ds.isel(time=idx)
    codec = Codec.fit(train_ds)
    for v in codec.variables:
        if not bool(train_ds[v].notnull().any()):
            raise DataError(f"{label}: variable '{v}' is all NaN in the training period {train_period}")
    values = codec.encode(ds, label)
    times = ds["time"].values
    starts = window_starts(len(times), idx, ctx_steps + hor_steps, values, ctx_steps)
    unknown = sorted(set(config) - set(TRAIN_DEFAULTS) - {f for f in TrainConfig.__dataclass_fields__})
    if unknown:
        raise ConfigError(f"train: unknown option(s) {', '.join(unknown)}")
    steps = int(config.get("max_steps", TRAIN_DEFAULTS["max_steps"]))
    ema = min(0.999, max(0.9, 1.0 - 10.0 / steps))  # EMA time constant ~ a tenth of the run (no EMA warm-up in core)
    tcfg = TrainConfig(**{**TRAIN_DEFAULTS, "ema_decay": ema, "progress": progress, **config})
    if len(starts) < tcfg.batch_size:
        raise DataError(f"{label}: training period {train_period} holds {len(starts)} windows of "
                        f"{ctx_steps + hor_steps} steps, fewer than batch_size={tcfg.batch_size}")
    net_cfg = {**NET_DEFAULTS, **(net or {})}
    net_cfg.update(channels=codec.num_features, cond_channels=cond_channels(codec.num_features), known_in_cond=True)
    net_cfg["mults"] = list(net_cfg["mults"])
    sched = get_schedule(schedule)
    run_cfg = {
        "domain": "weather", "format": "gendiff-weather-v1", "source": label, "variables": codec.variables,
        "train_period": [str(pd.Timestamp(times[idx[0]])), str(pd.Timestamp(times[idx[-1]]))],
        "time_step_seconds": step.total_seconds(), "context_steps": ctx_steps, "horizon_steps": hor_steps,
        "schedule": schedule_config(sched), "prediction": prediction, "precondition": bool(precondition),
        "residual": bool(residual),
        # day of year only when the training data span a year: with less it is a key to memorise single days
        "day_of_year": bool(pd.Timedelta(times[idx[-1]] - times[idx[0]]) >= pd.Timedelta(days=365)),
        "net": net_cfg, "codec": codec.to_config(),
        "sampler": sampler, "sample_steps": int(sample_steps), "train": tcfg.to_dict(), "windows": int(len(starts)),
    }
    out = Path(out)
    if (out / "checkpoint.pt").exists() and not resume:
        raise ConfigError(f"{out}: already holds a trained run; pass resume=True (--resume) or choose another --out")
    if resume and (out / "config.json").exists():
        old = json.loads((out / "config.json").read_text())
        if old.get("net") != json.loads(json.dumps(net_cfg)) or old.get("variables") != codec.variables:
            raise ConfigError(f"{out}: --resume with a different network or variables than the saved run")
    out.mkdir(parents=True, exist_ok=True)
    codec.save(out / "codec.nc")
    write_json_atomic(out / "config.json", run_cfg)
    torch.manual_seed(tcfg.seed)
    denoiser = build_denoiser(run_cfg)
    clim = HourlyClimatology.fit(values, times, idx)
    torch_save_atomic(clim.state(), out / "climatology.pt")
    values = values - clim.at(times)
    dataset = WindowDataset(values, calendar_features(times, run_cfg["day_of_year"]), starts, ctx_steps, hor_steps, residual=bool(residual))
    trainer = Trainer(denoiser, make_step_fn(sched, MaskedSpace()), dataset, tcfg, out,
                      resume="auto" if resume == "auto" else bool(resume))
    summary = trainer.fit()
    summary.update(parameters=int(sum(p.numel() for p in denoiser.parameters())), windows=int(len(starts)),
                   run=str(out))
    return summary
