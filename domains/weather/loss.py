"""The training objective: the masked denoising loss of windows (core diffusion_loss), with conditioning noise."""
from __future__ import annotations

import torch

from gendiff.losses import diffusion_loss


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
            x0 = batch["x0"]
            c = x0.shape[1]
            known = (cond[:, c:c + 1] > 0) & batch["mask"].any(-1, keepdim=True)  # context steps x valid features
            noise = torch.randn(cond[:, :c].shape, generator=generator, device=cond.device, dtype=cond.dtype)
            cond = torch.cat([cond[:, :c] + context_noise * noise * known, cond[:, c:]], 1)
        loss = diffusion_loss(model, batch["x0"], schedule, space, mask=batch["mask"], cond=cond,
                              generator=generator, weighting=weighting)
        return loss.mean()

    return step_fn
