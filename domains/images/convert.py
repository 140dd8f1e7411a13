"""Converting a run folder of the images format before the run format ('gendiff-images-v1': config.json +
checkpoint.pt) into the run format."""
from __future__ import annotations

import csv
import datetime
import json
from pathlib import Path

import torch

from gendiff import runs
from gendiff.errors import DataError
from gendiff.forward import Denoiser
from gendiff.io import torch_load_safe
from gendiff.schedules import schedule_from_config

from .data import load_data
from .model import build_denoiser
from .run import DOMAIN, PIXELS, split_text
from .unet import UNetConfig

LEGACY_FORMAT = "gendiff-images-v1"  # config.json + checkpoint.pt of gendiff before the run format; see convert_run


def convert_run(old: str | Path, out: str | Path, *, name: str | None = None, command: str | None = None,
                commit: str | None = None, note: str | None = None, cpu_seconds: float | None = None,
                hardware: str | None = None) -> Path:
    """Convert a run folder of the old images format (config.json 'gendiff-images-v1' + checkpoint.pt, written by
    gendiff before the run format) into the run format at `out`: config.json rebuilt from the old one (the U-Net
    and schedule are unchanged; the Denoiser then had eps/x0/v prediction with scaled input, today's defaults),
    weights.safetensors from the checkpoint's EMA weights (loaded strictly into the rebuilt model first), and
    card.json from its train_summary.json and log.csv: steps and wall time as logged, CPU time where recorded.
    `command`, `commit`, `hardware`: how, at which commit and on what it was trained, `cpu_seconds` its CPU time
    where measured outside it (the old format recorded none of them; a sitting's hardware defaults to this
    machine's)."""
    old, out = Path(old), Path(out)
    path = old / runs.CONFIG
    try:
        legacy = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
    if legacy.get("format") != LEGACY_FORMAT:
        raise DataError(f"{path}: format {legacy.get('format')!r} is not the old images format {LEGACY_FORMAT!r}")
    schedule = schedule_from_config(legacy["schedule"])
    unet = UNetConfig.from_dict(legacy["model"]).to_dict()
    options = Denoiser(torch.nn.Identity(), schedule, prediction=legacy.get("prediction", "eps")).config()
    meta = {
        "data": legacy["data"], "image_size": legacy["image_size"], "channels": legacy["channels"],
        "seed": legacy["seed"], "test_fraction": legacy["test_fraction"], "classes": legacy["classes"],
        "model": unet, "schedule": legacy["schedule"], "denoiser": options, "pixels": dict(PIXELS),
        "conditioning": {"num_classes": unet["num_classes"], "null_class": unet["num_classes"],
                         "p_uncond": legacy.get("p_uncond", 0.1)},
    }
    denoiser, _ = build_denoiser(meta)
    state = torch_load_safe(old / runs.CHECKPOINT)
    if not isinstance(state, dict) or "ema" not in state or "step" not in state:
        raise DataError(f"{old / runs.CHECKPOINT}: not a gendiff trainer checkpoint (no 'ema' weights or 'step')")
    try:
        denoiser.load_state_dict(state["ema"], strict=True)  # the U-Net code must still fit these weights
    except RuntimeError as exc:
        raise DataError(f"{old / runs.CHECKPOINT}: EMA weights do not fit the model its config.json describes "
                        f"({str(exc).splitlines()[0]})") from None
    steps = int(state["step"])  # the checkpoint's, which the weights are (log.csv may run past it)
    summary = json.loads((old / "train_summary.json").read_text()) if (old / "train_summary.json").is_file() else {}
    if summary.get("step", steps) != steps:
        raise DataError(f"{old}: train_summary.json says step {summary['step']}, checkpoint.pt holds step {steps}")
    rows = [r for r in csv.DictReader((old / "log.csv").open()) if int(r["step"]) <= steps] \
        if (old / "log.csv").is_file() else []
    card_summary = {"step": steps, "seconds": summary.get("wall_seconds", summary.get("seconds")),
                    "cpu_seconds": summary.get("cpu_seconds", cpu_seconds),
                    "stopped": "time_budget" if summary.get("time_budget") else summary.get("stopped")}
    n_train = len(load_data(legacy["data"], "train", image_size=legacy["image_size"], channels=legacy["channels"],
                            seed=legacy["seed"], test_fraction=legacy["test_fraction"]))
    card = runs.new_card(name or out.name, DOMAIN, data=legacy["data"],
                         split=split_text(legacy["data"], n_train, legacy["test_fraction"], legacy["seed"]),
                         summary=card_summary, seed=legacy["seed"], command=command,
                         parameters=sum(p.numel() for p in denoiser.parameters()), train_config=legacy.get("train", {}),
                         final_loss=float(rows[-1]["loss"]) if rows else None,
                         converted={"from": LEGACY_FORMAT, "source": str(old), "note": note or
                                    "trained before the run format; converted by "
                                    "gendiff.domains.images.convert_run"})
    # the sitting's commit and hardware are those of the training, not of this conversion
    sitting = card["training"]["sittings"][-1]
    sitting["commit"] = card["training"]["commit"] = commit
    if hardware is not None:
        sitting["hardware"] = card["training"]["hardware"] = hardware
    if summary.get("time_budget"):
        sitting["time_budget"] = summary["time_budget"]
    mtime = (old / runs.CHECKPOINT).stat().st_mtime
    sitting["date"] = datetime.datetime.fromtimestamp(mtime, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    runs.save_run(out, DOMAIN, meta, denoiser, card)
    return out
