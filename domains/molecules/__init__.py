"""3D molecule generation with E(3)-equivariant diffusion (Hoogeboom et al. 2022, EDM): train, sample, evaluate, demo.

    from gendiff.domains import molecules
    molecules.train(data="qm9", model="egnn", out="runs/qm9", max_steps=1000)
    mols = molecules.sample(run="runs/qm9", n=100)   # ancestral, 100 steps; or run="pretrained:qm9"
    molecules.evaluate(molecules=mols)   # atom/molecule stability, validity, connected validity, uniqueness (, novelty)

A run is a folder in the core run format (gendiff.runs): config.json (domain 'molecules', network and its config,
schedule, Denoiser parametrization, EDM feature scaling and layout, atom-type vocabulary, atom-count histogram),
weights.safetensors (EMA weights), card.json (data, split, steps, wall and CPU time, hardware, seed, commit, command,
measured metrics with the command that measured them) and, for resuming only, checkpoint.pt. Every function and CLI
verb that takes a run also takes `pretrained:NAME` (shipped in gendiff/domains/molecules/pretrained/NAME/).

Every verb that computes takes device='auto' (CUDA, else MPS, else CPU; gendiff.device.resolve_device); training
and sampling take bf16=True (bfloat16 autocast) and compile=True (torch.compile of the network, dynamic shapes).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Sequence

from gendiff import runs
from gendiff.errors import ConfigError, DataError

DOMAIN = "molecules"
RUN_CONFIG = runs.CONFIG
CHECKPOINT = runs.CHECKPOINT
DEFAULT_PRETRAINED = "pretrained:qm9"
# The default sampler of `sample`, `measure`, `demo` and the CLI verbs: DDPM ancestral sampling in 100 steps spaced
# uniformly in log-SNR (Lu et al. 2022) rather than in t. On pretrained:qm9 (1,000 molecules, seed 1) it beat uniform
# spacing, DPM-Solver++ in 50 and 100 steps, Heun in 50 and Euler-Maruyama in 100 on molecule stability
# (benchmarks/RESULTS.md, "molecules: the default sampler"). The spacing applies to any sampler given without one.
DEFAULT_SAMPLER, DEFAULT_STEPS, DEFAULT_SPACING = "ancestral", 100, "log_snr"
# The default training recipe: x0 prediction with EQGAT-diff's clamped-SNR weight (weighting 'auto'). Against EDM's
# eps recipe at the same training CPU time it won at 3.5 and at 30 CPU minutes (benchmarks/RESULTS.md, "molecules
# recipes"); `prediction="eps", weighting=None` (`--prediction eps --weighting none`) trains EDM's.
DEFAULT_PREDICTION = "x0"
_TRAIN_KEYS = ("max_steps", "batch_size", "lr", "weight_decay", "warmup_steps", "lr_decay", "lr_final", "grad_clip",
               "ema_decay", "accumulate", "log_every", "ckpt_every", "max_nonfinite", "num_workers", "max_minutes",
               "time_budget", "bf16")


def _load_training_data(data, limit):
    """'qm9' (train split), a path to .xyz/.sdf, or a sequence of Data -> (dataset, collate_fn, atom-count
    distribution, formula distribution), the two histograms over the molecules trained on."""
    from .data import QM9Dataset, formula_counts, load_molecules, load_qm9
    from .model import AtomCountDistribution, FormulaDistribution

    if isinstance(data, str) and data.lower() == "qm9":
        ds = load_qm9(split="train")
        n = min(int(limit), len(ds)) if limit else len(ds)
        formulas = FormulaDistribution.from_counts(formula_counts(ds)[:n])
        sizes = AtomCountDistribution.from_sizes(ds.num_atoms[:n])
        if limit:
            from torch.utils.data import Subset

            return Subset(ds, range(n)), QM9Dataset.collate_fn, sizes, formulas
        return ds, QM9Dataset.collate_fn, sizes, formulas
    mols = load_molecules(data) if isinstance(data, (str, os.PathLike)) else list(data)
    if limit:
        mols = mols[: int(limit)]
    if not mols:
        raise DataError(f"training data {data!r} holds no molecules")
    return (mols, QM9Dataset.collate_fn, AtomCountDistribution.from_molecules(mols),
            FormulaDistribution.from_molecules(mols))


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


def features_config(feature_scaling: bool = True) -> dict:
    """The node feature layout and scaling of a molecules run (model.encode / decode): EDM's norm_values
    (1, 4, 10) with feature_scaling, (1, 1, 1) without (EDM's ablation)."""
    from .data import ATOMIC_NUMBERS, ELEMENTS
    from .model import NORM_VALUES, UNSCALED

    return {"layout": ["pos:3", f"onehot:{len(ELEMENTS)}", "charge:1"], "elements": list(ELEMENTS),
            "atomic_numbers": list(ATOMIC_NUMBERS), "norm_values": list(NORM_VALUES if feature_scaling else UNSCALED),
            "positions": "zero centre of mass per molecule, angstrom / norm_values[0]"}


def recipe_config(weighting=None, composition: str = "size", formulas=None, ema_decay: float | None = None) -> dict:
    """config.json's 'recipe': the loss weighting (model.parse_weighting), the composition mode ('size': N drawn
    from the atom-count histogram; 'formula': the formula drawn from the training formulas' histogram and fed to
    the network as context) with that histogram, and the EMA decay the weights were averaged with."""
    from .model import COMPOSITIONS, parse_weighting

    if composition not in COMPOSITIONS:
        raise ConfigError(f"composition {composition!r}: expected one of {', '.join(COMPOSITIONS)}")
    cfg = {"weighting": parse_weighting(weighting), "composition": composition, "ema_decay": ema_decay}
    if composition == "formula" and formulas is not None:  # None: only the switches (resume checks)
        cfg["formulas"] = dict(formulas.histogram)
    return cfg


def auto_weighting(weighting, prediction: str, precondition: str | None = None):
    """`weighting`, with 'auto' resolved: EQGAT-diff's clamped SNR for x0 prediction without preconditioning (the
    default recipe), else None (the parametrization's own loss: EDM's eps MSE, the velocity MSE of flow matching)."""
    if not (isinstance(weighting, str) and weighting.lower() == "auto"):
        return weighting
    return "clamped_snr" if prediction == "x0" and precondition is None else None


def full_net_config(model: str, net_cfg: dict) -> dict:
    """The network's whole config (defaults filled in), so a change of defaults cannot change a saved run."""
    from .model import E3NN_DEFAULTS, EGNN_DEFAULTS

    return {**(EGNN_DEFAULTS if model == "egnn" else E3NN_DEFAULTS), **dict(net_cfg)}


def run_config(model: str, net_cfg: dict, sched, denoiser, sizes, data: str, *, feature_scaling: bool = True,
               recipe: dict | None = None) -> dict:
    """config.json of a run (less format and domain, which runs.save_run adds): all that rebuilds the model."""
    from gendiff.schedules import schedule_config

    return {"model": model, "net": full_net_config(model, net_cfg), "schedule": schedule_config(sched),
            "denoiser": denoiser.config(), "prediction": denoiser.prediction,
            "features": features_config(feature_scaling), "atom_counts": {str(k): v for k, v in sizes.histogram.items()},
            "recipe": recipe if recipe is not None else recipe_config(), "data": data}


def _split_text(data, limit, n: int) -> str:
    if isinstance(data, str) and data.lower() == "qm9":
        head = f"the first {n} molecules of " if limit else ""
        return (f"{head}QM9's train split (EDM/Cormorant split, 100,000 of 130,831 molecules; valid and test "
                f"held out), {n} molecules")
    return f"{n} molecules from {data}"


def _saved_config(out: Path) -> dict | None:
    """The config.json of a run folder about to be resumed (None when there is none); old formats refused."""
    return runs.saved_config(out, "convert it with gendiff.domains.molecules.convert_run or train into a new --out")


def train(data="qm9", model: str = "egnn", out="runs/molecules", *, schedule: str = "polynomial",
          prediction: str = DEFAULT_PREDICTION, weighting="auto", precondition: str | None = None,
          sigma_data: float = 1.0, feature_scaling: bool = True, composition: str = "size", seed: int = 0,
          limit: int | None = None, progress: bool = True, resume: bool = False, device: str = "auto",
          compile: bool | str = False, command: str | None = None, name: str | None = None, init=None,
          **config) -> Path:
    """Train a molecule denoiser into run folder OUT (run format: config.json first, then at the end
    weights.safetensors and card.json; checkpoint.pt and log.csv for resuming).

    The recipe (all stored in config.json; load_run rebuilds it): `schedule` ('polynomial': EDM's VP schedule;
    'flow': rectified flow, with prediction 'velocity', 'x0' or 'v'), `prediction` ('eps', 'x0', 'v', 'velocity'),
    `weighting` ('auto': 'clamped_snr' for x0 prediction without preconditioning, else None; None: the
    parametrization's own MSE; 'min_snr[:GAMMA]', 'clamped_snr[:LOW,HIGH]', 'snr', 'constant';
    model.parse_weighting), `precondition` ('edm': Karras et al.'s c_skip/c_out/c_in with
    `sigma_data`; the network then predicts x0), `feature_scaling` (EDM's 1, 4, 10 on positions, one-hot types,
    charges; False: 1, 1, 1), `composition` ('size': N from the training histogram; 'formula': the formula drawn
    from the training formulas and given to the network as context) and `ema_decay` (a TrainConfig field).

    `init` (a run folder or `pretrained:NAME` of the same network and recipe) starts from that run's EMA weights
    with a fresh optimizer: how training continues across sittings from weights committed as safetensors (the
    checkpoint with the optimizer state never goes into git). The card continues the init run's sittings, so its
    steps and CPU time are cumulative.

    `max_minutes` (or `time_budget` in seconds) is the core Trainer's TrainConfig.time_budget: training stops before
    a step would overrun it. The card records `command` (default: this process's command line), cumulative over
    resumed sittings. `device`: 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'; bf16=True trains under bfloat16 autocast
    (the Trainer's); `compile` compiles the network (True: inductor, or a backend name; dynamic shapes; checkpoints
    keep the eager module's keys; see model.compile_net)."""
    import torch

    from gendiff.device import resolve_device
    from gendiff.io import write_json_atomic
    from gendiff.schedules import get_schedule

    from .model import MODELS, build_denoiser, make_step_fn

    if model not in MODELS:
        raise ConfigError(f"model {model!r}: expected one of {', '.join(MODELS)}")
    net_cfg, train_cfg = _split_config(model, dict(config))
    resolve_device(device)  # a bad or missing device fails here, before any data is read
    train_cfg["device"] = str(device)  # resolved again by the Trainer, per process (LOCAL_RANK under torchrun)
    from gendiff.schedules import schedule_config

    from .model import NORM_VALUES, NUM_TYPES, UNSCALED, build_weighting, parse_weighting

    weighting_cfg = parse_weighting(auto_weighting(weighting, prediction, precondition))
    recipe = recipe_config(weighting_cfg, composition, ema_decay=float(train_cfg.get("ema_decay", _EMA_DEFAULT)))
    if composition == "formula":
        net_cfg["context_nf"] = NUM_TYPES
    sched = get_schedule(schedule)
    out = Path(out)
    previous = None
    if (out / CHECKPOINT).exists():
        if not resume:
            raise ConfigError(f"{out / CHECKPOINT} exists; pass resume=True (--resume) or choose another --out")
        old = _saved_config(out) or {}
        if (old.get("model"), old.get("net")) != (model, full_net_config(model, net_cfg)):
            raise ConfigError(f"{out / RUN_CONFIG}: cannot resume model {old.get('model')!r} {old.get('net')} "
                              f"as {model!r} {net_cfg}")
        old_recipe = _recipe_switches(old.get("recipe"))
        old_den = old.get("denoiser") or {}
        was = (old.get("schedule"), old_den.get("prediction"), old_den.get("precondition"),
               (old.get("features") or {}).get("norm_values"), old_recipe)
        now = (schedule_config(sched), "x0" if precondition else prediction, precondition,
               features_config(feature_scaling)["norm_values"],
               _recipe_switches(recipe))
        if was != now:
            raise ConfigError(f"{out / RUN_CONFIG}: cannot resume the recipe (schedule, prediction, precondition, "
                              f"norm_values, recipe) {was} as {now}")
        if (out / runs.CARD).is_file():
            previous = json.loads((out / runs.CARD).read_text())
            previous["metrics"] = {}  # measured on the weights before this sitting
    dataset, collate_fn, sizes, formulas = _load_training_data(data, limit)
    recipe = recipe_config(weighting_cfg, composition, formulas, recipe["ema_decay"])
    torch.manual_seed(seed)
    denoiser = build_denoiser(model, sched, prediction, net_cfg, compile=compile,
                              options={"precondition": precondition, "sigma_data": float(sigma_data)}
                              if precondition is not None else None)
    data_text = str(data) if isinstance(data, (str, os.PathLike)) else f"<{len(dataset)} molecules>"
    cfg = run_config(model, net_cfg, sched, denoiser, sizes, data_text, feature_scaling=feature_scaling,
                     recipe=recipe)
    init_steps = 0
    if init is not None:
        if (out / CHECKPOINT).exists():
            raise ConfigError(f"{out / CHECKPOINT} exists: continue it with resume=True, or give init= a new --out")
        previous, init_steps = _warm_start(init, denoiser, cfg)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / RUN_CONFIG, {"format": runs.FORMAT, "domain": DOMAIN, **cfg})
    step_fn = make_step_fn(sched, weighting=build_weighting(weighting_cfg),
                           norm_values=NORM_VALUES if feature_scaling else UNSCALED, composition=composition)
    summary, trainer = _fit(denoiser, step_fn, dataset, collate_fn, train_cfg, seed, out, progress, resume)
    if trainer.ctx.is_main:
        card = runs.new_card(name or out.name, DOMAIN, data=data_text, split=_split_text(data, limit, len(dataset)),
                             summary=summary, seed=seed, device=trainer.device, command=command, previous=previous,
                             model=model, parameters=sum(p.numel() for p in denoiser.parameters()),
                             train_config=trainer.config.to_dict())
        if init is not None:
            card["training"]["steps"] = init_steps + int(summary.get("step") or 0)
            card["training"]["sittings"][-1]["initialised_from"] = {"run": str(init), "steps": init_steps}
        runs.save_run(out, DOMAIN, cfg, trainer.ema_model, card)
        write_json_atomic(out / "train_summary.json", {k: v for k, v in summary.items()})
    return out


_EMA_DEFAULT = 0.999
_SAME_FOR_INIT = ("model", "net", "schedule", "denoiser", "features")


def _recipe_switches(recipe: dict | None) -> dict:
    """The parts of a run's recipe that must match to resume or warm-start it: all but the training formulas (data,
    not a switch) and the EMA decay (may change between sittings)."""
    return {k: v for k, v in (recipe or {}).items() if k not in ("formulas", "ema_decay")}


def _warm_start(init, denoiser, cfg: dict) -> tuple[dict, int]:
    """Load run `init`'s EMA weights into `denoiser` (strict) after checking that its network and recipe are the
    ones being trained; returns (its card without metrics, its steps)."""
    info = read_run(init)
    old = info.config
    for key in _SAME_FOR_INIT:
        if old.get(key) != cfg.get(key):
            raise ConfigError(f"{info.path / RUN_CONFIG}: init run has {key} {old.get(key)!r}, this training "
                              f"{cfg.get(key)!r}; train with the init run's settings")
    was, now = _recipe_switches(old.get("recipe")), _recipe_switches(cfg.get("recipe"))
    if was != now:
        raise ConfigError(f"{info.path / RUN_CONFIG}: init run has recipe {was}, this training {now}; train with "
                          "the init run's settings")
    runs.load_weights(info, denoiser)
    card = dict(info.card)
    card["metrics"] = {}  # measured on the init weights, not on what this sitting trains
    return card, int(card.get("training", {}).get("steps") or 0)


def _fit(denoiser, step_fn, dataset, collate_fn, train_cfg: dict, seed: int, out: Path, progress: bool,
         resume: bool = False):
    """Run gendiff.training.Trainer once -> (summary, trainer); max_minutes becomes TrainConfig.time_budget."""
    from gendiff.training import TrainConfig, Trainer

    cfg = {"lr": 1e-4, "batch_size": 64, "max_steps": 100_000, "ema_decay": _EMA_DEFAULT, "grad_clip": 1.0,
           **train_cfg, "seed": seed, "progress": progress}
    max_minutes = cfg.pop("max_minutes", None)
    if max_minutes is not None:
        if float(max_minutes) <= 0:
            raise ConfigError(f"max_minutes={max_minutes} must be > 0")
        cfg["time_budget"] = 60.0 * float(max_minutes)
    trainer = Trainer(denoiser, step_fn, dataset, TrainConfig.from_dict(cfg), out, collate_fn=collate_fn,
                      resume=resume)
    return trainer.fit(), trainer


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
    from gendiff.schedules import schedule_from_config

    from .model import AtomCountDistribution, build_denoiser

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


def recipe(config: dict) -> dict:
    """A run config's sampling-side recipe: {'norm_values', 'composition', 'formulas' (a FormulaDistribution or
    None), 'weighting'}; runs written before the recipe switches get EDM's scaling and the size histogram."""
    from .model import NORM_VALUES, FormulaDistribution, parse_weighting

    rec = dict(config.get("recipe") or {})
    comp = rec.get("composition", "size")
    formulas = FormulaDistribution(rec["formulas"]) if comp == "formula" else None
    norm = tuple(float(v) for v in config.get("features", {}).get("norm_values", NORM_VALUES))
    return {"norm_values": norm, "composition": comp, "formulas": formulas,
            "weighting": parse_weighting(rec.get("weighting"))}


def convert_run(src, out=None, *, command: str | None = None, commit: str | None = None,
                name: str | None = None) -> Path:
    """Rewrite a molecules run of the older format (config.json without 'format', checkpoint.pt) in the run format:
    config.json, weights.safetensors (the checkpoint's EMA weights) and card.json (from train_summary.json; `command`
    and `commit` are those of the training, when known). `out` defaults to `src` (converted in place; checkpoint.pt
    stays for resuming)."""
    import shutil

    from gendiff.training import load_ema_weights

    src = Path(src)
    out = Path(out) if out is not None else src
    legacy = json.loads((src / RUN_CONFIG).read_text())
    if legacy.get("format") == runs.FORMAT:
        raise ConfigError(f"{src / RUN_CONFIG} is already in the run format")
    from gendiff.schedules import schedule_from_config

    from .model import AtomCountDistribution, build_denoiser

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
    card = runs.new_card(name or out.name, DOMAIN, data=data, split=_split_text(data, tcfg.get("limit"), n_train),
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


def load_run(run, device: str = "auto", compile: bool | str = False):
    """Rebuild (EMA denoiser on `device`, in eval mode, schedule, atom-count distribution, config) from a run folder
    or `pretrained:NAME`; weights load strictly from weights.safetensors (never unpickled), and a truncated or
    corrupt file or a config that does not fit it is one DataError naming the file.

    `device` goes through gendiff.device.resolve_device ('auto': CUDA, else MPS, else CPU); `compile` compiles the
    network in place (True: inductor, or a torch.compile backend name; model.compile_net)."""
    from gendiff.device import resolve_device

    from .model import compile_net

    device = resolve_device(device)
    info = read_run(run)
    denoiser, sched, sizes = _rebuild(info)
    runs.load_weights(info, denoiser)
    denoiser = denoiser.to(device).eval()
    compile_net(denoiser.net, compile)  # after loading and moving: in place, the state_dict keys stay the eager ones
    return denoiser, sched, sizes, info.config


def sample(run, n: int = 100, sampler: str = DEFAULT_SAMPLER, steps: int = DEFAULT_STEPS, seed: int = 0, *,
           batch_size: int = 256, device: str = "auto", progress: bool = True, bf16: bool = False,
           compile: bool | str = False, **sampler_kw) -> list:
    """Sample n molecules (list of Data: pos, z, x, charge) from a run folder or pretrained:NAME; sizes from the
    training histogram.

    Sizes are drawn on the CPU with `seed` (so a seed gives the same sizes on every device), the molecules on
    `device` with seed + 1; `bf16` runs the network under bfloat16 autocast, `compile` compiles it first.
    `sampler_kw` go to the core sampler; its grid is spaced DEFAULT_SPACING unless `spacing` or `timesteps` is
    given."""
    from gendiff.device import make_generator

    from .model import sample_molecules

    if int(n) < 1:
        raise ConfigError(f"n={n}: number of molecules must be >= 1")
    from .model import composition_context

    denoiser, sched, sizes, config = load_run(run, device, compile=compile)
    rec = recipe(config)
    cond = None
    if rec["formulas"] is not None:  # formula-conditioned: draw formulas, N is their sum
        formulas = rec["formulas"].sample(int(n), make_generator("cpu", int(seed)))
        counts, cond = formulas.sum(1), composition_context(formulas)
    else:
        counts = sizes.sample(int(n), make_generator("cpu", int(seed)))
    gen = make_generator(next(denoiser.parameters()).device, int(seed) + 1)
    if "timesteps" not in sampler_kw:
        sampler_kw.setdefault("spacing", DEFAULT_SPACING)
    return sample_molecules(denoiser, sched, n, counts, sampler=sampler, steps=steps, generator=gen,
                            batch_size=batch_size, progress=progress, bf16=bf16, cond=cond,
                            norm_values=rec["norm_values"], **sampler_kw)


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




def measure(run=DEFAULT_PRETRAINED, n: int = 500, sampler: str = DEFAULT_SAMPLER, steps: int = DEFAULT_STEPS,
            seed: int = 0, *, spacing: str = DEFAULT_SPACING, reference=None, batch_size: int = 256,
            device: str = "auto", progress: bool = False) -> tuple[dict, list]:
    """Sample n molecules from a run and evaluate them -> (metrics with sampler, steps, spacing, seed,
    sample_seconds and sample_cpu_seconds, molecules). What `gendiff evaluate molecules --run RUN` prints and
    records on the card."""
    wall, cpu = runs.timer()
    mols = sample(run, n=n, sampler=sampler, steps=steps, seed=seed, batch_size=batch_size, device=device,
                  progress=progress, spacing=spacing)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    metrics = evaluate(molecules=mols, reference=reference)
    metrics.update(sampler=sampler, steps=int(steps), spacing=spacing, seed=int(seed), sample_seconds=round(wall, 2),
                   sample_cpu_seconds=round(cpu, 2))
    return metrics, mols


def demo(out="demo_out/molecules", model: str = "egnn", minutes: float = 1.5, n: int = 64, seed: int = 0,
         device: str = "auto", *, from_scratch: bool = False, run=DEFAULT_PRETRAINED, sampler: str = DEFAULT_SAMPLER,
         steps: int = DEFAULT_STEPS, spacing: str = DEFAULT_SPACING) -> dict:
    """Sample n molecules from the shipped model (`run`, default pretrained:qm9; no training) or, with
    from_scratch=True, first train a small model on QM9 for `minutes`; writes OUT/molecules.sdf, OUT/molecules.png
    (2-D depictions) and OUT/metrics.json (stability, validity, connected validity, uniqueness, timings)."""
    from gendiff.io import write_json_atomic

    out = Path(out)
    t0 = time.time()
    extra: dict = {}
    if from_scratch:
        small = dict(hidden=64, layers=4) if model == "egnn" else dict(hidden=16, layers=2, mul_vectors=4)
        run = out / "run"
        if (run / RUN_CONFIG).is_file():  # the demo's own run of an earlier call: trained afresh
            import shutil

            shutil.rmtree(run)
        train(data="qm9", model=model, out=run, seed=seed, limit=20_000, max_minutes=float(minutes),
              max_steps=1_000_000, batch_size=64, lr=5e-4, ema_decay=0.99, device=device, progress=False,
              command=f"gendiff demo molecules --from-scratch --out {out} --minutes {minutes}", **small)
        extra.update(train_seconds=round(time.time() - t0, 1), model=model)
    metrics, mols = measure(run, n=n, sampler=sampler, steps=steps, seed=seed, spacing=spacing, device=device)
    write_molecules(out / "molecules.sdf", mols)
    info = read_run(run)
    metrics.update(extra, n=len(mols), run=str(run), from_scratch=bool(from_scratch),
                   training_steps=info.card.get("training", {}).get("steps"), seconds=round(time.time() - t0, 1))
    write_json_atomic(out / "metrics.json", metrics)
    return metrics
