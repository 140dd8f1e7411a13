"""Sample grids written as PNG with matplotlib."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from gendiff.errors import DataError
from gendiff.extras import require
from gendiff.io import atomic_path


def make_grid(pixels: torch.Tensor, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """uint8 (N, C, H, W) -> one uint8 (H', W', C) mosaic with `nrow` images per row."""
    if pixels.dtype != torch.uint8 or pixels.ndim != 4 or len(pixels) == 0:
        raise DataError(f"make_grid needs non-empty uint8 (N, C, H, W), got {pixels.dtype} {tuple(pixels.shape)}")
    n, c, h, w = pixels.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    grid = np.zeros((rows * (h + padding) + padding, nrow * (w + padding) + padding, c), dtype=np.uint8)
    arr = pixels.permute(0, 2, 3, 1).cpu().numpy()
    for i in range(n):
        r, k = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + k * (w + padding)
        grid[y:y + h, x:x + w] = arr[i]
    return grid


def save_grid(pixels: torch.Tensor, path: str | Path, nrow: int | None = None, scale: int = 1,
              titles: list[str] | None = None) -> Path:
    """Write a PNG grid of uint8 images (atomically); `scale` repeats pixels for visibility."""
    require("images", ["matplotlib"])
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.image as mpimg

    grid = make_grid(pixels, nrow)
    if scale > 1:
        grid = grid.repeat(scale, 0).repeat(scale, 1)
    image = grid[..., 0] if grid.shape[-1] == 1 else grid
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            mpimg.imsave(fh, image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255, format="png")
    return path
