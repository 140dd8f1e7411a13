"""Devices the device tests run on: always `meta` (no data, but any cross-device operation raises, as on a GPU),
and `cuda` where a GPU is present (skipped elsewhere). Import DEVICES and parametrize over it."""
import pytest
import torch

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
DEVICES = ["meta", pytest.param("cuda", marks=CUDA, id="cuda")]


def generator_for(device):
    """A seeded generator for draws on `device`; None on meta (data-free: draws there need none)."""
    device = torch.device(device)
    return None if device.type == "meta" else torch.Generator(device=device).manual_seed(0)


def materialize(x):
    """Move a result to the CPU for value checks; meta tensors have no values, so their checks are shape-only."""
    return None if x.device.type == "meta" else x.detach().cpu()
