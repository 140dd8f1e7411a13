"""Options shared by the time-series verbs (and the weather adapter's): compute, threads, lazy reading, periods."""
from __future__ import annotations

import argparse

import torch

from gendiff.device import add_device_argument

from .data import parse_period


def period(text: str):
    return parse_period(text)


def threads(args) -> None:
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)


def compute(p: argparse.ArgumentParser) -> None:
    """Options of the verbs that run the network: --device, --bf16, --compile."""
    add_device_argument(p)
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the network")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (pays off on long runs)")


def common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def lazy(p: argparse.ArgumentParser) -> None:
    """Options for data larger than memory: --chunks."""
    p.add_argument("--chunks", default=None,
                   help="read --data lazily with dask chunks: N time steps per chunk, or DIM=N,... "
                        "(e.g. time=24,latitude=100); default: lazy without dask for one file, the store's chunks "
                        "for zarr")
