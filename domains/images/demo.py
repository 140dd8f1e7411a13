"""The images demo: class-balanced digits from the shipped MNIST model, scored; or (`from_scratch`) a tiny U-Net
trained for about a minute on the embedded MNIST first."""
from __future__ import annotations

import time
from pathlib import Path

from gendiff.io import write_json_atomic
from gendiff.runs import read_run

from . import training
from .evaluate import evaluate

# 28x28, as the shipped model: its held-out classifier (shipped beside it) scores the from-scratch run too
DEMO_MODEL = dict(ch=16, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(7,), dropout=0.0, groups=8)


def demo(out: str | Path = "demo_out/images", *, run: str = "pretrained:mnist", from_scratch: bool = False,
         seconds: float = 70.0, n: int | None = None, guidance: float = 3.0, device: str = "auto",
         progress: bool = True) -> dict:
    """Write grid.png (n class-balanced samples, a row per class) and metrics.json into `out`; returns the metrics.

    Default: sample `run` (the shipped MNIST model) with DPM-Solver++ 20 steps and guidance, no training, and
    score the samples with the held-out classifier (conditional accuracy; FD and KID against the 1,000 held-out
    digits, biased upwards at n = 100: compare fd_real_halves, and the card's n = 1000 numbers in `card_metrics`).
    `from_scratch`: train DEMO_MODEL for `seconds` into out/run first (resumed if there), then DDIM 20 steps."""
    t0 = time.perf_counter()
    out = Path(out)
    common = dict(guidance=guidance, unconditional_n=0, samples_png=out / "grid.png", progress=progress,
                  device=device)
    if from_scratch:
        run = out / "run"
        summary = training.train("mnist", run, image_size=28, model=DEMO_MODEL, max_steps=100000,
                                 time_budget=seconds, batch_size=32, lr=2e-3, warmup_steps=20, ema_decay=0.95,
                                 resume="auto", progress=progress, device=device)
        metrics = evaluate(run, n=n or 200, sampler="ddim", steps=20, **common)
        metrics["train_steps"], metrics["train_seconds"] = summary["step"], summary["wall_seconds"]
    else:
        metrics = evaluate(run, n=n or 100, sampler="dpm_solver_pp", steps=20, **common)
        metrics["card_metrics"] = read_run(run, domain="images").card.get("metrics", {})
    metrics["demo"] = "from scratch" if from_scratch else "pretrained, no training"
    metrics["seconds"] = time.perf_counter() - t0
    write_json_atomic(out / "metrics.json", metrics)
    return metrics
