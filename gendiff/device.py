"""One device resolver for the core and every domain: 'auto', 'cpu', 'cuda', 'cuda:N', 'mps' (and 'meta' for tests).

Design 13: tensors, tables, draws and generators live on the device of the data; this module turns a user's
`--device` string into a torch.device, and makes generators that work on it.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from .errors import ConfigError

CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
HELP = "auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps"


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str | torch.device | None = "auto", local_rank: int = 0) -> torch.device:
    """A torch.device for `name`; 'auto' prefers CUDA (this process's LOCAL_RANK GPU), then MPS, then the CPU.

    Unknown names and devices this machine lacks raise ConfigError naming the value."""
    if isinstance(name, torch.device):
        name = str(name)
    name = "auto" if name is None else str(name).strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name!r}: expected one of {', '.join(CHOICES)}") from None
    if device.type not in ("cpu", "cuda", "mps", "meta"):
        raise ConfigError(f"device={name!r}: expected one of {', '.join(CHOICES)}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={name!r}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device={name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not _mps_available():
        raise ConfigError(f"device={name!r}: MPS is not available on this machine")
    return device


def make_generator(device: str | torch.device, seed: int) -> torch.Generator:
    """A seeded generator whose draws land on `device` (the meta device has none of its own: a CPU one serves)."""
    device = torch.device(device)
    gen_device = "cpu" if device.type == "meta" else device
    return torch.Generator(device=gen_device).manual_seed(int(seed))


def table_dtype(device: torch.device) -> torch.dtype:
    """float64 for schedule tables and coefficients, except on MPS, which has no float64."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def add_device_argument(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    """The `--device` option every CLI verb that computes takes."""
    parser.add_argument("--device", default=default, help=f"{HELP} (default {default})")


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
