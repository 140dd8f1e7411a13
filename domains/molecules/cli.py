"""`gendiff train|sample|evaluate|demo molecules`: argument parsers and runners (heavy imports inside run)."""
from __future__ import annotations

import argparse
import json

from gendiff.device import add_device_argument  # light: gendiff itself already imports torch

from .defaults import DEFAULT_PREDICTION, DEFAULT_SAMPLER, DEFAULT_SPACING, DEFAULT_STEPS  # light: gendiff.runs

MODELS = ("egnn", "e3nn")


def _check_model(name: str) -> str:
    from gendiff.errors import ConfigError

    if name not in MODELS:
        raise ConfigError(f"--model {name!r}: expected one of {', '.join(MODELS)}")
    return name


def _sampler_arguments(p: argparse.ArgumentParser, prefix: str = "") -> None:
    """--sampler, --steps and --spacing with the domain's defaults (molecules.DEFAULT_*)."""
    from gendiff.schedules import SPACINGS

    p.add_argument("--sampler", default=DEFAULT_SAMPLER,
                   help=f"{prefix}core sampler name (ancestral, heun, dpm_solver_pp, ...; default {DEFAULT_SAMPLER})")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"{prefix}sampler steps (default {DEFAULT_STEPS})")
    p.add_argument("--spacing", default=DEFAULT_SPACING, choices=SPACINGS,
                   help=f"{prefix}how the sampler's times are spaced (default {DEFAULT_SPACING})")


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="qm9", help="'qm9' or an .xyz/.sdf file of training molecules")
    p.add_argument("--model", default="egnn", help="denoiser network: egnn (EDM's EGNN) or e3nn (tensor products)")
    p.add_argument("--out", required=True,
                   help="run folder (config.json, weights.safetensors, card.json; checkpoint.pt, log.csv to resume)")
    p.add_argument("--max-steps", "--steps", dest="max_steps", type=int, default=None,
                   help="optimizer steps (default 100000)")
    p.add_argument("--batch-size", type=int, default=None, help="molecules per batch (EDM: 64)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (EDM: 1e-4)")
    p.add_argument("--warmup-steps", type=int, default=None, help="linear learning-rate warm-up steps (default 0)")
    p.add_argument("--lr-decay", default=None, choices=["cosine"],
                   help="decay the learning rate by step to --lr-final x lr at --max-steps (default: constant)")
    p.add_argument("--lr-final", type=float, default=None, help="with --lr-decay: the final fraction of lr (0)")
    p.add_argument("--schedule", default="polynomial",
                   help="noise schedule (EDM: polynomial, 1000 steps; flow: rectified flow, with --prediction velocity)")
    p.add_argument("--prediction", default=DEFAULT_PREDICTION,
                   help=f"what the network predicts: eps (EDM), x0, v or velocity (default {DEFAULT_PREDICTION})")
    p.add_argument("--weighting", default="auto",
                   help="loss weighting: auto (clamped_snr for x0 prediction, else none), none, min_snr[:GAMMA], "
                        "clamped_snr[:LOW,HIGH], snr or constant")
    p.add_argument("--precondition", default=None, choices=["edm"],
                   help="EDM preconditioning (Karras et al. 2022; the network predicts x0)")
    p.add_argument("--sigma-data", type=float, default=1.0, help="with --precondition edm: the data's std")
    p.add_argument("--no-feature-scaling", action="store_true",
                   help="one-hot types and charges unscaled (EDM scales them by 1/4 and 1/10)")
    p.add_argument("--composition", default="size", choices=["size", "formula"],
                   help="size: N from the training histogram; formula: the formula drawn from the training "
                        "formulas and given to the network as context")
    p.add_argument("--self-cond", action="store_true",
                   help="self-conditioning: the network also sees its own previous x0 estimate (selfcond.py)")
    p.add_argument("--pairing", default=None, choices=["ot"],
                   help="ot: pair noise and molecules of a batch by optimal transport per atom count")
    p.add_argument("--time-sampling", default="uniform", choices=["uniform", "low_noise"],
                   help="training times: uniform, or low_noise (density 2 (1 - t): more low-noise steps)")
    p.add_argument("--bonds", default="none", choices=["none", "explicit"],
                   help="none: bonds inferred from distances after sampling (EDM); explicit: a bond type (none, "
                        "single, double, triple; kekulized) per atom pair diffused with the atoms, written to SDF")
    p.add_argument("--bond-weight", type=float, default=1.0,
                   help="with --bonds explicit: the pairs' loss weight relative to the atoms' (default 1)")
    p.add_argument("--types", default="gaussian", choices=["gaussian", "categorical"],
                   help="gaussian: atom types as Gaussian-diffused scaled one-hots (EDM); categorical: discrete "
                        "diffusion towards the training marginals (D3PM / MiDi; needs --prediction x0; with --bonds "
                        "explicit the bond types too)")
    p.add_argument("--type-weight", type=float, default=None,
                   help="with --types categorical: the types' cross-entropy weight in the loss (default 0.05)")
    p.add_argument("--ema-decay", type=float, default=None, help="EMA decay of the saved weights (default 0.999)")
    p.add_argument("--hidden", type=int, default=None, help="EGNN hidden features / e3nn scalar multiplicity")
    p.add_argument("--layers", type=int, default=None, help="number of network layers")
    p.add_argument("--limit", type=int, default=None, help="train on the first LIMIT molecules only")
    p.add_argument("--condition-on", "--conditioning", dest="conditioning", default=None,
                   help="QM9 properties to condition on, comma-separated (alpha, gap, homo, lumo, mu, Cv; EDM's "
                        "protocol: each molecule's normalised value is the network's context)")
    p.add_argument("--half", default=None, choices=["first", "second"],
                   help="train on EDM's first or second half of QM9's train split (EDM: the conditional generator "
                        "on the second, the property classifier on the first)")
    p.add_argument("--max-minutes", "--minutes", dest="max_minutes", type=float, default=None,
                   help="training time budget (the core trainer's: stops before a step would overrun it)")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    p.add_argument("--init", default=None, help="start from the EMA weights of this run folder or pretrained:NAME "
                   "(same network and recipe, though --weighting, --time-sampling and --pairing may change: fine-tuning; "
                   "fresh optimizer; the card's steps and CPU time stay cumulative)")
    _precision_arguments(p, "train")
    add_device_argument(p)
    p.add_argument("--seed", type=int, default=0)


def _precision_arguments(p: argparse.ArgumentParser, verb: str) -> None:
    p.add_argument("--bf16", action="store_true", help=f"{verb} under bfloat16 autocast (CUDA, CPU)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the network (dynamic shapes; the first batches pay the compilation)")


def run_train(args) -> int:
    from . import train

    config = {k: v for k, v in dict(max_steps=args.max_steps, batch_size=args.batch_size, lr=args.lr,
                                    warmup_steps=args.warmup_steps, lr_decay=args.lr_decay, lr_final=args.lr_final,
                                    hidden=args.hidden, layers=args.layers, limit=args.limit,
                                    max_minutes=args.max_minutes, ema_decay=args.ema_decay,
                                    conditioning=args.conditioning, half=args.half,
                                    type_weight=args.type_weight).items()
              if v is not None}
    if args.bf16:
        config["bf16"] = True
    train(data=args.data, model=_check_model(args.model), out=args.out, schedule=args.schedule,
          prediction=args.prediction, weighting=args.weighting, precondition=args.precondition,
          sigma_data=args.sigma_data, feature_scaling=not args.no_feature_scaling, composition=args.composition,
          self_cond=args.self_cond, pairing=args.pairing, time_sampling=args.time_sampling, bonds=args.bonds,
          bond_weight=args.bond_weight, types=args.types, seed=args.seed,
          resume=args.resume, init=args.init, device=args.device, compile=args.compile, **config)
    print(f"trained run in {args.out}")
    return 0


def add_sample_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="run folder written by `gendiff train molecules`, or pretrained:NAME")
    p.add_argument("--n", type=int, default=100, help="number of molecules")
    _sampler_arguments(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256, help="molecules denoised together")
    p.add_argument("--condition", action="append", default=None, metavar="PROPERTY=VALUE",
                   help="a property-conditioned run's target, e.g. alpha=80 (repeat or comma-separate for several), "
                        "or 'dataset': (property, atom count) pairs drawn from the molecules it was conditioned on")
    _precision_arguments(p, "sample")
    add_device_argument(p)
    p.add_argument("--out", required=True, help="output .sdf or .xyz (a PNG grid is written next to it)")


def run_sample(args) -> int:
    from pathlib import Path

    from . import sample, write_molecules
    from .conditioning import parse_condition

    mols = sample(run=args.run, n=args.n, sampler=args.sampler, steps=args.steps, spacing=args.spacing,
                  seed=args.seed, batch_size=args.batch_size, device=args.device, bf16=args.bf16,
                  compile=args.compile, condition=parse_condition(args.condition))
    png = write_molecules(args.out, mols)
    print(f"wrote {len(mols)} molecules to {args.out} and {png or Path(args.out).with_suffix('.png')}")
    return 0


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help=".xyz or .sdf file of molecules")
    src.add_argument("--run", help="sample from this run folder or pretrained:NAME, then evaluate (timed)")
    p.add_argument("--reference", default=None, help="'qm9' (training SMILES, for novelty) or none")
    p.add_argument("--file-bonds", action="store_true",
                   help="with --input FILE.sdf: also score the file's own bond blocks as generated bonds "
                        "(*_generated_bonds; a --run of an explicit-bond model reports them anyway)")
    p.add_argument("--n", type=int, default=500, help="with --run: molecules to sample")
    _sampler_arguments(p, "with --run: ")
    p.add_argument("--seed", type=int, default=0, help="with --run: sampling seed")
    p.add_argument("--batch-size", type=int, default=256, help="with --run: molecules denoised together")
    p.add_argument("--out", default=None, help="with --run: also write the samples (.sdf/.xyz and a PNG grid)")
    p.add_argument("--record", action="store_true",
                   help="with --run: write the metrics and this command on the run's card.json")
    add_device_argument(p)
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")


def _command_line() -> str:
    """This process's command as `gendiff VERB DOMAIN ...` (the same whether started as gendiff or python -m)."""
    import shlex
    import sys

    return "gendiff " + shlex.join(sys.argv[1:])


def run_evaluate(args) -> int:
    from gendiff.errors import ConfigError

    from . import evaluate, measure, write_molecules

    if args.input is None and args.file_bonds:
        raise ConfigError("--file-bonds needs --input FILE.sdf (a --run of an explicit-bond model scores its bonds)")
    if args.input is not None:
        if args.record:
            raise ConfigError("--record needs --run (a file of molecules has no card to record on)")
        metrics = evaluate(input=args.input, reference=args.reference, file_bonds=args.file_bonds)
    else:
        metrics, mols = measure(args.run, n=args.n, sampler=args.sampler, steps=args.steps, spacing=args.spacing,
                                seed=args.seed, reference=args.reference, batch_size=args.batch_size,
                                device=args.device)
        if args.out:
            write_molecules(args.out, mols)
        if args.record:
            from gendiff import runs

            from . import read_run

            key = f"{args.sampler}-{args.spacing}-{args.steps}-n{args.n}"  # a 10,000-sample score keeps the 500 one
            runs.record_metrics(read_run(args.run).path, key, metrics, _command_line())
    if args.json:
        print(json.dumps(metrics, sort_keys=True))
    else:
        for k, v in metrics.items():
            print(f"{k:>24s}: {v}")
    return 0


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="folder for molecules.sdf, molecules.png, metrics.json (and run/)")
    p.add_argument("--run", default="pretrained:qm9", help="model to sample from (default: the shipped qm9 one)")
    p.add_argument("--from-scratch", action="store_true",
                   help="train a small EGNN on QM9 for --minutes first instead of using the shipped model")
    p.add_argument("--model", default="egnn", help="with --from-scratch: egnn or e3nn")
    p.add_argument("--minutes", type=float, default=1.5, help="with --from-scratch: training time budget")
    p.add_argument("--n", type=int, default=64, help="molecules to sample")
    _sampler_arguments(p)
    p.add_argument("--seed", type=int, default=0)
    add_device_argument(p)


def run_demo(args) -> int:
    from . import demo

    metrics = demo(out=args.out, model=_check_model(args.model), minutes=args.minutes, n=args.n, seed=args.seed,
                   device=args.device, from_scratch=args.from_scratch, run=args.run, sampler=args.sampler,
                   steps=args.steps, spacing=args.spacing)
    print(json.dumps(metrics, sort_keys=True))
    return 0


VERBS = {
    "train": (add_train_arguments, run_train),
    "sample": (add_sample_arguments, run_sample),
    "evaluate": (add_evaluate_arguments, run_evaluate),
    "demo": (add_demo_arguments, run_demo),
}
