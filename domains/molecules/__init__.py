"""3D molecule generation with E(3)-equivariant diffusion (Hoogeboom et al. 2022, EDM): train, sample, evaluate, demo.

    from gendiff.domains import molecules
    molecules.train(data="qm9", model="egnn", out="runs/qm9", max_steps=1000)
    mols = molecules.sample(run="runs/qm9", n=100, sampler="heun", steps=50)
    molecules.evaluate(molecules=mols)   # atom/molecule stability, validity, uniqueness (, novelty)

Every verb that computes takes device='auto' (CUDA, else MPS, else CPU; gendiff.device.resolve_device); training
and sampling take bf16=True (bfloat16 autocast) and compile=True (torch.compile of the network, dynamic shapes).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Sequence

from gendiff.errors import ConfigError, DataError

RUN_CONFIG = "config.json"
CHECKPOINT = "checkpoint.pt"
_TRAIN_KEYS = ("max_steps", "batch_size", "lr", "weight_decay", "warmup_steps", "grad_clip", "ema_decay", "accumulate",
               "log_every", "ckpt_every", "max_nonfinite", "num_workers", "max_minutes", "bf16")


def _load_training_data(data, limit):
    """'qm9' (train split), a path to .xyz/.sdf, or a sequence of Data -> (dataset, collate_fn, histogram)."""
    from .data import QM9Dataset, load_molecules, load_qm9, qm9_atom_count_histogram
    from .model import AtomCountDistribution

    if isinstance(data, str) and data.lower() == "qm9":
        ds = load_qm9(split="train")
        if limit:
            from torch.utils.data import Subset

            sub = Subset(ds, range(min(int(limit), len(ds))))
            return sub, QM9Dataset.collate_fn, AtomCountDistribution.from_sizes(ds.num_atoms[: len(sub)])
        return ds, QM9Dataset.collate_fn, AtomCountDistribution(qm9_atom_count_histogram("train"))
    mols = load_molecules(data) if isinstance(data, (str, os.PathLike)) else list(data)
    if limit:
        mols = mols[: int(limit)]
    if not mols:
        raise DataError(f"training data {data!r} holds no molecules")
    return mols, QM9Dataset.collate_fn, AtomCountDistribution.from_molecules(mols)


def _split_config(model: str, config: dict):
    from .model import E3NN_DEFAULTS, EGNN_DEFAULTS

    net_keys = EGNN_DEFAULTS if model == "egnn" else E3NN_DEFAULTS
    net = dict(config.pop("net", {}) or {})
    if "hidden" in config:
        net["hidden_nf" if model == "egnn" else "mul_scalars"] = int(config.pop("hidden"))
    if "layers" in config:
        net["n_layers"] = int(config.pop("layers"))
    for k in list(config):
        if k in net_keys:
            net[k] = config.pop(k)
    train_cfg = {k: config.pop(k) for k in list(config) if k in _TRAIN_KEYS}
    if config:
        raise ConfigError(f"unknown molecules training option(s): {', '.join(sorted(config))}")
    return net, train_cfg


def train(data="qm9", model: str = "egnn", out="runs/molecules", *, schedule: str = "polynomial",
          prediction: str = "eps", seed: int = 0, limit: int | None = None, progress: bool = True,
          resume: bool = False, device: str = "auto", compile: bool | str = False, **config) -> Path:
    """Train a molecule denoiser; writes OUT/config.json, OUT/checkpoint.pt (EMA weights), OUT/log.csv.

    `device`: 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'; bf16=True trains under bfloat16 autocast (the Trainer's);
    `compile` compiles the network (True: inductor, or a backend name; dynamic shapes; checkpoints keep the eager
    module's keys; see model.compile_net)."""
    import torch

    from gendiff.device import resolve_device
    from gendiff.io import write_json_atomic
    from gendiff.schedules import get_schedule, schedule_config

    from .data import ATOMIC_NUMBERS, ELEMENTS
    from .model import MODELS, NORM_VALUES, build_denoiser, make_step_fn

    if model not in MODELS:
        raise ConfigError(f"model {model!r}: expected one of {', '.join(MODELS)}")
    net_cfg, train_cfg = _split_config(model, dict(config))
    resolve_device(device)  # a bad or missing device fails here, before any data is read
    train_cfg["device"] = str(device)  # resolved again by the Trainer, per process (LOCAL_RANK under torchrun)
    out = Path(out)
    dataset, collate_fn, sizes = _load_training_data(data, limit)
    sched = get_schedule(schedule)
    torch.manual_seed(seed)
    denoiser = build_denoiser(model, sched, prediction, net_cfg, compile=compile)
    run_cfg = {"domain": "molecules", "model": model, "net": net_cfg, "schedule": schedule_config(sched),
               "prediction": prediction, "atom_counts": {str(k): v for k, v in sizes.histogram.items()},
               "elements": list(ELEMENTS), "atomic_numbers": list(ATOMIC_NUMBERS), "norm_values": list(NORM_VALUES),
               "data": str(data) if isinstance(data, (str, os.PathLike)) else f"<{len(dataset)} molecules>",
               "train": dict(train_cfg, seed=seed, limit=limit, compile=compile)}
    if (out / CHECKPOINT).exists():
        if not resume:
            raise ConfigError(f"{out / CHECKPOINT} exists; pass resume=True (--resume) or choose another --out")
        old = json.loads((out / RUN_CONFIG).read_text()) if (out / RUN_CONFIG).is_file() else {}
        if (old.get("model"), old.get("net")) != (model, net_cfg):
            raise ConfigError(f"{out / RUN_CONFIG}: cannot resume model {old.get('model')!r} {old.get('net')} "
                              f"as {model!r} {net_cfg}")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / RUN_CONFIG, run_cfg)
    summary = _fit(denoiser, make_step_fn(sched), dataset, collate_fn, train_cfg, seed, out, progress, resume)
    write_json_atomic(out / "train_summary.json", {k: v for k, v in summary.items()})
    return out


def _fit(denoiser, step_fn, dataset, collate_fn, train_cfg: dict, seed: int, out: Path, progress: bool,
         resume: bool = False) -> dict:
    """Run gendiff.training.Trainer; with max_minutes, train in resumable chunks until the time budget is spent."""
    from gendiff.training import TrainConfig, Trainer

    cfg = {"lr": 1e-4, "batch_size": 64, "max_steps": 100_000, "ema_decay": 0.999, "grad_clip": 1.0,
           **train_cfg, "seed": seed, "progress": progress}
    max_minutes = cfg.pop("max_minutes", None)
    total = int(cfg["max_steps"])
    if max_minutes is None:
        return Trainer(denoiser, step_fn, dataset, TrainConfig.from_dict(cfg), out, collate_fn=collate_fn,
                       resume=resume).fit()
    if float(max_minutes) <= 0:
        raise ConfigError(f"max_minutes={max_minutes} must be > 0")
    deadline, chunk, done, summary = time.time() + 60.0 * float(max_minutes), 25, 0, {}
    while done < total and time.time() < deadline:
        t0 = time.time()
        target = min(total, done + chunk)
        trainer = Trainer(denoiser, step_fn, dataset, TrainConfig.from_dict({**cfg, "max_steps": target}), out,
                          collate_fn=collate_fn, resume=bool(done) or resume)
        summary = trainer.fit()
        per_step = (time.time() - t0) / max(1, summary["step"] - done)
        done = summary["step"]
        left = deadline - time.time()
        if left < per_step:
            break
        chunk = max(1, min(500, int(0.5 * left / per_step)))
    return summary


def load_run(run, device: str = "auto", compile: bool | str = False):
    """Rebuild (EMA denoiser on `device`, in eval mode, schedule, atom-count distribution, config) from a run folder.

    `device` goes through gendiff.device.resolve_device ('auto': CUDA, else MPS, else CPU); `compile` compiles the
    network in place (True: inductor, or a torch.compile backend name; model.compile_net)."""
    from gendiff.device import resolve_device
    from gendiff.schedules import schedule_from_config
    from gendiff.training import load_ema_weights

    from .model import AtomCountDistribution, build_denoiser, compile_net

    device = resolve_device(device)
    run = Path(run)
    cfg_path, ckpt = run / RUN_CONFIG, run / CHECKPOINT
    if not cfg_path.is_file():
        raise DataError(f"{cfg_path}: no such run config (train first: gendiff train molecules --out {run})")
    if not ckpt.is_file():
        raise DataError(f"{ckpt}: no such checkpoint (training did not finish or wrote elsewhere)")
    try:
        cfg = json.loads(cfg_path.read_text())
        sched = schedule_from_config(cfg["schedule"])
        denoiser = build_denoiser(cfg["model"], sched, cfg["prediction"], cfg["net"])
        sizes = AtomCountDistribution({int(k): v for k, v in cfg["atom_counts"].items()})
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise DataError(f"{cfg_path}: malformed run config ({type(exc).__name__}: {exc})") from None
    load_ema_weights(ckpt, denoiser)
    denoiser = denoiser.to(device).eval()
    compile_net(denoiser.net, compile)  # after loading and moving: in place, the state_dict keys stay the eager ones
    return denoiser, sched, sizes, cfg


def sample(run, n: int = 100, sampler: str = "ancestral", steps: int = 1000, seed: int = 0, *,
           batch_size: int = 256, device: str = "auto", progress: bool = True, bf16: bool = False,
           compile: bool | str = False, **sampler_kw) -> list:
    """Sample n molecules (list of Data: pos, z, x, charge) from a trained run; sizes from the training histogram.

    Sizes are drawn on the CPU with `seed` (so a seed gives the same sizes on every device), the molecules on
    `device` with seed + 1; `bf16` runs the network under bfloat16 autocast, `compile` compiles it first."""
    from gendiff.device import make_generator

    from .model import sample_molecules

    if int(n) < 1:
        raise ConfigError(f"n={n}: number of molecules must be >= 1")
    denoiser, sched, sizes, _ = load_run(run, device, compile=compile)
    counts = sizes.sample(int(n), make_generator("cpu", int(seed)))
    gen = make_generator(next(denoiser.parameters()).device, int(seed) + 1)
    return sample_molecules(denoiser, sched, n, counts, sampler=sampler, steps=steps, generator=gen,
                            batch_size=batch_size, progress=progress, bf16=bf16, **sampler_kw)


def evaluate(input=None, molecules: Sequence | None = None, reference=None) -> dict:
    """Atom stability, molecule stability, RDKit validity, uniqueness (and novelty against `reference`)."""
    from .metrics import evaluate_molecules

    if (input is None) == (molecules is None):
        raise ConfigError("evaluate needs exactly one of input=FILE or molecules=[...]")
    if input is not None:
        from .data import load_molecules

        molecules = load_molecules(input)
    ref = reference
    if isinstance(reference, str) and reference.lower() == "qm9":
        from .metrics import qm9_reference_smiles

        ref = qm9_reference_smiles()
    elif isinstance(reference, str) and reference.lower() == "none":
        ref = None
    elif isinstance(reference, str):
        raise ConfigError(f"--reference {reference!r}: expected 'qm9' or 'none' (or pass a list of SMILES)")
    return evaluate_molecules(list(molecules), reference_smiles=ref)


def write_molecules(path, mols: Sequence) -> Path:
    """Write .sdf or .xyz (by suffix) and a PNG grid of the first 50 next to it; returns the PNG path."""
    from .io import write_molecules as write_file
    from .metrics import draw_grid

    path = Path(path)
    if path.suffix.lower() not in (".sdf", ".xyz"):
        raise ConfigError(f"--out {path}: expected a .sdf or .xyz file name")
    write_file(path, mols)
    return draw_grid(path.with_suffix(".png"), list(mols))


def demo(out="demo_molecules", model: str = "egnn", minutes: float = 1.5, n: int = 64, seed: int = 0,
         device: str = "auto") -> dict:
    """Train a small model briefly on QM9, sample n molecules, write molecules.sdf/.png and metrics.json to OUT."""
    from gendiff.io import write_json_atomic

    out = Path(out)
    small = dict(hidden=64, layers=4) if model == "egnn" else dict(hidden=16, layers=2, mul_vectors=4)
    t0 = time.time()
    train(data="qm9", model=model, out=out / "run", seed=seed, limit=20_000, max_minutes=float(minutes),
          max_steps=1_000_000, batch_size=64, lr=5e-4, ema_decay=0.99, device=device, **small)
    train_s = time.time() - t0
    mols = sample(out / "run", n=n, sampler="heun", steps=50, seed=seed, device=device)
    write_molecules(out / "molecules.sdf", mols)
    metrics = evaluate(molecules=mols)
    metrics.update(train_seconds=round(train_s, 1), sampler="heun", steps=50, n=len(mols), model=model)
    write_json_atomic(out / "metrics.json", metrics)
    return metrics
