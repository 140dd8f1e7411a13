"""The sampler step skeleton (Design 7): the Context a step sees (guided x0 / eps of the model, the schedule, the
space, the RNG) and the loop that walks a grid with one step function.

The loop walks the grid (t_max -> t_min), projects onto the space after every step, re-imposes known values
(inpainting / forecasting), and finally denoises with the x0 prediction when sigma(t_min) > 0. A model gives eps
(`model(x_t, t, *, mask, cond)`); one with an `x0_eps` method (every forward.Denoiser) gives x0 and eps together,
which also serves schedules where alpha reaches 0 (flow).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from .errors import ConfigError
from .grids import sampling_grid
from .sampler_steps import OPTIONS
from .schedules import Schedule
from .spaces import NoiseSpace

COMMON_OPTIONS = ("clip_x0", "cfg_batch", "spacing", "rho")  # the options the skeleton reads, for every sampler


@dataclass
class Context:
    """What a step needs: the guided eps model, the schedule, the space, and the RNG."""

    model: Any  # model(x, t, *, mask, cond) -> eps, or a forward.Denoiser (x0_eps, x0_eps_v)
    schedule: Schedule
    space: NoiseSpace
    mask: Any = None
    cond: Any = None
    null_cond: Any = None
    guidance: float = 1.0
    generator: torch.Generator | None = None
    nfe: int = 0
    options: dict = field(default_factory=dict)
    v: torch.Tensor | None = None

    def alpha_sigma(self, t: float) -> tuple[float, float]:
        a, s = self.schedule.alpha_sigma(torch.tensor(t, dtype=torch.float64))
        return float(a), float(s)

    def _pair(self, x, tt, cond, t: float):
        """(x0, eps) of the model at (x, t); eps-only models get x0 = (x - sigma eps) / alpha. A model that learns
        its variance leaves its v (Improved DDPM's interpolation weight) in self.v."""
        if getattr(self.model, "learn_sigma", False):
            x0, eps, v = self.model.x0_eps_v(x, tt, mask=self.mask, cond=cond)
            self.v = v
            return x0, eps
        if hasattr(self.model, "x0_eps"):
            return self.model.x0_eps(x, tt, mask=self.mask, cond=cond)
        eps = self.model(x, tt, mask=self.mask, cond=cond)
        a, s = self.alpha_sigma(t)
        if a == 0:
            raise ConfigError(
                f"schedule {self.schedule.name!r} has alpha = 0 at t = {t}: an eps-only model "
                "cannot give x0 there; wrap the network in Denoiser(prediction='velocity', 'v' or 'x0')"
            )
        return (x - s * eps) / a, eps

    def x0_eps(self, x: torch.Tensor, t: float):
        """Classifier-free guided (x0, eps) (Ho & Salimans 2022, eq. 6: pred_u + w (pred_c - pred_u); w = 1 is no
        guidance), with x0 clamped to `clip_x0` and eps made consistent with it."""
        tt = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
        self.nfe += 1
        if self.guidance == 1.0 or self.cond is None:
            x0, eps = self._pair(x, tt, self.cond, t)
        else:
            if self._batch_guidance():  # one forward pass over [x; x] with [cond; null]: fewer, larger kernels
                mask, self.mask = self.mask, None
                both = self._pair(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([self.cond, self.null_cond]), t)
                self.mask = mask
                (x0_c, x0_u), (e_c, e_u) = both[0].chunk(2), both[1].chunk(2)
                self.v = None if self.v is None else self.v.chunk(2)[0]  # the conditional branch's variance
            else:
                x0_u, e_u = self._pair(x, tt, self.null_cond, t)
                x0_c, e_c = self._pair(x, tt, self.cond, t)  # last, so self.v is the conditional branch's
            x0, eps = x0_u + self.guidance * (x0_c - x0_u), e_u + self.guidance * (e_c - e_u)
        clip = self.options.get("clip_x0")
        if clip is not None:
            a, s = self.alpha_sigma(t)
            x0 = x0.clamp(*clip)
            if s > 0:
                eps = (x - a * x0) / s
        return x0, eps

    def eps(self, x: torch.Tensor, t: float) -> torch.Tensor:
        return self.x0_eps(x, t)[1]

    def _batch_guidance(self) -> bool:
        """Batch the two guidance passes when that is exact: no mask (graph masks are batch vectors), tensor
        conditions of one shape; the `cfg_batch` option (default True) turns it off."""
        return (
            self.options.get("cfg_batch", True)
            and self.mask is None
            and isinstance(self.cond, torch.Tensor)
            and isinstance(self.null_cond, torch.Tensor)
            and self.cond.shape == self.null_cond.shape
        )

    def noise(self, like: torch.Tensor) -> torch.Tensor:
        return self.space.sample(like, self.mask, self.generator)


def prior_sample(schedule: Schedule, space: NoiseSpace, like: torch.Tensor, mask=None, generator=None) -> torch.Tensor:
    """x_T ~ N(0, (alpha^2 + sigma^2) I) on the space: the prior for unit-variance data at t_max."""
    return space.sample(like, mask, generator) * schedule.prior_std()


def check_options(name: str, options: dict) -> None:
    """ConfigError for an option sampler `name` does not take, or for one that would have no effect (no option is
    ignored silently): `rho` shapes only the 'karras' grid, so it comes with spacing='karras'."""
    known = COMMON_OPTIONS + OPTIONS.get(name, ())
    for key in options:
        if key not in known:
            raise ConfigError(f"sampler {name!r} has no option {key!r} (it takes: {', '.join(sorted(known))})")
    if "rho" in options and options.get("spacing") != "karras":
        raise ConfigError(
            f"sampler {name!r}: rho shapes only the 'karras' grid; give spacing='karras' with it "
            f"(spacing is {options.get('spacing')!r})"
        )


def run_steps(
    step,
    model,
    x_T,
    schedule,
    space,
    steps,
    *,
    mask=None,
    cond=None,
    null_cond=None,
    guidance=1.0,
    generator=None,
    known=None,
    callback=None,
    progress=False,
    timesteps=None,
    denoise_final=True,
    **options,
):
    """Walk the grid from x_T with `step` (a sampler_steps function, whose name less its '_' names the sampler)."""
    name = step.__name__.lstrip("_")
    check_options(name, options)
    if timesteps is not None and ("spacing" in options or "rho" in options):
        raise ConfigError(f"sampler {name!r}: give either timesteps or spacing/rho, not both")
    grid = (
        (
            sampling_grid(name, schedule, steps, options.get("spacing"), float(options.get("rho", 7.0)))
            if timesteps is None
            else torch.as_tensor(timesteps, dtype=torch.float64)
        )
        .to(torch.float64)
        .tolist()
    )
    if len(grid) < 2 or any(b >= a for a, b in zip(grid, grid[1:], strict=False)):
        raise ConfigError("sampler timesteps must be a decreasing sequence of at least two times")
    ctx = Context(model, schedule, space, mask, cond, null_cond, float(guidance), generator, options=options)
    if known is not None:
        known_values, known_mask = known
        known_mask = torch.as_tensor(known_mask, device=x_T.device).expand_as(x_T)

    def impose(x, t):
        if known is None:
            return x
        a, s = ctx.alpha_sigma(t)
        noisy = a * known_values + s * ctx.noise(known_values) if s > 0 else known_values
        return space.project(torch.where(known_mask, noisy, x), mask)

    x = impose(space.project(x_T, mask), grid[0])
    state: dict = {"n": len(grid) - 1}
    with torch.no_grad():
        for i in tqdm(range(len(grid) - 1), disable=not progress, desc=name, leave=False):
            state["i"] = i
            x = impose(space.project(step(ctx, x, grid[i], grid[i + 1], state), mask), grid[i + 1])
            if callback is not None:
                callback({"i": i, "t": grid[i], "s": grid[i + 1], "x": x, "nfe": ctx.nfe})
        if denoise_final and ctx.alpha_sigma(grid[-1])[1] > 0:
            x = space.project(ctx.x0_eps(x, grid[-1])[0], mask)
        if known is not None:
            x = torch.where(known_mask, known_values, x)
    return x
