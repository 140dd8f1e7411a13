"""Noise spaces: the one place a domain plugs in (sampling noise, projecting, reducing losses, counting dimensions).

Dense layouts have the batch on dim 0 (images (B, C, H, W), weather (B, C, L)); graph layouts follow torch-geometric:
x is (N_nodes, D) and `mask` is the LongTensor `batch` mapping each node to its graph.
"""

from __future__ import annotations

import torch

from .errors import ConfigError


def _num_graphs(batch: torch.Tensor) -> int:
    return int(batch.max()) + 1 if batch.numel() else 0


def _check_batch(batch, x: torch.Tensor) -> torch.Tensor:
    if batch is None or batch.dtype != torch.long or batch.shape != x.shape[:1]:
        raise ConfigError("graph spaces need mask = the LongTensor `batch` of shape (N_nodes,) mapping nodes to graphs")
    return batch


class NoiseSpace:
    """Interface (Design 2): sample, project, per-sample sum/count/reduce, degrees of freedom, per-row expansion."""

    graph = False

    def sample(self, like: torch.Tensor, mask=None, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
        return self.project(noise, mask)

    def project(self, x: torch.Tensor, mask=None) -> torch.Tensor:
        return x

    def num_samples(self, x: torch.Tensor, mask=None) -> int:
        return x.shape[0]

    def per_row(self, values: torch.Tensor, mask=None) -> torch.Tensor:
        """Expand per-sample values (B,) to the leading dim of x (identity for dense, values[batch] for graphs)."""
        return values

    def sum(self, err: torch.Tensor, mask=None) -> torch.Tensor:
        return err.reshape(err.shape[0], -1).sum(1)

    def count(self, like: torch.Tensor, mask=None) -> torch.Tensor:
        n = like[0].numel() if like.shape[0] else 0
        return torch.full((like.shape[0],), float(n), device=like.device)

    def reduce(self, err: torch.Tensor, mask=None) -> torch.Tensor:
        """Per-sample mean over valid elements (not the padded size; Design 4)."""
        return self.sum(err, mask) / self.count(err, mask).clamp(min=1)

    def dof(self, like: torch.Tensor, mask=None) -> torch.Tensor:
        """Degrees of freedom per sample, for likelihoods."""
        return self.count(like, mask)


class EuclideanSpace(NoiseSpace):
    """Dense R^d per sample (images)."""


class MaskedSpace(NoiseSpace):
    """Dense with a validity mask (True = valid): noise, projection and loss only on valid entries (weather NaN
    gaps)."""

    def _mask(self, x: torch.Tensor, mask) -> torch.Tensor:
        if mask is None:
            return torch.ones_like(x, dtype=torch.bool)
        mask = torch.as_tensor(mask, device=x.device)
        if mask.dtype != torch.bool:
            raise ConfigError(f"MaskedSpace mask must be bool (True = valid), got {mask.dtype}")
        return mask.expand_as(x)

    def project(self, x, mask=None):
        return torch.where(self._mask(x, mask), x, torch.zeros((), dtype=x.dtype, device=x.device))

    def sum(self, err, mask=None):
        err = torch.where(self._mask(err, mask), err, torch.zeros((), dtype=err.dtype, device=err.device))
        return err.reshape(err.shape[0], -1).sum(1)

    def count(self, like, mask=None):
        return self._mask(like, mask).reshape(like.shape[0], -1).sum(1).to(torch.float32)


class GraphEuclideanSpace(NoiseSpace):
    """Node features of a torch-geometric batch: R^D per node, reduced per graph."""

    graph = True

    def num_samples(self, x, mask=None):
        return _num_graphs(_check_batch(mask, x))

    def per_row(self, values, mask=None):
        return values[mask]

    def sum(self, err, mask=None):
        batch = _check_batch(mask, err)
        out = err.new_zeros(_num_graphs(batch))
        return out.index_add_(0, batch, err.reshape(err.shape[0], -1).sum(1))

    def count(self, like, mask=None):
        batch = _check_batch(mask, like)
        width = like[0].numel() if like.shape[0] else 0
        return torch.bincount(batch, minlength=_num_graphs(batch)).to(torch.float32) * width


class ZeroCoMSpace(GraphEuclideanSpace):
    """Coordinates with zero centre of mass per graph (EDM-mol, Hoogeboom et al. 2022, sec. 3): (N - 1) D dof."""

    def project(self, x, mask=None):
        batch = _check_batch(mask, x)
        n = _num_graphs(batch)
        sums = x.new_zeros((n,) + x.shape[1:]).index_add_(0, batch, x)
        counts = torch.bincount(batch, minlength=n).clamp(min=1).to(x.dtype)
        mean = sums / counts.view(-1, *([1] * (x.dim() - 1)))
        return x - mean[batch]

    def dof(self, like, mask=None):
        batch = _check_batch(mask, like)
        width = like[0].numel() if like.shape[0] else 0
        return (torch.bincount(batch, minlength=_num_graphs(batch)).to(torch.float32) - 1).clamp(min=0) * width


class ProductSpace(NoiseSpace):
    """Concatenation along the last dim of several spaces sharing one mask (positions | atom features)."""

    def __init__(self, parts: list[tuple[NoiseSpace, int]]):
        if not parts:
            raise ConfigError("ProductSpace needs at least one (space, width) part")
        self.parts = list(parts)
        self.graph = parts[0][0].graph
        if any(space.graph != self.graph for space, _ in parts):
            raise ConfigError("ProductSpace parts must share one layout (all dense or all graph)")

    def _split(self, x):
        widths = [w for _, w in self.parts]
        if x.shape[-1] != sum(widths):
            raise ConfigError(f"ProductSpace expects last dim {sum(widths)}, got {x.shape[-1]}")
        return torch.split(x, widths, dim=-1)

    def sample(self, like, mask=None, generator=None):
        return torch.cat(
            [s.sample(c, mask, generator) for (s, _), c in zip(self.parts, self._split(like), strict=False)], -1
        )

    def project(self, x, mask=None):
        return torch.cat([s.project(c, mask) for (s, _), c in zip(self.parts, self._split(x), strict=False)], -1)

    def num_samples(self, x, mask=None):
        return self.parts[0][0].num_samples(x, mask)

    def per_row(self, values, mask=None):
        return self.parts[0][0].per_row(values, mask)

    def sum(self, err, mask=None):
        return sum(s.sum(c, mask) for (s, _), c in zip(self.parts, self._split(err), strict=False))

    def count(self, like, mask=None):
        return sum(s.count(c, mask) for (s, _), c in zip(self.parts, self._split(like), strict=False))

    def dof(self, like, mask=None):
        return sum(s.dof(c, mask) for (s, _), c in zip(self.parts, self._split(like), strict=False))

    def part(self, x: torch.Tensor, index: int) -> torch.Tensor:
        return self._split(x)[index]
