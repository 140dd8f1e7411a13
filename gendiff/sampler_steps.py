"""The individual samplers' steps `step(ctx, x, t, s, state) -> x_s` (ctx: sampler_loop.Context), the options each
takes beyond the skeleton's COMMON_OPTIONS, and how many network evaluations each makes."""

from __future__ import annotations

import math

import torch

from .errors import ConfigError

OPTIONS = {  # what each sampler takes beyond sampler_loop.COMMON_OPTIONS
    "ancestral": ("variance",),
    "ddim": ("eta",),
    "euler": (),
    "euler_maruyama": (),
    "pc": ("snr", "corrector_steps"),
    "langevin": ("step_scale", "steps_each"),
    "heun": ("max_ratio",),
    "dpm_solver_pp": ("lower_order_final",),
}


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
        raise ConfigError(
            "sampler 'ancestral': variance='learned' needs a model that learns its variance "
            "(Denoiser(..., learn_sigma=True))"
        )
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
    """Predictor-corrector (Song et al. 2021, Algorithm 1-3): Langevin corrector with target snr, then
    Euler-Maruyama."""
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


NFE = {  # network evaluations for n steps, given the grid's (alpha, sigma) and whether it ends at sigma = 0
    "ancestral": lambda n, o, a, sig, zero: n,
    "ddim": lambda n, o, a, sig, zero: n,
    "euler": lambda n, o, a, sig, zero: n,
    "euler_maruyama": lambda n, o, a, sig, zero: n,
    "pc": lambda n, o, a, sig, zero: (
        n * (1 + int(o.get("corrector_steps", 1))) - int(float(a[0]) == 0) * int(o.get("corrector_steps", 1))
    ),
    "langevin": lambda n, o, a, sig, zero: (n - zero) * int(o.get("steps_each", 5)) + zero + int(float(a[0]) == 0),
    "heun": lambda n, o, a, sig, zero: n + int(_heun_corrects(a[:-1], sig[:-1], a[1:], sig[1:], o).sum()),
    "dpm_solver_pp": lambda n, o, a, sig, zero: n,
}

# the one-network-call steps by sampler name, for a domain that walks the core loop (sampler_loop.run_steps) with
# its own step around one of them (the molecules domain's categorical types: it moves the continuous part with
# the core step and the discrete part itself)
SINGLE_CALL_STEPS = {"ancestral": _ancestral, "ddim": _ddim, "euler": _euler, "euler_maruyama": _euler_maruyama}
