"""Trainer: AdamW, linear warm-up, EMA weights, bf16 autocast, gradient accumulation, exact resume, DDP."""
from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import gc
import logging
import math
import random
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, default_collate

from . import distributed as D
from .distributed import StepBatches, advance, epoch_permutation, mix_seed  # noqa: F401  (public here)
from .device import make_generator
from .errors import ConfigError, DataError, TrainingError
from .io import torch_load_safe, torch_save_atomic, write_text_atomic

log = logging.getLogger("gendiff.training")
FORMAT = "gendiff-trainer-v1"
LR_DECAYS = (None, "cosine")
LOG_FIELDS = ["step", "epoch", "loss", "lr", "samples_per_sec", "nonfinite"]
unwrap = D.unwrap


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping settings; `batch_size` is the global micro-batch (split across DDP ranks)."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple = (0.9, 0.999)
    warmup_steps: int = 0
    lr_decay: str | None = None  # None: constant after warm-up; 'cosine': half a cosine from lr to lr * lr_final
    lr_final: float = 0.0  # with lr_decay: the last step's learning rate as a fraction of lr
    max_steps: int = 1000
    batch_size: int = 32
    grad_clip: float | None = 1.0
    ema_decay: float = 0.999
    ema_warmup: bool = True
    accumulate: int = 1
    bf16: bool = False
    log_every: int = 50
    ckpt_every: int = 500
    seed: int = 0
    max_nonfinite: int = 10
    num_workers: int = 0
    device: str = "auto"
    progress: bool = True
    time_budget: float | None = None  # seconds of wall-clock training per fit(); stops before a step would overrun

    def __post_init__(self):
        self.betas = tuple(float(b) for b in self.betas)
        checks = {
            "lr": self.lr > 0, "weight_decay": self.weight_decay >= 0, "warmup_steps": self.warmup_steps >= 0,
            "max_steps": self.max_steps >= 1, "batch_size": self.batch_size >= 1, "accumulate": self.accumulate >= 1,
            "ema_decay": 0.0 <= self.ema_decay <= 1.0, "log_every": self.log_every >= 1,
            "ckpt_every": self.ckpt_every >= 1, "max_nonfinite": self.max_nonfinite >= 1,
            "num_workers": self.num_workers >= 0, "grad_clip": self.grad_clip is None or self.grad_clip >= 0,
            "betas": len(self.betas) == 2 and all(0.0 <= b < 1.0 for b in self.betas),
            "time_budget": self.time_budget is None or self.time_budget > 0,
            "lr_decay": self.lr_decay in LR_DECAYS, "lr_final": 0.0 <= self.lr_final <= 1.0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"TrainConfig.{name}={getattr(self, name)!r} is out of range")

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "betas": list(self.betas)}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"TrainConfig: unknown field(s) {', '.join(unknown)}")
        return cls(**d)


def ema_decay_at(step: int, config: TrainConfig) -> float:
    """EMA decay after optimizer step `step` (1-based): min(ema_decay, (1 + step) / (10 + step)) with `ema_warmup`
    (diffusers' EMAModel default), so early averages are not dominated by the random initialisation."""
    if not config.ema_warmup:
        return config.ema_decay
    return min(config.ema_decay, (1.0 + step) / (10.0 + step))


def warmup_lr(step: int, config: TrainConfig) -> float:
    """Learning rate of optimizer step `step` (0-based): lr * min(1, (step + 1) / warmup_steps), then, with
    lr_decay='cosine', times lr_final + (1 - lr_final) * (1 + cos(pi * p)) / 2, where p runs from 0 at the end of
    the warm-up to 1 at the last step (max_steps - 1): the decay is by step, so a resumed run follows the same
    curve. A run stopped early by its time budget ends at whatever point of the curve it reached."""
    lr = config.lr if config.warmup_steps <= 0 else config.lr * min(1.0, (step + 1) / config.warmup_steps)
    if config.lr_decay == "cosine":
        span = config.max_steps - 1 - config.warmup_steps
        p = min(max((step - config.warmup_steps) / span, 0.0), 1.0) if span > 0 else 1.0
        lr *= config.lr_final + (1.0 - config.lr_final) * 0.5 * (1.0 + math.cos(math.pi * p))
    return lr


def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """Polyak averaging: ema <- decay * ema + (1 - decay) * theta; buffers are copied."""
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1.0 - decay)
        for e, b in zip(ema.buffers(), model.buffers()):
            e.copy_(b)


def to_device(batch: Any, device: torch.device) -> Any:
    """Move tensors (in dicts, lists, tuples, or objects with .to such as torch-geometric batches) to `device`."""
    if isinstance(batch, torch.Tensor) or hasattr(batch, "to") and not isinstance(batch, (dict, list, tuple)):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        moved = [to_device(v, device) for v in batch]
        return type(batch)(*moved) if hasattr(batch, "_fields") else type(batch)(moved)
    return batch


def _seed_globals(*parts: int) -> None:
    """Seed the global torch, python and numpy streams (dropout, user code) of a fresh run."""
    torch.manual_seed(mix_seed(*parts, 2))
    random.seed(mix_seed(*parts, 4))
    np.random.seed(mix_seed(*parts, 5) % 2**32)


def _rng_state(generator: torch.Generator) -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generator": generator.get_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }


def _set_rng_state(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator.set_state(state["generator"])
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))


def load_weights(path, model: nn.Module, ema: bool = True) -> nn.Module:
    """Load the EMA (ema=True) or raw weights of a Trainer checkpoint into `model`; returns `model`."""
    state = torch_load_safe(path)
    key = "ema" if ema else "model"
    if not isinstance(state, dict) or state.get("format") != FORMAT or key not in state:
        raise DataError(f"{path}: not a gendiff trainer checkpoint (missing '{key}')")
    _load_into(model, state[key], path, key)
    return model


def _load_into(module: nn.Module, weights: dict, path, key: str) -> None:
    try:
        module.load_state_dict(weights)
    except RuntimeError as exc:
        raise DataError(f"{path}: '{key}' weights do not fit this model ({str(exc).splitlines()[0]})") from None


def load_ema_weights(path, model: nn.Module) -> nn.Module:
    return load_weights(path, model, ema=True)


class Trainer:
    """Runs `step_fn(model, batch, generator) -> scalar loss` over a map-style dataset; the trainer owns data order.

    Under torchrun, `model` reaches step_fn wrapped in DistributedDataParallel: call it (its forward syncs gradients)
    and reach attributes through `gendiff.training.unwrap(model)`.
    """

    def __init__(self, model: nn.Module, step_fn: Callable, dataset, config: TrainConfig, out_dir,
                 collate_fn: Callable | None = None, resume: bool | str = False):
        if resume not in (False, True, "auto"):
            raise ConfigError(f"resume={resume!r}: expected False, True or 'auto'")
        self.config, self.step_fn, self.dataset = config, step_fn, dataset
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
            raise ConfigError(f"TrainConfig.batch_size={config.batch_size} is not divisible by "
                              f"WORLD_SIZE={self.ctx.world_size}")
        if len(dataset) < config.batch_size:
            raise ConfigError(f"dataset has {len(dataset)} items, fewer than "
                              f"TrainConfig.batch_size={config.batch_size}")
        self.bf16 = bool(config.bf16)  # bf16 autocast on the training device (CUDA, CPU; MPS where torch has it)
        self.model = model.to(self.device)
        self.ema_model = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, betas=config.betas,
                                           weight_decay=config.weight_decay)
        self.generator = make_generator(self.device, mix_seed(config.seed, 1, self.ctx.rank))
        self.step, self.position = 0, (0, 0)
        self.nonfinite_total = self.nonfinite_run = 0
        self.resumed_from: int | None = None
        exists = self.ckpt_path.is_file()
        if resume is True or (resume == "auto" and exists):
            self._load()
        else:
            if exists:
                raise ConfigError(f"{self.ckpt_path} exists; pass resume=True to continue it or use another out_dir")
            _seed_globals(config.seed, self.ctx.rank)
        self.train_model = D.wrap(self.model, self.ctx, self.device)

    # ---- checkpoints -------------------------------------------------------------------------------------------
    def state_dict(self, rngs: list) -> dict:
        return {
            "format": FORMAT, "step": self.step, "data_position": list(self.position),
            "nonfinite_total": self.nonfinite_total, "nonfinite_run": self.nonfinite_run,
            "model": self.model.state_dict(), "ema": self.ema_model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "rng": rngs, "world_size": self.ctx.world_size,
            "config": self.config.to_dict(),
        }

    def save_checkpoint(self) -> None:
        """Write out_dir/checkpoint.pt atomically (rank 0); refuses to overwrite it with non-finite weights."""
        bad = [n for n, p in self.model.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise TrainingError(f"parameters {', '.join(bad[:3])} are non-finite at step {self.step}; "
                                f"{self.ckpt_path} was left as it was")
        rngs = D.all_gather_object(_rng_state(self.generator), self.ctx)
        if self.ctx.is_main:
            torch_save_atomic(self.state_dict(rngs), self.ckpt_path)

    def _load(self) -> None:
        state = torch_load_safe(self.ckpt_path)
        keys = ("format", "model", "ema", "optimizer", "step", "data_position", "rng", "nonfinite_total")
        missing = [k for k in keys if k not in state] if isinstance(state, dict) else ["everything"]
        if missing or state["format"] != FORMAT:
            raise DataError(f"{self.ckpt_path}: not a gendiff trainer checkpoint (missing {', '.join(missing)})")
        _load_into(self.model, state["model"], self.ckpt_path, "model")
        _load_into(self.ema_model, state["ema"], self.ckpt_path, "ema")
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.position = int(state["step"]), tuple(int(v) for v in state["data_position"])
        self.nonfinite_total, self.nonfinite_run = int(state["nonfinite_total"]), int(state["nonfinite_run"])
        rngs = state["rng"]
        if len(rngs) == self.ctx.world_size:
            _set_rng_state(rngs[self.ctx.rank], self.generator)
        else:
            warnings.warn(f"{self.ckpt_path}: written by {len(rngs)} process(es), resumed by {self.ctx.world_size}; "
                          "random streams are re-seeded, so the run is not bit-identical to an uninterrupted one")
            _seed_globals(self.config.seed, self.ctx.rank, self.step)
            self.generator.manual_seed(mix_seed(self.config.seed, 1, self.ctx.rank, self.step))
        old = state.get("config", {})
        changed = [k for k in ("seed", "batch_size", "accumulate", "lr", "warmup_steps", "lr_decay", "lr_final",
                                 "ema_decay", "ema_warmup")
                   if k in old and old[k] != getattr(self.config, k)]
        if changed:
            warnings.warn(f"{self.ckpt_path}: resuming with changed TrainConfig field(s) {', '.join(changed)}")
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
        return iter(DataLoader(self.dataset, batch_sampler=sampler, num_workers=cfg.num_workers,
                               collate_fn=self.collate_fn, pin_memory=self.device.type == "cuda",
                               multiprocessing_context=context,
                               generator=torch.Generator().manual_seed(mix_seed(cfg.seed, 3, self.step))))

    def _micro_step(self, batch, sync: bool, skip_backward: bool) -> tuple[float, bool]:
        """Forward (and backward unless skipped) on one micro-batch; returns (rank-mean loss, any rank non-finite)."""
        with D.no_sync(self.train_model, not sync):
            autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
            with autocast:
                loss = self.step_fn(self.train_model, batch, self.generator)
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise TrainingError(f"step_fn must return a scalar loss tensor, got {type(loss).__name__} "
                                    f"{tuple(getattr(loss, 'shape', ()))}")
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
                norm = torch.nn.utils.get_total_norm([p.grad for p in params])
            bad = not bool(torch.isfinite(norm))
        self.step += 1
        if bad:
            self.optimizer.zero_grad(set_to_none=True)
            self.nonfinite_total += 1
            self.nonfinite_run += 1
            if self.ctx.is_main:
                log.warning("step %d: non-finite loss or gradient (losses %s); step skipped (%d in a row, %d in all)",
                            self.step, losses, self.nonfinite_run, self.nonfinite_total)
            return None
        self.optimizer.step()
        ema_update(self.ema_model, self.model, ema_decay_at(self.step, cfg))
        self.nonfinite_run = 0
        return sum(losses) / len(losses)

    def _out_of_time(self, t0: float, start: int) -> bool:
        """Whether one more step (at the mean step time so far) would overrun the budget; ranks agree."""
        elapsed = time.perf_counter() - t0
        per_step = elapsed / max(self.step - start, 1)
        over = float(elapsed + per_step > self.config.time_budget)
        if self.ctx.enabled:
            over = float(D.all_reduce_sum(torch.tensor([over], device=self.device), self.ctx).item())
        return over > 0

    def fit(self) -> dict:
        """Train until config.max_steps, or until config.time_budget seconds would be overrun by one more step;
        checkpoint every ckpt_every steps and at the end; returns a summary (`stopped`: 'max_steps' or
        'time_budget'; `cpu_seconds`: this process's CPU time)."""
        cfg = self.config
        if self.ctx.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if self.resumed_from is None and self.log_path.exists():
                self.log_path.unlink()
        start, t0, cpu0 = self.step, time.perf_counter(), time.process_time()
        stopped = "max_steps"
        # the budget bounds the loop: it stops when one more iteration at the mean so far would overrun, so the loop
        # ends before time_budget + its longest iteration (reported, with the final checkpoint's time, in the summary)
        loop_seconds, longest, tick = 0.0, 0.0, t0
        window_t, window_steps, window_losses, last_loss = time.perf_counter(), 0, [], float("nan")
        show = cfg.progress and self.ctx.is_main and sys.stderr.isatty()
        from tqdm.auto import tqdm

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
                        self._write_log({
                            "step": self.step, "epoch": self.position[0], "loss": f"{last_loss:.6g}",
                            "lr": f"{warmup_lr(self.step - 1, cfg):.6g}",
                            "samples_per_sec": f"{window_steps * cfg.batch_size * cfg.accumulate / elapsed:.4g}",
                            "nonfinite": self.nonfinite_total})
                    window_t, window_steps, window_losses = time.perf_counter(), 0, []
                if failed:
                    raise TrainingError(
                        f"{self.nonfinite_run} consecutive non-finite losses "
                        f"(steps {self.step - self.nonfinite_run + 1}"
                        f"-{self.step}, max_nonfinite={cfg.max_nonfinite}); training stopped, the last good "
                        f"checkpoint {self.ckpt_path} was left intact")
                if self.step % cfg.ckpt_every == 0 and self.step < cfg.max_steps:
                    self.save_checkpoint()
                now = time.perf_counter()
                longest, tick = max(longest, now - tick), now
                if cfg.time_budget is not None and self.step < cfg.max_steps and self._out_of_time(t0, start):
                    stopped = "time_budget"
                    break
            loop_seconds = time.perf_counter() - t0
            if self.step > start or not self.ckpt_path.exists():
                self.save_checkpoint()
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
        return {"step": self.step, "loss": last_loss, "nonfinite": self.nonfinite_total, "stopped": stopped,
                "epoch": self.position[0], "seconds": seconds, "cpu_seconds": time.process_time() - cpu0,
                "loop_seconds": loop_seconds, "longest_step_seconds": longest,
                "resumed_from": self.resumed_from,
                "samples_per_sec": (self.step - start) * cfg.batch_size * cfg.accumulate / max(seconds, 1e-9),
                "checkpoint": str(self.ckpt_path)}
