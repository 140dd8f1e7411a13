"""A thin diffusers-style view of a discrete schedule (betas, alphas_cumprod, add_noise, step) for users who know
diffusers and for parity tests. Integer timestep k (0-based, as in diffusers) is continuous time t = (k + 1) / T.
It owns no mutable timestep state: `step` takes the previous timestep explicitly."""

from __future__ import annotations

import torch

from .errors import ConfigError
from .forward import q_sample
from .sampler_loop import Context
from .sampler_steps import _ancestral, _ddim
from .schedules import Schedule, TabulatedSchedule
from .spaces import EuclideanSpace


class DiffusersView:
    def __init__(self, schedule: Schedule):
        if not isinstance(schedule, TabulatedSchedule):
            raise ConfigError(f"a diffusers view needs a discrete schedule, got {schedule.name!r}")
        self.schedule = schedule
        self.num_train_timesteps = schedule.num_train_steps
        self.betas = schedule.betas.to(torch.float32)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = schedule.alphas_cumprod.to(torch.float32)

    def time(self, timesteps) -> torch.Tensor:
        k = torch.as_tensor(timesteps, dtype=torch.float64)
        if (k >= self.num_train_timesteps).any():
            raise ConfigError(f"timestep out of range (< {self.num_train_timesteps}): {timesteps}")
        k = k.clamp(min=-1)  # diffusers: a negative previous timestep means the clean end (alpha_bar = 1)
        return (k + 1) / self.num_train_timesteps

    def add_noise(self, original_samples, noise, timesteps):
        """diffusers' add_noise: sqrt(abar_k) x0 + sqrt(1 - abar_k) noise."""
        return q_sample(original_samples, self.time(timesteps), noise, self.schedule)

    def _step(self, fn, model_output, timestep, sample, prev_timestep, noise, **options):
        if prev_timestep is None:
            prev_timestep = int(timestep) - 1
        ctx = Context(lambda x, t, **kw: model_output, self.schedule, EuclideanSpace(), options=options)
        if noise is not None:
            ctx.noise = lambda like: noise  # type: ignore[method-assign]
        t, s = float(self.time(int(timestep))), float(self.time(int(prev_timestep)))
        return fn(ctx, sample, t, s, {"i": 0, "n": 1})

    def step(self, model_output, timestep, sample, *, prev_timestep=None, noise=None):
        """One DDPM ancestral step (DDPMScheduler.step with variance_type fixed_small, clip_sample=False)."""
        return self._step(_ancestral, model_output, timestep, sample, prev_timestep, noise)

    def step_ddim(self, model_output, timestep, sample, *, prev_timestep, eta: float = 0.0, noise=None):
        """One DDIM step (DDIMScheduler.step with set_alpha_to_one=True for prev_timestep = -1)."""
        return self._step(_ddim, model_output, timestep, sample, prev_timestep, noise, eta=eta)
