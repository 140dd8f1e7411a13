"""The training objective: the masked denoising loss of windows (core diffusion_loss), with conditioning noise."""
from __future__ import annotations

import torch

from gendiff.errors import ConfigError, DataError
from gendiff.losses import diffusion_loss
from gendiff.spaces import MaskedSpace


def make_step_fn(schedule, space, context_noise: float = 0.0, weighting=None):
    """Per-window masked eps/x0 loss (core diffusion_loss, with `weighting`) averaged over the batch.

    For the preconditioned network train passes losses.constant_weight(): the plain ||x0_hat - x0||^2 over the
    generated cells, the objective the weather runs have always been trained (and benchmarked) with.

    `context_noise` > 0 adds N(0, context_noise^2) to the known context values the network is conditioned on
    (conditioning augmentation, Ho et al. 2022, "Cascaded diffusion models"): with a few weeks of data the network
    otherwise keys on exact context values, memorises the training days and gives over-confident ensembles."""
    def step_fn(model, batch, generator):
        cond = batch["cond"]
        if context_noise > 0:
            grid = isinstance(cond, dict)  # gridnet: {"seq": channels, "static": ...}
            seq = cond["seq"] if grid else cond
            x0 = batch["x0"]
            c = x0.shape[1]
            known = (seq[:, c:c + 1] > 0) & batch["mask"].any(-1, keepdim=True)  # context steps x valid features
            noise = torch.randn(seq[:, :c].shape, generator=generator, device=seq.device, dtype=seq.dtype)
            seq = torch.cat([seq[:, :c] + context_noise * noise * known, seq[:, c:]], 1)
            cond = {**cond, "seq": seq} if grid else seq
        loss = diffusion_loss(model, batch["x0"], schedule, space, mask=batch["mask"], cond=cond,
                              generator=generator, weighting=weighting)
        return loss.mean()

    return step_fn


class VariableBalancedSpace(MaskedSpace):
    """MaskedSpace whose per-window loss weighs variables equally, not cells: each variable's mean squared error
    over its valid (generated) cells and steps, then the mean over the variables that have any. Stacked into
    features, a 33 x 49 temperature field would otherwise outweigh a single station series 1617 to 1.

    `groups`: feature counts per variable, in the codec's order (Codec.sizes). With one variable this is
    MaskedSpace's mean over valid elements."""

    def __init__(self, groups):
        self.groups = [int(g) for g in groups]
        if not self.groups or min(self.groups) < 1:
            raise ConfigError(f"VariableBalancedSpace: groups={groups!r} must be positive feature counts")

    def reduce(self, err: torch.Tensor, mask=None) -> torch.Tensor:
        if err.shape[1] != sum(self.groups):
            raise DataError(f"loss: {err.shape[1]} features, the variables hold {sum(self.groups)}")
        m = self._mask(err, mask)
        err = torch.where(m, err, torch.zeros((), dtype=err.dtype, device=err.device))
        per_feature = err.reshape(err.shape[0], err.shape[1], -1).sum(-1)  # (B, C)
        n_feature = m.reshape(m.shape[0], m.shape[1], -1).sum(-1).to(err.dtype)
        ids = torch.repeat_interleave(torch.arange(len(self.groups), device=err.device),
                                      torch.tensor(self.groups, device=err.device))
        total = err.new_zeros(err.shape[0], len(self.groups)).index_add_(1, ids, per_feature)
        count = err.new_zeros(err.shape[0], len(self.groups)).index_add_(1, ids, n_feature)
        present = count > 0
        mean = torch.where(present, total / count.clamp(min=1), torch.zeros((), dtype=err.dtype, device=err.device))
        return mean.sum(1) / present.sum(1).clamp(min=1).to(err.dtype)
