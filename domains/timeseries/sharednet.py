"""A network for any grid: one temporal U-Net shared by every location, with spatial mixing between neighbours.

The 1-D U-Net of unet1d.py stacks every cell x variable into channels, so its parameters grow with the grid and the
whole map passes through a rank-`width` projection. Here the channels of a location are its variables (and their
levels), its missing-data flags, the context flag and calendar, and its static inputs (a position encoding: the
unit vector of latitude / longitude, or the normalised numeric coordinates of a station set; a land-sea mask or
orography when given). The U-Net runs along time at every location with the same weights; at its coarse temporal
levels a neighbourhood attention mixes each location with its `neighbours` nearest locations (all of them when
there are fewer, or when the locations have no positions), with a learned bias on the relative position, so that
ensemble members stay spatially coherent. The parameter count does not depend on the number of locations, and the
output at a location depends on the others only through their features and relative positions: the network is
equivariant to any reordering of the locations, and a trained model runs on a subregion or another region of the
same kind of data.

Inputs: x (B, C, L) with C = K x N (per location K channels, variable-major as data.Codec stacks them) and cond =
{"seq": (B, 2C + 5 [+ Kc x N], L) as inputs.make_inputs with missing_flag (known values, context flag, calendar,
flags, and with `covariates` = Kc the future-known covariates of each location, covariates.py),
"static": (B or 1, N, S)}, the first `pos_dims` static channels being positions (a leading 1 = shared by the batch).
Memory grows linearly with N (neighbours x coarse steps x width per location at the mixing levels).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.utils.checkpoint
from torch import nn
import torch.nn.functional as F

from gendiff.errors import DataError

from .data import _coords_equal
from .inputs import CALENDAR
from .insolation import LAT_NAMES, LON_NAMES
from .unet1d import TemporalUNet, _norm


CHUNK_SEQUENCES = 1024  # series in groups: at most this many (window, series) sequences through the U-Net at once
# (on a CPU 10,000 at once cost 0.83 ms each, 1,024 at once 0.32 ms: the activations stay in cache)


def neighbour_graph(pos: torch.Tensor, k: int, chunk: int = 2048):
    """pos (G, N, P) -> (idx (G, N, k) of each location's k nearest locations, itself first; rel (G, N, k, P + 1):
    the offsets pos_j - pos_i and their length, in units of the median nearest-neighbour distance). Without
    positions (P = 0) every location is a neighbour of every other (k = N) and rel is zero."""
    g, n, p = pos.shape
    if p == 0:
        idx = torch.arange(n, device=pos.device).expand(g, n, n)
        return idx, torch.zeros(g, n, n, 1, device=pos.device, dtype=pos.dtype)
    k = min(k, n)
    parts = []
    for s in range(0, n, chunk):
        d = torch.cdist(pos[:, s:s + chunk], pos)  # (G, chunk, N)
        parts.append(d.topk(k, dim=-1, largest=False).indices)
    idx = torch.cat(parts, 1)
    near = pos[torch.arange(g, device=pos.device)[:, None, None], idx]  # (G, N, k, P)
    off = near - pos[:, :, None]
    dist = off.norm(dim=-1, keepdim=True)
    unit = (dist[:, :, 1].median(dim=1).values if k > 1 else torch.ones(g, 1, device=pos.device, dtype=pos.dtype))
    unit = unit.clamp(min=1e-6)[:, None, None]  # (G, 1, 1, 1)
    return idx, torch.cat([off, dist], -1) / unit


class SpatialMix(nn.Module):
    """Neighbourhood attention across locations at one temporal level, residual, zero-initialised output.

    Scores from the time-mean of each location's features (query . key over its neighbours) plus an MLP of the
    relative position; the weights are shared by the level's time steps and mix their values (B, N, k, L x ch)."""

    def __init__(self, ch: int, heads: int, rel_dims: int):
        super().__init__()
        self.heads = heads
        self.norm = _norm(ch)
        self.qk = nn.Linear(ch, 2 * ch)
        self.v, self.out = nn.Conv1d(ch, ch, 1), nn.Conv1d(ch, ch, 1)
        self.bias = nn.Sequential(nn.Linear(rel_dims, 32), nn.SiLU(), nn.Linear(32, heads))
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, h: torch.Tensor, batch: int, idx: torch.Tensor | None, rel: torch.Tensor | int) -> torch.Tensor:
        """h (B*N, ch, L); idx / rel from neighbour_graph, or idx None and rel = G: every location attends to the
        others of its group of G consecutive locations (exchangeable series; group_attention)."""
        bn, ch, length = h.shape
        n, heads = bn // batch, self.heads
        hn = self.norm(h)
        q, k = self.qk(hn.mean(-1)).reshape(batch, n, 2, heads, ch // heads).unbind(2)  # (B, N, H, d)
        v = self.v(hn).reshape(batch, n, heads, ch // heads, length)
        if idx is None:
            return h + self.out(self.group_attention(q, k, v, int(rel)).reshape(bn, ch, length))
        rows = torch.arange(batch, device=h.device)[:, None, None]
        idx = idx.expand(batch, -1, -1)
        score = (q[:, :, None] * k[rows, idx]).sum(-1) / math.sqrt(ch // heads)  # (B, N, k, H)
        score = score + self.bias(rel.to(h.dtype)).expand(batch, -1, -1, -1)
        w = score.softmax(dim=2)
        mixed = sum(w[:, :, j, :, None, None] * v[rows[:, :, 0], idx[:, :, j]]  # a loop over neighbours:
                    for j in range(idx.shape[2]))  # faster on CPUs than one gather and einsum (many tiny matmuls)
        return h + self.out(mixed.reshape(bn, ch, length))

    def group_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group: int) -> torch.Tensor:
        """Dense attention within groups of `group` consecutive locations (the last group shorter; padded keys
        masked): q, k (B, N, H, d), v (B, N, H, d, L) -> (B, N, H, d, L), in O(N x group), one batched matmul. The
        relative-position bias is that of offset zero (no positions)."""
        b, n, heads, d, length = v.shape
        g = max(1, min(int(group), n))
        pad = (-n) % g
        if pad:
            q, k = F.pad(q, (0, 0, 0, 0, 0, pad)), F.pad(k, (0, 0, 0, 0, 0, pad))
            v = F.pad(v, (0, 0, 0, 0, 0, 0, 0, pad))
        m = (n + pad) // g
        q, k = q.reshape(b * m, g, heads, d), k.reshape(b * m, g, heads, d)
        score = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(d)
        score = score + self.bias(torch.zeros(1, dtype=q.dtype, device=q.device))[None, :, None, None]
        if pad:
            real = (torch.arange(n + pad, device=q.device) < n).reshape(m, g).repeat(b, 1)  # (B*M, g)
            score = score.masked_fill(~real[:, None, None, :], float("-inf"))
        w = score.softmax(dim=-1)
        vv = v.reshape(b * m, g, heads, d * length).transpose(1, 2)  # (B*M, H, g, d*L)
        mixed = (w @ vv).transpose(1, 2).reshape(b, n + pad, heads, d, length)
        return mixed[:, :n]


class GridNet(TemporalUNet):
    """net(x_t (B, K*N, L), t (B,), *, mask, cond={"seq", "static"}) -> (B, K*N, L); see the module docstring."""

    def __init__(self, channels: int, static: int = 0, pos_dims: int = 0, width: int = 32, mults=(1, 2, 2),
                 blocks_per_level: int = 1, heads: int = 4, dropout: float = 0.0, neighbours: int = 16,
                 mix_levels: int = 2, learned_skip: bool = True, checkpoint: bool = True, mix_group: int | None = None,
                 covariates: int = 0):
        super().__init__()
        if not 0 <= pos_dims <= static:
            raise DataError(f"gridnet: pos_dims={pos_dims} must lie in [0, static={static}]")
        self.config = {"channels": channels, "static": static, "pos_dims": pos_dims, "width": width,
                       "mults": list(mults), "blocks_per_level": blocks_per_level, "heads": heads,
                       "dropout": dropout, "neighbours": neighbours, "mix_levels": mix_levels,
                       "learned_skip": learned_skip, "checkpoint": checkpoint,
                       **({"mix_group": int(mix_group)} if mix_group is not None else {}),
                       **({"covariates": int(covariates)} if covariates else {})}
        self.covariates = int(covariates)  # future-known covariates per location, last in cond['seq']
        self.checkpoint, self.mix_group = bool(checkpoint), None if mix_group is None else int(mix_group)
        self.k, self.static, self.pos_dims, self.neighbours = channels, static, pos_dims, neighbours
        self._build(channels, 2 * channels + 1 + CALENDAR + static + self.covariates, width, mults, blocks_per_level, heads, dropout,
                    learned_skip, mix=lambda ch: SpatialMix(ch, heads, pos_dims + 1), mix_levels=mix_levels)

    def _is_mix(self, layer) -> bool:
        return isinstance(layer, SpatialMix)

    def _layer(self, layer, h, ctx):
        if isinstance(layer, SpatialMix):
            graph, batch = ctx
            if self.checkpoint and torch.is_grad_enabled() and h.requires_grad:
                # recomputed in the backward pass: the gathered neighbour values (k per location) are not kept
                return torch.utils.checkpoint.checkpoint(layer, h, batch, *graph, use_reentrant=False)
            return layer(h, batch, *graph)
        return layer(h)

    def forward(self, x: torch.Tensor, t: torch.Tensor, *, mask=None, cond=None) -> torch.Tensor:
        if not isinstance(cond, dict) or "seq" not in cond or "static" not in cond:
            raise DataError("gridnet: cond must be {'seq': (B, 2C+5, L), 'static': (B, N, S)} (inputs.grid_cond)")
        seq, static = cond["seq"].to(x.dtype), cond["static"].to(x.dtype)
        b, c, length = x.shape
        n = static.shape[1]
        kc = self.covariates
        if c != self.k * n or static.shape[2] != self.static or seq.shape[1] != 2 * c + 1 + CALENDAR + kc * n:
            raise DataError(f"gridnet: x has {c} features, static {tuple(static.shape)} and seq {seq.shape[1]} "
                            f"channels; expected {self.k} channels x N locations, {self.static} static channels "
                            f"and 2C + {1 + CALENDAR} + {kc} x N sequence channels")

        def per(a):  # (B, K*N, L) -> (B, N, K, L)
            return a.reshape(b, self.k, n, length).transpose(1, 2)

        shared = seq[:, c:c + 1 + CALENDAR, None].expand(b, -1, n, -1).transpose(1, 2)  # (B, N, 5, L)
        stat = static[..., None].expand(b, -1, -1, length)
        parts = [per(x + seq[:, :c]), per(seq[:, c + 1 + CALENDAR:2 * c + 1 + CALENDAR]), shared, stat]
        if kc:  # (B, Kc*N, L) -> (B, N, Kc, L): each location its own covariates
            parts.append(seq[:, 2 * c + 1 + CALENDAR:].reshape(b, kc, n, length).transpose(1, 2))
        inp = torch.cat(parts, 2)
        inp = F.pad(inp.reshape(b * n, -1, length), (0, (-length) % self.factor))
        if self.pos_dims == 0 and self.mix_group is not None:  # exchangeable series: groups, O(N x group)
            graph = (None, self.mix_group)
        else:
            graph = neighbour_graph(static[..., :self.pos_dims].float(), self.neighbours)
        temb, xs = self.temb(t), x.reshape(b, self.k, n, length).transpose(1, 2)  # xs (B, N, K, L)
        step = n
        if graph[0] is None and b * n > CHUNK_SEQUENCES:  # groups are independent: whole groups per call
            step = max(self.mix_group, CHUNK_SEQUENCES // b // self.mix_group * self.mix_group)
        inp = inp.reshape(b, n, *inp.shape[1:])
        outs = []
        for s in range(0, n, step):
            m = min(n, s + step) - s
            out = self._unet(inp[:, s:s + m].reshape(b * m, *inp.shape[2:]), temb.repeat_interleave(m, 0),
                             xs[:, s:s + m].reshape(b * m, self.k, length), length, ctx=(graph, b))
            outs.append(out.reshape(b, m, self.k, length))
        return torch.cat(outs, 1).transpose(1, 2).reshape(b, c, length)


def location_features(channels: int, n: int, cells) -> np.ndarray:
    """The feature indices of the locations `cells` (of n) for `channels` channels per location, variable-major as
    data.Codec stacks them (feature k * n + j is channel k of location j): (channels x len(cells),)."""
    return (np.arange(int(channels))[:, None] * int(n) + np.asarray(cells)[None, :]).ravel()


def location_layout(template, variables) -> tuple[tuple, int, int]:
    """(location dims, N locations, K channels per location) of a codec template: the location dims are the
    trailing dims of the first variable that every variable ends with; leading dims (levels) become channels."""
    dims = [tuple(template[v].dims) for v in variables]
    loc = list(dims[0])
    while loc and not all(d[len(d) - len(loc):] == tuple(loc) for d in dims):
        loc.pop(0)
    if not loc:
        raise DataError(f"gridnet: the variables share no trailing location dims ({'; '.join(map(str, dims))}); "
                        "give every variable the same grid or station dims last")
    loc = tuple(loc)
    n = int(np.prod([template.sizes[d] for d in loc]))
    k = sum(int(template[v].size) // n for v in variables)
    return loc, n, k


def location_positions(template, loc: tuple) -> tuple[np.ndarray, str]:
    """(N, P) positions of the locations and their kind: 'sphere' (the unit vector of latitude / longitude
    coordinates over the location dims), 'coords' (numeric coordinates of the location dims, divided by their
    range) or 'none' (P = 0: exchangeable series)."""
    grid = template[list(template.data_vars)[0]]
    grid = grid.isel({d: 0 for d in grid.dims if d not in loc}).transpose(*loc)

    def find(names):
        for name in names:
            if name in template.coords and set(template[name].dims) <= set(loc) and template[name].dims:
                return template[name].broadcast_like(grid).transpose(*loc).values.ravel().astype(np.float64)
        return None

    lat, lon = find(LAT_NAMES), find(LON_NAMES)
    if lat is not None and lon is not None:
        la, lo = np.deg2rad(lat), np.deg2rad(lon)
        return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], -1), "sphere"
    cols = []
    for d in loc:
        if d in template.coords and np.issubdtype(template[d].dtype, np.number):
            v = template[d].broadcast_like(grid).transpose(*loc).values.ravel().astype(np.float64)
            span = float(v.max() - v.min())
            cols.append((v - v.min()) / (span if span > 0 else 1.0))
    if cols:
        return np.stack(cols, -1), "coords"
    return np.zeros((grid.size, 0)), "none"


def static_inputs(template, variables, fields=None, label: str = "static") -> tuple[np.ndarray, dict]:
    """(N, S) float32 static channels of the locations (positions first, then each of `fields`, an xarray
    Dataset of time-free variables on the location dims such as a land-sea mask or orography, standardised,
    NaN -> 0) and the layout {'location_dims', 'locations', 'channels', 'pos_dims', 'pos_kind', 'fields'}."""
    loc, n, k = location_layout(template, variables)
    pos, kind = location_positions(template, loc)
    cols, names = [pos], []
    if fields is not None:
        for name in fields.data_vars:
            da = fields[name]
            if set(da.dims) != set(loc):
                raise DataError(f"{label}: static field '{name}' has dims {da.dims}, the locations {loc}")
            grid = template[variables[0]].isel({d: 0 for d in template[variables[0]].dims if d not in loc})
            for d in loc:
                if d in grid.coords and d in da.coords and not _coords_equal(np.asarray(da[d].values),
                                                                             np.asarray(grid[d].values)):
                    raise DataError(f"{label}: static field '{name}': coordinate '{d}' differs from the data's")
            v = da.transpose(*loc).values.ravel().astype(np.float64)
            m, s = np.nanmean(v), np.nanstd(v)
            cols.append(np.nan_to_num((v - m) / (s if s > 0 else 1.0))[:, None])
            names.append(str(name))
    static = np.concatenate(cols, 1).astype(np.float32)
    return static, {"location_dims": list(loc), "locations": n, "channels": k, "pos_dims": int(pos.shape[1]),
                    "pos_kind": kind, "fields": names}
