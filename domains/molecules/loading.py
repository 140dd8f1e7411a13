"""Molecules run folders read back: find a run (folder or pretrained:NAME), rebuild its denoiser from config.json,
load its weights, and convert folders of the format before gendiff.runs."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from gendiff import runs
from gendiff.device import resolve_device
from gendiff.errors import ConfigError, DataError
from gendiff.schedules import schedule_from_config
from gendiff.training import load_ema_weights

from .defaults import CHECKPOINT, DOMAIN, RUN_CONFIG
from .model import AtomCountDistribution, build_denoiser, compile_net
from .runconfig import features_config, recipe, run_config, split_text


def _legacy_hint(spec) -> None:
    """A molecules folder of the format before gendiff.runs (config.json without 'format' + checkpoint.pt): one
    DataError saying how to convert it."""
    if str(spec).startswith(runs.PREFIX):
        return
    path = Path(spec) / RUN_CONFIG
    try:
        cfg = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return
    if isinstance(cfg, dict) and cfg.get("domain") == DOMAIN and "format" not in cfg:
        raise DataError(f"{path}: a molecules run of an older gendiff (config.json + checkpoint.pt, no run format); "
                        f"convert it with `python -c \"from gendiff.domains import molecules; "
                        f"molecules.convert_run('{Path(spec)}')\"` or retrain with `gendiff train molecules`")


def read_run(spec) -> "runs.Run":
    """runs.read_run for molecules (a folder or pretrained:NAME), with the conversion hint for older folders."""
    _legacy_hint(spec)
    return runs.read_run(spec, domain=DOMAIN)


def _rebuild(run: "runs.Run"):
    cfg, path = run.config, run.path / RUN_CONFIG
    feats = cfg.get("features")
    if feats is not None and feats not in (features_config(True), features_config(False)):
        raise DataError(f"{path}: feature layout/scaling {feats} is not one of this gendiff's "
                        f"({features_config(True)} or {features_config(False)})")
    try:
        sched = schedule_from_config(cfg["schedule"])
        denoiser = build_denoiser(cfg["model"], sched, cfg.get("prediction", "eps"), cfg["net"],
                                  options=cfg.get("denoiser"))
        sizes = AtomCountDistribution({int(k): v for k, v in cfg["atom_counts"].items()})
        recipe(cfg)
    except (KeyError, TypeError, ValueError, AttributeError, ConfigError) as exc:
        raise DataError(f"{path}: cannot rebuild the model from it ({type(exc).__name__}: {exc})") from None
    return denoiser, sched, sizes


def load_run(run, device: str = "auto", compile: bool | str = False):
    """Rebuild (EMA denoiser on `device`, in eval mode, schedule, atom-count distribution, config) from a run folder
    or `pretrained:NAME`; weights load strictly from weights.safetensors (never unpickled), and a truncated or
    corrupt file or a config that does not fit it is one DataError naming the file.

    `device` goes through gendiff.device.resolve_device ('auto': CUDA, else MPS, else CPU); `compile` compiles the
    network in place (True: inductor, or a torch.compile backend name; model.compile_net)."""
    device = resolve_device(device)
    info = read_run(run)
    denoiser, sched, sizes = _rebuild(info)
    runs.load_weights(info, denoiser)
    denoiser = denoiser.to(device).eval()
    compile_net(denoiser.net, compile)  # after loading and moving: in place, the state_dict keys stay the eager ones
    return denoiser, sched, sizes, info.config


def convert_run(src, out=None, *, command: str | None = None, commit: str | None = None,
                name: str | None = None) -> Path:
    """Rewrite a molecules run of the older format (config.json without 'format', checkpoint.pt) in the run format:
    config.json, weights.safetensors (the checkpoint's EMA weights) and card.json (from train_summary.json; `command`
    and `commit` are those of the training, when known). `out` defaults to `src` (converted in place; checkpoint.pt
    stays for resuming)."""
    src = Path(src)
    out = Path(out) if out is not None else src
    legacy = json.loads((src / RUN_CONFIG).read_text())
    if legacy.get("format") == runs.FORMAT:
        raise ConfigError(f"{src / RUN_CONFIG} is already in the run format")
    sched = schedule_from_config(legacy["schedule"])
    denoiser = build_denoiser(legacy["model"], sched, legacy.get("prediction", "eps"), legacy["net"])
    load_ema_weights(src / CHECKPOINT, denoiser)
    sizes = AtomCountDistribution({int(k): v for k, v in legacy["atom_counts"].items()})
    data = legacy.get("data", "qm9")
    tcfg = dict(legacy.get("train", {}))
    summary_path = src / "train_summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    n_train = None
    if str(data).lower() == "qm9":
        n_train = sum(int(v) for v in legacy["atom_counts"].values())
    card = runs.new_card(name or out.name, DOMAIN, data=data, split=split_text(data, tcfg.get("limit"), n_train),
                         summary=summary, seed=int(tcfg.get("seed", 0)), command=command, model=legacy["model"],
                         parameters=sum(p.numel() for p in denoiser.parameters()), train_config=tcfg)
    if commit is not None:
        card["training"]["commit"] = commit
        for sitting in card["training"]["sittings"]:
            sitting["commit"] = commit
    cfg = run_config(legacy["model"], legacy["net"], sched, denoiser, sizes, data)
    if out != src:
        out.mkdir(parents=True, exist_ok=True)
        for extra in ("log.csv", "train_summary.json"):
            if (src / extra).is_file():
                shutil.copy2(src / extra, out / extra)
    runs.save_run(out, DOMAIN, cfg, denoiser, card)
    return out
