"""Devices the device tests run on: `meta` (no data, but any cross-device operation raises, as on a GPU), plus
`cuda` where a GPU is present. GENDIFF_TEST_DEVICES (comma-separated) overrides the list; tests/test_cuda.py
uses it to run every device test on CUDA, and is skipped where there is no GPU."""
import os

import pytest
import torch

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
_env = os.environ.get("GENDIFF_TEST_DEVICES", "")
DEVICES = [d for d in _env.split(",") if d] if _env else ["meta"] + (["cuda"] if torch.cuda.is_available() else [])


def generator_for(device):
    """A seeded generator for draws on `device`; None on meta (data-free: draws there need none)."""
    device = torch.device(device)
    return None if device.type == "meta" else torch.Generator(device=device).manual_seed(0)


def materialize(x):
    """Move a result to the CPU for value checks; meta tensors have no values, so their checks are shape-only."""
    return None if x.device.type == "meta" else x.detach().cpu()
