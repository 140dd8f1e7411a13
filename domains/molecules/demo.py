"""`gendiff demo molecules`: molecules from the shipped model (or a small one trained first), written and scored."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from gendiff.io import write_json_atomic

from .defaults import DEFAULT_PRETRAINED, DEFAULT_SAMPLER, DEFAULT_SPACING, DEFAULT_STEPS, RUN_CONFIG
from .evaluation import measure, write_molecules
from .loading import read_run
from .training import train


def demo(out="demo_out/molecules", model: str = "egnn", minutes: float = 1.5, n: int = 64, seed: int = 0,
         device: str = "auto", *, from_scratch: bool = False, run=DEFAULT_PRETRAINED, sampler: str = DEFAULT_SAMPLER,
         steps: int = DEFAULT_STEPS, spacing: str = DEFAULT_SPACING) -> dict:
    """Sample n molecules from the shipped model (`run`, default pretrained:qm9; no training) or, with
    from_scratch=True, first train a small model on QM9 for `minutes`; writes OUT/molecules.sdf, OUT/molecules.png
    (2-D depictions) and OUT/metrics.json (stability, validity, connected validity, uniqueness, timings)."""
    out = Path(out)
    t0 = time.time()
    extra: dict = {}
    if from_scratch:
        small = dict(hidden=64, layers=4) if model == "egnn" else dict(hidden=16, layers=2, mul_vectors=4)
        run = out / "run"
        if (run / RUN_CONFIG).is_file():  # the demo's own run of an earlier call: trained afresh
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
