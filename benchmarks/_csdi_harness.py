"""ermongroup/CSDI (Tashiro et al. 2021) run from a local checkout on gendiff's imputation task.

Nothing of CSDI is copied here: its modules (main_model.CSDI_Physio, diff_models) are imported from the checkout
the user names (`--csdi-repo PATH`, put first on sys.path), configured from its own config/base.yaml (4 residual
layers, 64 channels, 8 heads, 50 steps of the quad schedule, time embedding 128, feature embedding 16, target
strategy random), trained with its optimiser settings (utils.train: Adam, lr 1e-3, weight decay 1e-6, batch 16)
for a CPU-time budget on windows of the same series gendiff trains on, and asked for `nsample` imputations with
its own sampler (CSDI_base.impute through CSDI_base.evaluate). Data enter in its batch format: observed_data,
observed_mask, gt_mask (B, L, K), timepoints (B, L); values normalised per feature by the training period's
mean and standard deviation, as CSDI's dataset_physio does. Its needs beyond gendiff's: pyyaml and
linear_attention_transformer (imported by diff_models; `pip install linear_attention_transformer`).
"""
from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

import numpy as np
import torch

REQUIRED = ("main_model.py", "diff_models.py", "config/base.yaml")


def missing(repo) -> str | None:
    """Why `repo` cannot be used (a sentence), or None when it holds CSDI's code."""
    if repo is None:
        return "no --csdi-repo given"
    repo = Path(repo)
    absent = [f for f in REQUIRED if not (repo / f).is_file()]
    if absent:
        return f"{repo} is not a CSDI checkout (no {', '.join(absent)})"
    for module in ("yaml", "linear_attention_transformer"):
        if importlib.util.find_spec(module) is None:
            return f"CSDI needs the '{module}' package (pip install {module.replace('yaml', 'pyyaml')})"
    return None


def load(repo):
    """(main_model module, config dict) from the checkout."""
    import yaml

    repo = str(Path(repo).resolve())
    if repo not in sys.path:
        sys.path.insert(0, repo)
    main_model = importlib.import_module("main_model")
    with open(Path(repo) / "config" / "base.yaml") as f:
        config = yaml.safe_load(f)
    config["model"]["is_unconditional"] = 0
    return main_model, config


def _batch(values: np.ndarray, observed: np.ndarray, given: np.ndarray, starts, length: int) -> dict:
    """CSDI's batch dict for windows at `starts`: observed_data (0 where not observed), observed_mask (where truth
    is known), gt_mask (what the model is given), timepoints 0..L-1."""
    idx = np.asarray(starts)[:, None] + np.arange(length)[None, :]
    return {"observed_data": torch.from_numpy(np.nan_to_num(np.where(given, values, 0.0))[idx]).float(),
            "observed_mask": torch.from_numpy(observed[idx].astype(np.float32)),
            "gt_mask": torch.from_numpy(given[idx].astype(np.float32)),
            "timepoints": torch.arange(length, dtype=torch.float32).expand(len(idx), -1).clone()}


def train(repo, values: np.ndarray, train_rows: np.ndarray, length: int, cpu_seconds: float, seed: int = 0,
          batch_size: int = 16) -> dict:
    """Fit CSDI_Physio on random windows of `length` steps inside `train_rows` of the normalised values (T, K)
    (NaN missing) until one more step would overrun `cpu_seconds` of this process's CPU time (the budget the
    other method used: wall time would favour whichever ran while the machine was quieter); returns {model,
    steps, cpu_seconds, wall_seconds, parameters}."""
    main_model, config = load(repo)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = main_model.CSDI_Physio(config, "cpu", target_dim=values.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=config["train"]["lr"], weight_decay=1e-6)
    observed = np.isfinite(values)
    lo, hi = int(train_rows[0]), int(train_rows[-1]) - length + 1
    starts_all = np.arange(lo, hi + 1)
    starts_all = starts_all[[observed[s:s + length].any() for s in starts_all]]
    model.train()
    steps, t0, cpu0, longest = 0, time.perf_counter(), time.process_time(), 0.0
    while True:
        if time.process_time() - cpu0 + longest > cpu_seconds:
            break
        s0 = time.process_time()
        starts = rng.choice(starts_all, batch_size)
        batch = _batch(values, observed, observed, starts, length)
        opt.zero_grad()
        loss = model(batch, is_train=1)
        loss.backward()
        opt.step()
        steps += 1
        longest = max(longest, time.process_time() - s0)
    return {"model": model, "steps": steps, "cpu_seconds": time.process_time() - cpu0,
            "wall_seconds": time.perf_counter() - t0,
            "parameters": int(sum(p.numel() for p in model.parameters()))}


def impute(model, values: np.ndarray, given: np.ndarray, targets: np.ndarray, length: int, nsample: int,
           seed: int = 0, batch_size: int = 64) -> np.ndarray:
    """(nsample, T, K) CSDI draws over the whole series, tiled by windows of `length` steps (the last shifted to
    end with the data; where two overlap the later one's draws are kept), each conditioned on the `given`
    entries of its window; `targets` (T, K) are the entries to generate (CSDI's observed_mask - gt_mask)."""
    torch.manual_seed(seed)
    n = len(values)
    starts = list(range(0, max(1, n - length + 1), length))
    if starts[-1] + length < n:
        starts.append(n - length)
    out = np.full((nsample, *values.shape), np.nan)
    model.eval()
    for b in range(0, len(starts), batch_size):
        chunk = starts[b:b + batch_size]
        batch = _batch(values, given | targets, given, chunk, length)
        samples = model.evaluate(batch, nsample)[0]  # (B, nsample, K, L)
        for j, s in enumerate(chunk):
            out[:, s:s + length] = samples[j].permute(0, 2, 1).numpy()
    return out
