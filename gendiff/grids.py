"""Sampling grids: the decreasing times a sampler walks (each sampler's default spacing, and 'auto', which spaces
the grid in log-SNR where alpha(t_max) is tiny)."""

from __future__ import annotations

import torch

from .schedules import Schedule

DEFAULT_SPACING = {  # grid spacing when neither `spacing` nor `timesteps` is given (benchmarks/grids.py)
    "ancestral": "uniform",
    "ddim": "uniform",
    "euler": "uniform",
    "euler_maruyama": "uniform",
    "pc": "uniform",
    "langevin": "uniform",
    "heun": "auto",
    "dpm_solver_pp": "auto",
}
AUTO_LOG_SNR_BELOW = 0.005  # alpha(t_max) under which 'auto' spaces the grid in log-SNR


def auto_spacing(schedule: Schedule) -> str:
    """'log_snr' where 0 < alpha(t_max) < AUTO_LOG_SNR_BELOW, else 'uniform'.

    With alpha(t_max) tiny (cosine 5e-5, polynomial 3e-3), a uniform grid's first step takes x0 = (x - sigma eps) /
    alpha there, multiplying any eps error by sigma / alpha and then by alpha_s / alpha_t; spacing in log-SNR makes
    that step small. On the mixture with a 5% eps error (benchmarks/grids.py) log-SNR spacing beat the uniform grid
    on polynomial and cosine at 20 and 50 steps by 4-60x for heun and DPM-Solver++ (uniform: SW 5.1 and 0.50 at 20
    steps on polynomial, against 0.085 and 0.093), at the price of 1.5-2.5x the uniform grid's (small) SW with exact
    eps; Euler / DDIM gain less with the error and lose more without it, so they stay uniform. On linear / vp
    (alpha(1) ~ 6e-3) and flow (alpha = 0, but x0 comes from the velocity without a division) uniform is as good or
    better."""
    alpha = float(schedule.alpha_sigma(torch.tensor(schedule.t_max, dtype=torch.float64))[0])
    return "log_snr" if 0.0 < alpha < AUTO_LOG_SNR_BELOW else "uniform"


def sampling_grid(name: str, schedule: Schedule, steps: int, spacing: str | None = None, rho: float = 7.0):
    """The decreasing times sampler `name` walks for `steps` steps (its DEFAULT_SPACING unless told; 'auto' is
    auto_spacing(schedule))."""
    spacing = spacing or DEFAULT_SPACING.get(name, "uniform")
    if spacing == "auto":
        spacing = auto_spacing(schedule)
    return schedule.timesteps(steps, spacing, rho)
