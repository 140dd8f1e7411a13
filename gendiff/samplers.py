"""Samplers as pure functions over one shared step skeleton (Design 7): the registry and the public entry points.

Each sampler is `name(model, x_T, schedule, space, steps, *, mask, cond, null_cond, guidance, generator, known,
callback, progress, timesteps, **options)` where `model(x_t, t, *, mask, cond)` returns eps; a model with an
`x0_eps` method (every forward.Denoiser) gives x0 and eps together, which also serves schedules where alpha
reaches 0 (flow). The pieces live beside this module: the step skeleton (Context, the loop, prior_sample) in
sampler_loop, the individual samplers' steps in sampler_steps, the timestep grids in grids. Options a sampler does
not take raise ConfigError (COMMON_OPTIONS and OPTIONS list them).
"""

from __future__ import annotations

import torch

from .grids import AUTO_LOG_SNR_BELOW, DEFAULT_SPACING, auto_spacing, sampling_grid
from .registry import Registry
from .sampler_loop import COMMON_OPTIONS, Context, check_options, prior_sample, run_steps
from .sampler_steps import (
    NFE,
    OPTIONS,
    _ancestral,
    _ddim,
    _dpm_solver_pp,
    _euler,
    _euler_maruyama,
    _heun,
    _langevin,
    _pc,
)
from .schedules import Schedule

__all__ = [
    "SAMPLERS",
    "COMMON_OPTIONS",
    "OPTIONS",
    "DEFAULT_SPACING",
    "AUTO_LOG_SNR_BELOW",
    "Context",
    "prior_sample",
    "auto_spacing",
    "check_options",
    "sampling_grid",
    "sample",
    "list_samplers",
    "nfe",
    "ancestral",
    "ddim",
    "euler",
    "euler_maruyama",
    "pc",
    "langevin",
    "heun",
    "dpm_solver_pp",
]

SAMPLERS: Registry = Registry("sampler")


def _make(name: str, step):
    def sampler(model, x_T, schedule, space, steps, **kwargs):
        return run_steps(step, model, x_T, schedule, space, steps, **kwargs)

    sampler.__name__ = name
    sampler.__doc__ = step.__doc__
    return SAMPLERS.register(name)(sampler)


ancestral = _make("ancestral", _ancestral)
ddim = _make("ddim", _ddim)
euler = _make("euler", _euler)
euler_maruyama = _make("euler_maruyama", _euler_maruyama)
pc = _make("pc", _pc)
langevin = _make("langevin", _langevin)
heun = _make("heun", _heun)
dpm_solver_pp = _make("dpm_solver_pp", _dpm_solver_pp)


def sample(name: str, model, x_T, schedule, space, steps, **kwargs) -> torch.Tensor:
    """Run sampler `name` (see list_samplers) from x_T; returns the x0 sample."""
    return SAMPLERS.get(name)(model, x_T, schedule, space, steps, **kwargs)


def list_samplers() -> list[str]:
    return SAMPLERS.names()


def nfe(name: str, steps: int, schedule: Schedule, **options) -> int:
    """Network evaluations of one sampler run (without the doubling of classifier-free guidance)."""
    SAMPLERS.get(name)
    check_options(name, options)
    grid = sampling_grid(name, schedule, steps, options.get("spacing"), float(options.get("rho", 7.0)))
    alpha, sigma = schedule.alpha_sigma(grid.to(torch.float64))
    zero = int(float(sigma[-1]) == 0)
    return NFE[name](int(steps), options, alpha, sigma, zero) + (1 - zero)
