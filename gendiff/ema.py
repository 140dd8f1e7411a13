"""EMA weights: Polyak averaging of the trained model, with diffusers' warm-up of the decay."""

from __future__ import annotations

import torch
from torch import nn

from .train_config import TrainConfig


def ema_decay_at(step: int, config: TrainConfig) -> float:
    """EMA decay after optimizer step `step` (1-based): min(ema_decay, (1 + step) / (10 + step)) with `ema_warmup`
    (diffusers' EMAModel default), so early averages are not dominated by the random initialisation."""
    if not config.ema_warmup:
        return config.ema_decay
    return min(config.ema_decay, (1.0 + step) / (10.0 + step))


def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """Polyak averaging: ema <- decay * ema + (1 - decay) * theta; buffers are copied."""
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters(), strict=True):
            e.lerp_(p.detach(), 1.0 - decay)
        for e_buf, b in zip(ema.buffers(), model.buffers(), strict=True):
            e_buf.copy_(b)
