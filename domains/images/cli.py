"""`gendiff train|sample|evaluate|demo images ...`: argument parsers and runners."""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch

from gendiff.device import add_device_argument, resolve_device
from gendiff.errors import ConfigError, DataError
from gendiff.io import torch_save_atomic, write_json_atomic
from gendiff.runs import hardware, record_metrics, resolve

from .demo import demo
from .evaluate import evaluate
from .labels import LABELS_HELP, parse_labels
from .sampling import sample
from .training import train

RUN_HELP = "run folder written by `gendiff train images`, or pretrained:NAME (`gendiff list` shows them)"


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _labels(text: str | None):
    """--labels: checked here (a bad value is a one-line usage error), handed on as text (labels.resolve_labels)."""
    try:
        parse_labels(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _common(p: argparse.ArgumentParser) -> None:
    add_device_argument(p)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _threads(args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)


def add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="mnist", help="mnist (embedded 5k digits), digits (sklearn 8x8), "
                   "mnist-full:ROOT | fashion-mnist:ROOT | cifar10:ROOT (torchvision files), or a folder of images")
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--image-size", type=int, default=None, help="resize to this size (default: native; folders 32)")
    p.add_argument("--channels", type=int, default=None, choices=(1, 3), help="folders: 1 grey or 3 RGB (default: auto)")
    p.add_argument("--ch", type=int, default=64, help="U-Net base channels")
    p.add_argument("--ch-mult", type=_ints, default=(1, 2, 2), help="channel multipliers per level, e.g. 1,2,2")
    p.add_argument("--num-res-blocks", type=int, default=2)
    p.add_argument("--attn", type=_ints, default=(16,), help="resolutions with self-attention, e.g. 16,8")
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--groups", type=int, default=32, help="GroupNorm groups (at most the channels of a layer)")
    p.add_argument("--unconditional", action="store_true", help="ignore class labels")
    p.add_argument("--p-uncond", type=float, default=0.1, help="label dropout for classifier-free guidance")
    p.add_argument("--schedule", default="linear")
    p.add_argument("--prediction", default="eps", choices=("eps", "x0", "v"))
    p.add_argument("--learn-sigma", action="store_true", help="also learn the reverse variance (Improved DDPM: "
                   "2x output channels, hybrid loss L_simple + 0.001 L_vlb); ancestral sampling then uses it")
    p.add_argument("--steps", type=int, default=2000, help="optimizer steps (upper bound with --minutes)")
    p.add_argument("--minutes", type=float, default=None, help="wall-clock training budget")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--warmup", type=int, default=None, help="linear learning-rate warm-up steps "
                   "(default: a tenth of --steps, at most 500)")
    p.add_argument("--ema", type=float, default=None, help="EMA decay of the saved weights "
                   "(default 0.995 with --minutes, else from --steps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast of the training step (CUDA, CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the U-Net")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--download", action="store_true", help="let torchvision download mnist-full/fashion-mnist/cifar10")
    _common(p)


def run_train(args) -> int:
    _threads(args)

    model = dict(ch=args.ch, ch_mult=args.ch_mult, num_res_blocks=args.num_res_blocks, attn_resolutions=args.attn,
                 dropout=args.dropout, groups=args.groups, conditional=not args.unconditional)
    extra = {k: v for k, v in (("warmup_steps", args.warmup), ("ema_decay", args.ema)) if v is not None}
    summary = train(args.data, args.out, image_size=args.image_size, channels=args.channels, model=model,
                    schedule=args.schedule, prediction=args.prediction, learn_sigma=args.learn_sigma,
                    p_uncond=args.p_uncond, max_steps=args.steps,
                    time_budget=None if args.minutes is None else 60 * args.minutes, seed=args.seed,
                    resume=args.resume, compile=args.compile, download=args.download, progress=not args.quiet,
                    batch_size=args.batch_size,
                    lr=args.lr, bf16=args.bf16, device=args.device, **extra)
    print(json.dumps(summary))
    return 0


def _sampling(p: argparse.ArgumentParser, n: int, guidance: float) -> None:
    p.add_argument("--run", required=True, help=RUN_HELP)
    p.add_argument("--n", type=int, default=n, help="number of samples")
    p.add_argument("--sampler", default="ddim", help="any core sampler (ancestral, ddim, dpm_solver_pp, heun, ...)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=guidance, help="classifier-free guidance scale (1 = none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--compile", action="store_true", help="torch.compile the U-Net for sampling (pays 1-2 min once)")
    p.add_argument("--bf16", action="store_true", help="sample under bf16 autocast (CUDA, CPU)")


def add_sample(p: argparse.ArgumentParser) -> None:
    _sampling(p, 64, 1.0)

    p.add_argument("--labels", type=_labels, default=None, help=LABELS_HELP + "; default none, or balanced when "
                   "--guidance is given")
    p.add_argument("--out", required=True, help="PNG grid to write")
    p.add_argument("--save-pt", default=None, help="also save the uint8 (N, C, H, W) tensor here (torch.save)")
    _common(p)


def run_sample(args) -> int:
    _threads(args)

    labels = args.labels
    if parse_labels(labels) is None and args.guidance != 1.0:
        if labels is not None:
            raise ConfigError("--guidance needs class labels, not --labels none")
        labels = "balanced"
    pixels = sample(args.run, args.n, args.sampler, args.steps, args.guidance, args.seed, labels,
                    batch_size=args.batch_size, out=args.out, device=args.device, progress=not args.quiet,
                    compile=args.compile, bf16=args.bf16)
    if args.save_pt:
        torch_save_atomic(pixels, args.save_pt)
    print(f"wrote {args.out}: {tuple(pixels.shape)} samples", file=sys.stderr)
    return 0


def add_evaluate(p: argparse.ArgumentParser) -> None:
    _sampling(p, 1000, 3.0)
    p.add_argument("--unconditional-n", type=int, default=None, help="unconditional samples for class entropy")
    p.add_argument("--nll-n", type=int, default=0, help="held-out images for the bits/dim bound (0 = skip)")
    p.add_argument("--inception", default=None, help="pytorch-fid pt_inception-2015-12-05 weights file for FID")
    p.add_argument("--samples-png", default=None, help="write a grid of the evaluated samples")
    p.add_argument("--out", default=None, help="write the metrics JSON here")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON (default: one line per metric)")
    p.add_argument("--record", action="store_true", help="write the metrics onto the run's card.json with this "
                   "command (a block keyed by sampler, steps and guidance)")
    _common(p)


def evaluate_command(args) -> str:
    """The command that reproduces an evaluation: every option the metrics depend on, spelled out."""
    parts = ["gendiff", "evaluate", "images", "--run", str(args.run), "--n", str(args.n), "--sampler", args.sampler,
             "--steps", str(args.steps), "--guidance", f"{args.guidance:g}", "--seed", str(args.seed),
             "--batch-size", str(args.batch_size)]
    if args.unconditional_n is not None:
        parts += ["--unconditional-n", str(args.unconditional_n)]
    if args.nll_n:
        parts += ["--nll-n", str(args.nll_n)]
    if args.inception:
        parts += ["--inception", args.inception]
    parts += [flag for flag, on in (("--compile", args.compile), ("--bf16", args.bf16)) if on]
    if args.device != "auto":
        parts += ["--device", args.device]
    if args.threads:
        parts += ["--threads", str(args.threads)]
    return shlex.join(parts + ["--record"])


RECORDED = ("conditional_accuracy", "fd", "kid", "kid_std", "class_entropy_normalized", "fd_unconditional",
            "nll_bits_per_dim", "inception_fid")
SETTINGS = ("sampler", "steps", "guidance", "seed", "unconditional_n", "nll_n", "held_out_n", "data")
REFERENCE = ("classifier_test_accuracy", "fd_real_halves", "fd_real_train_vs_test", "kid_real_train_vs_test")


def metrics_block(metrics: dict, args) -> tuple[str, dict]:
    """(key, block) for the card: the sample metrics at the top level (what `gendiff list` shows), the settings and
    the real-data reference values nested."""
    key = f"{args.sampler}{args.steps}_guidance{args.guidance:g}"
    block = {k: metrics[k] for k in RECORDED if metrics.get(k) is not None}
    block["n"] = metrics["n"]
    block["settings"] = {k: metrics[k] for k in SETTINGS if k in metrics}
    block["settings"]["batch_size"] = args.batch_size
    block["reference"] = {k: metrics[k] for k in REFERENCE if k in metrics}
    block["measured"] = {"seconds": round(metrics["seconds"], 1), "hardware": hardware(resolve_device(args.device))}
    return key, block



def run_evaluate(args) -> int:
    _threads(args)

    metrics = evaluate(args.run, args.n, args.sampler, args.steps, args.guidance, args.seed,
                       unconditional_n=args.unconditional_n, nll_n=args.nll_n, inception=args.inception,
                       batch_size=args.batch_size, device=args.device, samples_png=args.samples_png,
                       progress=not args.quiet, compile=args.compile, bf16=args.bf16)
    if args.out:
        write_json_atomic(args.out, metrics)
    if args.record:
        key, block = metrics_block(metrics, args)
        try:
            record_metrics(resolve(args.run), key, block, evaluate_command(args))
        except OSError as exc:  # e.g. a shipped model installed read-only
            raise DataError(f"{resolve(args.run) / 'card.json'}: cannot record the metrics there ({exc.strerror})") \
                from None
        print(f"recorded {key} on {resolve(args.run) / 'card.json'}", file=sys.stderr)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        for k, v in metrics.items():
            print(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}")
    return 0


def add_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="folder for grid.png and metrics.json (and the run, --from-scratch)")
    p.add_argument("--run", default="pretrained:mnist", help="the model to sample (default: the shipped MNIST one)")
    p.add_argument("--n", type=int, default=None, help="samples to draw and score (default 100; 200 --from-scratch)")
    p.add_argument("--from-scratch", action="store_true", help="train a tiny U-Net for --seconds first instead "
                   "(near-chance digits: see the README)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=None,
                        help="--from-scratch training budget in minutes, as in every domain (default 70 s)")
    budget.add_argument("--seconds", type=float, default=None, help=argparse.SUPPRESS)  # the earlier spelling
    p.add_argument("--seed", type=int, default=0, help="seed of the draws")
    _common(p)


def run_demo(args) -> int:
    """Sample class-balanced digits from the shipped MNIST model and score them (or, --from-scratch, train a tiny
    conditional U-Net on the embedded MNIST for about a minute first)."""
    _threads(args)

    seconds = 60.0 * args.minutes if args.minutes is not None else args.seconds if args.seconds is not None else 70.0
    torch.manual_seed(args.seed)
    metrics = demo(args.out, run=args.run, from_scratch=args.from_scratch, seconds=seconds, n=args.n,
                   device=args.device, progress=not args.quiet)
    keys = ("run", "n", "conditional_accuracy", "fd", "kid", "fd_real_halves", "train_steps", "seconds")
    print(json.dumps({k: metrics[k] for k in keys if k in metrics}))
    print(f"wrote {Path(args.out) / 'grid.png'} and {Path(args.out) / 'metrics.json'}", file=sys.stderr)
    return 0


VERBS = {
    "train": (add_train, run_train),
    "sample": (add_sample, run_sample),
    "evaluate": (add_evaluate, run_evaluate),
    "demo": (add_demo, run_demo),
}
