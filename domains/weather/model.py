"""Windows of past context plus future horizon as diffusion inputs: x0, MaskedSpace mask and conditioning channels."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from gendiff.device import resolve_device
from gendiff.errors import ConfigError, DataError
from gendiff.forward import Denoiser
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

    def __init__(self, phi, scale=None, diurnal=None, step_seconds: float | None = None):
        self.phi = torch.as_tensor(np.asarray(phi), dtype=torch.float32)  # (C, p), lag 1 first
        self.scale = None if scale is None else torch.as_tensor(np.asarray(scale), dtype=torch.float32)  # (H, C)
        # (S, H, C): the error level's factor by the init's time of day (S slots of one time step per day)
        self.diurnal = None if diurnal is None else torch.as_tensor(np.asarray(diurnal), dtype=torch.float32)
        self.step_seconds = step_seconds

    MIN_SLOT_WINDOWS = 5

    def to(self, device) -> "ARBase":
        """Move the coefficients, scale and time-of-day factors to `device` (where they meet the network's
        tensors); returns self."""
        self.phi = self.phi.to(device)
        self.scale = None if self.scale is None else self.scale.to(device)
        self.diurnal = None if self.diurnal is None else self.diurnal.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.phi.device

    @classmethod
    def fit(cls, values: np.ndarray, index: np.ndarray, order: int = 2, starts: np.ndarray | None = None,
            context: int | None = None, horizon: int | None = None, times: np.ndarray | None = None,
            groups: list[int] | None = None) -> "ARBase":
        """Least-squares AR(order) per feature on values[index]; with training window `starts`, also the RMS error
        of its forecast per lead and feature (`scale`, H x C), by which the generated departures are divided so
        that the network sees unit-variance targets at every lead (the diffusion schedules assume unit-variance
        data; the departures grow from a few hundredths of a standard deviation at the first step).

        With `times` and a time step that divides a day, the error level also depends on the init's time of day
        (`diurnal`, S x H x C, S = steps per day): a 6 h forecast of 2 m temperature made at 06 UTC runs through the
        morning warming and errs twice as much as one made at 00 UTC. The factor is the RMS error of the windows
        whose init falls in that slot over the all-window RMS, pooled over the features of each variable (`groups`:
        feature counts per variable) so that a few weeks of data give a stable estimate; 1 for slots with fewer
        than MIN_SLOT_WINDOWS windows."""
        from .baselines import fit_ar

        phi, _ = fit_ar(np.asarray(values[index], dtype=np.float64), order)
        ar = cls(phi)
        if starts is None:
            return ar
        starts = np.asarray(starts)
        c = values.shape[1]
        n_slots, slot = 1, np.zeros(len(starts), dtype=np.int64)
        if times is not None and len(times) > 1:
            step_s = pd.Timedelta(times[1] - times[0]).total_seconds()
            if 0 < step_s < 86400 and 86400 % step_s == 0:
                ar.step_seconds, n_slots = step_s, int(86400 // step_s)
                slot = ar.slots(times[starts + context - 1])
        sq, n = np.zeros((n_slots, horizon, c)), np.zeros((n_slots, horizon, c))
        for chunk in np.array_split(np.arange(len(starts)), max(1, len(starts) // 256)):
            w = torch.from_numpy(np.stack([values[s:s + context + horizon] for s in starts[chunk]]))
            err = (w - ar.window_base(w, context))[:, context:].double().numpy()
            ok = np.isfinite(err)
            np.add.at(sq, slot[chunk], np.where(ok, err, 0.0) ** 2)
            np.add.at(n, slot[chunk], ok)
        rms = np.sqrt(sq.sum(0) / np.maximum(n.sum(0), 1))
        floor = max(1e-3, 1e-2 * float(np.nanmax(rms)))
        ar.scale = torch.from_numpy(np.where(n.sum(0) > 0, np.maximum(rms, floor), 1.0)).float()
        if n_slots > 1:
            fac = np.ones((n_slots, horizon, c))
            counts = np.bincount(slot, minlength=n_slots)
            start = 0
            for size in (groups or [c]):
                g = slice(start, start + size)
                start += size
                ms_all = sq[:, :, g].sum((0, 2)) / np.maximum(n[:, :, g].sum((0, 2)), 1)  # (H,)
                ms_slot = sq[:, :, g].sum(2) / np.maximum(n[:, :, g].sum(2), 1)  # (S, H)
                f = np.sqrt(ms_slot / np.maximum(ms_all, 1e-300))
                f = np.where((counts[:, None] >= cls.MIN_SLOT_WINDOWS) & (ms_slot > 0), f, 1.0)
                fac[:, :, g] = f[:, :, None]
            ar.diurnal = torch.from_numpy(fac).float()
        return ar

    @property
    def order(self) -> int:
        return int(self.phi.shape[1])

    def slots(self, init_times) -> np.ndarray:
        """Time-of-day slot of each init time (0 when the error level has no time-of-day factor)."""
        t = pd.DatetimeIndex(np.asarray(init_times).ravel())
        if self.step_seconds is None:
            return np.zeros(len(t), dtype=np.int64)
        sec = t.hour * 3600 + t.minute * 60 + t.second
        n_slots = int(86400 // self.step_seconds)
        return (np.asarray(sec) // int(self.step_seconds)).astype(np.int64) % n_slots

    def window_base(self, window: torch.Tensor, context: int, level_only: bool = False) -> torch.Tensor:
        """(B, L, C): the context as given (NaN -> 0), then the AR mean from the last `order` context steps.

        `level_only`: start the recursion from the mean of those steps in every lag (their level, no slope), for
        contexts that are themselves generated (chained horizons): they are rougher step to step than real data,
        and an AR fitted close to a unit root (Lorenz-96: 1.87, -0.93) turns that roughness into growing swings."""
        known = torch.nan_to_num(window[:, :context], nan=0.0)
        if context < self.order:
            raise DataError(f"the AR base needs a context of at least {self.order} steps, got {context}")
        phi = self.phi.to(known)
        lags = [known[:, context - 1 - k] for k in range(self.order)]
        if level_only:
            lags = [torch.stack(lags).mean(0)] * self.order
        steps = []
        for _ in range(window.shape[1] - context):
            nxt = sum(phi[:, k] * lags[k] for k in range(self.order))
            steps.append(nxt)
            lags = [nxt] + lags[:-1]
        return torch.cat([known, torch.stack(steps, 1)], 1) if steps else known

    def window_scale(self, length: int, context: int, slots=None) -> torch.Tensor:
        """(L, C): 1 over the context, `scale` over the horizon (ones without a fitted scale); with `slots` (B,),
        the init times' time-of-day slots, (B, L, C) with the horizon scaled by the time-of-day factor."""
        out = torch.ones(length, self.phi.shape[0], device=self.phi.device)
        if self.scale is not None:
            if length - context != self.scale.shape[0]:
                raise DataError(f"AR scale was fitted for a {self.scale.shape[0]}-step horizon, not {length - context}")
            out[context:] = self.scale
        if slots is None:
            return out
        out = out.expand(len(slots), -1, -1).clone()
        if self.scale is not None and self.diurnal is not None:
            out[:, context:] *= self._slot_factors(slots)
        return out

    def _slot_factors(self, slots) -> torch.Tensor:
        """(B, H, C): the time-of-day factors of the given slots."""
        return self.diurnal[torch.as_tensor(np.asarray(slots), dtype=torch.long, device=self.diurnal.device)]

    def level(self, slots=None) -> torch.Tensor:
        """(H, C): the RMS error level per lead, averaged in square over the given init slots (all windows if None)."""
        if slots is None or self.diurnal is None:
            return self.scale
        return self.scale * (self._slot_factors(slots) ** 2).mean(0).sqrt()

    def state(self, groups: list[int] | None = None) -> dict:
        """Tensors that rebuild the base. With `groups` (feature counts per variable) a time-of-day factor that is
        constant over each variable's features (as fit pools it) is stored once per variable (`diurnal_groups`,
        S x H x G), not per feature: 3.7 MB -> 2 KB for a 33 x 49 grid."""
        out = {"phi": self.phi.cpu()}
        if self.scale is not None:
            out["scale"] = self.scale.cpu()
        if self.diurnal is not None:
            out["step_seconds"] = torch.tensor(float(self.step_seconds), dtype=torch.float64)
            d = self.diurnal.cpu()
            sizes = torch.as_tensor(list(groups or []), dtype=torch.long)
            if groups and int(sizes.sum()) == d.shape[-1]:
                firsts = torch.cumsum(sizes, 0) - sizes
                compact = d[..., firsts]
                if torch.equal(compact.repeat_interleave(sizes, dim=-1), d):
                    out.update(diurnal_groups=compact.contiguous(), groups=sizes)
                    return out
            out["diurnal"] = d
        return out

    @classmethod
    def from_state(cls, state: dict) -> "ARBase":
        scale, diurnal = state.get("scale"), state.get("diurnal")
        if diurnal is None and "diurnal_groups" in state:
            diurnal = state["diurnal_groups"].repeat_interleave(state["groups"].long(), dim=-1)
        step = state.get("step_seconds")
        return cls(state["phi"].cpu().numpy(), None if scale is None else scale.cpu().numpy(),
                   None if diurnal is None else diurnal.cpu().numpy(), None if step is None else float(step))


def make_inputs(window: torch.Tensor, calendar: torch.Tensor, context: int, valid: torch.Tensor,
                residual: bool = True, base: torch.Tensor | None = None, scale: torch.Tensor | None = None):
    """window (B, L, C) normalised with NaN; first `context` steps known -> x0, mask, cond, each (B, *, L).

    x0: the window (NaN filled by 0), taken relative to `base` (B, L, C) when given (ARBase.window_base), else to its
    last context step when `residual` (the model generates departures from persistence, as tendency-predicting
    weather models do), and divided by `scale` (L, C) or (B, L, C) when given (ARBase.window_scale); mask: finite horizon
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
                 residual: bool = True, base: ARBase | None = None, times: np.ndarray | None = None):
        self.values, self.calendar, self.residual = torch.from_numpy(values), torch.from_numpy(calendar), residual
        self.base = base
        self.starts, self.context, self.length = np.asarray(starts), context, context + horizon
        self.scale = self.slot = None
        if base is not None:  # one (L, C) scale per time-of-day slot of the init, built once
            self.slot = (base.slots(times[self.starts + context - 1]) if times is not None
                         else np.zeros(len(self.starts), dtype=np.int64))
            n_slots = 1 if base.diurnal is None else base.diurnal.shape[0]
            self.scale = base.window_scale(self.length, context, np.arange(n_slots))
        self.valid = torch.from_numpy(np.isfinite(values).any(0))

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int):
        s = int(self.starts[i])
        window = self.values[None, s:s + self.length]
        base = None if self.base is None else self.base.window_base(window, self.context)
        scale = None if self.scale is None else self.scale[self.slot[i]]
        x0, mask, cond = make_inputs(window, self.calendar[None, s:s + self.length], self.context, self.valid,
                                     self.residual, base, scale)
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
    spec: str | None = None  # as given: a folder or pretrained:NAME
    card: dict | None = None

    @property
    def context(self) -> int:
        return int(self.config["context_steps"])

    @property
    def horizon(self) -> int:
        return int(self.config["horizon_steps"])

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    def to(self, device) -> "Run":
        """Move the network and the AR base to `device` (a name as for gendiff.device.resolve_device); returns self."""
        device = resolve_device(device)
        self.denoiser.to(device)
        if self.ar is not None:
            self.ar.to(device)
        return self


def build_denoiser(config: dict) -> Denoiser:
    """U-Net -> core Denoiser; with `precondition`, EDM's preconditioning (Karras et al. 2022, table 1, for any
    (alpha, sigma)): x0 = c_skip x_t + c_out F(c_in x_t, t), c_skip = a s_d^2 / (a^2 s_d^2 + s^2),
    c_out = s s_d / sqrt(a^2 s_d^2 + s^2), c_in = 1 / sqrt(a^2 s_d^2 + s^2), s_d = `sigma_data` (1: the targets
    are unit-variance). Trained with losses.constant_weight (fit.make_step_fn), the loss is the plain
    ||x0_hat - x0||^2 the weather domain has always used."""
    net = UNet1D(**config["net"])
    schedule = schedule_from_config(config["schedule"])
    if config.get("precondition", False):
        return Denoiser(net, schedule, precondition="edm", sigma_data=float(config.get("sigma_data", 1.0)),
                        noise_input="t")
    return Denoiser(net, schedule, prediction=config["prediction"])


def compile_network(denoiser: Denoiser, backend="inductor") -> Denoiser:
    """torch.compile the U-Net in place (nn.Module.compile: the state_dict keys stay as they are); returns it.

    `backend`: True or 'inductor' (the default), another torch.compile backend name ('aot_eager', ...) or a
    backend callable; False or None leaves the network eager."""
    if backend is False or backend is None:
        return denoiser
    if backend is True:
        backend = "inductor"
    if not (isinstance(backend, str) or callable(backend)):
        raise ConfigError(f"compile={backend!r}: expected True/False, a torch.compile backend name or callable")
    denoiser.net.compile(backend=backend)
    return denoiser


OLD_PREFIX = "net.net."  # runs from before the core's EDM option: the U-Net inside weather's own Preconditioned


def is_old_state(state: dict, config: dict) -> bool:
    """Weights written by the weather domain's own Preconditioned wrapper (before the core's EDM option)."""
    return bool(config.get("precondition", False) and state and all(k.startswith(OLD_PREFIX) for k in state))


STATE = "state.safetensors"  # codec template, climatology and AR base of a run (beside weights.safetensors)


def save_state(out, codec: Codec, climatology: HourlyClimatology, ar: ARBase | None) -> dict:
    """Write out/state.safetensors (the codec template, the hourly climatology and the AR base as tensors) and
    return the JSON the template needs besides (dims, dtypes, attrs), for config.json's `codec_template`."""
    from gendiff import runs

    arrays, meta = codec.to_state()
    tensors = {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}
    tensors.update({f"climatology.{k}": v for k, v in climatology.state().items()})
    if ar is not None:
        tensors.update({f"ar.{k}": v for k, v in ar.state(codec.sizes).items()})
    runs.save_weights(tensors, Path(out) / STATE)
    return meta


def read_state(path: Path) -> dict:
    """{prefix: {name: tensor}} from a state.safetensors; one DataError naming the file if it is unreadable."""
    from safetensors.torch import load_file

    try:
        flat = load_file(str(path))
    except FileNotFoundError:
        raise DataError(f"{path}: missing (the run folder is incomplete; export or retrain it)") from None
    except Exception as exc:
        raise DataError(f"{path}: unreadable state file, truncated or corrupt ({str(exc).splitlines()[0]}); "
                        "export or retrain the run") from None
    out: dict = {}
    for k, v in flat.items():
        head, _, rest = k.partition(".")
        out.setdefault(head, {})[rest] = v
    return out


def load_run(path, device="cpu") -> Run:
    """A run folder (config.json, weights.safetensors, state.safetensors, card.json; calibration.json) or
    `pretrained:NAME`, read with gendiff.runs.read_run (no unpickling); the network and the AR base on `device`
    ('auto', 'cpu', 'cuda', 'cuda:N', 'mps'). Folders of the older weather format (codec.nc, checkpoint.pt only)
    give read_run's one-line error saying to retrain; truncated or mismatched files a DataError naming the file."""
    from gendiff import runs

    device = resolve_device(device)  # a bad name fails before anything is read
    info = runs.read_run(path, domain="weather")
    config = info.config
    cfg_path = info.path / runs.CONFIG
    state_path = info.path / STATE
    state = read_state(state_path)
    try:
        codec = Codec.from_state({f"codec.{k}": v.numpy() for k, v in state.get("codec", {}).items()},
                                 config["codec_template"], config["codec"], label=str(state_path))
        denoiser = build_denoiser(config)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{cfg_path}: does not describe a weather model ({type(exc).__name__}: {exc}); "
                        "retrain the run") from None
    runs.load_weights(info, denoiser)
    denoiser.float().eval().requires_grad_(False)
    try:
        clim = HourlyClimatology.from_state({k: v.double() if k == "hours" else v.float()
                                             for k, v in state["climatology"].items()})
        ar = ARBase.from_state(state["ar"]) if config.get("base") == "linear" else None
    except KeyError as exc:
        raise DataError(f"{state_path}: entry {exc} missing (the file does not match {cfg_path})") from None
    if codec.num_features != config["net"]["channels"] or (ar is not None and ar.phi.shape[0] != codec.num_features):
        raise DataError(f"{state_path}: holds {codec.num_features} features, {cfg_path} describes "
                        f"{config['net']['channels']}")
    return Run(info.path, config, codec, denoiser, MaskedSpace(), clim, ar, spec=str(path),
               card=info.card).to(device)


def output_check(run: Run, n: int = 2) -> dict:
    """What the network computes on a fixed seeded input (x0 prediction at two noise levels, conditioned on a
    seeded context): a few numbers stored on a shipped model's card, so that a change to the network code that
    alters what a shipped checkpoint computes fails its test even where the weights still load."""
    g = torch.Generator().manual_seed(0)
    c, length = int(run.config["net"]["channels"]), run.context + run.horizon
    x = torch.randn(n, c, length, generator=g)
    cond = torch.randn(n, int(run.config["net"]["cond_channels"]), length, generator=g)
    t = torch.linspace(0.3, 0.7, n)
    with torch.no_grad():
        out = run.denoiser.to("cpu")(x, t, cond=cond, output="x0").double()
    return {"x0_norm": float(out.norm()), "x0_mean": float(out.mean()),
            "x0_per_sample_norm": [float(v) for v in out.flatten(1).norm(dim=1)],
            "x0_first": [float(v) for v in out.flatten()[:8]]}
