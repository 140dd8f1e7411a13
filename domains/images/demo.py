"""The images demo: a tiny conditional U-Net on the embedded MNIST, sized for about two minutes on two CPU cores."""
from __future__ import annotations

from pathlib import Path

DEMO_MODEL = dict(ch=16, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,), dropout=0.0, groups=8)


def demo(out: str | Path = "runs/images-demo", *, seconds: float = 70.0, n: int = 200, guidance: float = 3.0,
         device: str = "auto", progress: bool = True) -> dict:
    """Train for `seconds`, sample n class-balanced digits (DDIM 20, guidance), evaluate; writes samples.png and
    metrics.json (fd, kid, conditional_accuracy, class entropy, reference FDs) into `out`; returns the metrics."""
    from gendiff.io import write_json_atomic

    from .api import train
    from .evaluate import evaluate

    out = Path(out)
    run = out / "run"
    summary = train("mnist", run, model=DEMO_MODEL, max_steps=100000, time_budget=seconds, batch_size=32, lr=2e-3,
                    warmup_steps=20, ema_decay=0.95, resume="auto", progress=progress, device=device)
    metrics = evaluate(run, n=n, sampler="ddim", steps=20, guidance=guidance, unconditional_n=100,
                       samples_png=out / "samples.png", progress=progress, device=device, classifier_epochs=5)
    metrics["train_steps"], metrics["train_seconds"] = summary["step"], summary["wall_seconds"]
    write_json_atomic(out / "metrics.json", metrics)
    return metrics
