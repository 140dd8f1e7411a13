"""Trainer: AdamW, linear warm-up, EMA weights, bf16 autocast, gradient accumulation, exact resume, DDP.

The training loop lives here; its settings (TrainConfig, the learning-rate curve) in train_config, the EMA in ema,
checkpoints in checkpoints, data order in distributed. Every name users imported from here before the split still is.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import gc
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import torch
from torch import nn
from torch.utils.data import DataLoader, default_collate
from tqdm.auto import tqdm

from . import checkpoints
from . import distributed as D
from .checkpoints import FORMAT, load_ema_weights, load_weights, seed_globals
from .device import make_generator, to_device
from .distributed import StepBatches, advance, epoch_permutation, mix_seed
from .ema import ema_decay_at, ema_update
from .errors import ConfigError, TrainingError
from .io import write_text_atomic
from .train_config import LR_DECAYS, TrainConfig, warmup_lr
from .validation import BestTracker, validation_loss

__all__ = [
    "Trainer",
    "TrainConfig",
    "LR_DECAYS",
    "LOG_FIELDS",
    "FORMAT",
    "warmup_lr",
    "ema_decay_at",
    "ema_update",
    "to_device",
    "load_weights",
    "load_ema_weights",
    "unwrap",
    "StepBatches",
    "advance",
    "epoch_permutation",
    "mix_seed",
]

log = logging.getLogger("gendiff.training")
LOG_FIELDS = ["step", "epoch", "loss", "lr", "samples_per_sec", "nonfinite"]
unwrap = D.unwrap


class Trainer:
    """Runs `step_fn(model, batch, generator) -> scalar loss` over a map-style dataset; the trainer owns data order.

    Under torchrun, `model` reaches step_fn wrapped in DistributedDataParallel: call it (its forward syncs gradients)
    and reach attributes through `gendiff.training.unwrap(model)`.
    """

    def __init__(
        self,
        model: nn.Module,
        step_fn: Callable,
        dataset,
        config: TrainConfig,
        out_dir,
        collate_fn: Callable | None = None,
        resume: bool | str = False,
        val_dataset=None,
    ):
        if resume not in (False, True, "auto"):
            raise ConfigError(f"resume={resume!r}: expected False, True or 'auto'")
        self.config, self.step_fn, self.dataset = config, step_fn, dataset
        self.val_dataset = val_dataset if val_dataset is not None and len(val_dataset) else None
        self.tracker: BestTracker | None = None
        self.collate_fn = collate_fn or default_collate
        self.out_dir = Path(out_dir)
        self.ckpt_path, self.log_path = self.out_dir / "checkpoint.pt", self.out_dir / "log.csv"
        self.ctx, self.device = D.setup(config.device)
        try:
            self._build(model, resume)
        except BaseException:
            D.teardown(self.ctx, clean=False)
            raise

    def _build(self, model: nn.Module, resume: bool | str) -> None:
        config, dataset = self.config, self.dataset
        if config.batch_size % self.ctx.world_size:
            raise ConfigError(
                f"TrainConfig.batch_size={config.batch_size} is not divisible by WORLD_SIZE={self.ctx.world_size}"
            )
        if len(dataset) < config.batch_size:
            raise ConfigError(
                f"dataset has {len(dataset)} items, fewer than TrainConfig.batch_size={config.batch_size}"
            )
        self.bf16 = bool(config.bf16)  # bf16 autocast on the training device (CUDA, CPU; MPS where torch has it)
        self.model = model.to(self.device)
        self.ema_model = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
        )
        self.generator = make_generator(self.device, mix_seed(config.seed, 1, self.ctx.rank))
        self.step, self.position = 0, (0, 0)
        self.nonfinite_total = self.nonfinite_run = 0
        self.resumed_from: int | None = None
        self.sitting = checkpoints.Sitting()  # this process's time, carried in checkpoints (checkpoints.Sitting)
        self.earlier_sittings: list[dict] = []  # the sittings before it, read from the resumed checkpoint
        exists = self.ckpt_path.is_file()
        if resume is True or (resume == "auto" and exists):
            self._load()
        else:
            if exists:
                raise ConfigError(f"{self.ckpt_path} exists; pass resume=True to continue it or use another out_dir")
            seed_globals(config.seed, self.ctx.rank)
        self.train_model = D.wrap(self.model, self.ctx, self.device)

    # ---- checkpoints (gendiff.checkpoints) -------------------------------------------------------------------
    def state_dict(self, rngs: list) -> dict:
        return checkpoints.trainer_state(self, rngs)

    def save_checkpoint(self) -> None:
        """Write out_dir/checkpoint.pt atomically (rank 0); refuses to overwrite it with non-finite weights."""
        checkpoints.save_checkpoint(self)

    def _load(self) -> None:
        checkpoints.restore_checkpoint(self)
        self.resumed_from = self.step
        if self.ctx.is_main:
            self._trim_log()
            for tmp in self.out_dir.glob(".checkpoint.pt.*.tmp"):
                tmp.unlink(missing_ok=True)

    # ---- log ---------------------------------------------------------------------------------------------------
    def _trim_log(self) -> None:
        """Drop rows after the checkpoint's step (written by an interrupted run) and torn last lines."""
        if not self.log_path.is_file():
            return
        lines = self.log_path.read_text().splitlines()
        keep = [",".join(LOG_FIELDS)]
        for line in lines[1:]:
            cells = line.split(",")
            if len(cells) == len(LOG_FIELDS) and cells[0].isdigit() and int(cells[0]) <= self.step:
                keep.append(line)
        write_text_atomic(self.log_path, "\n".join(keep) + "\n")

    def _write_log(self, row: dict) -> None:
        new = not self.log_path.is_file() or self.log_path.stat().st_size == 0
        with open(self.log_path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
            if new:
                writer.writeheader()
            writer.writerow(row)

    # ---- training ----------------------------------------------------------------------------------------------
    def _loader(self):
        cfg = self.config
        sampler = StepBatches(len(self.dataset), cfg.batch_size, cfg.seed, self.position, self.ctx)
        # a dataset may name the start method its workers need: 'spawn' for one reading netCDF / HDF5 files, whose
        # library state does not survive a fork (a forked worker can crash opening a file the parent had open)
        context = getattr(self.dataset, "worker_context", None) if cfg.num_workers else None
        return iter(
            DataLoader(
                self.dataset,
                batch_sampler=sampler,
                num_workers=cfg.num_workers,
                collate_fn=self.collate_fn,
                pin_memory=self.device.type == "cuda",
                multiprocessing_context=context,
                generator=torch.Generator().manual_seed(mix_seed(cfg.seed, 3, self.step)),
            )
        )

    def _micro_step(self, batch, sync: bool, skip_backward: bool) -> tuple[float, bool]:
        """Forward (and backward unless skipped) on one micro-batch; returns (rank-mean loss, any rank non-finite)."""
        with D.no_sync(self.train_model, not sync):
            autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
            with autocast:
                loss = self.step_fn(self.train_model, batch, self.generator)
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise TrainingError(
                    f"step_fn must return a scalar loss tensor, got {type(loss).__name__} "
                    f"{tuple(getattr(loss, 'shape', ()))}"
                )
            value = loss.detach().float().reshape(())
            finite = bool(torch.isfinite(value))
            stats = torch.stack([value if finite else value.new_zeros(()), value.new_tensor(float(not finite))])
            stats = D.all_reduce_sum(stats.to(self.device), self.ctx).cpu()
            bad = bool(stats[1] > 0)
            if not bad and not skip_backward:
                (loss.float() / self.config.accumulate).backward()
            return float(stats[0]) / self.ctx.world_size, bad

    def train_step(self, batches) -> float | None:
        """One optimizer step over `accumulate` micro-batches; returns the mean loss, or None when skipped."""
        cfg = self.config
        for group in self.optimizer.param_groups:
            group["lr"] = warmup_lr(self.step, cfg)
        self.optimizer.zero_grad(set_to_none=True)
        losses, bad = [], False
        for k in range(cfg.accumulate):
            batch = to_device(next(batches), self.device)
            self.position = advance(self.position, len(self.dataset), cfg.batch_size)
            value, micro_bad = self._micro_step(batch, k == cfg.accumulate - 1, bad)
            bad = bad or micro_bad
            losses.append(value)
        if not bad:
            params = [p for p in self.model.parameters() if p.grad is not None]
            if cfg.grad_clip:
                norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            else:
                norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
            bad = not bool(torch.isfinite(norm))
        self.step += 1
        if bad:
            self.optimizer.zero_grad(set_to_none=True)
            self.nonfinite_total += 1
            self.nonfinite_run += 1
            if self.ctx.is_main:
                log.warning(
                    "step %d: non-finite loss or gradient (losses %s); step skipped (%d in a row, %d in all)",
                    self.step,
                    losses,
                    self.nonfinite_run,
                    self.nonfinite_total,
                )
            return None
        self.optimizer.step()
        ema_update(self.ema_model, self.model, ema_decay_at(self.step, cfg))
        self.nonfinite_run = 0
        return sum(losses) / len(losses)

    def _out_of_time(self, t0: float, start: int) -> bool:
        """Whether one more step (at the mean step time so far) would overrun the budget; ranks agree."""
        elapsed = time.perf_counter() - t0
        per_step = elapsed / max(self.step - start, 1)
        over = float(elapsed + per_step > cast(float, self.config.time_budget))  # called with a budget only
        if self.ctx.enabled:
            over = float(D.all_reduce_sum(torch.tensor([over], device=self.device), self.ctx).item())
        return over > 0

    def _log_row(self, loss: float, samples_per_sec: float) -> None:
        """One line of log.csv: the mean loss and throughput of the steps since the last line."""
        self._write_log(
            {
                "step": self.step,
                "epoch": self.position[0],
                "loss": f"{loss:.6g}",
                "lr": f"{warmup_lr(self.step - 1, self.config):.6g}",
                "samples_per_sec": f"{samples_per_sec:.4g}",
                "nonfinite": self.nonfinite_total,
            }
        )

    def _validate(self) -> bool:
        """One validation of the EMA network (BestTracker); True when patience says stop."""
        cfg = self.config
        loss = validation_loss(
            self.ema_model,
            self.step_fn,
            self.val_dataset,
            self.collate_fn,
            cfg.batch_size,
            mix_seed(cfg.seed, 2, 0),
            self.device,
        )
        assert self.tracker is not None
        return self.tracker.update(self.step, loss, self.ema_model)

    def fit(self) -> dict:
        """Train until config.max_steps, or until config.time_budget seconds would be overrun by one more step;
        checkpoint every ckpt_every steps and at the end; returns a summary (`stopped`: 'max_steps' or
        'time_budget'; `cpu_seconds`: this process's CPU time)."""
        cfg = self.config
        if self.ctx.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if self.resumed_from is None and self.log_path.exists():
                self.log_path.unlink()
        validating = self.val_dataset is not None and cfg.validate_every > 0
        if validating:
            self.tracker = BestTracker(self.out_dir, cfg.patience, append=self.resumed_from is not None)
        start, t0, cpu0 = self.step, time.perf_counter(), time.process_time()  # this module's clock (tests fake it)
        self.sitting.start()
        stopped = "max_steps"
        # the budget bounds the loop: it stops when one more iteration at the mean so far would overrun, so the loop
        # ends before time_budget + its longest iteration (reported, with the final checkpoint's time, in the summary)
        loop_seconds, longest, tick = 0.0, 0.0, t0
        window_t, window_steps, window_losses, last_loss = time.perf_counter(), 0, [], float("nan")
        show = cfg.progress and self.ctx.is_main and sys.stderr.isatty()
        bar = tqdm(total=cfg.max_steps, initial=self.step, disable=not show, desc="train", dynamic_ncols=True)
        batches = self._loader() if self.step < cfg.max_steps else None
        self.model.train()
        try:
            while self.step < cfg.max_steps:
                loss = self.train_step(batches)
                window_steps += 1
                if loss is not None:
                    window_losses.append(loss)
                    bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
                bar.update(1)
                failed = self.nonfinite_run >= cfg.max_nonfinite
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps or failed:
                    elapsed = time.perf_counter() - window_t
                    last_loss = sum(window_losses) / len(window_losses) if window_losses else float("nan")
                    if self.ctx.is_main:
                        self._log_row(last_loss, window_steps * cfg.batch_size * cfg.accumulate / elapsed)
                    window_t, window_steps, window_losses = time.perf_counter(), 0, []
                if failed:
                    raise TrainingError(
                        f"{self.nonfinite_run} consecutive non-finite losses "
                        f"(steps {self.step - self.nonfinite_run + 1}"
                        f"-{self.step}, max_nonfinite={cfg.max_nonfinite}); training stopped, the last good "
                        f"checkpoint {self.ckpt_path} was left intact"
                    )
                if self.step % cfg.ckpt_every == 0 and self.step < cfg.max_steps:
                    self.save_checkpoint()
                if validating and self.step % cfg.validate_every == 0 and self._validate():
                    stopped = "early_stop"
                    break
                now = time.perf_counter()
                longest, tick = max(longest, now - tick), now
                if cfg.time_budget is not None and self.step < cfg.max_steps and self._out_of_time(t0, start):
                    stopped = "time_budget"
                    break
            loop_seconds = time.perf_counter() - t0
            if self.step > start or not self.ckpt_path.exists():
                self.save_checkpoint()
            if self.tracker is not None and cfg.keep_best:  # after the checkpoint: it keeps the latest EMA to resume
                self.tracker.restore_best(self.ema_model)
            clean = True
        except BaseException:
            clean = False
            raise
        finally:
            bar.close()
            del batches
            # drop the DDP wrapper (its reducer holds the process group) before the group goes away, so the
            # gloo/nccl threads stop now rather than during interpreter shutdown
            if self.train_model is not self.model:
                self.train_model = self.model
                gc.collect()
            D.teardown(self.ctx, clean=clean)
        seconds = time.perf_counter() - t0
        return {
            "step": self.step,
            "loss": last_loss,
            "nonfinite": self.nonfinite_total,
            "stopped": stopped,
            "epoch": self.position[0],
            "seconds": seconds,
            "cpu_seconds": time.process_time() - cpu0,
            "loop_seconds": loop_seconds,
            "longest_step_seconds": longest,
            "resumed_from": self.resumed_from,
            "sitting_id": self.sitting.id,
            "earlier_sittings": self.earlier_sittings,
            "samples_per_sec": (self.step - start) * cfg.batch_size * cfg.accumulate / max(seconds, 1e-9),
            "checkpoint": str(self.ckpt_path),
            **(
                {"validation": {**self.tracker.summary(), "kept_best": bool(cfg.keep_best)}}
                if self.tracker is not None
                else {}
            ),
        }
