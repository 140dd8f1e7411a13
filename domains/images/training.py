"""Training an images run: the options (ImageTrainConfig, validated where built), the training step (eps-loss with
label dropout, or the hybrid loss of a learned-variance model) and `train`, which writes the run folder."""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gendiff import runs
from gendiff.device import resolve_device
from gendiff.errors import ConfigError
from gendiff.io import write_json_atomic
from gendiff.losses import diffusion_loss, hybrid_loss
from gendiff.schedules import get_schedule
from gendiff.spaces import EuclideanSpace
from gendiff.training import TrainConfig, Trainer

from .data import ImageDataset, load_data
from .model import build_denoiser, compile_denoiser, compile_options
from .run import DOMAIN, absolute_spec, run_config, saved_config, split_text

RESUME_MUST_MATCH = ("data", "model", "schedule", "denoiser", "image_size", "pixels")


@dataclass
class ImageTrainConfig:
    """The options of images.train (all but the data and the run folder); see `train` for what each does.
    `trainer` holds further gendiff.training.TrainConfig fields (lr, batch_size, ema_decay, grad_clip, ...), which
    override the defaults `train_config` derives from max_steps and time_budget. Validated where built."""

    image_size: int | None = None
    channels: int | None = None
    model: dict | None = None
    schedule: str | dict = "linear"
    prediction: str = "eps"
    learn_sigma: bool = False
    p_uncond: float = 0.1
    max_steps: int = 2000
    time_budget: float | None = None
    seed: int = 0
    test_fraction: float = 0.2
    resume: bool | str = False
    compile: bool | str | dict = False
    bf16: bool = False
    device: str | torch.device = "auto"
    channels_last: bool | None = None
    progress: bool = True
    download: bool = False
    command: str | None = None
    trainer: dict = field(default_factory=dict)

    def __post_init__(self):
        if not 0.0 <= self.p_uncond < 1.0:
            raise ConfigError(f"p_uncond must be in [0, 1), got {self.p_uncond}")
        if not self.max_steps >= 1:
            raise ConfigError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.resume not in (False, True, "auto"):
            raise ConfigError(f"resume={self.resume!r}: expected False, True or 'auto'")
        # bad device names and compile options fail here, before any data is read; the Trainer resolves the device
        # again, with this process's LOCAL_RANK under torchrun
        resolve_device(self.device)
        compile_options(self.compile)
        own = {f.name for f in dataclasses.fields(self)}
        core = {f.name for f in dataclasses.fields(TrainConfig)}
        for key in self.trainer:
            if key in own or key not in core:
                where = "an ImageTrainConfig field: give it as one" if key in own else "no TrainConfig field"
                raise ConfigError(f"images.train: {key!r} is {where}")
        self.train_config()  # the core's settings validate too

    @classmethod
    def from_kwargs(cls, config: "ImageTrainConfig | None" = None, **kwargs) -> "ImageTrainConfig":
        """`config` (default: the defaults) with keyword arguments applied: ImageTrainConfig fields by name, any other
        keyword into `trainer` (a TrainConfig field, e.g. lr=1e-3, batch_size=32); validated once, here."""
        if config is not None and not kwargs:
            return config
        own = {f.name for f in dataclasses.fields(cls)}
        values = {} if config is None else {f.name: getattr(config, f.name) for f in dataclasses.fields(cls)}
        values.update({k: v for k, v in kwargs.items() if k in own})
        values["trainer"] = {**values.get("trainer", {}), **{k: v for k, v in kwargs.items() if k not in own}}
        return cls(**values)

    def train_config(self) -> TrainConfig:
        """The core Trainer's TrainConfig: images defaults (lr 2e-4, batch 64, warm-up a tenth of max_steps up to 500,
        EMA decay from max_steps, or 0.995 with a time budget), then `trainer`, then the fields set here."""
        max_steps, time_budget = self.max_steps, self.time_budget
        defaults = dict(lr=2e-4, batch_size=64, warmup_steps=min(500, max_steps // 10), grad_clip=1.0, seed=self.seed,
                        ckpt_every=max(1, min(1000, max_steps)), log_every=max(1, min(50, max_steps // 10 or 1)),
                        progress=self.progress, ema_decay=0.995 if time_budget is not None else
                        min(0.9995, max(0.9, 1.0 - 10.0 / max_steps)))
        defaults.update(self.trainer)
        return TrainConfig(**{**defaults, "max_steps": max_steps, "bf16": bool(self.bf16), "device": str(self.device),
                              "time_budget": None if time_budget is None else float(time_budget)})


def make_step_fn(schedule, num_classes: int | None, p_uncond: float, learn_sigma: bool = False,
                 hybrid_lambda: float = 0.001):
    """Training step: the core's eps-loss with label dropout to the null class (Ho & Salimans 2022, Algorithm 1).
    With `learn_sigma` the model (a learn_sigma Denoiser) is trained with the core's hybrid_loss instead:
    L_simple + hybrid_lambda * T * L_vlb, the variance learning from L_vlb only, with the discretized decoder of
    8-bit images at the first step (Nichol & Dhariwal 2021, eq. 16)."""
    space = EuclideanSpace()

    def step_fn(model, batch, generator):
        x0, labels = batch
        cond = None
        if num_classes is not None:
            drop = torch.rand(labels.shape, generator=generator, device=labels.device) < p_uncond
            cond = torch.where(drop | (labels < 0), torch.full_like(labels, num_classes), labels)
        if learn_sigma:
            return hybrid_loss(model, x0, schedule, space, lam=hybrid_lambda, cond=cond, generator=generator,
                               decoder="discretized").mean()
        return diffusion_loss(model, x0, schedule, space, cond=cond, generator=generator).mean()

    return step_fn


def _previous_card(out: Path, meta: dict, resume: bool | str) -> dict | None:
    """The card of the run being resumed (its metrics dropped: measured on earlier weights), None for a new run;
    ConfigError where the run folder holds a checkpoint not to be resumed, or one trained on another model or data."""
    ckpt = out / runs.CHECKPOINT
    if not resume and ckpt.exists():
        raise ConfigError(f"{ckpt} exists; pass resume=True to continue it or use another out")
    if not (resume is True or (resume == "auto" and ckpt.exists())):
        return None
    saved = saved_config(out)
    if saved is not None:
        for key in RESUME_MUST_MATCH:
            if saved.get(key) != meta[key]:
                raise ConfigError(f"{out / runs.CONFIG}: run was trained with {key}={saved.get(key)!r}, "
                                  f"now {meta[key]!r}")
    if not (out / runs.CARD).is_file():
        return None
    previous = json.loads((out / runs.CARD).read_text())
    previous["metrics"] = {}  # measured on the weights before this sitting: no longer these weights'
    return previous


def train(data: str = "mnist", out: str | Path = "runs/images", *, config: ImageTrainConfig | None = None,
          **overrides) -> dict:
    """Train a class-conditional (when labels exist) U-Net on `data` into run folder `out`; returns a summary dict.

    Options come as an ImageTrainConfig `config` and/or keyword arguments (`overrides`, applied over `config`):
    its fields by name, any other keyword a gendiff.training.TrainConfig field (lr, batch_size, ema_decay,
    grad_clip, ...). Writes the run format (gendiff.runs): config.json first (so an interrupted run can be
    resumed), then at the end weights.safetensors (the EMA weights) and card.json (data, split, steps, wall and CPU
    time, hardware, seed, commit, `command` (default: this process's command line); cumulative over resumed
    sittings).
    `time_budget` (seconds of training, the core Trainer's TrainConfig.time_budget) stops before a step would
    overrun it; `max_steps` still caps it.
    `device`: 'auto' (CUDA, else MPS, else CPU), 'cpu', 'cuda', 'cuda:N' or 'mps'; `bf16`: bf16 autocast of the
    training step on that device (the core Trainer's); `compile`: torch.compile the U-Net in place (True, a backend
    name or a dict of torch.compile options, see compile_options).
    `learn_sigma`: the U-Net also outputs Improved DDPM's variance interpolation v (2C channels) and is trained
    with the hybrid loss (make_step_fn); config.json stores it, so load_run rebuilds that model, the ancestral
    sampler uses the learned variance and bits/dim its bound.
    `download` lets torchvision fetch MNIST / Fashion-MNIST / CIFAR-10 files that are not under ROOT yet.
    """
    cfg = ImageTrainConfig.from_kwargs(config, **overrides)
    dev = resolve_device(cfg.device)
    out = Path(out)
    data = absolute_spec(str(data))
    train_data = load_data(data, "train", image_size=cfg.image_size, channels=cfg.channels, seed=cfg.seed,
                           test_fraction=cfg.test_fraction, download=cfg.download)
    sched_cfg = {"name": cfg.schedule} if isinstance(cfg.schedule, str) else dict(cfg.schedule)
    meta = run_config(train_data, data, model=cfg.model, schedule=get_schedule(**sched_cfg),
                      prediction=cfg.prediction, p_uncond=cfg.p_uncond, seed=cfg.seed,
                      test_fraction=cfg.test_fraction, learn_sigma=cfg.learn_sigma)
    trainer_config = cfg.train_config()
    previous = _previous_card(out, meta, cfg.resume)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / runs.CONFIG, {"format": runs.FORMAT, "domain": DOMAIN, **meta})

    denoiser, sched = build_denoiser(meta)
    if cfg.channels_last if cfg.channels_last is not None else dev.type == "cuda":
        denoiser = denoiser.to(memory_format=torch.channels_last)
    compile_denoiser(denoiser, cfg.compile)  # in place: state_dict keys (and so checkpoints) stay the plain U-Net's
    step_fn = make_step_fn(sched, train_data.num_classes if meta["model"]["num_classes"] is not None else None,
                           cfg.p_uncond, learn_sigma=cfg.learn_sigma)
    start = time.perf_counter()
    trainer = Trainer(denoiser, step_fn, ImageDataset(train_data), trainer_config, out,
                      collate_fn=ImageDataset.collate_fn, resume=cfg.resume)
    summary = trainer.fit()
    parameters = sum(p.numel() for p in denoiser.parameters())
    if trainer.ctx.is_main:
        card = runs.new_card(out.name, DOMAIN, data=str(data),
                             split=split_text(str(data), len(train_data), cfg.test_fraction, cfg.seed),
                             summary=summary, seed=cfg.seed, device=trainer.device, command=cfg.command,
                             previous=previous, parameters=parameters, train_config=trainer_config.to_dict())
        runs.save_run(out, DOMAIN, meta, trainer.ema_model, card)
    summary.update(run=str(out), parameters=parameters, wall_seconds=time.perf_counter() - start)
    return summary
