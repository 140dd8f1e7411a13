"""The images domain's verbs: train a U-Net on an image source, sample from a run, and load a run back."""
from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path

import torch

from gendiff.device import make_generator, resolve_device
from gendiff.errors import ConfigError, DataError

from .data import ImageData, ImageDataset, load_data, to_pixels
from .unet import UNet, UNetConfig

CONFIG_NAME = "config.json"
FORMAT = "gendiff-images-v1"
DEFAULT_MODEL = {
    32: dict(ch=64, ch_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(16,)),
    16: dict(ch=64, ch_mult=(1, 2), num_res_blocks=2, attn_resolutions=(8,)),
    8: dict(ch=64, ch_mult=(1, 2), num_res_blocks=2, attn_resolutions=(4,)),
}


def compile_options(compile) -> dict | None:
    """torch.compile keyword arguments for a `compile` option: False/None (none), True (torch's defaults: the
    inductor backend), a backend name ('inductor', 'aot_eager', 'cudagraphs', ...) or a dict of torch.compile
    keyword arguments."""
    if compile is None or compile is False:
        return None
    if compile is True:
        return {}
    if isinstance(compile, str):
        return {"backend": compile}
    if isinstance(compile, dict):
        return dict(compile)
    raise ConfigError(f"compile={compile!r}: expected a bool, a torch.compile backend name or a dict of options")


def compile_denoiser(denoiser, compile, **defaults):
    """Compile `denoiser.net` in place (module.compile), so the module and its state_dict keys (and so checkpoints)
    stay those of the plain U-Net; `defaults` (e.g. dynamic=False) give way to options in `compile`. A net that is
    compiled already is left as it is. Returns the denoiser."""
    options = compile_options(compile)
    if options is not None and getattr(denoiser.net, "_compiled_call_impl", None) is None:
        denoiser.net.compile(**{**defaults, **options})
    return denoiser


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's parameters (where the tensors it is fed are created)."""
    return next(model.parameters()).device


def _autocast(device: torch.device, bf16: bool):
    """bf16 autocast on `device` when asked (CUDA, CPU), else nothing (the meta device has no autocast)."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def _model_config(data: ImageData, model: dict | None) -> UNetConfig:
    c, h, w = data.shape
    if h != w:
        raise DataError(f"{data.name}: images must be square, got {h}x{w}")
    base = dict(DEFAULT_MODEL.get(h, DEFAULT_MODEL[32]))
    base.update(model or {})
    base.update(in_channels=c, resolution=h, num_classes=data.num_classes if base.pop("conditional", True) else None)
    return UNetConfig.from_dict(base)


def _absolute_spec(spec: str) -> str:
    """Folder paths (and the ROOT of 'name:ROOT') made absolute, so a run evaluates from any working directory."""
    name, sep, root = spec.partition(":")
    if sep and root and name.lower() in ("mnist-full", "fashion-mnist", "cifar10"):
        return f"{name}:{Path(root).resolve()}"
    if spec not in ("mnist", "digits") and Path(spec).is_dir():
        return str(Path(spec).resolve())
    return spec


def build_denoiser(meta: dict):
    """Rebuild (Denoiser(UNet), schedule) from a run's config dict."""
    from gendiff.forward import Denoiser
    from gendiff.schedules import schedule_from_config

    schedule = schedule_from_config(meta["schedule"])
    net = UNet(UNetConfig.from_dict(meta["model"]))
    return Denoiser(net, schedule, prediction=meta.get("prediction", "eps")), schedule


def make_step_fn(schedule, num_classes: int | None, p_uncond: float):
    """Training step: the core's eps-loss with label dropout to the null class (Ho & Salimans 2022, Algorithm 1)."""
    from gendiff.losses import diffusion_loss
    from gendiff.spaces import EuclideanSpace

    space = EuclideanSpace()

    def step_fn(model, batch, generator):
        x0, labels = batch
        cond = None
        if num_classes is not None:
            drop = torch.rand(labels.shape, generator=generator, device=labels.device) < p_uncond
            cond = torch.where(drop | (labels < 0), torch.full_like(labels, num_classes), labels)
        return diffusion_loss(model, x0, schedule, space, cond=cond, generator=generator).mean()

    return step_fn


def train(data: str = "mnist", out: str | Path = "runs/images", *, image_size: int | None = None,
          channels: int | None = None, model: dict | None = None, schedule: str | dict = "linear",
          prediction: str = "eps", p_uncond: float = 0.1, max_steps: int = 2000, time_budget: float | None = None,
          seed: int = 0, test_fraction: float = 0.2, resume: bool | str = False, compile: bool | str | dict = False,
          bf16: bool = False, device: str | torch.device = "auto", channels_last: bool | None = None,
          progress: bool = True, download: bool = False, **train_config) -> dict:
    """Train a class-conditional (when labels exist) U-Net on `data` into run folder `out`; returns a summary dict.

    `time_budget` (seconds) stops at the first checkpoint chunk that would overrun it, `max_steps` still caps it.
    `device`: 'auto' (CUDA, else MPS, else CPU), 'cpu', 'cuda', 'cuda:N' or 'mps'; `bf16`: bf16 autocast of the
    training step on that device (the core Trainer's); `compile`: torch.compile the U-Net in place (True, a backend
    name or a dict of torch.compile options, see compile_options).
    Extra keyword arguments go to gendiff.training.TrainConfig (lr, batch_size, ema_decay, grad_clip, ...).
    `download` lets torchvision fetch MNIST / Fashion-MNIST / CIFAR-10 files that are not under ROOT yet.
    """
    from gendiff.io import write_json_atomic
    from gendiff.schedules import get_schedule, schedule_config
    from gendiff.training import TrainConfig, Trainer

    if not 0.0 <= p_uncond < 1.0:
        raise ConfigError(f"p_uncond must be in [0, 1), got {p_uncond}")
    # bad device names and compile options fail here, before any data is read; the Trainer resolves the device
    # again, with this process's LOCAL_RANK under torchrun
    dev = resolve_device(device)
    compile_options(compile)
    out = Path(out)
    data = _absolute_spec(str(data))
    train_data = load_data(data, "train", image_size=image_size, channels=channels, seed=seed,
                           test_fraction=test_fraction, download=download)
    sched_cfg = {"name": schedule} if isinstance(schedule, str) else dict(schedule)
    sched = get_schedule(**sched_cfg)
    meta = {
        "format": FORMAT, "data": str(data), "image_size": train_data.shape[-1], "channels": train_data.shape[0],
        "seed": seed, "test_fraction": test_fraction, "classes": train_data.classes,
        "model": _model_config(train_data, model).to_dict(), "schedule": schedule_config(sched),
        "prediction": prediction, "p_uncond": p_uncond,
    }
    defaults = dict(lr=2e-4, batch_size=64, warmup_steps=min(500, max_steps // 10), grad_clip=1.0, seed=seed,
                    ckpt_every=max(1, min(1000, max_steps)), log_every=max(1, min(50, max_steps // 10 or 1)),
                    progress=progress, ema_decay=0.995 if time_budget is not None else
                    min(0.9995, max(0.9, 1.0 - 10.0 / max_steps)))
    defaults.update(train_config)
    config = TrainConfig(**{**defaults, "max_steps": max_steps, "bf16": bool(bf16),
                            "device": str(device)})
    old = out / CONFIG_NAME
    if not resume and (out / "checkpoint.pt").exists():
        raise ConfigError(f"{out / 'checkpoint.pt'} exists; pass resume=True to continue it or use another out")
    if resume and old.is_file():
        import json

        saved = json.loads(old.read_text())
        for key in ("data", "model", "schedule", "prediction", "image_size"):
            if saved.get(key) != meta[key]:
                raise ConfigError(f"{old}: run was trained with {key}={saved.get(key)!r}, now {meta[key]!r}")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(old, {**meta, "train": config.to_dict()})

    denoiser, sched = build_denoiser(meta)
    if channels_last if channels_last is not None else dev.type == "cuda":
        denoiser = denoiser.to(memory_format=torch.channels_last)
    compile_denoiser(denoiser, compile)  # in place: state_dict keys (and so checkpoints) stay the plain U-Net's
    dataset = ImageDataset(train_data)
    step_fn = make_step_fn(sched, train_data.num_classes if meta["model"]["num_classes"] is not None else None,
                           p_uncond)
    start, summary = time.perf_counter(), {}
    if time_budget is None:
        trainer = Trainer(denoiser, step_fn, dataset, config, out, collate_fn=ImageDataset.collate_fn, resume=resume)
        summary = trainer.fit()
    else:
        summary = _fit_within(denoiser, step_fn, dataset, config, out, resume, float(time_budget), start)
    summary.update(run=str(out), parameters=sum(p.numel() for p in denoiser.parameters()),
                   wall_seconds=time.perf_counter() - start)
    write_json_atomic(out / "train_summary.json", summary)
    return summary


def _fit_within(denoiser, step_fn, dataset, config, out, resume, budget: float, start: float) -> dict:
    """Fit in chunks (exact resume between them) and stop before the time budget would be exceeded."""
    from gendiff.training import Trainer

    target, summary, per_step = config.max_steps, {}, None
    chunk = max(1, min(config.ckpt_every, 200))
    step = 0
    while step < target:
        elapsed = time.perf_counter() - start
        left = budget - elapsed
        if per_step is not None:
            affordable = int(left / per_step)
            if affordable < 1:
                break
            n = min(chunk, max(1, affordable // 2), target - step)  # shrinking chunks: overrun < ~1 step
        else:
            n = min(20, target - step)
        cfg = dataclasses.replace(config, max_steps=step + n)
        t0 = time.perf_counter()
        trainer = Trainer(denoiser, step_fn, dataset, cfg, out, collate_fn=ImageDataset.collate_fn,
                          resume=resume if step == 0 else True)
        summary = trainer.fit()
        done = summary["step"] - step
        if done <= 0:
            break
        per_step = (time.perf_counter() - t0) / done
        step = summary["step"]
    summary["time_budget"] = budget
    return summary


def load_run(run: str | Path, device: str | torch.device = "auto", compile: bool | str | dict = False):
    """(EMA denoiser in eval mode on `device`, run config dict) from a run folder written by `train`.

    `compile` wraps the U-Net in torch.compile (static shapes) for sampling: on CPU and GPU alike it fuses the
    GroupNorm / SiLU / add chains; the first call of each batch shape pays the compilation (one to two minutes).
    True uses torch's default backend (inductor); a backend name or a dict of options also serve (compile_options)."""
    import json

    from gendiff.training import load_ema_weights

    run = Path(run)
    path = run / CONFIG_NAME
    if not path.is_file():
        raise DataError(f"{run}: not an images run (no {CONFIG_NAME})")
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT:
        raise DataError(f"{path}: format {meta.get('format')!r} is not {FORMAT!r}")
    device = resolve_device(device)
    denoiser, _ = build_denoiser(meta)
    load_ema_weights(run / "checkpoint.pt", denoiser)
    denoiser = denoiser.to(device).eval()
    compile_denoiser(denoiser, compile, dynamic=False)  # in place, as in train: the module and its keys stay
    return denoiser, meta


def resolve_labels(labels, n: int, num_classes: int | None) -> torch.Tensor | None:
    """None (unconditional), 'balanced' (0, 1, ..., K-1, 0, ...), an int, or a sequence of n class indices."""
    if labels is None:
        return None
    if num_classes is None:
        raise ConfigError("labels were given but this run is unconditional (trained without class labels)")
    if isinstance(labels, str):
        if labels != "balanced":
            raise ConfigError(f"labels={labels!r}: expected None, 'balanced', an int or a list of class indices")
        out = torch.arange(n) % num_classes
    elif isinstance(labels, int):
        out = torch.full((n,), labels, dtype=torch.long)
    else:
        out = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        if len(out) != n:
            raise ConfigError(f"got {len(out)} labels for n={n} samples")
    if out.numel() and (out.min() < 0 or out.max() >= num_classes):
        raise ConfigError(f"labels must be in [0, {num_classes - 1}], got {out.min().item()}..{out.max().item()}")
    return out.long()


def prior_noise(denoiser, shape, generator: torch.Generator | None = None) -> torch.Tensor:
    """x_T of `shape` (B, C, H, W) from the schedule's prior, created on the denoiser's device."""
    from gendiff.samplers import prior_sample
    from gendiff.spaces import EuclideanSpace

    like = torch.empty(tuple(shape), device=model_device(denoiser))
    return prior_sample(denoiser.schedule, EuclideanSpace(), like, generator=generator)


def sample_x0(denoiser, x_T: torch.Tensor, sampler: str = "ddim", steps: int = 50, *, labels=None,
              guidance: float = 1.0, generator: torch.Generator | None = None, bf16: bool = False, clip: bool = True,
              progress: bool = False, **sampler_options) -> torch.Tensor:
    """The tensor part of `sample`: x_T -> x0 with a core sampler, all on x_T's (the denoiser's) device, so it runs
    on CUDA, MPS, CPU and meta alike. `labels`: None (unconditional) or class indices (B,), e.g. from
    resolve_labels; `guidance` != 1 is classifier-free guidance towards them against the null class. `bf16` runs
    the U-Net under bf16 autocast; `clip` clamps each x0 prediction to [-1, 1] (the core's `clip_x0`)."""
    from gendiff.samplers import sample as core_sample
    from gendiff.spaces import EuclideanSpace

    if clip:
        sampler_options.setdefault("clip_x0", (-1.0, 1.0))
    num_classes = getattr(denoiser.net, "num_classes", None)
    if labels is not None and num_classes is None:
        raise ConfigError("labels were given but this run is unconditional (trained without class labels)")
    if guidance != 1.0 and labels is None:
        raise ConfigError("guidance != 1 needs class labels (pass labels='balanced', an int or a list)")
    dev = x_T.device
    cond = None if labels is None else torch.as_tensor(labels).to(device=dev, dtype=torch.long).reshape(-1)
    if cond is not None and cond.shape[0] != x_T.shape[0]:
        raise ConfigError(f"got {cond.shape[0]} labels for a batch of {x_T.shape[0]}")
    null = None if cond is None else torch.full_like(cond, num_classes)
    with _autocast(dev, bf16):
        return core_sample(sampler, denoiser, x_T, denoiser.schedule, EuclideanSpace(), steps, cond=cond,
                           null_cond=null, guidance=guidance, generator=generator, progress=progress,
                           **sampler_options)


def sample(run, n: int = 64, sampler: str = "ddim", steps: int = 50, guidance: float = 1.0, seed: int = 0,
           labels=None, *, batch_size: int = 250, out: str | Path | None = None,
           device: str | torch.device | None = None, progress: bool = False, bf16: bool = False, clip: bool = True,
           compile: bool | str | dict = False, pixels: bool = True, **sampler_options) -> torch.Tensor:
    """n uint8 images (n, C, H, W) on the CPU from a run (folder or a (denoiser, meta) pair); PNG grid to `out`.

    `device`: where to sample ('auto' for a folder when None; a pair stays on its device when None and is moved
    there otherwise). `compile` compiles the U-Net in place (see load_run), `bf16` autocasts it (sample_x0).
    `clip` clamps each x0 prediction to the pixel range [-1, 1] (as in Ho et al. 2020's sampler; the core's
    `clip_x0` option, used by the samplers that step through x0: ancestral, ddim, dpm_solver_pp).
    `pixels=False` returns the float32 samples x0 in model space instead of uint8 pixels.
    Sampling (sample_x0) runs on the device; only the finished pixels move to the CPU."""
    if n < 1 or steps < 1 or batch_size < 1:
        raise ConfigError(f"n, steps and batch_size must be >= 1 (got {n}, {steps}, {batch_size})")
    if isinstance(run, (str, Path)):
        denoiser, meta = load_run(run, "auto" if device is None else device, compile)
    else:
        denoiser, meta = run
        if device is not None:
            denoiser.to(resolve_device(device))
        compile_denoiser(denoiser, compile, dynamic=False)
    y = resolve_labels(labels, n, meta["model"]["num_classes"])
    if guidance != 1.0 and y is None:
        raise ConfigError("guidance != 1 needs class labels (pass labels='balanced', an int or a list)")
    gen = make_generator(model_device(denoiser), seed)
    shape = (meta["channels"], meta["image_size"], meta["image_size"])
    chunks = []
    for i in range(0, n, batch_size):
        b = min(batch_size, n - i)
        x_T = prior_noise(denoiser, (b, *shape), gen)
        x0 = sample_x0(denoiser, x_T, sampler, steps, labels=None if y is None else y[i:i + b], guidance=guidance,
                       generator=gen, bf16=bf16, clip=clip, progress=progress, **sampler_options).float()
        chunks.append((to_pixels(x0.clamp(-1, 1)) if pixels else x0).cpu())  # the last step: off the device
    result = torch.cat(chunks)
    if out is not None:
        from .grid import save_grid

        save_grid(result if pixels else to_pixels(result.clamp(-1, 1)), out,
                  scale=2 if meta["image_size"] <= 32 else 1)
    return result
