"""Windows of past context plus future horizon as diffusion inputs: x0, MaskedSpace mask and conditioning channels."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from gendiff.errors import DataError
from gendiff.forward import Denoiser, append_dims
from gendiff.io import torch_load_safe
from gendiff.schedules import schedule_from_config
from gendiff.spaces import MaskedSpace

from .data import Codec
from .unet1d import UNet1D

CALENDAR = 4


def cond_channels(num_features: int) -> int:
    return num_features + 1 + CALENDAR


def anchor_of(window: torch.Tensor, context: int) -> torch.Tensor:
    """The last context step (B, C) of windows (B, L, C), NaN -> 0: forecasts are generated as departures from it."""
    last = window[:, context - 1]
    return torch.where(torch.isfinite(last), last, torch.zeros((), dtype=last.dtype))


class ARBase:
    """Per-feature AR(p) mean forecast of anomalies, rolled from the context over the horizon.

    With `base="linear"` the network generates the departures of the future from this deterministic forecast (as
    CorrDiff generates residuals of a regression model): the linear part of the predictability is exact from the
    start, and the network's capacity goes to the state-dependent, spatially correlated error distribution."""

    def __init__(self, phi, scale=None):
        self.phi = torch.as_tensor(np.asarray(phi), dtype=torch.float32)  # (C, p), lag 1 first
        self.scale = None if scale is None else torch.as_tensor(np.asarray(scale), dtype=torch.float32)  # (H, C)

    @classmethod
    def fit(cls, values: np.ndarray, index: np.ndarray, order: int = 2, starts: np.ndarray | None = None,
            context: int | None = None, horizon: int | None = None) -> "ARBase":
        """Least-squares AR(order) per feature on values[index]; with training window `starts`, also the RMS error
        of its forecast per lead and feature (`scale`, H x C), by which the generated departures are divided so
        that the network sees unit-variance targets at every lead (the diffusion schedules assume unit-variance
        data; the departures grow from a few hundredths of a standard deviation at the first step)."""
        from .baselines import fit_ar

        phi, _ = fit_ar(np.asarray(values[index], dtype=np.float64), order)
        ar = cls(phi)
        if starts is not None:
            sq, n = np.zeros((horizon, values.shape[1])), np.zeros((horizon, values.shape[1]))
            for chunk in np.array_split(np.asarray(starts), max(1, len(starts) // 256)):
                w = torch.from_numpy(np.stack([values[s:s + context + horizon] for s in chunk]))
                err = (w - ar.window_base(w, context))[:, context:].double().numpy()
                ok = np.isfinite(err)
                sq += (np.where(ok, err, 0.0) ** 2).sum(0)
                n += ok.sum(0)
            rms = np.sqrt(sq / np.maximum(n, 1))
            floor = max(1e-3, 1e-2 * float(np.nanmax(rms)))
            ar.scale = torch.from_numpy(np.where(n > 0, np.maximum(rms, floor), 1.0)).float()
        return ar

    @property
    def order(self) -> int:
        return int(self.phi.shape[1])

    def window_base(self, window: torch.Tensor, context: int) -> torch.Tensor:
        """(B, L, C): the context as given (NaN -> 0), then the AR mean from the last `order` context steps."""
        known = torch.nan_to_num(window[:, :context], nan=0.0)
        if context < self.order:
            raise DataError(f"the AR base needs a context of at least {self.order} steps, got {context}")
        phi = self.phi.to(known)
        lags = [known[:, context - 1 - k] for k in range(self.order)]
        steps = []
        for _ in range(window.shape[1] - context):
            nxt = sum(phi[:, k] * lags[k] for k in range(self.order))
            steps.append(nxt)
            lags = [nxt] + lags[:-1]
        return torch.cat([known, torch.stack(steps, 1)], 1) if steps else known

    def window_scale(self, length: int, context: int) -> torch.Tensor:
        """(L, C): 1 over the context, `scale` over the horizon (ones without a fitted scale)."""
        out = torch.ones(length, self.phi.shape[0])
        if self.scale is not None:
            if length - context != self.scale.shape[0]:
                raise DataError(f"AR scale was fitted for a {self.scale.shape[0]}-step horizon, not {length - context}")
            out[context:] = self.scale
        return out

    def state(self) -> dict:
        return {"phi": self.phi, **({} if self.scale is None else {"scale": self.scale})}

    @classmethod
    def from_state(cls, state: dict) -> "ARBase":
        scale = state.get("scale")
        return cls(state["phi"].numpy(), None if scale is None else scale.numpy())


def make_inputs(window: torch.Tensor, calendar: torch.Tensor, context: int, valid: torch.Tensor,
                residual: bool = True, base: torch.Tensor | None = None, scale: torch.Tensor | None = None):
    """window (B, L, C) normalised with NaN; first `context` steps known -> x0, mask, cond, each (B, *, L).

    x0: the window (NaN filled by 0), taken relative to `base` (B, L, C) when given (ARBase.window_base), else to its
    last context step when `residual` (the model generates departures from persistence, as tendency-predicting
    weather models do), and divided by `scale` (L, C) when given (ARBase.window_scale); mask: finite horizon
    entries of features that are ever valid (what is generated and scored); cond: [context values as given (0 where unknown), context flag per step, calendar features], so the
    network sees the absolute state it starts from.
    """
    if base is not None:
        target = window - base
        if scale is not None:
            target = target / scale.to(target)
    else:
        target = window - anchor_of(window, context)[:, None, :] if residual else window
    window, target = window.transpose(1, 2), target.transpose(1, 2)  # (B, C, L)
    finite = torch.isfinite(window)
    zero = torch.zeros((), dtype=window.dtype)
    x0 = torch.where(finite, target, zero)
    in_context = torch.zeros(window.shape[-1], dtype=torch.bool, device=window.device)
    in_context[:context] = True
    known = finite & in_context
    mask = finite & ~in_context & valid[:, None]
    flag = in_context.to(x0.dtype).expand(window.shape[0], 1, -1)
    cond = torch.cat([torch.where(known, window, zero), flag, calendar.transpose(1, 2).to(x0.dtype)], dim=1)
    return x0, mask, cond


class WindowDataset(torch.utils.data.Dataset):
    """All windows of length context + horizon starting at `starts` over normalised values (T, C)."""

    def __init__(self, values: np.ndarray, calendar: np.ndarray, starts: np.ndarray, context: int, horizon: int,
                 residual: bool = True, base: ARBase | None = None):
        self.values, self.calendar, self.residual = torch.from_numpy(values), torch.from_numpy(calendar), residual
        self.base = base
        self.starts, self.context, self.length = np.asarray(starts), context, context + horizon
        self.scale = None if base is None else base.window_scale(self.length, context)  # the same for every window
        self.valid = torch.from_numpy(np.isfinite(values).any(0))

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int):
        s = int(self.starts[i])
        window = self.values[None, s:s + self.length]
        base = None if self.base is None else self.base.window_base(window, self.context)
        x0, mask, cond = make_inputs(window, self.calendar[None, s:s + self.length], self.context, self.valid,
                                     self.residual, base, self.scale)
        return {"x0": x0[0], "mask": mask[0], "cond": cond[0]}


def window_starts(n_times: int, index: np.ndarray, length: int, values: np.ndarray, context: int) -> np.ndarray:
    """Window starts whose whole window lies inside the (contiguous) index and whose horizon has data."""
    inside = np.zeros(n_times, dtype=bool)
    inside[index] = True
    starts = []
    for s in range(n_times - length + 1):
        if inside[s:s + length].all() and np.isfinite(values[s + context:s + length]).any():
            starts.append(s)
    return np.asarray(starts, dtype=np.int64)


class HourlyClimatology:
    """Per-feature mean by hour of day over the training period (normalised units), subtracted before the network.

    The static fine-scale pattern and the local diurnal cycle then bypass the network's low-rank projections; the
    model forecasts anomalies (relative to their last context step when `residual`)."""

    def __init__(self, hours: np.ndarray, mean: np.ndarray):
        self.hours, self.mean = np.asarray(hours, dtype=np.float64), np.asarray(mean, dtype=np.float32)

    @classmethod
    def fit(cls, values: np.ndarray, times: np.ndarray, index: np.ndarray) -> "HourlyClimatology":
        from .baselines import hour_of_day

        step = pd.Timedelta(times[1] - times[0])
        if pd.Timedelta(days=1) % step != pd.Timedelta(0):
            return cls(np.zeros(1), np.zeros((1, values.shape[1]), np.float32))  # no daily cycle to remove
        h = hour_of_day(times[index])
        hours = np.unique(h)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.stack([np.nanmean(values[index][h == k], axis=0) for k in hours])
        return cls(hours, np.nan_to_num(mean))

    def at(self, times) -> np.ndarray:
        """(*times.shape, C) climatological mean at the given times."""
        from .baselines import hour_of_day

        if len(self.hours) == 1:
            return np.broadcast_to(self.mean[0], (*np.shape(times), self.mean.shape[1]))
        h = hour_of_day(times)
        pos = np.searchsorted(self.hours, h)
        pos = np.clip(pos, 0, len(self.hours) - 1)
        if not np.allclose(self.hours[pos], h):
            raise DataError(f"times at hour(s) {sorted(set(h[~np.isclose(self.hours[pos], h)]))[:3]} of day were "
                            f"not seen in training (hours {self.hours.tolist()})")
        return self.mean[pos]

    def state(self) -> dict:
        return {"hours": torch.from_numpy(self.hours), "mean": torch.from_numpy(self.mean)}

    @classmethod
    def from_state(cls, state: dict) -> "HourlyClimatology":
        return cls(state["hours"].numpy(), state["mean"].numpy())


@dataclass
class Run:
    """A trained weather model loaded from its run folder."""

    path: Path
    config: dict
    codec: Codec
    denoiser: Denoiser
    space: MaskedSpace
    climatology: HourlyClimatology
    ar: ARBase | None = None

    @property
    def context(self) -> int:
        return int(self.config["context_steps"])

    @property
    def horizon(self) -> int:
        return int(self.config["horizon_steps"])


class Preconditioned(torch.nn.Module):
    """x0 = c_skip x_t + c_out F(c_in x_t, t) with c_skip = a s_d^2 / (a^2 s_d^2 + s^2), c_out = s s_d / sqrt(a^2 s_d^2 + s^2),
    c_in = 1 / sqrt(a^2 s_d^2 + s^2): EDM's preconditioning (Karras et al. 2022, table 1) written for any (alpha, sigma)."""

    def __init__(self, net: torch.nn.Module, schedule, sigma_data: float = 1.0):
        super().__init__()
        self.net, self.schedule, self.sigma_data = net, schedule, float(sigma_data)

    def forward(self, x_t, t, *, mask=None, cond=None):
        alpha, sigma = self.schedule.alpha_sigma(t)
        alpha, sigma = append_dims(alpha.to(x_t), x_t.dim()), append_dims(sigma.to(x_t), x_t.dim())
        sd2 = self.sigma_data**2
        norm = torch.sqrt(alpha**2 * sd2 + sigma**2)
        c_skip, c_out = alpha * sd2 / norm**2, sigma * self.sigma_data / norm
        return c_skip * x_t + c_out * self.net(x_t / norm, t, mask=mask, cond=cond)


def build_denoiser(config: dict) -> Denoiser:
    """U-Net -> EDM-style preconditioning (x0 output) -> core Denoiser (eps for the samplers)."""
    net = UNet1D(**config["net"])
    schedule = schedule_from_config(config["schedule"])
    if config.get("precondition", False):
        return Denoiser(Preconditioned(net, schedule), schedule, prediction="x0", scale_input=False)
    return Denoiser(net, schedule, prediction=config["prediction"])


def load_run(path) -> Run:
    """Read config.json, codec.nc and the EMA weights of checkpoint.pt from a run folder."""
    import json

    path = Path(path)
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise DataError(f"{path}: not a gendiff weather run (no config.json)")
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{cfg_path}: unreadable JSON ({exc})") from None
    if config.get("domain") != "weather":
        raise DataError(f"{cfg_path}: domain is {config.get('domain')!r}, expected 'weather'")
    codec = Codec.load(path / "codec.nc", config["codec"])
    denoiser = build_denoiser(config)
    state = torch_load_safe(path / "checkpoint.pt")
    if not isinstance(state, dict) or "ema" not in state:
        raise DataError(f"{path / 'checkpoint.pt'}: no EMA weights in checkpoint")
    denoiser.load_state_dict(state["ema"])
    denoiser.eval().requires_grad_(False)
    clim = HourlyClimatology.from_state(torch_load_safe(path / "climatology.pt"))
    ar = ARBase.from_state(torch_load_safe(path / "ar.pt")) if config.get("base") == "linear" else None
    return Run(path, config, codec, denoiser, MaskedSpace(), clim, ar)
