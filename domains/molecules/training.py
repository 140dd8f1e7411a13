"""The molecules training recipe end to end: options -> data -> denoiser -> core Trainer -> run folder (config.json,
weights.safetensors, card.json; checkpoint.pt and log.csv to resume), with resuming and warm starts."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from gendiff import runs
from gendiff.device import resolve_device
from gendiff.errors import ConfigError, DataError
from gendiff.io import write_json_atomic
from gendiff.schedules import get_schedule, schedule_config
from gendiff.training import TrainConfig, Trainer

from . import bonddata, categorical
from .conditioning import conditioned_training_data
from .data import QM9Dataset, formula_counts, load_molecules
from .defaults import CHECKPOINT, DOMAIN, RUN_CONFIG, TRAINER_DEFAULTS
from .loading import read_run
from .model import AtomCountDistribution, FormulaDistribution, build_denoiser, build_weighting, make_step_fn
from .options import TrainOptions
from .properties import qm9_half
from .runconfig import SAME_FOR_INIT, full_net_config, recipe_switches, run_config, split_text


def load_training_data(data, limit, half: str | None = None, conditioning=None, bonds: bool = False):
    """'qm9' (train split, or EDM's `half` of it), a path to .xyz/.sdf, or a sequence of Data -> (dataset,
    collate_fn, atom-count distribution, formula distribution, config.json's 'conditioning' or None), the two
    histograms over the molecules trained on; with `conditioning` (QM9 only) each molecule carries its normalised
    properties (conditioning.py); with `bonds` its bonds (bond_index, bond_order: bonddata.py)."""
    out = _training_data(data, limit, half, conditioning)
    if not bonds:
        return out
    dataset, *rest = out
    qm9 = isinstance(data, str) and data.lower() == "qm9"
    return (bonddata.with_bonds(dataset, qm9_indices=qm9_half(half).indices[: len(dataset)] if qm9 else None),
            *rest)


def _training_data(data, limit, half, conditioning):
    if isinstance(data, str) and data.lower() == "qm9":
        ds = qm9_half(half)
        n = min(int(limit), len(ds)) if limit else len(ds)
        formulas = FormulaDistribution.from_counts(formula_counts(ds)[:n])
        sizes = AtomCountDistribution.from_sizes(ds.num_atoms[:n])
        if conditioning:
            cond_ds, cond_cfg = conditioned_training_data(ds, conditioning, half, limit)
            return cond_ds, QM9Dataset.collate_fn, sizes, formulas, cond_cfg
        if limit:
            return torch.utils.data.Subset(ds, range(n)), QM9Dataset.collate_fn, sizes, formulas, None
        return ds, QM9Dataset.collate_fn, sizes, formulas, None
    if conditioning or half:  # QM9 only
        what = "conditioning" if conditioning else "half"
        where = repr(str(data)) if isinstance(data, (str, os.PathLike)) else "a list of molecules"
        raise ConfigError(f"{what} needs data='qm9' (QM9's properties and EDM's halves), not {where}")
    mols = load_molecules(data) if isinstance(data, (str, os.PathLike)) else list(data)
    if limit:
        mols = mols[: int(limit)]
    if not mols:
        raise DataError(f"training data {data!r} holds no molecules")
    return (mols, QM9Dataset.collate_fn, AtomCountDistribution.from_molecules(mols),
            FormulaDistribution.from_molecules(mols), None)


def train(data="qm9", model: str | None = None, out="runs/molecules", *, config=None, progress: bool = True,
          resume: bool = False, device: str = "auto", compile: bool | str = False, command: str | None = None,
          name: str | None = None, init=None, **overrides) -> Path:
    """Train a molecule denoiser into run folder OUT (run format: config.json first, then at the end
    weights.safetensors and card.json; checkpoint.pt and log.csv for resuming).

    The options are a TrainOptions (`config`: one, or a dict of its fields) with keyword `overrides` on top, as
    before: the recipe (all stored in config.json; load_run rebuilds it): `schedule` ('polynomial': EDM's VP
    schedule; 'flow': rectified flow, with prediction 'velocity', 'x0' or 'v'), `prediction` ('eps', 'x0', 'v',
    'velocity'), `weighting` ('auto': 'clamped_snr' for x0 prediction without preconditioning, else None; None: the
    parametrization's own MSE; 'min_snr[:GAMMA]', 'clamped_snr[:LOW,HIGH]', 'snr', 'constant';
    model.parse_weighting), `precondition` ('edm': Karras et al.'s c_skip/c_out/c_in with `sigma_data`; the network
    then predicts x0), `feature_scaling` (EDM's 1, 4, 10 on positions, one-hot types, charges; False: 1, 1, 1),
    `composition` ('size': N from the training histogram; 'formula': the formula drawn from the training formulas
    and given to the network as context), `self_cond` (self-conditioning: half the steps feed the network its own
    detached x0 estimate, sampling feeds the previous step's; selfcond.py), `pairing` ('ot': noise assigned to the
    molecules of a batch by optimal transport per atom count; coupling.py), `time_sampling` ('low_noise': t drawn
    with density 2 (1 - t)), `bonds` ('explicit': a bond type per unordered atom pair diffused with the atoms,
    bondstate.py; the training bonds from bonddata.py; `bond_weight` the pairs' loss weight relative to the
    atoms'), `types` ('categorical': atom types, and explicit bonds' classes, diffused as categorical variables
    towards the training marginals, D3PM / MiDi; needs prediction 'x0'; `type_weight` the types' cross-entropy
    weight; categorical.py) and `ema_decay` (a TrainConfig field); `seed`, `limit` (train on the first LIMIT
    molecules), `conditioning` (QM9 properties, e.g. ['alpha'] or 'alpha,gap': each molecule's (value - mean) / MAD
    is the network's context; config.json's 'conditioning' keeps mean and MAD; conditioning.py), `half` ('first' or
    'second': EDM's halves of QM9's train split, properties.edm_halves; EDM trains the conditional generator on the
    second), the network's options (`hidden`, `layers` or its own names) and the Trainer's (TrainConfig).

    `init` (a run folder or `pretrained:NAME` of the same network and recipe) starts from that run's EMA weights
    with a fresh optimizer: how training continues across sittings from weights committed as safetensors (the
    checkpoint with the optimizer state never goes into git). The card continues the init run's sittings, so its
    steps and CPU time are cumulative.

    `max_minutes` (or `time_budget` in seconds) is the core Trainer's TrainConfig.time_budget: training stops before
    a step would overrun it. The card records `command` (default: this process's command line), cumulative over
    resumed sittings. `device`: 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'; bf16=True trains under bfloat16 autocast
    (the Trainer's); `compile` compiles the network (True: inductor, or a backend name; dynamic shapes; checkpoints
    keep the eager module's keys; see model.compile_net)."""
    opts = TrainOptions.build(config, **overrides, **({} if model is None else {"model": model}))
    resolve_device(device)  # a bad or missing device fails here, before any data is read
    out = Path(out)
    sched = get_schedule(opts.schedule)
    previous = _check_resume(out, opts, sched, resume)
    dataset, collate_fn, sizes, formulas, cond_cfg = load_training_data(
        data, opts.limit, opts.half, opts.conditioning, bonds=opts.bonds_config is not None)
    torch.manual_seed(opts.seed)
    denoiser = build_denoiser(opts.model, sched, opts.prediction, opts.net_config(), compile=compile,
                              options=opts.denoiser_options())
    data_text = str(data) if isinstance(data, (str, os.PathLike)) else f"<{len(dataset)} molecules>"
    priors = _priors(opts, dataset, sizes, formulas)
    cfg = run_config(opts.model, opts.net_config(), sched, denoiser, sizes, data_text,
                     feature_scaling=opts.feature_scaling, recipe=opts.recipe(formulas, priors))
    if cond_cfg is not None:  # only conditional runs have the key: unconditional configs stay as they were
        cfg["conditioning"] = cond_cfg
    init_steps = 0
    if init is not None:
        if (out / CHECKPOINT).exists():
            raise ConfigError(f"{out / CHECKPOINT} exists: continue it with resume=True, or give init= a new --out")
        previous, init_steps = _warm_start(init, denoiser, cfg)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / RUN_CONFIG, {"format": runs.FORMAT, "domain": DOMAIN, **cfg})
    step_fn = make_step_fn(sched, weighting=build_weighting(opts.weighting_config), norm_values=opts.norm_values,
                           composition=opts.composition, pairing=opts.pairing, time_sampling=opts.time_sampling,
                           conditioned=cond_cfg is not None, bonds=opts.bonds_config,
                           types=cfg["recipe"].get("types"))
    trainer_cfg = {**opts.trainer, "device": str(device)}  # resolved again by the Trainer, per process (torchrun)
    summary, trainer = _fit(denoiser, step_fn, dataset, collate_fn, trainer_cfg, opts.seed, out, progress, resume)
    if trainer.ctx.is_main:
        card = runs.new_card(name or out.name, DOMAIN, data=data_text,
                             split=split_text(data, opts.limit, len(dataset), opts.half), summary=summary, seed=opts.seed,
                             device=trainer.device, command=command, previous=previous, model=opts.model,
                             parameters=sum(p.numel() for p in denoiser.parameters()),
                             train_config=trainer.config.to_dict())
        if init is not None:
            card["training"]["steps"] = init_steps + int(summary.get("step") or 0)
            card["training"]["sittings"][-1]["initialised_from"] = {"run": str(init), "steps": init_steps}
        runs.save_run(out, DOMAIN, cfg, trainer.ema_model, card)
        write_json_atomic(out / "train_summary.json", {k: v for k, v in summary.items()})
    return out


def _priors(opts: TrainOptions, dataset, sizes, formulas) -> dict | None:
    """A categorical run's training marginals (categorical.py): the atom types' from the formulas of the molecules
    trained on, with explicit bonds the bond classes' over their atom pairs; None for Gaussian types."""
    if opts.types_config is None:
        return None
    priors = {"marginals": categorical.marginals_from_formulas(formulas)}
    if opts.bonds_config is not None:
        priors["bond_marginals"] = categorical.bond_marginals(dataset, sizes)
    return priors


def _saved_config(out: Path) -> dict | None:
    """The config.json of a run folder about to be resumed (None when there is none); old formats refused."""
    return runs.saved_config(out, "convert it with gendiff.domains.molecules.convert_run or train into a new --out")


def _check_resume(out: Path, opts: TrainOptions, sched, resume: bool) -> dict | None:
    """With a checkpoint in `out`: refuse unless resuming the same network and recipe; returns the card to continue
    (its metrics dropped: measured on the weights before this sitting), None for a fresh run."""
    if not (out / CHECKPOINT).exists():
        return None
    if not resume:
        raise ConfigError(f"{out / CHECKPOINT} exists; pass resume=True (--resume) or choose another --out")
    old = _saved_config(out) or {}
    net_cfg = opts.net_config()
    if (old.get("model"), old.get("net")) != (opts.model, full_net_config(opts.model, net_cfg)):
        raise ConfigError(f"{out / RUN_CONFIG}: cannot resume model {old.get('model')!r} {old.get('net')} "
                          f"as {opts.model!r} {net_cfg}")
    was_cond = (old.get("conditioning") or {}).get("properties")
    if was_cond != opts.conditioning:
        raise ConfigError(f"{out / RUN_CONFIG}: cannot resume a run conditioned on {was_cond} as conditioned on "
                          f"{opts.conditioning}")
    old_den = old.get("denoiser") or {}
    was = (old.get("schedule"), old_den.get("prediction"), old_den.get("precondition"),
           (old.get("features") or {}).get("norm_values"), recipe_switches(old.get("recipe")))
    now = opts.resume_key(schedule_config(sched))
    if was != now:
        raise ConfigError(f"{out / RUN_CONFIG}: cannot resume the recipe (schedule, prediction, precondition, "
                          f"norm_values, recipe) {was} as {now}")
    if not (out / runs.CARD).is_file():
        return None
    previous = json.loads((out / runs.CARD).read_text())
    previous["metrics"] = {}
    return previous


def _warm_start(init, denoiser, cfg: dict) -> tuple[dict, int]:
    """Load run `init`'s EMA weights into `denoiser` (strict) after checking that its network and recipe are the
    ones being trained (the loss weighting, time sampling and noise pairing may change: runconfig.TRAINING_ONLY);
    returns (its card without metrics, its steps)."""
    info = read_run(init)
    old = info.config
    for key in SAME_FOR_INIT:
        if old.get(key) != cfg.get(key):
            raise ConfigError(f"{info.path / RUN_CONFIG}: init run has {key} {old.get(key)!r}, this training "
                              f"{cfg.get(key)!r}; train with the init run's settings")
    was_cond, now_cond = ((c.get("conditioning") or {}).get("properties") for c in (old, cfg))
    if was_cond != now_cond:
        raise ConfigError(f"{info.path / RUN_CONFIG}: init run is conditioned on {was_cond}, this training on "
                          f"{now_cond}")
    was, now = recipe_switches(old.get("recipe"), warm=True), recipe_switches(cfg.get("recipe"), warm=True)
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
    cfg = {**TRAINER_DEFAULTS, **train_cfg, "seed": seed, "progress": progress}
    max_minutes = cfg.pop("max_minutes", None)
    if max_minutes is not None:
        cfg["time_budget"] = 60.0 * float(max_minutes)
    trainer = Trainer(denoiser, step_fn, dataset, TrainConfig.from_dict(cfg), out, collate_fn=collate_fn,
                      resume=resume)
    return trainer.fit(), trainer
