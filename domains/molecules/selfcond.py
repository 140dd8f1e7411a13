"""Self-conditioning (Chen et al. 2023, "Analog Bits"), for E(3)-equivariant molecule networks: the network also sees
its own earlier estimate of the clean molecule. Training: on half the steps the denoiser first estimates x0 without
it (no gradient) and the step is then taken with that detached estimate fed in; on the other half the input is
zeros. Sampling: each network call gets the previous call's x0 estimate (zeros at the first).

The estimate enters as per-node invariant features only, so any equivariant network stays equivariant: its atom-type
and charge features, the squared distance of each atom's estimated position from its current one, and two soft
coordination numbers of the estimated geometry (smooth counts of estimated neighbours closer than 1.25 and 1.65
angstrom: how many bonds the estimate gives each atom). They reach the network through its per-node context."""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from gendiff.forward import Denoiser

from .egnn import graph_structure

SC_FEATURES = 9  # 6 feature channels, 1 displacement, 2 coordination numbers
_RADII = (1.25, 1.65)  # angstrom: X-H and double bonds; every single bond of QM9's elements
_WIDTH = 0.1


def sc_features(x0_hat: torch.Tensor | None, x_t: torch.Tensor, batch: torch.Tensor, pos_scale: float = 1.0):
    """(N, SC_FEATURES) invariant features of an x0 estimate (N, 3 + F) next to the network input x_t; zeros when
    there is no estimate. `pos_scale` turns model positions into angstrom (norm_values[0])."""
    n = x_t.shape[0]
    if x0_hat is None:
        return x_t.new_zeros(n, SC_FEATURES)
    x0_hat = x0_hat.to(x_t.dtype)
    pos = x0_hat[:, :3]
    disp = ((pos - x_t[:, :3]) ** 2).sum(-1, keepdim=True)
    row, col, _ = graph_structure(batch)
    dist = (pos[row] - pos[col]).norm(dim=-1) * pos_scale
    coord = [x_t.new_zeros(n).index_add_(0, row, torch.sigmoid((r - dist) / _WIDTH)) for r in _RADII]
    return torch.cat([x0_hat[:, 3:], disp, torch.stack(coord, -1) / 4.0], -1)


class SelfConditioned(nn.Module):
    """Wraps a network built with SC_FEATURES more per-node context channels: forward feeds it sc_features of
    `self.x0_hat` (set by the training step or carried by SelfCondDenoiser while sampling) next to any context."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.x0_hat: torch.Tensor | None = None
        self.carry = False

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, *, mask=None, cond=None) -> torch.Tensor:
        batch = mask if mask is not None else x_t.new_zeros(x_t.shape[0], dtype=torch.long)
        feats = sc_features(self.x0_hat, x_t, batch)
        if cond is not None:
            cond = cond[batch] if cond.shape[0] != x_t.shape[0] else cond
            feats = torch.cat([cond.to(feats.dtype), feats], -1)
        return self.net(x_t, t, mask=mask, cond=feats)


class SelfCondDenoiser(Denoiser):
    """A Denoiser whose self-conditioned network, while `carrying`, keeps each call's x0 estimate for the next."""

    def x0_eps_v(self, x_t, t, *, mask=None, cond=None):
        x0, eps, v = super().x0_eps_v(x_t, t, mask=mask, cond=cond)
        if isinstance(self.net, SelfConditioned) and self.net.carry:
            self.net.x0_hat = x0.detach()
        return x0, eps, v


def wrapped(denoiser) -> SelfConditioned | None:
    """The SelfConditioned network inside a (possibly DDP-wrapped) denoiser, else None."""
    net = getattr(getattr(denoiser, "module", denoiser), "net", None)
    return net if isinstance(net, SelfConditioned) else None


@contextlib.contextmanager
def carrying(denoiser):
    """Sampling context: a self-conditioned network starts without an estimate and then gets each call's; a no-op
    for other networks."""
    net = wrapped(denoiser)
    if net is None:
        yield
        return
    net.x0_hat, net.carry = None, True
    try:
        yield
    finally:
        net.x0_hat, net.carry = None, False


def self_condition(denoiser, x_t, t_rows, mask, cond, generator=None) -> None:
    """The training half of self-conditioning: with probability 1/2 (drawn from `generator`) set the network's
    input estimate to the denoiser's detached x0 at (x_t, t), else to none."""
    net = wrapped(denoiser)
    net.x0_hat = None
    use = torch.rand((), generator=generator, device=x_t.device) < 0.5
    if bool(use):
        inner = getattr(denoiser, "module", denoiser)
        with torch.no_grad():
            net.x0_hat = inner.x0(x_t, t_rows, mask=mask, cond=cond).detach()
