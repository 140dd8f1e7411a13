"""Export the shipped images model: a finished quality run -> domains/images/pretrained/NAME (pretrained:NAME).

    python tools/export_images_pretrained.py --run runs/pre_mnist --name mnist

Writes config.json, weights.safetensors (EMA weights), card.json and the held-out classifier.safetensors the card's
metrics are read with; the metrics are then measured onto the card by `gendiff evaluate images --run
pretrained:NAME ... --record` (the command is on the card; see docs/images.md). Moved here from
`benchmarks/images.py export` (issue 28): benchmarks measure, tools make shipped files.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
# the quality recipe of benchmarks/images.py (QUALITY_MODEL), the U-Net behind pretrained:mnist
QUALITY_MODEL = dict(ch=16, ch_mult=(1, 2, 4), num_res_blocks=1, attn_resolutions=(7,), dropout=0.0, groups=8)


PRETRAINED = ROOT / "domains" / "images" / "pretrained"
# how runs/pre_mnist, the run behind pretrained:mnist, was trained (the quality recipe, one torch thread, 40 min)
MNIST_TRAINED_WITH = (
    "torch.set_num_threads(1); gendiff.domains.images.train('mnist', 'runs/pre_mnist', image_size=28, "
    f"model={QUALITY_MODEL!r} (benchmarks/images.py QUALITY_MODEL), max_steps=10**6, time_budget=60*40, "
    "batch_size=64, lr=2e-3, warmup_steps=100, ema_decay=0.995, progress=False, ckpt_every=500, log_every=50, "
    "resume='auto')")
MNIST_COMMIT = "d13bf442599e6429bbf01d18c9f661bd76005e20"
MNIST_RETRAIN = ("gendiff train images --data mnist --image-size 28 --ch 16 --ch-mult 1,2,4 --num-res-blocks 1 "
                 "--attn 7 --dropout 0 --groups 8 --batch-size 64 --lr 2e-3 --warmup 100 --ema 0.995 --minutes 40 "
                 "--steps 1000000 --threads 1 --out runs/mnist")


def export(args) -> dict:
    """Convert a finished run of the format before gendiff.runs (config.json 'gendiff-images-v1' + checkpoint.pt)
    into domains/images/pretrained/NAME: images.convert_run (EMA weights as safetensors, config and card in the
    run format), and beside it the held-out classifier the card's metrics are read with (trained once on the
    run's training split, 12 epochs, or taken from the evaluation cache when one was trained on the same data)."""
    from gendiff.domains.images import convert_run
    from gendiff.domains.images.evaluate import CLASSIFIER, run_classifier
    from gendiff.domains.images.metrics import data_fingerprint, save_classifier
    from gendiff.runs import check_name, read_run

    out = PRETRAINED / check_name(args.name)
    note = ("trained by the code of the commit named here, before the run format (Trainer time budget in the "
            "images domain's chunked loop); the U-Net code is unchanged since, so its EMA weights load strictly. "
            f"Converted with `python {shlex.join(sys.argv)}`. To train it again with today's code: "
            f"`{MNIST_RETRAIN}` (the core time budget: the step count depends on the machine's speed)")
    if args.cpu_seconds is not None and args.cpu_seconds_how:
        note += f". CPU seconds: {args.cpu_seconds_how}"
    import os
    import platform

    hardware = (f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores, "
                f"{args.train_threads} torch threads, torch {torch.__version__}")  # the training's, on this machine
    convert_run(args.run, out, name=args.name, command=args.command, commit=args.commit, note=note,
                cpu_seconds=args.cpu_seconds, hardware=hardware)
    from gendiff.domains.images.api import load_run, output_check
    from gendiff.io import write_json_atomic

    run = read_run(out, domain="images")
    denoiser, meta = load_run(out, device="cpu")
    write_json_atomic(out / "card.json", {**run.card, "check": output_check(denoiser, meta)})
    clf, train_data, _ = run_classifier(out, run.config, progress=True)
    save_classifier(clf, out / CLASSIFIER, f"{data_fingerprint(train_data.images, train_data.labels)}-12")
    sizes = {f.name: f.stat().st_size for f in sorted(out.iterdir())}
    print(f"wrote {out}: {sizes}", file=sys.stderr)
    return {"out": str(out), "bytes": sizes, "card": json.loads((out / "card.json").read_text())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/pre_mnist")
    p.add_argument("--name", default="mnist")
    p.add_argument("--command", default=MNIST_TRAINED_WITH, help="how the run was trained (for its card)")
    p.add_argument("--commit", default=MNIST_COMMIT, help="the commit whose code trained it (for its card)")
    p.add_argument("--train-threads", type=int, default=1, help="torch threads the training ran with (card)")
    p.add_argument("--cpu-seconds", type=float, default=None, help="CPU time of the training, if measured outside")
    p.add_argument("--cpu-seconds-how", default="", help="how --cpu-seconds was measured (for the card's note)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps(export(args), indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
