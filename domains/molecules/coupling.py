"""How a training step couples noise, times and molecules: optimal-transport pairing of the noise with the molecules
of a batch, and times drawn skewed towards low noise. Both are recipe switches (config.json's recipe 'pairing',
'time_sampling'), off by default; the ideas are those of the fast-converging flow-matching molecule generators
(minibatch OT couplings, Tong et al. 2023, Klein et al. 2023; Beta-skewed times, e.g. SemlaFlow), written here for
gendiff's zero-centre-of-mass molecule space."""
from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from gendiff.errors import ConfigError


def sample_times(schedule, n: int, time_sampling: str = "uniform", generator=None, device=None) -> torch.Tensor:
    """n training times. 'uniform': the schedule's own (schedule.sample_t); 'low_noise': density 2 (1 - t) on
    [t_min, t_max] (t = 1 - u with u ~ Beta(2, 1), u = sqrt(U)): twice uniform's density at t = 0, falling to none
    at pure noise; discrete schedules round up to their grid i / T, i >= 1."""
    if time_sampling == "uniform":
        return schedule.sample_t(n, generator=generator, device=device)
    if time_sampling != "low_noise":
        raise ConfigError(f"time_sampling {time_sampling!r}: expected 'uniform' or 'low_noise'")
    frac = 1.0 - torch.rand(n, generator=generator, device=device).sqrt()  # in (0, 1], density 2 (1 - frac)
    if schedule.num_train_steps is not None:
        steps = schedule.num_train_steps
        i = torch.ceil(frac * steps).clamp_(1, steps)
        return i.to(torch.float32) / steps
    return schedule.t_min + (schedule.t_max - schedule.t_min) * frac


def ot_pair_noise(x0: torch.Tensor, noise: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    """`noise` with whole molecules' noise blocks reassigned among the molecules of the same atom count so that the
    summed squared distance between each (centred) molecule and its noise is minimal (Hungarian assignment per
    atom-count group, scipy's linear_sum_assignment). Atom order inside a molecule is kept; both x0 and the noise are
    zero centre of mass, and a permutation of whole blocks keeps the noise's distribution."""
    counts = torch.bincount(batch)
    order = torch.argsort(batch, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    out = noise.clone()
    for size in torch.unique(counts).tolist():
        graphs = torch.nonzero(counts == size).flatten()
        if size == 0 or graphs.numel() < 2:
            continue
        rows = order[(starts[graphs][:, None] + torch.arange(size, device=batch.device)).flatten()]
        rows = rows.reshape(graphs.numel(), size)  # node rows of each molecule of this size
        xs = x0[rows].reshape(graphs.numel(), -1).double()
        es = noise[rows].reshape(graphs.numel(), -1).double()
        cost = torch.cdist(xs, es).pow(2).cpu().numpy()
        _, col = linear_sum_assignment(cost)
        out[rows.flatten()] = noise[rows[torch.as_tensor(np.asarray(col), device=batch.device)].flatten()]
    return out
