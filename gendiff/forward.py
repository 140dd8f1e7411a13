"""Forward noising q(x_t | x_0), the posterior q(x_s | x_t, x_0), and exact conversions between eps, x0, v and score."""
from __future__ import annotations

import torch
from torch import nn

from .errors import ConfigError
from .schedules import Schedule

PREDICTIONS = ("eps", "x0", "v")


def append_dims(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """Right-pad v with singleton dims up to ndim, so per-row coefficients broadcast over any layout."""
    v = torch.as_tensor(v)
    if v.dim() > ndim:
        raise ConfigError(f"cannot broadcast a {v.dim()}-d coefficient over {ndim}-d data")
    return v.reshape(v.shape + (1,) * (ndim - v.dim()))


def _coef(schedule: Schedule, t: torch.Tensor, like: torch.Tensor):
    t = torch.as_tensor(t, device=like.device)
    if t.dim() == 0:
        t = t.expand(like.shape[0])
    alpha, sigma = schedule.alpha_sigma(t)
    return append_dims(alpha.to(like), like.dim()), append_dims(sigma.to(like), like.dim())


def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """x_t = alpha_t x_0 + sigma_t eps (Ho et al. 2020, eq. 4); the noise is an argument, never drawn here."""
    alpha, sigma = _coef(schedule, t, x0)
    return alpha * x0 + sigma * noise


def posterior(x0: torch.Tensor, x_t: torch.Tensor, t, s, schedule: Schedule) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of q(x_s | x_t, x_0) for s < t (Kingma et al. 2021, eqs. 6-8; Ho et al. 2020, eq. 7)."""
    a_t, s_t = _coef(schedule, t, x_t)
    a_s, s_s = _coef(schedule, s, x_t)
    a_ts = a_t / a_s
    var_ts = s_t**2 - a_ts**2 * s_s**2
    mean = (a_ts * s_s**2 / s_t**2) * x_t + (a_s * var_ts / s_t**2) * x0
    return mean, var_ts * s_s**2 / s_t**2


def eps_to_x0(x_t, eps, alpha, sigma):
    return (x_t - sigma * eps) / alpha


def x0_to_eps(x_t, x0, alpha, sigma):
    return (x_t - alpha * x0) / sigma


def x0_eps_to_v(x0, eps, alpha, sigma):
    """v = alpha eps - sigma x0 (Salimans & Ho 2022, sec. 4), for alpha^2 + sigma^2 = 1; scaled otherwise."""
    return alpha * eps - sigma * x0


def v_to_x0_eps(x_t, v, alpha, sigma):
    """Inverse of x0_eps_to_v given x_t = alpha x0 + sigma eps (exact for any alpha, sigma)."""
    norm = alpha**2 + sigma**2
    x0 = (alpha * x_t - sigma * v) / norm
    eps = (sigma * x_t + alpha * v) / norm
    return x0, eps


def eps_to_score(eps, sigma):
    """grad log p_t(x) = -eps / sigma (Song et al. 2021, app. B)."""
    return -eps / sigma


def score_to_eps(score, sigma):
    return -sigma * score


class Denoiser(nn.Module):
    """Wraps a network predicting eps, x0 or v; calling it always returns eps (Design 6; k-diffusion Denoiser).

    With scale_input the network sees x_t / sqrt(alpha^2 + sigma^2), which has unit scale for unit-variance data on
    every schedule (EDM's c_in, Karras et al. 2022, table 1).
    """

    def __init__(self, net: nn.Module, schedule: Schedule, prediction: str = "eps", scale_input: bool = True):
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ConfigError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        self.net = net
        self.schedule = schedule
        self.prediction = prediction
        self.scale_input = scale_input

    def coefficients(self, x_t: torch.Tensor, t: torch.Tensor):
        return _coef(self.schedule, t, x_t)

    def raw(self, x_t, t, *, mask=None, cond=None):
        """The network's own output (its parametrization)."""
        alpha, sigma = self.coefficients(x_t, t)
        x_in = x_t / torch.sqrt(alpha**2 + sigma**2) if self.scale_input else x_t
        t = torch.as_tensor(t, device=x_t.device)
        t = t.expand(x_t.shape[0]) if t.dim() == 0 else t
        return self.net(x_in, t.to(x_t.dtype), mask=mask, cond=cond)

    def target(self, x0, eps, alpha, sigma):
        """The regression target in the network's parametrization."""
        if self.prediction == "eps":
            return eps
        if self.prediction == "x0":
            return x0
        return x0_eps_to_v(x0, eps, alpha, sigma)

    def x0_eps(self, x_t, t, *, mask=None, cond=None):
        alpha, sigma = self.coefficients(x_t, t)
        out = self.raw(x_t, t, mask=mask, cond=cond)
        if self.prediction == "eps":
            return eps_to_x0(x_t, out, alpha, sigma), out
        if self.prediction == "x0":
            return out, x0_to_eps(x_t, out, alpha, sigma)
        return v_to_x0_eps(x_t, out, alpha, sigma)

    def x0(self, x_t, t, *, mask=None, cond=None):
        return self.x0_eps(x_t, t, mask=mask, cond=cond)[0]

    def forward(self, x_t, t, *, mask=None, cond=None, output: str = "eps"):
        """eps by default; output="raw" gives the network's own prediction (the loss calls this through DDP)."""
        if output == "raw":
            return self.raw(x_t, t, mask=mask, cond=cond)
        if output == "x0":
            return self.x0_eps(x_t, t, mask=mask, cond=cond)[0]
        return self.x0_eps(x_t, t, mask=mask, cond=cond)[1]
