"""Blocks of time steps that a streaming pass reads at once: bounded bytes, on the data's chunk boundaries."""
from __future__ import annotations

import numpy as np
import xarray as xr

from .data import TIME

STREAM_BYTES = 16 * 2**20  # float64 bytes of the values of one block of time steps read by a streaming pass

def row_blocks(start: int, stop: int, n_features: int, max_bytes: int | None = None,
               bounds: np.ndarray | None = None) -> list[tuple[int, int]]:
    """[start, stop) cut into consecutive blocks of at most `max_bytes` (STREAM_BYTES) of float64 values of
    `n_features` per step (at least one step each). With `bounds` (the data's chunk boundaries along time, as
    indices), blocks end on them where a block can hold whole chunks, so no chunk is read twice."""
    per_block = max(1, int((max_bytes or STREAM_BYTES) // (8 * max(1, n_features))))
    if bounds is None:
        return [(a, min(a + per_block, stop)) for a in range(start, stop, per_block)]
    cuts = [start] + [int(b) for b in bounds if start < b < stop] + [stop]
    out, a = [], start
    for i, b in enumerate(cuts[1:], 1):
        nxt = cuts[i + 1] if i + 1 < len(cuts) else None
        if nxt is None or nxt - a > per_block:  # close the block here (split a chunk larger than a block)
            while b - a > per_block:
                out.append((a, a + per_block))
                a += per_block
            out.append((a, b))
            a = b
    return [(a, b) for a, b in out if b > a]


def time_blocks(ds: xr.Dataset, max_bytes: int | None = None) -> list[tuple[int, int]]:
    """Blocks of time steps over all of `ds` (row_blocks), on its dask chunk boundaries when it has them."""
    n_time = ds.sizes[TIME]
    n_features = sum(int(ds[v].size // max(1, n_time)) for v in ds.data_vars)
    bounds = None
    for v in ds.data_vars:
        chunks = ds[v].chunksizes.get(TIME) if ds[v].chunks is not None else None
        if chunks:
            bounds = np.cumsum(chunks)[:-1]
            break
    return row_blocks(0, n_time, n_features, max_bytes, bounds)
