"""Invariant checks defined once, with one tolerance (instead of per-model copies): raise, never repair silently."""

from __future__ import annotations

import torch

from .errors import GendiffError

TOL = 1e-4


class InvariantError(GendiffError):
    """A tensor broke an invariant the pipeline relies on (masking, zero centre of mass, finiteness)."""


def assert_finite(x: torch.Tensor, name: str = "tensor") -> None:
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise InvariantError(f"{name}: {bad} non-finite values (NaN/inf)")


def assert_masked(x: torch.Tensor, mask: torch.Tensor, name: str = "tensor", tol: float = TOL) -> None:
    """Entries outside the validity mask must be (near) zero."""
    leak = x.masked_fill(mask.expand_as(x), 0).abs().max() if x.numel() else torch.tensor(0.0)
    if float(leak) > tol:
        raise InvariantError(f"{name}: masked entries are non-zero (max |x| = {float(leak):.3g} > {tol})")


def assert_zero_com(x: torch.Tensor, batch: torch.Tensor, name: str = "positions", tol: float = TOL) -> None:
    """Each graph's coordinates must have zero mean, relative to their scale."""
    n = int(batch.max()) + 1 if batch.numel() else 0
    sums = x.new_zeros((n,) + x.shape[1:]).index_add_(0, batch, x)
    mean = sums / torch.bincount(batch, minlength=n).clamp(min=1).to(x.dtype)[:, None]
    scale = 1.0 + float(x.abs().max()) if x.numel() else 1.0
    if n and float(mean.abs().max()) > tol * scale:
        raise InvariantError(f"{name}: centre of mass not zero (max |mean| = {float(mean.abs().max()):.3g})")
