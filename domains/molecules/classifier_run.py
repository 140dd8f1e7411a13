"""Run folders of the property classifier (classifier.py), in the core run format (gendiff.runs): config.json
(property, EDM half, normalisation, network, training recipe; 'kind' tells it from a denoiser run),
weights.safetensors (the EMA weights, or the plain ones without EMA), card.json (sittings with steps, CPU seconds,
hardware and dates; the learning curve: MAE on held-out real molecules) and checkpoint.pt (weights, EMA, optimizer,
step and the card so far) for resuming. The training loop itself is classifier.train_classifier."""
from __future__ import annotations

import datetime
import math
import warnings
from pathlib import Path

from gendiff import runs
from gendiff.errors import ConfigError, DataError
from gendiff.io import torch_load_safe, torch_save_atomic

from .defaults import DOMAIN

KIND = "property_classifier"
CKPT_FORMAT = "gendiff-classifier-v1"
CHECKPOINT_MINUTES = 5.0  # a sitting saves its run folder and checkpoint.pt this often (wall clock)
LR_SCHEDULES = ("constant", "cosine")
SAME_TO_RESUME = ("property", "half", "limit", "net")  # the rest of config.json may change between sittings
HELD_OUT = {"first": "second", "second": "first", None: "valid"}  # where a classifier of each half is measured


def lr_at(step: int, train: dict) -> float:
    """Learning rate of optimizer step `step` (0-based): constant, or cosine annealing from `lr` to `lr_final` over
    `steps` (EDM anneals over its epochs with CosineAnnealingLR); steps beyond `steps` keep `lr_final`."""
    lr, final, total = float(train["lr"]), float(train["lr_final"]), int(train["steps"])
    if train["lr_schedule"] == "constant":
        return lr
    frac = min(int(step), total) / max(total, 1)
    return final + 0.5 * (lr - final) * (1.0 + math.cos(math.pi * frac))


def ema_decay_at(step: int, decay: float) -> float:
    """EMA decay after optimizer step `step` (1-based) with diffusers' warm-up, as the core Trainer's."""
    return min(float(decay), (1.0 + step) / (10.0 + step))


def classifier_config(name: str, unit: str, half, limit, n_train: int, norm: dict, hidden: int, layers: int,
                      train: dict, held_out: dict) -> dict:
    """config.json of a classifier run (the run format's 'format', 'domain' and checksum are added on saving)."""
    return {"kind": KIND, "property": name, "unit": unit, "half": half, "limit": limit, "n_train": int(n_train),
            "normalisation": {"mean": float(norm["mean"]), "mad": float(norm["mad"])},
            "net": {"model": "egnn_regressor", "hidden_nf": int(hidden), "n_layers": int(layers),
                    "pooling": "sum"},
            "train": {"loss": "L1 on (value - mean) / MAD", "optimizer": "Adam", **train},
            "held_out": held_out, "weights": "ema" if train["ema_decay"] else "plain"}


def check_resume(out, cfg: dict, resume: bool) -> tuple[str, dict | None]:
    """What `out` holds to continue: ('fresh', None), ('checkpoint', saved config) or ('weights', saved config:
    weights.safetensors + config.json only, e.g. a fresh clone; the optimizer restarts). Refuses a folder holding a
    run unless `resume`, another kind of run, and a run of another property, half, limit or network."""
    out = Path(out)
    ckpt, weights = (out / runs.CHECKPOINT).is_file(), (out / runs.WEIGHTS).is_file()
    if not (ckpt or weights):
        return "fresh", None
    if not resume:
        raise ConfigError(f"{out} holds a classifier run; pass resume=True (--resume) or choose another out")
    saved = runs.saved_config(out, "train into a new out")
    if saved is None:
        if not ckpt:
            raise DataError(f"{out / runs.CONFIG}: missing beside {out / runs.WEIGHTS}; cannot resume")
        saved = _checkpoint(out)["config"]
    if saved.get("kind") != KIND:
        raise ConfigError(f"{out}: not a property-classifier run (kind {saved.get('kind')!r}); choose another out")
    for key in SAME_TO_RESUME:
        if saved.get(key) != cfg[key]:
            raise ConfigError(f"{out / runs.CONFIG}: cannot resume {key} {saved.get(key)!r} as {cfg[key]!r}")
    was = saved.get("train", {})
    changed = [f"{k} {was.get(k)!r} -> {v!r}" for k, v in cfg["train"].items() if was.get(k) != v]
    if changed:
        warnings.warn(f"{out}: resuming with changed {', '.join(changed)}", stacklevel=3)
    return ("checkpoint" if ckpt else "weights"), saved


def _checkpoint(out) -> dict:
    path = Path(out) / runs.CHECKPOINT
    state = torch_load_safe(path)
    keys = ("format", "step", "model", "optimizer", "card", "config")
    missing = [k for k in keys if k not in state] if isinstance(state, dict) else ["everything"]
    if missing or state["format"] != CKPT_FORMAT:
        raise DataError(f"{path}: not a property-classifier checkpoint (missing {', '.join(missing) or 'format'})")
    return state


def restore(out, mode: str, model, ema, optimizer) -> tuple[int, dict | None]:
    """Load what `out` holds into model / ema (None: no EMA) / optimizer -> (step, the card to continue)."""
    if mode == "checkpoint":
        state = _checkpoint(out)
        _load(model, state["model"], out)
        if ema is not None:
            _load(ema, state["ema"] if state.get("ema") is not None else state["model"], out)
        optimizer.load_state_dict(state["optimizer"])
        return int(state["step"]), state["card"]
    run = runs.read_run(out, domain=DOMAIN)
    runs.load_weights(run, model)
    if ema is not None:
        ema.load_state_dict(model.state_dict())
    return int(run.card.get("training", {}).get("steps") or 0), run.card or None


def _load(module, weights: dict, out) -> None:
    try:
        module.load_state_dict(weights)
    except RuntimeError as exc:
        raise DataError(f"{Path(out) / runs.CHECKPOINT}: weights do not fit this classifier "
                        f"({str(exc).splitlines()[0]})") from None


def make_card(out, cfg: dict, start_card: dict | None, *, step: int, wall: float, cpu: float, stopped,
              device, command, curve: list, parameters: int) -> dict:
    """card.json after `step` steps: the sittings before this one (from `start_card`) plus this one so far, the
    learning curve, and the latest held-out MAE as the card's metric."""
    half = cfg["half"]
    split = (f"QM9 train split, EDM's {half} half" if half else "QM9 train split") + f" ({cfg['n_train']} molecules"
    split += f", the first {cfg['limit']})" if cfg["limit"] else ")"
    summary = {"step": int(step), "seconds": round(wall, 1), "cpu_seconds": round(cpu, 1), "stopped": stopped}
    card = runs.new_card(Path(out).name, DOMAIN, data="qm9", split=split, summary=summary,
                         seed=cfg["train"]["seed"], device=device, command=command, previous=start_card, kind=KIND,
                         property=cfg["property"], unit=cfg["unit"], parameters=int(parameters))
    card["curve"] = list(curve)
    if curve:
        last = curve[-1]
        card["metrics"] = {"real_mae": {k: v for k, v in last.items() if k not in ("key", "cpu_hours")}}
        card["headline"] = ["mae"]
    return card


def curve_point(maes: dict, *, step: int, cpu_hours: float, lr: float, train_l1, held_out: dict) -> dict:
    """One point of the learning curve (the shape of runs.record_metrics' points)."""
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return {**{k: round(v, 5) for k, v in maes.items()}, "n": held_out["n"], "half": held_out["half"],
            "key": "real_mae", "date": date, "train_steps": int(step), "cpu_hours": round(cpu_hours, 4),
            "lr": lr, "train_l1": None if train_l1 is None else round(train_l1, 5)}


def save(out, cfg: dict, model, ema, optimizer, step: int, card: dict) -> None:
    """checkpoint.pt first (it holds the card, so a sitting cut off between the two writes resumes consistently),
    then weights.safetensors (EMA, else plain), config.json and card.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {"format": CKPT_FORMAT, "step": int(step), "model": model.state_dict(),
             "ema": None if ema is None else ema.state_dict(), "optimizer": optimizer.state_dict(),
             "card": card, "config": cfg}
    torch_save_atomic(state, out / runs.CHECKPOINT)
    runs.save_run(out, DOMAIN, cfg, ema if ema is not None else model, card)


def read_classifier(folder) -> "runs.Run":
    """runs.read_run of a classifier run folder (one DataError when it is another kind of run)."""
    run = runs.read_run(folder, domain=DOMAIN)
    if run.config.get("kind") != KIND:
        raise DataError(f"{run.path / runs.CONFIG}: not a property-classifier run (kind {run.config.get('kind')!r})")
    for key in ("property", "normalisation", "net"):
        if key not in run.config:
            raise DataError(f"{run.path / runs.CONFIG}: no {key!r}")
    return run
