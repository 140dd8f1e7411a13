"""Who sees which sample: seeded per-epoch data order, per-rank shards of each global batch, and DDP under torchrun."""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .device import resolve_device  # noqa: F401  (public here, as before)
from .errors import ConfigError


@dataclass
class DistContext:
    """Where this process sits in a (possibly one-process) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    if value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None


def setup(device_name: str) -> tuple[DistContext, torch.device]:
    """Join the torchrun job if WORLD_SIZE > 1 (gloo on CPU, nccl on GPU); a no-op for one process."""
    if dist.is_available() and dist.is_initialized():
        ctx = DistContext(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0), False)
        device = resolve_device(device_name, ctx.local_rank)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        return ctx, device
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1:
        return DistContext(), resolve_device(device_name, 0)
    if not dist.is_available():
        raise ConfigError(f"WORLD_SIZE={world_size} but torch.distributed is not available in this build")
    ctx = DistContext(_env_int("RANK", 0), world_size, _env_int("LOCAL_RANK", 0), True)
    device = resolve_device(device_name, ctx.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return ctx, device


def teardown(ctx: DistContext, clean: bool = True) -> None:
    """Leave the job this process joined. After a clean finish all ranks meet at a barrier first, so no rank
    tears down gloo/nccl connections while a peer still has traffic in flight (which aborts the peer)."""
    if ctx.owns_group and dist.is_initialized():
        if clean:
            dist.barrier()
        dist.destroy_process_group()
        ctx.owns_group = False


def wrap(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """DistributedDataParallel around `model` when running under torchrun, else `model` itself."""
    if not ctx.enabled:
        return model

    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside a DistributedDataParallel wrapper (or `model` itself)."""
    return cast(nn.Module, model.module) if hasattr(model, "module") and hasattr(model, "no_sync") else model


def no_sync(model: nn.Module, skip_sync: bool):
    """Skip the gradient all-reduce on all but the last accumulation micro-batch."""
    if skip_sync and hasattr(model, "no_sync"):
        return cast(Any, model).no_sync()
    return contextlib.nullcontext()


def shard(indices: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """This rank's contiguous slice of a global batch (its size divides evenly, checked by the config)."""
    if not ctx.enabled:
        return indices
    size = len(indices) // ctx.world_size
    return indices[ctx.rank * size : (ctx.rank + 1) * size]


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    if ctx.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_object(obj: Any, ctx: DistContext) -> list:
    if not ctx.enabled:
        return [obj]
    out: list = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers, stable across runs and platforms."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little") >> 1


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The data order of one epoch, drawn from a torch.Generator seeded by (seed, epoch)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(mix_seed(seed, 0, epoch)))


def advance(position: tuple[int, int], n: int, batch: int) -> tuple[int, int]:
    """Data position after one global micro-batch; an epoch's remainder smaller than a batch is dropped."""
    epoch, index = position
    index += batch
    return (epoch + 1, 0) if index + batch > n else (epoch, index)


class StepBatches:
    """Batch sampler: this rank's shard of each global micro-batch, from a data position onwards, forever."""

    def __init__(self, n: int, batch: int, seed: int, position: tuple[int, int], ctx: DistContext):
        self.n, self.batch, self.seed, self.position, self.ctx = n, batch, seed, position, ctx

    def __iter__(self):
        position = self.position
        perm_epoch, perm = position[0], epoch_permutation(self.n, self.seed, position[0])
        while True:
            if perm_epoch != position[0]:
                perm_epoch, perm = position[0], epoch_permutation(self.n, self.seed, position[0])
            yield shard(perm[position[1] : position[1] + self.batch], self.ctx).tolist()
            position = advance(position, self.n, self.batch)
