"""The DDPM U-Net of Ho et al. 2020 (Appendix B): wide ResNet blocks, GroupNorm, self-attention, sinusoidal time MLP."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gendiff.errors import ConfigError
from gendiff.nn import SinusoidalTimeEmbedding


@dataclass
class UNetConfig:
    """Architecture hyper-parameters; `resolution` is the input size the attention resolutions refer to."""

    in_channels: int = 1
    out_channels: Optional[int] = None
    ch: int = 64
    ch_mult: Sequence[int] = (1, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: Sequence[int] = (16,)
    dropout: float = 0.1
    resolution: int = 32
    num_classes: Optional[int] = None
    groups: int = 32
    heads: int = 1
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ch_mult"] = list(self.ch_mult)
        d["attn_resolutions"] = list(self.attn_resolutions)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ConfigError(f"unknown U-Net config field(s): {', '.join(unknown)}")
        return cls(**known)


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    g = min(groups, channels)
    while channels % g:
        g -= 1
    return nn.GroupNorm(g, channels, eps=1e-6)


def _time_embedding(dim: int) -> nn.Module:
    """Sinusoidal embedding of t in [0, 1] (scaled by 1000 as in Ho et al.), from the core."""
    return SinusoidalTimeEmbedding(dim)


def _act(x: torch.Tensor) -> torch.Tensor:
    """SiLU of a fresh tensor (a GroupNorm output), in place when no graph is recorded: sampling then skips one
    full-size allocation per activation; training keeps SiLU's input for its backward."""
    return F.silu(x, inplace=not torch.is_grad_enabled())


class ResBlock(nn.Module):
    """Wide ResNet block (Zagoruyko & Komodakis 2016) with the time embedding added after the first conv (Ho et al.)."""

    def __init__(self, c_in: int, c_out: int, temb_dim: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = _norm(c_in, groups)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.temb_proj = nn.Linear(temb_dim, c_out)
        self.norm2 = _norm(c_out, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(_act(self.norm1(x)))
        h += self.temb_proj(F.silu(temb))[:, :, None, None]  # in place: a conv's backward never needs its output
        h = self.conv2(self.dropout(_act(self.norm2(h))))
        h += self.skip(x)
        return h


class AttnBlock(nn.Module):
    """Spatial self-attention (Vaswani et al. 2017) over the H*W positions, residual, as in the PixelCNN++/DDPM U-Net."""

    def __init__(self, channels: int, groups: int, heads: int = 1):
        super().__init__()
        if channels % heads:
            raise ConfigError(f"attention heads={heads} must divide channels={channels}")
        self.heads = heads
        self.norm = _norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3 * self.heads, c // self.heads, hh * ww)
        q, k, v = qkv.transpose(-1, -2).chunk(3, dim=1)
        h = F.scaled_dot_product_attention(q, k, v)
        h = h.transpose(-1, -2).reshape(b, c, hh, ww)
        out = self.proj(h)
        out += x
        return out


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """The ResBlocks (each optionally followed by attention) of one resolution level."""

    def __init__(self, blocks: list[ResBlock], attns: list[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attns = nn.ModuleList(attns)


class UNet(nn.Module):
    """Ho et al. 2020 U-Net, `net(x_t, t, *, mask=None, cond=None)`; cond = class labels, `num_classes` is the null class."""

    def __init__(self, config: UNetConfig | None = None, **kw):
        super().__init__()
        cfg = config or UNetConfig(**kw)
        if config is not None and kw:
            raise ConfigError("pass either a UNetConfig or keyword arguments, not both")
        if cfg.ch <= 0 or cfg.num_res_blocks < 1 or not cfg.ch_mult:
            raise ConfigError(f"bad U-Net config: ch={cfg.ch}, num_res_blocks={cfg.num_res_blocks}, ch_mult={cfg.ch_mult}")
        self.config = cfg
        ch, temb_dim = cfg.ch, 4 * cfg.ch
        self.time_embed = _time_embedding(ch)
        self.time_mlp = nn.Sequential(nn.Linear(ch, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim))
        self.num_classes = cfg.num_classes
        if cfg.num_classes is not None:
            self.class_embed = nn.Embedding(cfg.num_classes + 1, temb_dim)  # N(0, 1) init: a strong signal
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)

        chans = [ch]
        c_cur, res = ch, cfg.resolution
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for level, mult in enumerate(cfg.ch_mult):
            c_out = ch * mult
            blocks, attns = [], []
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock(c_cur, c_out, temb_dim, cfg.dropout, cfg.groups))
                attns.append(AttnBlock(c_out, cfg.groups, cfg.heads) if res in cfg.attn_resolutions else nn.Identity())
                c_cur = c_out
                chans.append(c_cur)
            self.down.append(Level(blocks, attns))
            if level != len(cfg.ch_mult) - 1:
                self.downsample.append(Downsample(c_cur))
                chans.append(c_cur)
                res //= 2
        self.mid1 = ResBlock(c_cur, c_cur, temb_dim, cfg.dropout, cfg.groups)
        self.mid_attn = AttnBlock(c_cur, cfg.groups, cfg.heads)
        self.mid2 = ResBlock(c_cur, c_cur, temb_dim, cfg.dropout, cfg.groups)

        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.ch_mult))):
            c_out = ch * mult
            blocks, attns = [], []
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(ResBlock(c_cur + chans.pop(), c_out, temb_dim, cfg.dropout, cfg.groups))
                attns.append(AttnBlock(c_out, cfg.groups, cfg.heads) if res in cfg.attn_resolutions else nn.Identity())
                c_cur = c_out
            self.up.append(Level(blocks, attns))
            if level != 0:
                self.upsample.append(Upsample(c_cur))
                res *= 2
        self.norm_out = _norm(c_cur, cfg.groups)
        self.conv_out = nn.Conv2d(c_cur, cfg.out_channels or cfg.in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @property
    def null_class(self) -> int:
        if self.num_classes is None:
            raise ConfigError("this U-Net has no class conditioning (num_classes=None)")
        return self.num_classes

    def _embed(self, t: torch.Tensor, cond: torch.Tensor | None, batch: int, device) -> torch.Tensor:
        dtype = self.conv_in.weight.dtype
        t = t.reshape(-1).to(device=device, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
        if t.numel() == 1:
            t = t.expand(batch)
        temb = self.time_mlp(self.time_embed(t).to(dtype))
        if self.num_classes is not None:
            if cond is None:
                cond = torch.full((batch,), self.num_classes, device=device, dtype=torch.long)
            cond = cond.reshape(-1).to(device=device, dtype=torch.long)
            temb = temb + self.class_embed(cond)
        elif cond is not None:
            raise ConfigError("cond was given but this U-Net was built with num_classes=None")
        return temb

    def forward(self, x: torch.Tensor, t: torch.Tensor, *, mask=None, cond: torch.Tensor | None = None) -> torch.Tensor:
        factor = 2 ** (len(self.config.ch_mult) - 1)
        if x.ndim != 4 or x.shape[-1] % factor or x.shape[-2] % factor:
            raise ConfigError(f"U-Net input must be (B, C, H, W) with H and W divisible by {factor}; got {tuple(x.shape)}")
        temb = self._embed(torch.as_tensor(t), cond, x.shape[0], x.device)
        h = self.conv_in(x)
        skips = [h]
        for i, level in enumerate(self.down):
            for block, attn in zip(level.blocks, level.attns):
                h = attn(block(h, temb))
                skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
                skips.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, temb)), temb)
        for i, level in enumerate(self.up):
            for block, attn in zip(level.blocks, level.attns):
                h = attn(block(torch.cat([h, skips.pop()], dim=1), temb))
            if i < len(self.upsample):
                h = self.upsample[i](h)
        out = self.conv_out(_act(self.norm_out(h)))
        return out.to(x.dtype)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
