"""TrainConfig: the Trainer's optimisation and bookkeeping settings, validated where built, and the learning-rate
curve they define."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from .errors import ConfigError

LR_DECAYS = (None, "cosine")


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping settings; `batch_size` is the global micro-batch (split across DDP ranks)."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple = (0.9, 0.999)
    warmup_steps: int = 0
    lr_decay: str | None = None  # None: constant after warm-up; 'cosine': half a cosine from lr to lr * lr_final
    lr_final: float = 0.0  # with lr_decay: the last step's learning rate as a fraction of lr
    max_steps: int = 1000
    batch_size: int = 32
    grad_clip: float | None = 1.0
    ema_decay: float = 0.999
    ema_warmup: bool = True
    accumulate: int = 1
    bf16: bool = False
    log_every: int = 50
    ckpt_every: int = 500
    seed: int = 0
    max_nonfinite: int = 10
    num_workers: int = 0
    device: str = "auto"
    progress: bool = True
    time_budget: float | None = None  # seconds of wall-clock training per fit(); stops before a step would overrun
    validate_every: int = 0  # with a Trainer val_dataset: the EMA network's loss on it every this many steps (0: never)
    patience: int = 0  # stop after this many validations in a row without a new best (0: train to the end)
    keep_best: bool = True  # save the EMA weights of the best validation as the run's (gendiff.validation)

    def __post_init__(self):
        self.betas = tuple(float(b) for b in self.betas)
        checks = {
            "lr": self.lr > 0,
            "weight_decay": self.weight_decay >= 0,
            "warmup_steps": self.warmup_steps >= 0,
            "max_steps": self.max_steps >= 1,
            "batch_size": self.batch_size >= 1,
            "accumulate": self.accumulate >= 1,
            "ema_decay": 0.0 <= self.ema_decay <= 1.0,
            "log_every": self.log_every >= 1,
            "ckpt_every": self.ckpt_every >= 1,
            "max_nonfinite": self.max_nonfinite >= 1,
            "num_workers": self.num_workers >= 0,
            "grad_clip": self.grad_clip is None or self.grad_clip >= 0,
            "betas": len(self.betas) == 2 and all(0.0 <= b < 1.0 for b in self.betas),
            "time_budget": self.time_budget is None or self.time_budget > 0,
            "lr_decay": self.lr_decay in LR_DECAYS,
            "lr_final": 0.0 <= self.lr_final <= 1.0,
            "validate_every": self.validate_every >= 0,
            "patience": self.patience >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"TrainConfig.{name}={getattr(self, name)!r} is out of range")

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "betas": list(self.betas)}

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"TrainConfig: unknown field(s) {', '.join(unknown)}")
        return cls(**d)


def warmup_lr(step: int, config: TrainConfig) -> float:
    """Learning rate of optimizer step `step` (0-based): lr * min(1, (step + 1) / warmup_steps), then, with
    lr_decay='cosine', times lr_final + (1 - lr_final) * (1 + cos(pi * p)) / 2, where p runs from 0 at the end of
    the warm-up to 1 at the last step (max_steps - 1): the decay is by step, so a resumed run follows the same
    curve. A run stopped early by its time budget ends at whatever point of the curve it reached."""
    lr = config.lr if config.warmup_steps <= 0 else config.lr * min(1.0, (step + 1) / config.warmup_steps)
    if config.lr_decay == "cosine":
        span = config.max_steps - 1 - config.warmup_steps
        p = min(max((step - config.warmup_steps) / span, 0.0), 1.0) if span > 0 else 1.0
        lr *= config.lr_final + (1.0 - config.lr_final) * 0.5 * (1.0 + math.cos(math.pi * p))
    return lr
