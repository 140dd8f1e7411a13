"""Samplers as pure functions over one shared step skeleton (Design 7).

Each sampler is `name(model, x_T, schedule, space, steps, *, mask, cond, null_cond, guidance, generator, known,
callback, progress, timesteps, **options)` where `model(x_t, t, *, mask, cond)` returns eps; a model with an
`x0_eps` method (every forward.Denoiser) gives x0 and eps together, which also serves schedules where alpha
reaches 0 (flow). The skeleton walks the grid `schedule.timesteps(steps, spacing)` (t_max -> t_min), projects onto
the space after every step, re-imposes known values (inpainting / forecasting), and finally denoises with the x0
prediction when sigma(t_min) > 0. Options a sampler does not take raise ConfigError (OPTIONS lists them).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from tqdm.auto import tqdm

from .errors import ConfigError
from .registry import Registry
from .schedules import Schedule
from .spaces import NoiseSpace

SAMPLERS: Registry = Registry("sampler")


@dataclass
class Context:
    """What a step needs: the guided eps model, the schedule, the space, and the RNG."""

    model: Callable
    schedule: Schedule
    space: NoiseSpace
    mask: object = None
    cond: object = None
    null_cond: object = None
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
            raise ConfigError(f"schedule {self.schedule.name!r} has alpha = 0 at t = {t}: an eps-only model "
                              "cannot give x0 there; wrap the network in Denoiser(prediction='velocity', 'v' or 'x0')")
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
        return (self.options.get("cfg_batch", True) and self.mask is None and isinstance(self.cond, torch.Tensor)
                and isinstance(self.null_cond, torch.Tensor) and self.cond.shape == self.null_cond.shape)

    def noise(self, like: torch.Tensor) -> torch.Tensor:
        return self.space.sample(like, self.mask, self.generator)


def prior_sample(schedule: Schedule, space: NoiseSpace, like: torch.Tensor, mask=None, generator=None) -> torch.Tensor:
    """x_T ~ N(0, (alpha^2 + sigma^2) I) on the space: the prior for unit-variance data at t_max."""
    return space.sample(like, mask, generator) * schedule.prior_std()


COMMON_OPTIONS = ("clip_x0", "cfg_batch", "spacing", "rho")
OPTIONS = {  # what each sampler takes beyond COMMON_OPTIONS
    "ancestral": ("variance",), "ddim": ("eta",), "euler": (), "euler_maruyama": (), "pc": ("snr", "corrector_steps"),
    "langevin": ("step_scale", "steps_each"), "heun": ("max_ratio",), "dpm_solver_pp": ("lower_order_final",),
}
DEFAULT_SPACING = {  # grid spacing when neither `spacing` nor `timesteps` is given (benchmarks/grids.py)
    "ancestral": "uniform", "ddim": "uniform", "euler": "uniform", "euler_maruyama": "uniform", "pc": "uniform",
    "langevin": "uniform", "heun": "auto", "dpm_solver_pp": "auto",
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


def check_options(name: str, options: dict) -> None:
    """ConfigError for an option sampler `name` does not take (no option is ignored silently)."""
    known = COMMON_OPTIONS + OPTIONS.get(name, ())
    for key in options:
        if key not in known:
            raise ConfigError(f"sampler {name!r} has no option {key!r} (it takes: {', '.join(sorted(known))})")


def sampling_grid(name: str, schedule: Schedule, steps: int, spacing: str | None = None, rho: float = 7.0):
    """The decreasing times sampler `name` walks for `steps` steps (its DEFAULT_SPACING unless told; 'auto' is
    auto_spacing(schedule))."""
    spacing = spacing or DEFAULT_SPACING.get(name, "uniform")
    if spacing == "auto":
        spacing = auto_spacing(schedule)
    return schedule.timesteps(steps, spacing, rho)


def _run(step, model, x_T, schedule, space, steps, *, mask=None, cond=None, null_cond=None, guidance=1.0,
         generator=None, known=None, callback=None, progress=False, timesteps=None, denoise_final=True, **options):
    name = step.__name__.lstrip("_")
    check_options(name, options)
    if timesteps is not None and ("spacing" in options or "rho" in options):
        raise ConfigError(f"sampler {name!r}: give either timesteps or spacing/rho, not both")
    grid = (sampling_grid(name, schedule, steps, options.get("spacing"), float(options.get("rho", 7.0)))
            if timesteps is None else torch.as_tensor(timesteps, dtype=torch.float64)).to(torch.float64).tolist()
    if len(grid) < 2 or any(b >= a for a, b in zip(grid, grid[1:])):
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


def _posterior_coefs(ctx, t, s):
    """q(x_s | x_t, x_0) = N(c_xt x_t + c_x0 x_0, var) (Kingma et al. 2021, eqs. 6-8), in float64."""
    a_t, s_t = ctx.alpha_sigma(t)
    a_s, s_s = ctx.alpha_sigma(s)
    a_ts = a_t / a_s
    var_ts = s_t**2 - a_ts**2 * s_s**2
    return a_ts * s_s**2 / s_t**2, a_s * var_ts / s_t**2, var_ts * s_s**2 / s_t**2


def _ancestral(ctx, x, t, s, state):
    """DDPM ancestral step (Ho et al. 2020, Algorithm 2), on any grid via the posterior of the strided chain.

    Option `variance`: 'posterior' (beta~, the default for fixed-variance models), 'beta' (the forward step's
    beta_{t|s}, DDPM's other choice) or 'learned' (the model's v between the two on the strided chain: Improved DDPM,
    Nichol & Dhariwal 2021, sec. 4; the default for a Denoiser with learn_sigma)."""
    x0, _ = ctx.x0_eps(x, t)
    c_xt, c_x0, var = _posterior_coefs(ctx, t, s)
    mean = c_xt * x + c_x0 * x0
    if var <= 0:
        return mean
    learned = getattr(ctx.model, "learn_sigma", False)
    kind = ctx.options.get("variance", "learned" if learned else "posterior")
    a_t, s_t = ctx.alpha_sigma(t)
    a_s, s_s = ctx.alpha_sigma(s)
    beta = s_t**2 - (a_t / a_s) ** 2 * s_s**2
    if kind == "posterior":
        return mean + math.sqrt(var) * ctx.noise(x)
    if kind == "beta":
        return mean + math.sqrt(beta) * ctx.noise(x)
    if kind != "learned":
        raise ConfigError(f"sampler 'ancestral': variance must be 'posterior', 'beta' or 'learned', got {kind!r}")
    if not learned:
        raise ConfigError("sampler 'ancestral': variance='learned' needs a model that learns its variance "
                          "(Denoiser(..., learn_sigma=True))")
    frac = ctx.v
    log_var = frac * math.log(beta) + (1 - frac) * math.log(var)
    return mean + torch.exp(0.5 * log_var).to(x.dtype) * ctx.noise(x)


def _ddim(ctx, x, t, s, state):
    """DDIM (Song et al. 2021a, eq. 12) with eta scaling the posterior standard deviation."""
    eta = float(ctx.options.get("eta", 0.0))
    x0, eps = ctx.x0_eps(x, t)
    a_s, s_s = ctx.alpha_sigma(s)
    std = eta * math.sqrt(max(_posterior_coefs(ctx, t, s)[2], 0.0))
    out = a_s * x0 + math.sqrt(max(s_s**2 - std**2, 0.0)) * eps
    return out + std * ctx.noise(x) if std > 0 else out


def _euler(ctx, x, t, s, state):
    """Euler on the probability-flow ODE in x / alpha against sigma / alpha (Karras et al. 2022, Algorithm 1 without
    the correction): x_s = alpha_s x0 + sigma_s eps, the same as DDIM with eta = 0; on the flow schedule it is
    rectified flow's Euler step x_s = x_t + (s - t) u (Liu et al. 2023)."""
    x0, eps = ctx.x0_eps(x, t)
    a_s, s_s = ctx.alpha_sigma(s)
    return a_s * x0 + s_s * eps


def _pure_noise(ctx, t) -> bool:
    """alpha_t = 0 (flow's t = 1): the SDE drift is infinite there, so the stochastic samplers take the exact
    posterior step q(x_s | x_t, x0_hat) for that one interval."""
    return ctx.alpha_sigma(t)[0] == 0.0


def _sde_coefs(ctx, t, s):
    """Interval drift f dt = log(alpha_t / alpha_s) and diffusion g^2 dt = sigma_t^2 - (alpha_t/alpha_s)^2 sigma_s^2."""
    a_t, s_t = ctx.alpha_sigma(t)
    a_s, s_s = ctx.alpha_sigma(s)
    return math.log(a_t / a_s), max(s_t**2 - (a_t / a_s) ** 2 * s_s**2, 0.0), s_t


def _em_step(ctx, x, t, s, last):
    f_dt, g2_dt, s_t = _sde_coefs(ctx, t, s)
    score = -ctx.eps(x, t) / s_t
    mean = x - f_dt * x + g2_dt * score
    return mean if last else mean + math.sqrt(g2_dt) * ctx.noise(x)


def _euler_maruyama(ctx, x, t, s, state):
    """Euler-Maruyama on the reverse-time SDE (Song et al. 2021, eq. 6); the last step returns the mean."""
    if _pure_noise(ctx, t):
        return _ancestral(ctx, x, t, s, state)
    return _em_step(ctx, x, t, s, state["i"] == state["n"] - 1)


def _langevin_steps(ctx, x, t, n_steps, step_of):
    _, s_t = ctx.alpha_sigma(t)
    for _ in range(n_steps):
        score = -ctx.eps(x, t) / s_t
        z = ctx.noise(x)
        h = step_of(score, z, s_t)
        x = x + h * score + torch.sqrt(2 * h) * z
    return x


def _per_sample_norm(ctx, v):
    return ctx.space.sum(v * v, ctx.mask).sqrt().mean()


def _pc(ctx, x, t, s, state):
    """Predictor-corrector (Song et al. 2021, Algorithm 1-3): Langevin corrector with target snr, then Euler-Maruyama."""
    snr = float(ctx.options.get("snr", 0.16))
    if _pure_noise(ctx, t):
        return _ancestral(ctx, x, t, s, state)
    a_t, _ = ctx.alpha_sigma(t)
    a_s, _ = ctx.alpha_sigma(s)
    ratio2 = (a_t / a_s) ** 2

    def step_of(score, z, s_t):
        h = 2 * ratio2 * (snr * _per_sample_norm(ctx, z) / _per_sample_norm(ctx, score).clamp(min=1e-12)) ** 2
        return h.to(score.dtype)

    x = _langevin_steps(ctx, x, t, int(ctx.options.get("corrector_steps", 1)), step_of)
    return _em_step(ctx, x, t, s, state["i"] == state["n"] - 1)


def _langevin(ctx, x, t, s, state):
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1) at level s, step eps_rel * sigma_s^2."""
    a_t, _ = ctx.alpha_sigma(t)
    a_s, s_s = ctx.alpha_sigma(s)
    if s_s == 0:  # a noise-free level has no score: denoise from the last noisy level (Tweedie)
        return a_s * ctx.x0_eps(x, t)[0]
    x = _ancestral(ctx, x, t, s, state) if a_t == 0 else x * (a_s / a_t)
    step_scale = float(ctx.options.get("step_scale", 0.2))
    n_each = int(ctx.options.get("steps_each", 5))
    return _langevin_steps(ctx, x, s, n_each, lambda score, z, s_t: torch.tensor(step_scale * s_t**2, dtype=z.dtype))


def _ratio(a: float, s: float) -> float:
    """sigma / alpha as a float (infinite where alpha = 0)."""
    return math.inf if a == 0 else s / a


def _heun_corrects(a_t, s_t, a_s, s_s, options):
    """Whether Heun applies its 2nd-order correction on the step t -> s (floats or tensors of grid values).

    Over a step that shrinks sigma/alpha by orders of magnitude (cosine's first step: 2e4 -> 22) the trapezoid rule
    weights the end-point slope over the whole interval and is far worse than Euler, which is exact there for a locally
    constant denoiser; so the correction is kept to steps with a bounded ratio, never taken into sigma = 0 nor out
    of alpha = 0.
    """
    if isinstance(a_t, torch.Tensor):
        r_t = torch.where(a_t > 0, s_t / a_t.clamp(min=1e-300), torch.full_like(s_t, math.inf))
        return (s_s > 0) & (r_t <= float(options.get("max_ratio", 100.0)) * (s_s / a_s))
    return s_s > 0 and _ratio(a_t, s_t) <= float(options.get("max_ratio", 100.0)) * _ratio(a_s, s_s)


def _heun(ctx, x, t, s, state):
    """Heun's 2nd-order method on the probability-flow ODE (Karras et al. 2022, Algorithm 1, deterministic),
    written for any schedule as dy/d(sigma/alpha) = eps with y = x / alpha; the Euler predictor is
    alpha_s x0 + sigma_s eps, which needs no division by alpha_t."""
    a_t, s_t = ctx.alpha_sigma(t)
    a_s, s_s = ctx.alpha_sigma(s)
    x0, d = ctx.x0_eps(x, t)
    x_next = a_s * x0 + s_s * d
    if _heun_corrects(a_t, s_t, a_s, s_s, ctx.options):
        d2 = ctx.eps(x_next, s)
        x_next = (a_s / a_t) * x + a_s * (s_s / a_s - s_t / a_t) * 0.5 * (d + d2)
    return x_next


def _log_ratio(a: float, s: float) -> float:
    """lambda / 2 = log(alpha / sigma), with its infinite ends."""
    if a == 0:
        return -math.inf
    return math.inf if s == 0 else math.log(a / s)


def _dpm_solver_pp(ctx, x, t, s, state):
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2) in data prediction, first order on the first and last step
    (and from alpha = 0, where the first-order step is exact: x_s = sigma_s / sigma_t x_t + alpha_s x0)."""
    a_t, s_t = ctx.alpha_sigma(t)
    a_s, s_s = ctx.alpha_sigma(s)
    x0, _ = ctx.x0_eps(x, t)
    lam_t = _log_ratio(a_t, s_t)
    last = state["i"] == state["n"] - 1
    if s_s == 0:
        return a_s * x0
    D = x0
    lam_s = _log_ratio(a_s, s_s)
    h = lam_s - lam_t
    lower_final = last and ctx.options.get("lower_order_final", state["n"] < 15)
    if state.get("x0_prev") is not None and not lower_final and math.isfinite(state["h_prev"]):
        r = state["h_prev"] / h
        D = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * state["x0_prev"]
    state["x0_prev"], state["h_prev"] = x0, h
    return (s_s / s_t) * x - a_s * math.expm1(-h) * D


_NFE = {  # network evaluations for n steps, given the grid's (alpha, sigma) and whether it ends at sigma = 0
    "ancestral": lambda n, o, a, sig, zero: n,
    "ddim": lambda n, o, a, sig, zero: n,
    "euler": lambda n, o, a, sig, zero: n,
    "euler_maruyama": lambda n, o, a, sig, zero: n,
    "pc": lambda n, o, a, sig, zero: n * (1 + int(o.get("corrector_steps", 1)))
    - int(float(a[0]) == 0) * int(o.get("corrector_steps", 1)),
    "langevin": lambda n, o, a, sig, zero: (n - zero) * int(o.get("steps_each", 5)) + zero + int(float(a[0]) == 0),
    "heun": lambda n, o, a, sig, zero: n + int(_heun_corrects(a[:-1], sig[:-1], a[1:], sig[1:], o).sum()),
    "dpm_solver_pp": lambda n, o, a, sig, zero: n,
}


def _make(name: str, step):
    def sampler(model, x_T, schedule, space, steps, **kwargs):
        return _run(step, model, x_T, schedule, space, steps, **kwargs)

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
    return _NFE[name](int(steps), options, alpha, sigma, zero) + (1 - zero)
