"""The denoising loss (unreduced, then reduced by the space), SNR weightings, the variational bound and bits per
dimension."""

from __future__ import annotations

import math
from typing import cast

import torch

from .device import table_dtype
from .errors import ConfigError
from .forward import _coef, append_dims, q_sample
from .schedules import Schedule
from .spaces import NoiseSpace


def _inner(model):
    """The Denoiser behind DDP (or any wrapper exposing .module)."""
    return getattr(model, "module", model)


class Weighting:
    """A loss weighting written as the weight w(lambda) of the x0-loss ||x0 - x0_hat||^2 (Hang et al. 2023, sec. 3);
    diffusion_loss turns it into the weight of whatever the network predicts, on any schedule.
    `weighting(log_snr, prediction)` gives that weight directly for the eps, x0 and v of a VP schedule."""

    def x0_weight(self, log_snr: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, log_snr: torch.Tensor, prediction: str) -> torch.Tensor:
        snr = log_snr.exp()
        w = self.x0_weight(log_snr)
        scale2 = {"eps": 1 / snr, "x0": torch.ones_like(snr), "v": 1 / (snr + 1)}
        if prediction not in scale2:
            raise ConfigError(
                f"prediction {prediction!r}: VP weights exist for eps, x0 and v; diffusion_loss handles the others"
            )
        return w * scale2[prediction]


class ConstantWeight(Weighting):
    """x0-loss weight 1: the plain x0 regression loss, whatever the network predicts (with EDM preconditioning,
    ||D - x0||^2 instead of EDM's 1/c_out^2-weighted form)."""

    def x0_weight(self, log_snr):
        return torch.ones_like(log_snr)


class SNRWeight(Weighting):
    """x0-loss weight SNR(t): the plain eps-loss L_simple (Ho et al. 2020, eq. 14), whatever is predicted."""

    def x0_weight(self, log_snr):
        return log_snr.exp()


class MinSNRWeight(Weighting):
    """Min-SNR-gamma (Hang et al. 2023, eq. 8): x0-loss weight min(SNR, gamma)."""

    def __init__(self, gamma: float = 5.0):
        if gamma <= 0:
            raise ConfigError(f"min-SNR gamma must be positive, got {gamma}")
        self.gamma = gamma

    def x0_weight(self, log_snr):
        return log_snr.exp().clamp(max=self.gamma)


class ClampedSNRWeight(Weighting):
    """x0-loss weight clamp(SNR, low, high) (the truncated SNR weighting of x0 prediction; EQGAT-diff,
    Le et al. 2024, sec. 3.2)."""

    def __init__(self, low: float = 0.05, high: float = 1.5):
        if not 0 <= low < high:
            raise ConfigError(f"clamped SNR weight needs 0 <= low < high, got {low}, {high}")
        self.low, self.high = low, high

    def x0_weight(self, log_snr):
        return log_snr.exp().clamp(self.low, self.high)


def constant_weight() -> ConstantWeight:
    return ConstantWeight()


def snr_weight() -> SNRWeight:
    return SNRWeight()


def min_snr_weight(gamma: float = 5.0) -> MinSNRWeight:
    return MinSNRWeight(gamma)


def clamped_snr_weight(low: float = 0.05, high: float = 1.5) -> ClampedSNRWeight:
    return ClampedSNRWeight(low, high)


def diffusion_loss(
    denoiser,
    x0: torch.Tensor,
    schedule: Schedule,
    space: NoiseSpace,
    *,
    mask=None,
    cond=None,
    t=None,
    noise=None,
    generator=None,
    weighting=None,
    t_per_sample=None,
) -> torch.Tensor:
    """Per-sample denoising loss; L_simple (Ho et al. 2020, eq. 14) for eps prediction and no weighting.

    `denoiser` is a forward.Denoiser (possibly DDP-wrapped); t is drawn per sample and expanded per row by the
    space (graphs: t[batch]); noise comes from the space; the error is reduced over valid elements by the space.
    """
    inner, x0, x_t, t, noise, out = _noised_prediction(
        denoiser, x0, schedule, space, mask, cond, t, noise, generator, t_per_sample
    )
    out = inner.split(out, x_t)[0] if getattr(inner, "learn_sigma", False) else out
    return space.reduce(_weighted_error(inner, schedule, out, x0, noise, t, weighting), mask)


def _noised_prediction(denoiser, x0, schedule, space, mask, cond, t, noise, generator, t_per_sample=None):
    """Draw t (per sample, expanded per row by the space) and the noise where not given, noise x0 and run the
    network: (inner Denoiser, projected x0, x_t, t, noise, raw network output)."""
    n = space.num_samples(x0, mask)
    if t is None:
        if t_per_sample is None:
            t_per_sample = schedule.sample_t(n, generator=generator, device=x0.device)
        t = space.per_row(t_per_sample.to(x0.device), mask)
    if noise is None:
        noise = space.sample(x0, mask, generator)
    x0 = space.project(x0, mask)
    x_t = space.project(q_sample(x0, t, noise, schedule), mask)
    out = denoiser(x_t, t, mask=mask, cond=cond, output="raw")
    return _inner(denoiser), x0, x_t, t, noise, out


def _weighted_error(inner, schedule, pred, x0, noise, t, weighting):
    """Squared error of the prediction against the parametrization's target, times the loss weight: a Weighting
    is an x0-loss weight times (d x0 / d output)^2 (any parametrization); a callable gets (log SNR, prediction)."""
    alpha, sigma = inner.coefficients(x0, t)
    err = (pred - inner.target(x0, noise, alpha, sigma, t)) ** 2
    if weighting is None:
        return err
    log_snr = append_dims(schedule.log_snr(t).to(x0.device), err.dim())
    if isinstance(weighting, Weighting):
        w = weighting.x0_weight(log_snr).to(err.dtype) * inner.x0_error_scale(alpha, sigma, t).to(err.dtype) ** 2
    else:
        w = append_dims(weighting(schedule.log_snr(t).to(x0.device), inner.prediction).to(err.dtype), err.dim())
    return err * w


def gaussian_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) per element, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def reverse_step_variances(schedule: Schedule, t, s, like: torch.Tensor):
    """(forward-step variance beta_{t|s} = sigma_t^2 - (alpha_t / alpha_s)^2 sigma_s^2, posterior variance
    beta~ = beta_{t|s} sigma_s^2 / sigma_t^2), broadcast over `like`: the two ends of Improved DDPM's learned range
    on the strided chain (Nichol & Dhariwal 2021, sec. 4); any grid, any schedule."""
    a_t, s_t = _coef(schedule, t, like)
    a_s, s_s = _coef(schedule, s, like)
    beta = s_t**2 - (a_t / a_s) ** 2 * s_s**2
    return beta, beta * s_s**2 / s_t**2, (a_t / a_s) * s_s**2 / s_t**2, a_s * beta / s_t**2


def learned_log_variance(frac, beta, post_var, post_floor=None):
    """log sigma^2 = v log beta + (1 - v) log beta~ (Nichol & Dhariwal 2021, eq. 15), with beta~ floored at
    post_floor where it is 0 (the step into sigma = 0: Improved DDPM clips it with the next step's beta~)."""
    if post_floor is not None:
        post_var = torch.where(post_var > 0, post_var, post_floor)
    return frac * torch.log(beta) + (1 - frac) * torch.log(post_var)


def _step_grid(schedule: Schedule, t: torch.Tensor, num_steps: int | None):
    """The previous time s = t - 1/T of each training time (T: the schedule's training steps or num_steps)."""
    T = schedule.num_train_steps or int(num_steps or 1000)
    return (t - 1.0 / T).clamp(min=schedule.t_min), T


def hybrid_loss(
    denoiser,
    x0: torch.Tensor,
    schedule: Schedule,
    space: NoiseSpace,
    *,
    lam: float = 0.001,
    mask=None,
    cond=None,
    t=None,
    noise=None,
    generator=None,
    num_steps: int | None = None,
    decoder: str = "gaussian",
    weighting=None,
) -> torch.Tensor:
    """L_hybrid = L_simple + lambda L_vlb (Nichol & Dhariwal 2021, eq. 16; lambda = 0.001), per sample.

    L_vlb = T * L_{t-1} with L_{t-1} = KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)) in bits per dimension, the mean
    of p from the prediction with its gradient stopped, so only the variance learns from it; at the first step
    L_0 = -log p(x0 | x_1) with the `decoder` ('gaussian' or 'discretized' for 8-bit images)."""
    inner = _inner(denoiser)
    if not getattr(inner, "learn_sigma", False):
        raise ConfigError("hybrid_loss needs a model that learns its variance (Denoiser(..., learn_sigma=True))")
    _, x0, x_t, t, noise, out = _noised_prediction(denoiser, x0, schedule, space, mask, cond, t, noise, generator)
    pred, v = inner.split(out, x_t)
    err = _weighted_error(inner, schedule, pred, x0, noise, t, weighting)
    simple = space.reduce(err, mask)
    vb = vlb_step_term(
        inner, x0, x_t, t, pred.detach(), (v + 1) / 2, schedule, space, mask=mask, num_steps=num_steps, decoder=decoder
    )
    return simple + lam * _step_grid(schedule, t, num_steps)[1] * vb


def vlb_step_term(inner, x0, x_t, t, pred, frac, schedule, space, *, mask=None, num_steps=None, decoder="gaussian"):
    """L_{t-1} in bits per dimension per sample (see hybrid_loss): the Gaussian KL on steps into s > 0 and the
    decoder's negative log-likelihood on the step into s = t_min."""
    t = torch.as_tensor(t, device=x0.device)
    s, T = _step_grid(schedule, t, num_steps)
    x0_hat, _ = inner._to_x0_eps(x_t, t, pred)
    beta, post_var, c_xt, c_x0 = reverse_step_variances(schedule, t, s, x0)
    next_post = reverse_step_variances(schedule, (t + 1.0 / T).clamp(max=schedule.t_max), t, x0)[1]
    logvar = learned_log_variance(frac, beta, post_var, post_floor=next_post)
    mean_p = c_xt * x_t + c_x0 * x0_hat
    mean_q = c_xt * x_t + c_x0 * x0
    kl = gaussian_kl(mean_q, torch.log(post_var.clamp(min=1e-30)), mean_p, logvar)
    if decoder == "discretized":
        nll = discretized_gaussian_nll(x0, mean_p, torch.exp(0.5 * logvar))
    elif decoder == "gaussian":
        nll = 0.5 * (math.log(2 * math.pi) + logvar + (x0 - mean_p) ** 2 * torch.exp(-logvar))
    else:
        raise ConfigError(f"decoder must be 'gaussian' or 'discretized', got {decoder!r}")
    first = append_dims(s <= schedule.t_min, x0.dim()).expand_as(kl)
    per_elem = torch.where(first, nll, kl) / math.log(2.0)
    return space.reduce(per_elem, mask)


def _learned_kl(inner, schedule, x0, x_t, x0_hat, frac, t, s):
    """Per-element KL(q(x_s | x_t, x0) || N(mean from x0_hat, learned variance)) in nats, for s > 0."""
    beta, post_var, c_xt, c_x0 = reverse_step_variances(schedule, t, s, x0)
    logvar = learned_log_variance(frac, beta, post_var)
    return gaussian_kl(c_xt * x_t + c_x0 * x0, torch.log(post_var), c_xt * x_t + c_x0 * x0_hat, logvar)


def _vlb_grid(schedule: Schedule, num_steps: int | None) -> torch.Tensor:
    if schedule.num_train_steps is not None and num_steps in (None, schedule.num_train_steps):
        T = schedule.num_train_steps
        return torch.arange(1, T + 1, dtype=torch.float64) / T
    return torch.linspace(max(schedule.t_min, 1e-5), schedule.t_max, num_steps or 1000, dtype=torch.float64)


def _std_normal_cdf(x):
    return 0.5 * (1 + torch.erf(x / math.sqrt(2)))


def discretized_gaussian_nll(x0, mean, std, bin_width: float = 2 / 255):
    """-log P(x0) for 8-bit data in [-1, 1] under a Gaussian binned into 256 cells (Ho et al. 2020, eq. 13)."""
    upper = torch.where(x0 > 1 - 1e-3, torch.full_like(x0, float("inf")), (x0 + bin_width / 2 - mean) / std)
    lower = torch.where(x0 < -1 + 1e-3, torch.full_like(x0, float("-inf")), (x0 - bin_width / 2 - mean) / std)
    mass = (_std_normal_cdf(upper) - _std_normal_cdf(lower)).clamp(min=1e-12)
    return -mass.log()


@torch.no_grad()
def vlb_terms(
    denoiser,
    x0: torch.Tensor,
    schedule: Schedule,
    space: NoiseSpace,
    *,
    mask=None,
    cond=None,
    num_steps: int | None = None,
    n_t: int | None = 32,
    generator=None,
    decoder: str = "gaussian",
) -> dict:
    """Per-sample terms of the variational bound in nats (Ho et al. 2020, eq. 5; Kingma et al. 2021, eq. 13-16).

    prior: KL(q(x_T | x0) || N(0, prior_std^2)); diffusion: sum_i 0.5 (SNR(s) - SNR(t)) ||x0 - x0_hat(x_t)||^2 over the
    grid, estimated from `n_t` uniformly drawn steps per sample (all steps if n_t is None); reconstruction:
    -log p(x0 | x_{t_1}) with a Gaussian ("gaussian", continuous data) or binned ("discretized", 8-bit images) decoder.
    """
    if decoder not in ("gaussian", "discretized"):
        raise ConfigError(f"decoder must be 'gaussian' or 'discretized', got {decoder!r}")
    inner = _inner(denoiser)
    learned = getattr(inner, "learn_sigma", False)
    grid = _vlb_grid(schedule, num_steps)
    x0 = space.project(x0, mask)
    device, f64 = x0.device, table_dtype(x0.device)
    n = space.num_samples(x0, mask)
    dof = space.dof(x0, mask).to(f64)
    sq = space.sum(x0.to(f64) ** 2, mask)
    a_T, s_T = (float(v) for v in schedule.alpha_sigma(grid[-1]))
    pv = schedule.prior_std() ** 2
    prior = 0.5 * dof * (math.log(pv / s_T**2) + s_T**2 / pv - 1) + 0.5 * a_T**2 * sq / pv

    draw_device = generator.device if generator is not None else device
    snr = schedule.log_snr(grid).exp().to(device, f64)
    grid_d = grid.to(device, f64)
    if n_t is None:
        draws = [torch.full((n,), i, device=device) for i in range(1, grid.numel())]
    else:
        draws = [
            torch.randint(1, grid.numel(), (n,), generator=generator, device=draw_device).to(device) for _ in range(n_t)
        ]
    diffusion = torch.zeros(n, dtype=f64, device=device)
    for idx in draws:
        t = grid_d[idx].to(x0.dtype)
        noise = space.sample(x0, mask, generator)
        t_rows = space.per_row(t, mask)
        x_t = space.project(q_sample(x0, t_rows, noise, schedule), mask)
        if learned:  # KL to the learned-variance reverse step (Nichol & Dhariwal 2021, eq. 10-15)
            x0_hat, _, frac = inner.x0_eps_v(x_t, t_rows, mask=mask, cond=cond)
            s_rows = space.per_row(grid_d[idx - 1].to(x0.dtype), mask)
            diffusion += space.sum(_learned_kl(inner, schedule, x0, x_t, x0_hat, frac, t_rows, s_rows).to(f64), mask)
            continue
        x0_hat = space.project(inner.x0(x_t, t_rows, mask=mask, cond=cond), mask)
        err = space.sum(((x0 - x0_hat) ** 2).to(f64), mask)
        diffusion += 0.5 * (snr[idx - 1] - snr[idx]).to(err) * err
    diffusion *= (grid.numel() - 1) / len(draws)

    t1 = torch.full((n,), float(grid[0]), dtype=x0.dtype, device=x0.device)
    a1, s1 = (float(v) for v in schedule.alpha_sigma(grid[0]))
    t1_rows = space.per_row(t1, mask)
    x_1 = space.project(q_sample(x0, t1_rows, space.sample(x0, mask, generator), schedule), mask)
    std: torch.Tensor | float
    if learned:  # decoder std from the learned variance of the step into t = 0, floored as in Improved DDPM
        mean, _, frac = inner.x0_eps_v(x_1, t1_rows, mask=mask, cond=cond)
        mean = space.project(mean, mask)
        zero = torch.zeros_like(t1_rows)
        beta, post, _, _ = reverse_step_variances(schedule, t1_rows, zero, x0)
        t2 = space.per_row(torch.full((n,), float(grid[1]), dtype=x0.dtype, device=x0.device), mask)
        floor = reverse_step_variances(schedule, t2, t1_rows, x0)[1]
        std = torch.exp(0.5 * learned_log_variance(frac, beta, post, post_floor=floor))
    else:
        mean = space.project(inner.x0(x_1, t1_rows, mask=mask, cond=cond), mask)
        std = s1 / a1
    if decoder == "discretized":
        recon = space.sum(discretized_gaussian_nll(x0, mean, std).to(f64), mask)
    else:
        if learned:
            recon = space.sum((0.5 * ((x0 - mean) / std) ** 2 + torch.log(cast(torch.Tensor, std))).to(f64), mask)
            recon = recon + 0.5 * dof * math.log(2 * math.pi)
        else:
            recon = 0.5 * space.sum(((x0 - mean) ** 2).to(f64), mask) / std**2
            recon = recon + 0.5 * dof * math.log(2 * math.pi * std**2)
    return {"prior": prior, "diffusion": diffusion, "reconstruction": recon, "dof": dof}


def nll_bits_per_dim(denoiser, x0, schedule, space, **kwargs) -> torch.Tensor:
    """Upper bound on the negative log-likelihood per degree of freedom, in bits (per sample)."""
    terms = vlb_terms(denoiser, x0, schedule, space, **kwargs)
    total = terms["prior"] + terms["diffusion"] + terms["reconstruction"]
    return total / (terms["dof"].clamp(min=1) * math.log(2))
