"""Forward noising q(x_t | x_0), the posterior q(x_s | x_t, x_0), and exact conversions between eps, x0, v and score."""

from __future__ import annotations

import torch
from torch import nn

from .errors import ConfigError
from .schedules import Schedule

PREDICTIONS = ("eps", "x0", "v", "velocity")
PRECONDITIONS = (None, "edm")


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


def x0_eps_to_velocity(x0, eps, alpha_dot, sigma_dot):
    """Flow matching's u_t = dx_t/dt = alpha'(t) x0 + sigma'(t) eps (Lipman et al. 2023, eq. 15); eps - x0 on flow."""
    return alpha_dot * x0 + sigma_dot * eps


def velocity_to_x0_eps(x_t, u, alpha, sigma, alpha_dot, sigma_dot):
    """Solve x_t = alpha x0 + sigma eps, u = alpha' x0 + sigma' eps for (x0, eps); on flow x0 = x_t - t u."""
    det = alpha * sigma_dot - sigma * alpha_dot
    return (sigma_dot * x_t - sigma * u) / det, (alpha * u - alpha_dot * x_t) / det


def edm_coefficients(alpha, sigma, sigma_data: float):
    """EDM preconditioning (Karras et al. 2022, table 1) for x_t = alpha x0 + sigma eps, i.e. for sigma/alpha in
    EDM's terms with the input x_t / alpha: (c_skip, c_out, c_in) multiply x_t, the network output and x_t."""
    norm = torch.sqrt(alpha**2 * sigma_data**2 + sigma**2)
    return alpha * sigma_data**2 / norm**2, sigma * sigma_data / norm, 1 / norm


def eps_to_score(eps, sigma):
    """grad log p_t(x) = -eps / sigma (Song et al. 2021, app. B)."""
    return -eps / sigma


def score_to_eps(score, sigma):
    return -sigma * score


class Denoiser(nn.Module):
    """Wraps a network predicting eps, x0, v or the flow velocity; calling it returns eps (Design 6; k-diffusion).

    prediction: 'eps', 'x0', 'v' (alpha eps - sigma x0, Salimans & Ho 2022) or 'velocity' (dx_t/dt, flow matching).
    precondition='edm': the network F gives x0 = c_skip x_t + c_out F(c_in x_t, c_noise) (Karras et al. 2022,
    table 1, for any schedule) and is trained on EDM's target (x0 - c_skip x_t) / c_out; `sigma_data` is the data's
    standard deviation; `noise_input` 't' feeds the schedule's time, 'c_noise' EDM's log(sigma / alpha) / 4.
    Without preconditioning, scale_input feeds x_t / sqrt(alpha^2 + sigma^2), of unit scale for unit-variance data.
    """

    def __init__(
        self,
        net: nn.Module,
        schedule: Schedule,
        prediction: str = "eps",
        scale_input: bool = True,
        precondition: str | None = None,
        sigma_data: float = 1.0,
        noise_input: str = "t",
        learn_sigma: bool = False,
    ):
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ConfigError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        if precondition not in PRECONDITIONS:
            raise ConfigError(f"precondition must be one of {PRECONDITIONS}, got {precondition!r}")
        if noise_input not in ("t", "c_noise"):
            raise ConfigError(f"noise_input must be 't' or 'c_noise', got {noise_input!r}")
        if precondition is not None:
            prediction = "x0"
        if sigma_data <= 0:
            raise ConfigError(f"sigma_data must be positive, got {sigma_data}")
        if prediction == "eps" and float(schedule.alpha_sigma(float(schedule.t_max))[0]) == 0.0:
            raise ConfigError(
                f"schedule {schedule.name!r} has alpha = 0 at t = {schedule.t_max}: x0 cannot be "
                "recovered from an eps prediction there; use prediction='velocity', 'v' or 'x0'"
            )
        self.net = net
        self.schedule = schedule
        self.prediction = prediction
        self.scale_input = scale_input
        self.precondition = precondition
        self.sigma_data = float(sigma_data)
        self.noise_input = noise_input
        self.learn_sigma = bool(learn_sigma)

    def config(self) -> dict:
        """The parametrization as plain values (stored in run configs)."""
        return {
            "prediction": self.prediction,
            "scale_input": self.scale_input,
            "precondition": self.precondition,
            "sigma_data": self.sigma_data,
            "noise_input": self.noise_input,
            "learn_sigma": self.learn_sigma,
        }

    def split(self, out: torch.Tensor, x_t: torch.Tensor):
        """(prediction, v) of a learn_sigma network's output: dim 1 holds the prediction's channels (features per
        node for graphs) and then as many v channels, or one v shared by them (Nichol & Dhariwal 2021, sec. 3.1)."""
        if not self.learn_sigma:
            return out, None
        c = x_t.shape[1]
        if out.shape[1] not in (c + 1, 2 * c):
            raise ConfigError(
                f"learn_sigma: the network returned {out.shape[1]} channels on dim 1 for {c} data "
                f"channels; expected {2 * c} (a v per channel) or {c + 1} (one shared v)"
            )
        pred, v = out[:, :c], out[:, c:]
        return pred, v

    def coefficients(self, x_t: torch.Tensor, t: torch.Tensor):
        return _coef(self.schedule, t, x_t)

    def _rates(self, x_t, t):
        t = torch.as_tensor(t, device=x_t.device)
        t = t.expand(x_t.shape[0]) if t.dim() == 0 else t
        da, ds = self.schedule.alpha_sigma_dot(t)
        return append_dims(da.to(x_t), x_t.dim()), append_dims(ds.to(x_t), x_t.dim())

    def raw(self, x_t, t, *, mask=None, cond=None):
        """The network's own output (its parametrization)."""
        alpha, sigma = self.coefficients(x_t, t)
        t = torch.as_tensor(t, device=x_t.device)
        t = t.expand(x_t.shape[0]) if t.dim() == 0 else t
        if self.precondition == "edm":
            x_in = x_t * edm_coefficients(alpha, sigma, self.sigma_data)[2]
        else:
            x_in = x_t / torch.sqrt(alpha**2 + sigma**2) if self.scale_input else x_t
        t_in = t.to(x_t.dtype)
        if self.noise_input == "c_noise":
            t_in = 0.25 * (self.schedule.log_snr(t).to(x_t.dtype) * -0.5)
        return self.net(x_in, t_in, mask=mask, cond=cond)

    def target(self, x0, eps, alpha, sigma, t=None):
        """The regression target in the network's parametrization (t: the times, for 'velocity')."""
        if self.precondition == "edm":
            c_skip, c_out, _ = edm_coefficients(alpha, sigma, self.sigma_data)
            x_t = alpha * x0 + sigma * eps
            return (x0 - c_skip * x_t) / c_out
        if self.prediction == "eps":
            return eps
        if self.prediction == "x0":
            return x0
        if self.prediction == "v":
            return x0_eps_to_v(x0, eps, alpha, sigma)
        if t is None:
            raise ConfigError("Denoiser.target needs t for prediction='velocity'")
        return x0_eps_to_velocity(x0, eps, *self._rates(x0, t))

    def x0_error_scale(self, alpha, sigma, t=None):
        """|error in x0| / |error in the raw output|: turns an x0-loss weight into the raw loss's weight."""
        if self.precondition == "edm":
            return edm_coefficients(alpha, sigma, self.sigma_data)[1]
        if self.prediction == "eps":
            return sigma / alpha
        if self.prediction == "x0":
            return torch.ones_like(alpha)
        if self.prediction == "v":
            return sigma / (alpha**2 + sigma**2)
        da, ds = self._rates(alpha, t)
        return sigma / (alpha * ds - sigma * da).abs()

    def x0_eps(self, x_t, t, *, mask=None, cond=None):
        return self.x0_eps_v(x_t, t, mask=mask, cond=cond)[:2]

    def x0_eps_v(self, x_t, t, *, mask=None, cond=None):
        """(x0, eps, v): v in [0, 1] interpolates the reverse step's log variance between the posterior's and the
        forward step's (Improved DDPM's learned range, Nichol & Dhariwal 2021, eq. 15); None without learn_sigma."""
        out, v = self.split(self.raw(x_t, t, mask=mask, cond=cond), x_t)
        x0, eps = self._to_x0_eps(x_t, t, out)
        return x0, eps, None if v is None else (v + 1) / 2

    def _to_x0_eps(self, x_t, t, out):
        alpha, sigma = self.coefficients(x_t, t)
        if self.precondition == "edm":
            c_skip, c_out, _ = edm_coefficients(alpha, sigma, self.sigma_data)
            x0 = c_skip * x_t + c_out * out
            return x0, x0_to_eps(x_t, x0, alpha, sigma)
        if self.prediction == "eps":
            return eps_to_x0(x_t, out, alpha, sigma), out
        if self.prediction == "x0":
            return out, x0_to_eps(x_t, out, alpha, sigma)
        if self.prediction == "v":
            return v_to_x0_eps(x_t, out, alpha, sigma)
        return velocity_to_x0_eps(x_t, out, alpha, sigma, *self._rates(x_t, t))

    def x0(self, x_t, t, *, mask=None, cond=None):
        return self.x0_eps(x_t, t, mask=mask, cond=cond)[0]

    def forward(self, x_t, t, *, mask=None, cond=None, output: str = "eps"):
        """eps by default; output="raw" gives the network's own prediction (the loss calls this through DDP),
        "x0" the clean-data prediction, "x0_eps" both and "x0_eps_v" the three of x0_eps_v."""
        if output == "raw":
            return self.raw(x_t, t, mask=mask, cond=cond)
        if output == "x0_eps":
            return self.x0_eps(x_t, t, mask=mask, cond=cond)
        if output == "x0_eps_v":
            return self.x0_eps_v(x_t, t, mask=mask, cond=cond)
        if output == "x0":
            return self.x0_eps(x_t, t, mask=mask, cond=cond)[0]
        return self.x0_eps(x_t, t, mask=mask, cond=cond)[1]
