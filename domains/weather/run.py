"""A trained run: its folder (config, weights, state.safetensors with codec template, climatology and AR base)
loaded into a Run; the state files written by train."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gendiff.device import resolve_device
from gendiff.errors import DataError
from gendiff.forward import Denoiser
from gendiff.spaces import MaskedSpace

from .base import ARBase
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
    from gendiff import runs

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
        clim = HourlyClimatology.from_state({k: v.double() if k == "hours" else v.float() if k in ("mean", "std")
                                             else v for k, v in state["climatology"].items()})
        ar = ARBase.from_state(state["ar"]) if config.get("base") == "linear" else None
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
    return Run(info.path, config, codec, denoiser, MaskedSpace(), clim, ar, spec=str(path),
               card=info.card, static=static).to(device)


def output_check(run: Run, n: int = 2) -> dict:
    """What the network computes on a fixed seeded input (x0 prediction at two noise levels, conditioned on a
    seeded context): a few numbers stored on a shipped model's card, so that a change to the network code that
    alters what a shipped checkpoint computes fails its test even where the weights still load."""
    g = torch.Generator().manual_seed(0)
    c, length = int(run.config["net"]["channels"]), run.context + run.horizon
    if run.arch == "gridnet":
        c *= int(run.static.shape[0])
        x = torch.randn(n, c, length, generator=g)
        cond = {"seq": torch.randn(n, 2 * c + 5, length, generator=g), "static": run.static[None].cpu()}
    else:
        x = torch.randn(n, c, length, generator=g)
        cond = torch.randn(n, int(run.config["net"]["cond_channels"]), length, generator=g)
    t = torch.linspace(0.3, 0.7, n)
    with torch.no_grad():
        out = run.denoiser.to("cpu")(x, t, cond=cond, output="x0").double()
    return {"x0_norm": float(out.norm()), "x0_mean": float(out.mean()),
            "x0_per_sample_norm": [float(v) for v in out.flatten(1).norm(dim=1)],
            "x0_first": [float(v) for v in out.flatten()[:8]]}


def subregion(run: Run, ds, label: str = "data") -> Run:
    """The run restricted to the locations of `ds` when they are a part of the run's, in the run's order (a
    gridnet run forecasts any such subregion: its weights are the same at every location; the codec template,
    the climatology, the AR base and the static inputs are cut to the subregion's locations). The run itself
    when `ds` has the run's locations, or when they are not an ordered part of them (Codec.check_coords then names
    the coordinate that differs)."""
    from .data import _close

    if run.arch != "gridnet":
        return run
    loc = list(run.config["locations"]["location_dims"])
    tmpl = run.codec.template
    picks = {}
    for d in loc:
        if d not in tmpl.coords or d not in ds.coords or ds[d].ndim != 1:
            return run
        want, got = np.asarray(tmpl[d].values), np.asarray(ds[d].values)
        if got.shape == want.shape and bool(_close(got, want).all()):
            continue
        hit = _close(got[:, None], want[None, :])  # (n_got, n_want)
        if not hit.any(1).all():
            return run
        idx = hit.argmax(1)
        if len(idx) > 1 and not (np.diff(idx) > 0).all():
            return run
        picks[d] = idx
    if not picks:
        return run
    sizes = [tmpl.sizes[d] for d in loc]
    grid = np.arange(int(np.prod(sizes))).reshape(sizes)
    cells = grid[np.ix_(*[picks.get(d, np.arange(n)) for d, n in zip(loc, sizes)])].ravel()
    feats, local, start = [], {}, 0  # per variable its kept features, within the variable and overall
    for v, size in zip(run.codec.variables, run.codec.sizes):
        k = size // len(grid.ravel())
        local[v] = (np.arange(k)[:, None] * grid.size + cells[None, :]).ravel()
        feats.append(start + local[v])
        start += size
    feat = np.concatenate(feats)
    codec = run.codec.select(tmpl.isel({d: idx for d, idx in picks.items()}), local)
    clim = run.climatology.select(feat)
    ar = None
    if run.ar is not None:
        ar = run.ar.select(feat)
    config = {**run.config, "locations": {**run.config["locations"], "locations": int(len(cells))}}
    static = run.static[torch.as_tensor(cells, device=run.static.device)]
    return Run(run.path, config, codec, run.denoiser, run.space, clim, ar, spec=run.spec, card=run.card,
               static=static)


def regrid(run: Run, ds, until: int, static=None, label: str = "data") -> Run:
    """A gridnet run moved to the locations of `ds` (another or a larger region of the same variables): the codec
    template (the time mean), the hourly climatology and the AR base with its error level per lead are fitted on
    ds's first `until` steps (the data before the first init: nothing from the forecast period), the static inputs
    are those of the new locations (`static`: their fields, required when the run was trained with some); the
    network, the spread calibration and a normalisation per variable stay the run's (a normalisation per location
    is fitted on the new locations' history, like the template)."""
    from .data import time_step
    from .gridnet import static_inputs
    from .stream import EncodedValues, fit_statistics
    from .windows import window_starts

    if run.arch != "gridnet":
        raise DataError(f"{label}: new_locations needs a gridnet run (arch='gridnet'); {run.path} is "
                        f"{run.arch}, whose network is tied to its grid")
    if time_step(ds).total_seconds() != run.config["time_step_seconds"]:
        raise DataError(f"{label}: time step {time_step(ds)} differs from the model's")
    length = run.context + run.horizon
    if until < length + 1:
        raise DataError(f"{label}: new_locations fits the per-location state on the data before the first init; "
                        f"{until} steps there, at least {length + 1} needed (start the data earlier)")
    fields = run.config["locations"]["fields"]
    if fields and static is None:
        raise DataError(f"{label}: the run was trained with static fields {', '.join(fields)}; pass static= "
                        "with them on the new locations")
    if not fields and static is not None:
        raise DataError(f"{label}: the run was trained without static fields; static= has nowhere to go")
    per_location = run.codec.normalise == "location"
    stats = fit_statistics(ds.isel(time=slice(0, until))[run.codec.variables], label,
                           normalise=run.codec.normalise)
    # per variable the run's normalisation; per location that of the new locations' own history
    codec = stats.codec if per_location else Codec(stats.codec.template, run.codec.mean, run.codec.std)
    if static is not None:
        from .fit import open_static

        static = open_static(static, label)
        missing = [f for f in fields if f not in static.data_vars]
        if missing:
            raise DataError(f"{label}: static= lacks the run's field(s) {', '.join(missing)}")
        static = static[fields]
    static_values, info = static_inputs(codec.template, codec.variables, static, label)
    old = run.config["locations"]
    if info["channels"] != old["channels"] or info["pos_kind"] != old["pos_kind"] or \
            info["pos_dims"] != old["pos_dims"]:
        raise DataError(f"{label}: the new locations have {info['channels']} channels and {info['pos_kind']} "
                        f"positions, the run {old['channels']} and {old['pos_kind']}")
    times = ds["time"].values
    index = np.arange(until)
    clim = stats.climatology(codec, std=run.config.get("hourly_std", False) if run.climatology.std is not None
                             else False,  # the run's choices, made again on the new locations' history
                             insolation=run.climatology.solar is not None)
    values = EncodedValues(ds, codec, clim, label)
    ar = None
    if run.ar is not None:
        has_data = np.zeros(len(times), dtype=bool)
        has_data[:until] = stats.has_data
        starts = window_starts(len(times), index, length, None, run.context, has_data)
        ar = ARBase.fit(values, index, run.ar.lags, starts, run.context, run.horizon, times, codec.sizes)
        ar.to(run.ar.device)
    config = {**run.config, "locations": {**old, **{k: info[k] for k in ("locations", "fields")}}}
    return Run(run.path, config, codec, run.denoiser, run.space, clim, ar, spec=run.spec, card=run.card,
               static=torch.from_numpy(static_values).to(run.device))

