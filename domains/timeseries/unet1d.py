"""Temporal 1D U-Net over (batch, features, time): ResNet blocks with time embedding, attention at the coarsest level.

Ho et al. 2020 (U-Net of app. B) in one dimension; features (grid points x variables) enter through a learned 1x1
projection to `width` channels and leave through another, plus a learned noise-level-dependent skip of x_t
(c_skip of Karras et al. 2022, eq. 7; here a learned gain per sample and time step, since the variance of the
target grows with lead time) so that fine-scale detail outside the projection's span is kept.
With `known_in_cond`, the first `channels` conditioning channels hold known values of x at the steps where x_t is
masked (zero); they are added to x_t so that one projection reads the noisy horizon and the clean context alike.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from gendiff.nn import SinusoidalTimeEmbedding


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, ch) if ch % min(8, ch) == 0 else 1, ch)


class ResBlock1d(nn.Module):
    """GroupNorm-SiLU-Conv twice with a FiLM (scale, shift) from the time embedding (Dhariwal & Nichol 2021)."""

    def __init__(self, cin: int, cout: int, temb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv1d(cin, cout, 3, padding=1)
        self.film = nn.Linear(temb_dim, 2 * cout)
        self.norm2, self.drop = _norm(cout), nn.Dropout(dropout)
        self.conv2 = nn.Conv1d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(temb)[:, :, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(self.drop(F.silu(h)))


class Attention1d(nn.Module):
    """Multi-head self-attention along time (Vaswani et al. 2017), residual, zero-initialised output."""

    def __init__(self, ch: int, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.norm, self.qkv, self.out = _norm(ch), nn.Conv1d(ch, 3 * ch, 1), nn.Conv1d(ch, ch, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, n = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, n).transpose(-1, -2).unbind(1)
        h = F.scaled_dot_product_attention(q, k, v)  # (b, heads, n, c/heads)
        return x + self.out(h.transpose(-1, -2).reshape(b, c, n))


class TemporalUNet(nn.Module):
    """The temporal U-Net skeleton that UNet1D and gridnet.GridNet share: time embedding, input projection, down /
    mid / up paths of ResBlock1d (with `mix(ch)` layers after each block of the last `mix_levels` levels and in the
    middle, gridnet's spatial mixing), zero-initialised output head and the learned noise-level skip of x_t.

    Built once here so that both networks keep one definition (and their state-dict keys: the layer lists are
    appended in the same order as before the two shared it)."""

    def _build(self, channels: int, in_channels: int, width: int, mults, blocks_per_level: int, heads: int,
               dropout: float, learned_skip: bool, mix=None, mix_levels: int = 0) -> None:
        temb_dim = 4 * width
        self.factor = 2 ** (len(mults) - 1)
        self.temb = nn.Sequential(SinusoidalTimeEmbedding(width), nn.Linear(width, temb_dim), nn.SiLU(),
                                  nn.Linear(temb_dim, temb_dim))
        self.inp = nn.Conv1d(in_channels, width, 1)
        first_mixed = len(mults) - mix_levels if mix is not None else len(mults)
        self.down, self.up = nn.ModuleList(), nn.ModuleList()
        chans, ch = [width], width
        for i, m in enumerate(mults):
            for _ in range(blocks_per_level):
                self.down.append(ResBlock1d(ch, width * m, temb_dim, dropout))
                ch = width * m
                chans.append(ch)
                if i >= first_mixed:
                    self.down.append(mix(ch))
            if i < len(mults) - 1:
                self.down.append(nn.Conv1d(ch, ch, 3, stride=2, padding=1))
                chans.append(ch)
        middle = [ResBlock1d(ch, ch, temb_dim, dropout), *([mix(ch)] if mix is not None else []),
                  Attention1d(ch, heads), ResBlock1d(ch, ch, temb_dim, dropout)]
        self.mid = nn.ModuleList(middle)
        for i, m in reversed(list(enumerate(mults))):
            for _ in range(blocks_per_level + 1):
                self.up.append(ResBlock1d(ch + chans.pop(), width * m, temb_dim, dropout))
                ch = width * m
                if i >= first_mixed:
                    self.up.append(mix(ch))
            if i > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                             nn.Conv1d(ch, ch, 3, padding=1)))
        self.out = nn.Sequential(_norm(ch), nn.SiLU(), nn.Conv1d(ch, channels, 1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)
        self.skip_gain = nn.Linear(temb_dim, 1) if learned_skip else None
        self.skip_head = nn.Conv1d(ch, 1, 1) if learned_skip else None  # per-step gain: variance grows with lead
        for layer in (self.skip_gain, self.skip_head):
            if layer is not None:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def _layer(self, layer, h, ctx):
        """A layer other than ResBlock1d (down-sampling, attention, up-sampling); GridNet runs its spatial mixing
        here with `ctx`, whatever its forward passed to _unet."""
        return layer(h)

    def _is_mix(self, layer) -> bool:
        """Whether a layer mixes across locations (its output is not a skip connection); none here."""
        return False

    def _unet(self, inp: torch.Tensor, temb: torch.Tensor, x: torch.Tensor, length: int, ctx=None) -> torch.Tensor:
        """Input channels (B', C_in, L padded) -> output (B', C, length), plus the learned skip of x (B', C, length)."""
        h = self.inp(inp)
        skips = [h]
        for layer in self.down:
            h = layer(h, temb) if isinstance(layer, ResBlock1d) else self._layer(layer, h, ctx)
            if not self._is_mix(layer):
                skips.append(h)
        for layer in self.mid:
            h = layer(h, temb) if isinstance(layer, ResBlock1d) else self._layer(layer, h, ctx)
        for layer in self.up:
            if isinstance(layer, ResBlock1d):
                h = layer(torch.cat([h, skips.pop()], 1), temb)
            else:
                h = self._layer(layer, h, ctx)
        out = self.out(h)[..., :length]
        if self.skip_gain is not None:
            gain = self.skip_gain(temb)[:, :, None] + self.skip_head(h)[..., :length]
            out = out + gain * x
        return out


class UNet1D(TemporalUNet):
    """net(x_t (B, C, L), t (B,), *, mask, cond (B, C_cond, L)) -> (B, C, L); L is padded to the down-sampling factor."""

    def __init__(self, channels: int, cond_channels: int = 0, width: int = 128, mults=(1, 2, 2),
                 blocks_per_level: int = 1, heads: int = 4, dropout: float = 0.0, learned_skip: bool = True,
                 known_in_cond: bool = False):
        super().__init__()
        self.config = {"channels": channels, "cond_channels": cond_channels, "width": width, "mults": list(mults),
                       "blocks_per_level": blocks_per_level, "heads": heads, "dropout": dropout,
                       "learned_skip": learned_skip, "known_in_cond": known_in_cond}
        self.known_in_cond = known_in_cond
        self._build(channels, cond_channels if known_in_cond else channels + cond_channels, width, mults,
                    blocks_per_level, heads, dropout, learned_skip)

    def forward(self, x: torch.Tensor, t: torch.Tensor, *, mask=None, cond=None) -> torch.Tensor:
        length = x.shape[-1]
        if cond is None:
            inp = x
        elif self.known_in_cond:
            c = x.shape[1]
            inp = torch.cat([x + cond[:, :c].to(x.dtype), cond[:, c:].to(x.dtype)], dim=1)
        else:
            inp = torch.cat([x, cond.to(x.dtype)], dim=1)
        return self._unet(F.pad(inp, (0, (-length) % self.factor)), self.temb(t), x, length)
