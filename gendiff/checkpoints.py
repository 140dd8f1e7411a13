"""Trainer checkpoints: the file format, what a checkpoint holds (weights, EMA weights, optimizer, data position,
every random stream of every rank) and how it is written and restored; loading weights out of one."""

from __future__ import annotations

import random
import time
import uuid
import warnings
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from . import distributed as D
from .distributed import mix_seed
from .errors import DataError, TrainingError
from .io import torch_load_safe, torch_save_atomic

FORMAT = "gendiff-trainer-v1"
RESUME_WARNS = (
    "seed",
    "batch_size",
    "accumulate",
    "lr",
    "warmup_steps",
    "lr_decay",
    "lr_final",
    "ema_decay",
    "ema_warmup",
)  # TrainConfig fields whose change on resuming is warned about


def seed_globals(*parts: int) -> None:
    """Seed the global torch, python and numpy streams (dropout, user code) of a fresh run."""
    torch.manual_seed(mix_seed(*parts, 2))
    random.seed(mix_seed(*parts, 4))
    np.random.seed(mix_seed(*parts, 5) % 2**32)


def rng_state(generator: torch.Generator) -> dict:
    np_state = cast(tuple, np.random.get_state())  # the legacy tuple (name, keys, pos, has_gauss, cached)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generator": generator.get_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }


def set_rng_state(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator.set_state(state["generator"])
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))


def load_weights(path, model: nn.Module, ema: bool = True) -> nn.Module:
    """Load the EMA (ema=True) or raw weights of a Trainer checkpoint into `model`; returns `model`."""
    state = torch_load_safe(path)
    key = "ema" if ema else "model"
    if not isinstance(state, dict) or state.get("format") != FORMAT or key not in state:
        raise DataError(f"{path}: not a gendiff trainer checkpoint (missing '{key}')")
    _load_into(model, state[key], path, key)
    return model


def _load_into(module: nn.Module, weights: dict, path, key: str) -> None:
    try:
        module.load_state_dict(weights)
    except RuntimeError as exc:
        raise DataError(f"{path}: '{key}' weights do not fit this model ({str(exc).splitlines()[0]})") from None


def load_ema_weights(path, model: nn.Module) -> nn.Module:
    return load_weights(path, model, ema=True)


def trainer_state(trainer: Any, rngs: list) -> dict:
    """What a checkpoint of `trainer` (a training.Trainer) holds; `rngs` are every rank's random streams."""
    return {
        "format": FORMAT,
        "step": trainer.step,
        "data_position": list(trainer.position),
        "nonfinite_total": trainer.nonfinite_total,
        "nonfinite_run": trainer.nonfinite_run,
        "model": trainer.model.state_dict(),
        "ema": trainer.ema_model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "rng": rngs,
        "world_size": trainer.ctx.world_size,
        "config": trainer.config.to_dict(),
        "sittings": [*trainer.earlier_sittings, trainer.sitting.snapshot(trainer.step)][-MAX_SITTINGS:],
    }


MAX_SITTINGS = 200  # sittings a checkpoint remembers (a card lists the ones it recorded; runs.new_card)


class Sitting:
    """One training process's identity and clock: a checkpoint carries every sitting's time up to it (`sittings`),
    so a sitting stopped before it wrote its card (killed, out of time) still counts on the next card
    (runs.new_card adds the sittings the card has not recorded, by id, up to their last checkpoint)."""

    def __init__(self) -> None:
        self.id = uuid.uuid4().hex
        self.wall0: float | None = None
        self.cpu0: float | None = None

    def start(self) -> None:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()

    def snapshot(self, step: int) -> dict:
        if self.wall0 is None or self.cpu0 is None:
            return {"id": self.id, "step": int(step), "seconds": 0.0, "cpu_seconds": 0.0}
        return {
            "id": self.id,
            "step": int(step),
            "seconds": time.perf_counter() - self.wall0,
            "cpu_seconds": time.process_time() - self.cpu0,
        }


def save_checkpoint(trainer: Any) -> None:
    """Write trainer.ckpt_path atomically (rank 0); refuses to overwrite it with non-finite weights."""
    bad = [n for n, p in trainer.model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise TrainingError(
            f"parameters {', '.join(bad[:3])} are non-finite at step {trainer.step}; "
            f"{trainer.ckpt_path} was left as it was"
        )
    rngs = D.all_gather_object(rng_state(trainer.generator), trainer.ctx)
    if trainer.ctx.is_main:
        torch_save_atomic(trainer.state_dict(rngs), trainer.ckpt_path)


def restore_checkpoint(trainer: Any) -> None:
    """Load trainer.ckpt_path into `trainer`: weights, EMA weights, optimizer, step, data position, non-finite
    counts and this rank's random streams (re-seeded, with a warning, when the world size changed)."""
    path, ctx, config = trainer.ckpt_path, trainer.ctx, trainer.config
    state = torch_load_safe(path)
    keys = ("format", "model", "ema", "optimizer", "step", "data_position", "rng", "nonfinite_total")
    missing = [k for k in keys if k not in state] if isinstance(state, dict) else ["everything"]
    if missing or state["format"] != FORMAT:
        raise DataError(f"{path}: not a gendiff trainer checkpoint (missing {', '.join(missing)})")
    _load_into(trainer.model, state["model"], path, "model")
    _load_into(trainer.ema_model, state["ema"], path, "ema")
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.step, trainer.position = int(state["step"]), tuple(int(v) for v in state["data_position"])
    trainer.nonfinite_total, trainer.nonfinite_run = int(state["nonfinite_total"]), int(state["nonfinite_run"])
    trainer.earlier_sittings = [dict(x) for x in state.get("sittings", []) if isinstance(x, dict) and "id" in x]
    rngs = state["rng"]
    if len(rngs) == ctx.world_size:
        set_rng_state(rngs[ctx.rank], trainer.generator)
    else:
        warnings.warn(
            f"{path}: written by {len(rngs)} process(es), resumed by {ctx.world_size}; "
            "random streams are re-seeded, so the run is not bit-identical to an uninterrupted one",
            stacklevel=2,
        )
        seed_globals(config.seed, ctx.rank, trainer.step)
        trainer.generator.manual_seed(mix_seed(config.seed, 1, ctx.rank, trainer.step))
    old = state.get("config", {})
    changed = [k for k in RESUME_WARNS if k in old and old[k] != getattr(config, k)]
    if changed:
        warnings.warn(f"{path}: resuming with changed TrainConfig field(s) {', '.join(changed)}", stacklevel=2)
