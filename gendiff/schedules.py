"""Noise schedules in one representation: x_t = alpha(t) x_0 + sigma(t) eps for continuous t in [0, 1].

Every schedule is stateless. Discrete DDPM schedules (Ho et al. 2020; Nichol & Dhariwal 2021) are the continuous
form read at t_i = i / T: log alpha_bar is tabulated at the T + 1 grid points and interpolated linearly in between,
so alpha_bar(i / T) equals the cumulative product of (1 - beta) exactly. Values are computed in float64 and returned
in float32 unless t itself is float64.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from typing import Any, cast

import torch

from .device import table_dtype
from .errors import ConfigError
from .registry import Registry

SCHEDULES: Registry = Registry("schedule")


SPACINGS = ("uniform", "log_snr", "karras")
SIGMA_RATIO_RANGE = (2e-3, 2e3)  # sigma/alpha where the schedule itself reaches 0 or infinity (flow's ends)


def _as_t(t) -> tuple[torch.Tensor, torch.dtype]:
    """t in float64 on its own device (float32 on MPS, which has no float64) and the dtype to return."""
    t = torch.as_tensor(t)
    out_dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    return t.to(table_dtype(t.device)), out_dtype


class Schedule(abc.ABC):
    """Base class: subclasses define `_log_alpha_sigma(t)` in float64; everything else derives from it."""

    name = "schedule"
    t_min = 0.0
    t_max = 1.0
    num_train_steps: int | None = None  # discrete schedules: T

    @abc.abstractmethod
    def _log_alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log alpha_t, log sigma_t) in float64."""

    def alpha_sigma(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha_t, sigma_t), same shape as t."""
        t64, dtype = _as_t(t)
        log_a, log_s = self._log_alpha_sigma(t64)
        return log_a.exp().to(dtype), log_s.exp().to(dtype)

    def log_snr(self, t) -> torch.Tensor:
        """lambda_t = log(alpha_t^2 / sigma_t^2) (Kingma et al. 2021, eq. 3)."""
        t64, dtype = _as_t(t)
        log_a, log_s = self._log_alpha_sigma(t64)
        return (2 * (log_a - log_s)).to(dtype)

    def alpha_sigma_dot(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """(d alpha / dt, d sigma / dt) by autograd through the float64 definition (velocity prediction needs it)."""
        t64, dtype = _as_t(t)
        with torch.enable_grad():
            tt = t64.detach().clone().requires_grad_(True)
            log_a, log_s = self._log_alpha_sigma(tt)
            a, s = log_a.exp(), log_s.exp()
            (da,) = torch.autograd.grad(a.sum(), tt, retain_graph=True)
            (ds,) = torch.autograd.grad(s.sum(), tt)
        return da.to(dtype), ds.to(dtype)

    def timesteps(self, n: int, spacing: str = "uniform", rho: float = 7.0) -> torch.Tensor:
        """n + 1 decreasing times from t_max to t_min, in float64 on the CPU (the grid steers the loop; float32 would
        put 0.999 between two training steps, where the tabulated alpha is interpolated).

        spacing 'uniform' is uniform in t; 'log_snr' is uniform in log-SNR (Lu et al. 2022, DPM-Solver sec. 3.3);
        'karras' is EDM's rho-spacing of sigma/alpha (Karras et al. 2022, eq. 5). For the last two, when sigma(t_min)
        is 0 the first n points span t_max to the first noisy time and the last step goes to t_min; where sigma/alpha
        is 0 or infinite at an end (flow), the span is clamped to SIGMA_RATIO_RANGE and the end itself kept. Discrete
        schedules round to their training steps, keeping the grid strictly decreasing."""
        n = int(n)
        if n < 1:
            raise ConfigError(f"number of steps must be >= 1, got {n}")
        if spacing not in SPACINGS:
            raise ConfigError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
        if spacing == "uniform":
            grid = torch.linspace(self.t_max, self.t_min, n + 1, dtype=torch.float64)
        else:
            grid = self._spaced_grid(n, spacing, float(rho))
        if self.num_train_steps is not None:
            grid = self._round_to_train_steps(grid, n)
        return grid

    def sigma_ratio(self, t) -> torch.Tensor:
        """sigma_t / alpha_t (EDM's sigma; exp(-log_snr / 2)), in float64."""
        t64 = torch.as_tensor(t, dtype=torch.float64)
        log_a, log_s = self._log_alpha_sigma(t64)
        return (log_s - log_a).exp()

    def t_of_sigma_ratio(self, ratio: torch.Tensor) -> torch.Tensor:
        """Inverse of sigma_ratio on [t_min, t_max] by bisection (sigma/alpha increases with t on every schedule)."""
        ratio = torch.as_tensor(ratio, dtype=torch.float64)
        lo = torch.full_like(ratio, float(self.t_min))
        hi = torch.full_like(ratio, float(self.t_max))
        target = ratio.log()
        for _ in range(80):
            mid = 0.5 * (lo + hi)
            up = self.sigma_ratio(mid).log() < target
            lo, hi = torch.where(up, mid, lo), torch.where(up, hi, mid)
        return 0.5 * (lo + hi)

    def _first_noisy_time(self) -> float:
        if float(self.sigma_ratio(self.t_min)) > 0:
            return float(self.t_min)
        if self.num_train_steps is not None:
            return 1.0 / self.num_train_steps
        return float(self.t_of_sigma_ratio(torch.tensor(SIGMA_RATIO_RANGE[0])))

    def _spaced_grid(self, n: int, spacing: str, rho: float) -> torch.Tensor:
        lo_t = self._first_noisy_time()
        ends_at_zero = lo_t > self.t_min
        m = n if ends_at_zero else n + 1  # points spaced in the chosen variable
        r_hi = float(self.sigma_ratio(self.t_max))
        r_lo = float(self.sigma_ratio(lo_t))
        r_hi = min(max(r_hi, SIGMA_RATIO_RANGE[0]), SIGMA_RATIO_RANGE[1])
        r_lo = min(max(r_lo, SIGMA_RATIO_RANGE[0]), r_hi)
        u = torch.linspace(0, 1, m, dtype=torch.float64)
        if spacing == "log_snr":
            ratios = torch.exp(math.log(r_hi) + u * (math.log(r_lo) - math.log(r_hi)))
        else:
            ratios = (r_hi ** (1 / rho) + u * (r_lo ** (1 / rho) - r_hi ** (1 / rho))) ** rho
        grid = self.t_of_sigma_ratio(ratios) if m > 1 else torch.tensor([float(self.t_max)], dtype=torch.float64)
        grid[0] = float(self.t_max)
        if m > 1:
            grid[-1] = lo_t
        if ends_at_zero:
            grid = torch.cat([grid, torch.tensor([float(self.t_min)], dtype=torch.float64)])
        return grid

    def _round_to_train_steps(self, grid: torch.Tensor, n: int) -> torch.Tensor:
        """Round to i / T, keeping the grid strictly decreasing where a spacing crowds several points into one
        training step: each point is clamped to the window its position allows, then pushed below its
        predecessor."""
        T = cast(int, self.num_train_steps)  # called for discrete schedules only
        top, bottom = round(self.t_max * T), round(self.t_min * T)
        if top - bottom < n:
            raise ConfigError(f"{n} steps exceed the {T} steps of schedule {self.name!r}")
        idx = torch.round(grid * T).long().tolist()
        last = len(idx) - 1
        idx = [min(max(v, bottom + (last - k)), top - k) for k, v in enumerate(idx)]
        for k in range(1, len(idx)):
            idx[k] = min(idx[k], idx[k - 1] - 1)
        return torch.tensor(idx, dtype=torch.float64) / T

    def sample_t(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """Training times: uniform on [t_min, t_max]; discrete schedules draw i in {1..T} and return i / T."""
        if self.num_train_steps is not None:
            i = torch.randint(1, self.num_train_steps + 1, (n,), generator=generator, device=device)
            return i.to(torch.float32) / self.num_train_steps
        u = torch.rand(n, generator=generator, device=device)
        return self.t_min + (self.t_max - self.t_min) * u

    def prior_std(self) -> float:
        """Standard deviation of x_{t_max} for unit-variance data: sqrt(alpha^2 + sigma^2)."""
        a, s = self.alpha_sigma(torch.tensor(self.t_max, dtype=torch.float64))
        return float(torch.sqrt(a * a + s * s))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


class TabulatedSchedule(Schedule):
    """alpha_bar tabulated on t_i = i / T (i = 0..T), log alpha_bar and log(1 - alpha_bar) interpolated linearly."""

    num_train_steps: int

    def __init__(self, alphas_cumprod: torch.Tensor, name: str, betas: torch.Tensor | None = None):
        abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        self.num_train_steps = abar.numel()
        self.name = name
        self.alphas_cumprod = abar
        self.betas = betas if betas is not None else 1 - abar / torch.cat([abar.new_ones(1), abar[:-1]])
        full = torch.cat([abar.new_ones(1), abar])
        self._log_abar = full.log()
        self._log_1m_abar = torch.log1p(-full.clamp(max=1.0))  # -inf at t = 0 (sigma = 0)
        self._tables: dict = {}

    def tables(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(log alpha_bar, log(1 - alpha_bar)) on `device`, cached per device (Design 13)."""
        device = torch.device(device)
        key = str(device)
        if key not in self._tables:
            dtype = table_dtype(device)
            self._tables[key] = (self._log_abar.to(device, dtype), self._log_1m_abar.to(device, dtype))
        return self._tables[key]

    def _interp(self, table: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        u = t.clamp(0.0, 1.0) * self.num_train_steps
        # times i / T given in float32 (0.999 -> 0.99900001) land exactly on their training step, not 1e-5 past it
        u = torch.where((u - u.round()).abs() < 1e-3, u.round(), u)
        lo = u.floor().clamp(max=self.num_train_steps - 1)
        w = u - lo
        lo = lo.long()
        a, b = table[lo], table[lo + 1]
        out = torch.where(w > 0, a + w * (b - a), a)
        return torch.where(w >= 1, b, out)

    def _log_alpha_sigma(self, t):
        log_abar, log_1m_abar = self.tables(t.device)
        return 0.5 * self._interp(log_abar, t), 0.5 * self._interp(log_1m_abar, t)


def _betas_to_schedule(betas: torch.Tensor, name: str) -> TabulatedSchedule:
    betas = betas.to(torch.float64)
    return TabulatedSchedule(torch.cumprod(1 - betas, 0), name, betas=betas)


@SCHEDULES.register("linear")
def linear(num_train_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> TabulatedSchedule:
    """DDPM linear betas (Ho et al. 2020, sec. 4): beta_1 = 1e-4 ... beta_T = 0.02, T = 1000."""
    betas = torch.linspace(beta_start, beta_end, num_train_steps, dtype=torch.float32)
    return _betas_to_schedule(betas, "linear")


@SCHEDULES.register("scaled_linear")
def scaled_linear(num_train_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> TabulatedSchedule:
    """Linear in sqrt(beta) (latent-diffusion 'scaled_linear'); the diffusers defaults for beta_start/beta_end."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_steps, dtype=torch.float32) ** 2
    return _betas_to_schedule(betas, "scaled_linear")


@SCHEDULES.register("cosine")
def cosine(num_train_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> TabulatedSchedule:
    """Cosine alpha_bar (Nichol & Dhariwal 2021, eq. 17) with beta clipped at 0.999."""
    f = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    T = num_train_steps
    betas = torch.tensor([min(1 - f((i + 1) / T) / f(i / T), max_beta) for i in range(T)], dtype=torch.float64)
    return _betas_to_schedule(betas, "cosine")


@SCHEDULES.register("polynomial")
def polynomial(
    num_train_steps: int = 1000, power: float = 2.0, s: float = 1e-5, clip: float = 0.001
) -> TabulatedSchedule:
    """EDM-for-molecules schedule (Hoogeboom et al. 2022, app. B): alpha^2 = (1 - t^p)^2, ratios clipped,
    precision s."""
    T = num_train_steps
    x = torch.linspace(0, T, T + 1, dtype=torch.float64)
    a2 = (1 - (x / T) ** power) ** 2
    a2 = torch.cat([torch.ones(1, dtype=torch.float64), a2])
    step = (a2[1:] / a2[:-1]).clamp(min=clip, max=1.0)
    a2 = torch.cumprod(step, 0)
    a2 = (1 - 2 * s) * a2 + s
    return TabulatedSchedule(a2[1:], "polynomial")


@dataclass(repr=False)
class VPSDE(Schedule):
    """Variance-preserving SDE (Song et al. 2021, eq. 11): beta(t) = beta_min + t (beta_max - beta_min)."""

    beta_min: float = 0.1
    beta_max: float = 20.0
    t_min: float = 1e-3
    name: str = field(default="vp")

    def _log_alpha(self, t):
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def _log_alpha_sigma(self, t):
        log_a = self._log_alpha(t)
        return log_a, 0.5 * torch.log(-torch.expm1(2 * log_a))


@dataclass(repr=False)
class SubVPSDE(VPSDE):
    """sub-VP SDE (Song et al. 2021, eq. 17): same mean as VP, sigma_t = 1 - alpha_t^2."""

    name: str = field(default="subvp")

    def _log_alpha_sigma(self, t):
        log_a = self._log_alpha(t)
        return log_a, torch.log(-torch.expm1(2 * log_a))


@dataclass(repr=False)
class VESDE(Schedule):
    """Variance-exploding SDE (Song et al. 2021, eq. 9): alpha = 1, sigma_t = sigma_min (sigma_max / sigma_min)^t."""

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    name: str = field(default="ve")

    def _log_alpha_sigma(self, t):
        log_s = math.log(self.sigma_min) + t * (math.log(self.sigma_max) - math.log(self.sigma_min))
        return torch.zeros_like(t), log_s


@dataclass(repr=False)
class EDMSchedule(Schedule):
    """EDM sigma ladder (Karras et al. 2022, eq. 5): sigma(t) = (smin^(1/rho) + t (smax^(1/rho) - smin^(1/rho)))^rho."""

    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    name: str = field(default="edm")

    def _log_alpha_sigma(self, t):
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        return torch.zeros_like(t), self.rho * torch.log(lo + t * (hi - lo))


@dataclass(repr=False)
class FlowSchedule(Schedule):
    """Rectified flow / conditional optimal-transport path (Liu et al. 2023; Lipman et al. 2023, eq. 20 with
    sigma_min = 0): alpha_t = 1 - t, sigma_t = t, so x_1 is pure noise (alpha = 0: train it with velocity, v or x0
    prediction, never eps)."""

    name: str = field(default="flow")

    def _log_alpha_sigma(self, t):
        return torch.log1p(-t), torch.log(t)

    def alpha_sigma_dot(self, t):
        t64, dtype = _as_t(t)
        return torch.full_like(t64, -1.0).to(dtype), torch.ones_like(t64).to(dtype)


SCHEDULES.register("vp")(VPSDE)
SCHEDULES.register("subvp")(SubVPSDE)
SCHEDULES.register("ve")(VESDE)
SCHEDULES.register("edm")(EDMSchedule)
SCHEDULES.register("flow")(FlowSchedule)


def get_schedule(name: str | Schedule, **kwargs) -> Schedule:
    """Build a schedule by registry name; a Schedule instance passes through."""
    if isinstance(name, Schedule):
        return name
    try:
        return SCHEDULES.get(name)(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"schedule {name!r}: {exc}") from None


def list_schedules() -> list[str]:
    return SCHEDULES.names()


def schedule_config(schedule: Schedule) -> dict:
    """A plain dict that `get_schedule(**cfg)` rebuilds (stored in checkpoints instead of pickled objects)."""
    cfg: dict[str, Any] = {"name": schedule.name}
    if isinstance(schedule, TabulatedSchedule):
        cfg["num_train_steps"] = schedule.num_train_steps
    else:
        for k, v in vars(schedule).items():
            if k != "name" and isinstance(v, (int, float)):
                cfg[k] = v
    return cfg


def schedule_from_config(cfg: dict) -> Schedule:
    cfg = dict(cfg)
    return get_schedule(cfg.pop("name"), **cfg)
