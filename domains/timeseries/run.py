"""A trained run: its folder (config, weights, state.safetensors with codec template, climatology and AR base)
loaded into a Run; the state files written by train."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from safetensors.torch import load_file

from gendiff import runs
from gendiff.device import resolve_device
from gendiff.errors import ConfigError, DataError
from gendiff.forward import Denoiser
from gendiff.spaces import MaskedSpace

from .base import ARBase
from .peerbase import PeerBase, is_peer
from .climatology import HourlyClimatology
from .data import Codec
from .network import build_denoiser


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
    static: torch.Tensor | None = None  # gridnet: (N, S) static inputs of the locations
    peer: PeerBase | None = None  # a statsforecast base (peerbase.py); `ar` then holds its error scale only

    @property
    def arch(self) -> str:
        return str(self.config.get("arch", "unet1d"))

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
        if self.static is not None:
            self.static = self.static.to(device)
        return self


STATE = "state.safetensors"  # codec template, climatology and AR base of a run (beside weights.safetensors)


def save_state(out, codec: Codec, climatology: HourlyClimatology, ar: ARBase | None,
               static: np.ndarray | None = None) -> dict:
    """Write out/state.safetensors (the codec template, the hourly climatology and the AR base as tensors) and
    return the JSON the template needs besides (dims, dtypes, attrs), for config.json's `codec_template`."""
    arrays, meta = codec.to_state()
    tensors = {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}
    tensors.update({f"climatology.{k}": v for k, v in climatology.state().items()})
    if ar is not None:
        tensors.update({f"ar.{k}": v for k, v in ar.state(codec.sizes).items()})
    if static is not None:
        tensors["static.values"] = torch.from_numpy(np.ascontiguousarray(static, dtype=np.float32))
    runs.save_weights(tensors, Path(out) / STATE)
    return meta


def read_state(path: Path) -> dict:
    """{prefix: {name: tensor}} from a state.safetensors; one DataError naming the file if it is unreadable."""
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
        clim = HourlyClimatology.from_state({k: v.double() if k == "hours" else v.float() if k in ("mean", "std")
                                             else v for k, v in state["climatology"].items()})
        has_ar = config.get("base") == "linear" or is_peer(config.get("base"))
        ar = ARBase.from_state(state["ar"]) if has_ar else None
    except KeyError as exc:
        raise DataError(f"{state_path}: entry {exc} missing (the file does not match {cfg_path})") from None
    static = None
    expect = int(config["net"]["channels"])
    if config.get("arch", "unet1d") == "gridnet":
        if "static" not in state or "values" not in state["static"]:
            raise DataError(f"{state_path}: entry 'static.values' missing (the file does not match {cfg_path})")
        static = state["static"]["values"].float()
        expect *= int(static.shape[0])
    if codec.num_features != expect or (ar is not None and ar.phi.shape[0] != codec.num_features):
        raise DataError(f"{state_path}: holds {codec.num_features} features, {cfg_path} describes {expect}")
    peer = PeerBase.from_config(config.get("peer_base", {})) if is_peer(config.get("base")) else None
    return Run(info.path, config, codec, denoiser, MaskedSpace(), clim, ar, spec=str(path),
               card=info.card, static=static, peer=peer).to(device)


def output_check(run: Run, n: int = 2) -> dict:
    """What the network computes on a fixed seeded input (x0 prediction at two noise levels, conditioned on a
    seeded context): a few numbers stored on a shipped model's card, so that a change to the network code that
    alters what a shipped checkpoint computes fails its test even where the weights still load."""
    g = torch.Generator().manual_seed(0)
    c, length = int(run.config["net"]["channels"]), run.context + run.horizon
    if run.arch == "gridnet":
        c *= int(run.static.shape[0])
        x = torch.randn(n, c, length, generator=g)
        seq = 2 * c + 5 + int(run.config["net"].get("covariates", 0)) * int(run.static.shape[0])
        cond = {"seq": torch.randn(n, seq, length, generator=g), "static": run.static[None].cpu()}
    else:
        x = torch.randn(n, c, length, generator=g)
        cond = torch.randn(n, int(run.config["net"]["cond_channels"]), length, generator=g)
    t = torch.linspace(0.3, 0.7, n)
    with torch.no_grad():
        out = run.denoiser.to("cpu")(x, t, cond=cond, output="x0").double()
    return {"x0_norm": float(out.norm()), "x0_mean": float(out.mean()),
            "x0_per_sample_norm": [float(v) for v in out.flatten(1).norm(dim=1)],
            "x0_first": [float(v) for v in out.flatten()[:8]]}


def require_task(run, task: str) -> None:
    """ConfigError when `run` (a Run, run folder or pretrained:NAME) was trained for another task (fit.train's
    `task`: a forecast run cannot impute, an imputation run has no context to forecast from)."""

    config = run.config if hasattr(run, "config") else runs.read_run(run, domain="weather").config
    have = config.get("task", "forecast")
    if have != task:
        verb = {"impute": "gendiff train timeseries --task impute", "forecast": "task='forecast'"}[task]
        raise ConfigError(f"{getattr(run, 'spec', None) or run}: a run trained with task '{have}'; "
                          f"{'imputation' if task == 'impute' else 'forecasting'} needs one trained with "
                          f"task='{task}' ({verb})")
