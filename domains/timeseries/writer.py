"""Writing a Dataset atomically: a temporary file (or store) beside the target, then renamed over it."""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import xarray as xr

from gendiff.errors import ConfigError
from gendiff.io import atomic_path


def write_dataset(ds: xr.Dataset, path) -> Path:
    """Write netCDF (default) or zarr (suffix .zarr) atomically: temporary sibling, then os.replace."""
    path = Path(path)
    ds = ds.copy()
    for v in list(ds.variables):
        ds[v].encoding = {k: e for k, e in ds[v].encoding.items() if k in ("units", "calendar")}
    if path.suffix == ".zarr":
        if importlib.util.find_spec("zarr") is None:
            raise ConfigError(f"{path}: writing zarr needs the 'zarr' package (pip install 'gendiff[zarr]')")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            # zarr format 2: read by every zarr implementation (v3 has no spec yet for fixed-width strings)
            zarr_major = int(importlib.import_module("zarr").__version__.split(".")[0])
            ds.to_zarr(tmp / "store.zarr", mode="w", **({"zarr_format": 2} if zarr_major >= 3 else {}))
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp / "store.zarr", path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return path
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp)
    return path
