"""Sampling an images run: x_T from the schedule's prior, x_T -> x0 with a core sampler (the tensor part, on any
device), and n pixel images from a run with an optional PNG grid."""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from gendiff.device import make_generator, resolve_device
from gendiff.errors import ConfigError
from gendiff.samplers import prior_sample
from gendiff.samplers import sample as core_sample
from gendiff.spaces import EuclideanSpace

from .data import to_pixels
from .grid import save_grid
from .labels import grid_columns, resolve_labels
from .model import compile_denoiser, model_device
from .run import load_run


def _autocast(device: torch.device, bf16: bool):
    """bf16 autocast on `device` when asked (CUDA, CPU), else nothing (the meta device has no autocast)."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def prior_noise(denoiser, shape, generator: torch.Generator | None = None) -> torch.Tensor:
    """x_T of `shape` (B, C, H, W) from the schedule's prior, created on the denoiser's device."""
    like = torch.empty(tuple(shape), device=model_device(denoiser))
    return prior_sample(denoiser.schedule, EuclideanSpace(), like, generator=generator)


def sample_x0(denoiser, x_T: torch.Tensor, sampler: str = "ddim", steps: int = 50, *, labels=None,
              guidance: float = 1.0, generator: torch.Generator | None = None, bf16: bool = False, clip: bool = True,
              progress: bool = False, **sampler_options) -> torch.Tensor:
    """The tensor part of `sample`: x_T -> x0 with a core sampler, all on x_T's (the denoiser's) device, so it runs
    on CUDA, MPS, CPU and meta alike. `labels`: None (unconditional) or class indices (B,), e.g. from
    resolve_labels; `guidance` != 1 is classifier-free guidance towards them against the null class. `bf16` runs
    the U-Net under bf16 autocast; `clip` clamps each x0 prediction to [-1, 1] (the core's `clip_x0`)."""
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
           compile: bool | str | dict = False, pixels: bool = True, nrow: int | None = None,
           **sampler_options) -> torch.Tensor:
    """n uint8 images (n, C, H, W) on the CPU from a run (folder, `pretrained:NAME` or a (denoiser, meta) pair);
    PNG grid to `out`, `nrow` images a row (default: one column per class for labels that cycle through classes,
    see grid_columns; else square).

    `device`: where to sample ('auto' for a folder when None; a pair stays on its device when None and is moved
    there otherwise). `compile` compiles the U-Net in place (see load_run), `bf16` autocasts it (sample_x0).
    `clip` clamps each x0 prediction to the pixel range [-1, 1] (as in Ho et al. 2020's sampler; the core's
    `clip_x0` option, which every core sampler uses: each step's x0 and the eps made consistent with it).
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
        save_grid(result if pixels else to_pixels(result.clamp(-1, 1)), out,
                  nrow=nrow or grid_columns(labels, n, meta["model"]["num_classes"]),
                  scale=2 if meta["image_size"] <= 32 else 1)
    return result
