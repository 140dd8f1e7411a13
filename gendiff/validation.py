"""Validation during training: the training loss of the EMA network on held-out items, with the same draws of
noise and time each time (so two validations differ by the network only), the best EMA weights kept, and early
stopping after `patience` validations without improvement.

A diffusion model trained on little data (one series of a few hundred windows) memorises it: the training loss keeps
falling while the loss on windows it has not seen turns up. `Trainer(..., val_dataset=...)` with
TrainConfig.validate_every > 0 measures that curve; keep_best=True saves the EMA weights of its lowest point as the
run's weights (the checkpoint keeps the latest ones, so a resumed run continues where it stopped)."""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import torch

from .device import make_generator, to_device

FILE = "validation.csv"
FIELDS = ["step", "val_loss", "best_step", "best_val_loss"]


@torch.no_grad()
def validation_loss(model, step_fn, dataset, collate_fn, batch_size: int, seed: int, device) -> float:
    """Mean of step_fn's loss over `dataset` in order, batch by batch (weighted by batch size), with a generator
    seeded by `seed` (the same noise and times at every call); the model in eval mode, restored after."""
    was_training = model.training
    model.eval()
    generator = make_generator(device, seed)
    total, count = 0.0, 0
    try:
        for start in range(0, len(dataset), batch_size):
            items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            batch = to_device(collate_fn(items), device)
            loss = step_fn(model, batch, generator)
            total += float(loss) * len(items)
            count += len(items)
    finally:
        model.train(was_training)
    return total / max(count, 1)


class BestTracker:
    """The validation curve, the best step and a copy of the EMA weights there; `update` says when to stop."""

    def __init__(self, out_dir, patience: int = 0, append: bool = False):
        self.path = Path(out_dir) / FILE
        self.patience = int(patience)
        self.best_loss = float("inf")
        self.best_step: int | None = None
        self.best_state: dict | None = None
        self.since_best = 0
        self.curve: list[tuple[int, float]] = []
        if not append and self.path.exists():
            self.path.unlink()

    def update(self, step: int, loss: float, ema_model: torch.nn.Module) -> bool:
        """Record a validation; True when `patience` validations in a row have not improved on the best."""
        self.curve.append((int(step), float(loss)))
        if loss < self.best_loss:
            self.best_loss, self.best_step, self.since_best = float(loss), int(step), 0
            self.best_state = copy.deepcopy(ema_model.state_dict())
        else:
            self.since_best += 1
        self._write(step, loss)
        return self.patience > 0 and self.since_best >= self.patience

    def _write(self, step: int, loss: float) -> None:
        new = not self.path.is_file() or self.path.stat().st_size == 0
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            if new:
                writer.writeheader()
            writer.writerow(
                {
                    "step": step,
                    "val_loss": f"{loss:.6g}",
                    "best_step": self.best_step,
                    "best_val_loss": f"{self.best_loss:.6g}",
                }
            )

    def restore_best(self, ema_model: torch.nn.Module) -> bool:
        """Load the best EMA weights into ema_model; False when there were none."""
        if self.best_state is None:
            return False
        ema_model.load_state_dict(self.best_state)
        return True

    def summary(self) -> dict:
        return {
            "best_step": self.best_step,
            "best_val_loss": self.best_loss if self.curve else None,
            "validations": len(self.curve),
            "curve": [[s, round(v, 6)] for s, v in self.curve],
        }
