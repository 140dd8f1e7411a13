"""Shared network blocks: the sinusoidal time embedding of Ho et al. 2020 (Vaswani et al. 2017, sec. 3.5) and its
MLP."""

from __future__ import annotations

import math

import torch
from torch import nn


class SinusoidalTimeEmbedding(nn.Module):
    """t in [0, 1] (any shape) -> (..., dim) sin/cos features of t * scale at geometric frequencies 1 .. 1/10000."""

    freqs: torch.Tensor

    def __init__(self, dim: int, scale: float = 1000.0, max_period: float = 10000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"time embedding dim must be even, got {dim}")
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)
        self.dim, self.scale = dim, scale

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        args = (t.to(torch.float32) * self.scale)[..., None] * self.freqs
        return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


class TimeMLP(nn.Module):
    """Sinusoidal embedding followed by Linear-SiLU-Linear (the DDPM time-embedding MLP)."""

    def __init__(self, dim: int, hidden: int | None = None, out: int | None = None, scale: float = 1000.0):
        super().__init__()
        hidden = hidden or 4 * dim
        self.embed = SinusoidalTimeEmbedding(dim, scale)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, out or hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.embed(t))
