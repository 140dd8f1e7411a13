"""Data in and out: open tables' datasets, netCDF / zarr / GRIB files and globs (lazily, with dask chunks), static
fields, and write datasets atomically. The time axis is timeaxis.py, the stacking into features codec.py."""
from __future__ import annotations

import glob
import importlib.util
from pathlib import Path

import numpy as np
import xarray as xr

from gendiff.errors import ConfigError, DataError

from .writer import write_dataset  # noqa: F401  (re-exported)
from .codec import NORMALISE, Codec, _close, _coords_equal, _jsonable  # noqa: F401  (re-exported)
from .timeaxis import (TIME, calendar_features, check_time, hour_of_day, init_indices, parse_duration,  # noqa: F401
                       parse_period, period_indices, time_step)

CHUNK_BYTES = 4 * 2**20  # default dask chunk along time for many files (reading a window reads its whole chunks)


def open_data(source, variables=None, *, name: str | None = None, chunks=None) -> xr.Dataset:
    """Open `source`, pick `variables` and validate the time axis; the values stay on disk (lazy) until read.

    `source`: a path to netCDF / zarr (a directory store) / GRIB, a glob ('era5/*.nc') or a list of files (one
    dataset, combined by their coordinates with xarray.open_mfdataset), or an xarray Dataset / DataArray (kept as
    it is, numpy- or dask-backed). `chunks`: dask chunks for files, an int (time steps per chunk), a dict as
    xarray's (e.g. {"time": 24}) or a string "time=24,latitude=100"; None: xarray's lazy indexing without dask for
    one netCDF / GRIB file, the store's own chunks for zarr, chunks of CHUNK_BYTES along time for many files
    (dask reads whole chunks, so each training window costs one chunk's read).

    The check that no variable is all NaN reads the values, so here it runs only on data already in memory; for
    lazy data training finds it in its one pass over the training period (stream.fit_statistics)."""
    chunks = parse_chunks(chunks)
    if isinstance(source, xr.DataArray):
        label = name or str(source.name or "DataArray")
        ds = source.to_dataset(name=source.name or "data")
    elif isinstance(source, xr.Dataset):
        label, ds = name or "Dataset", source
    else:
        paths = data_paths(source)
        label = name or source_label(source)
        ds = _open_path(paths[0], chunks) if len(paths) == 1 and not _is_glob(source) else \
            _open_many(paths, chunks, label)
    if TIME not in ds.dims:
        raise DataError(f"{label}: no '{TIME}' dimension (dims: {', '.join(map(str, ds.dims)) or 'none'})")
    available = [str(v) for v in ds.data_vars if TIME in ds[v].dims]
    if variables is None:
        variables = available
    elif isinstance(variables, str):
        variables = [v for v in variables.split(",") if v]
    if not variables:
        raise DataError(f"{label}: no data variable has a '{TIME}' dimension")
    for v in variables:
        if v not in ds.data_vars:
            raise DataError(f"{label}: unknown variable '{v}' (available: {', '.join(available)})")
        if TIME not in ds[v].dims:
            raise DataError(f"{label}: variable '{v}' has no '{TIME}' dimension (dims: {ds[v].dims})")
        if not np.issubdtype(ds[v].dtype, np.number):
            raise DataError(f"{label}: variable '{v}' is not numeric (dtype {ds[v].dtype})")
    ds = ds[list(variables)]
    check_time(ds, label)
    for v in variables:
        if ds[v].variable._in_memory and not bool(ds[v].notnull().any()):  # numpy-backed: nothing to read
            raise DataError(f"{label}: variable '{v}' is all NaN")
    return ds


def source_label(source) -> str:
    """How errors and run cards name `source`: its path or glob, the first of a list of files, or 'data'."""
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, (list, tuple)) and source:
        return f"{source[0]} (+{len(source) - 1} files)" if len(source) > 1 else str(source[0])
    return "data"


def parse_chunks(chunks):
    """None, an int (time steps per dask chunk), a dict, or 'time=24,latitude=100' / '24' -> xarray's chunks."""
    if chunks is None or isinstance(chunks, dict):
        return chunks
    if isinstance(chunks, (int, np.integer)) and not isinstance(chunks, bool):
        if chunks < 1:
            raise ConfigError(f"chunks={chunks}: time steps per chunk must be >= 1")
        return {TIME: int(chunks)}
    text = str(chunks).strip()
    if text.isdigit():
        return parse_chunks(int(text))
    out = {}
    for part in text.split(","):
        dim, eq, size = part.partition("=")
        if not eq or not dim.strip() or not (size.strip().isdigit() or size.strip() in ("-1", "auto")):
            raise ConfigError(f"chunks '{text}': expected N or DIM=N[,DIM=N...] (e.g. time=24,latitude=100)")
        size = size.strip()
        out[dim.strip()] = size if size == "auto" else int(size)
    return out


def is_lazy(ds: xr.Dataset) -> bool:
    """Whether any data variable of `ds` is dask-backed (its values computed chunk by chunk on reading)."""
    return any(ds[v].chunks is not None for v in ds.data_vars)


def _is_glob(source) -> bool:
    return isinstance(source, (str, Path)) and any(ch in str(source) for ch in "*?[")


def data_paths(source) -> list[Path]:
    """The files of `source` (a path, a glob or a list of paths); DataError for a glob that matches nothing."""
    if isinstance(source, (list, tuple)):
        if not source:
            raise DataError("data: an empty list of files")
        return [Path(p) for p in source]
    if _is_glob(source) and not Path(source).exists():
        paths = sorted(glob.glob(str(source)))
        if not paths:
            raise DataError(f"{source}: no file matches this pattern")
        return [Path(p) for p in paths]
    return [Path(source)]


def _needs(package: str, path, what: str, extra: str) -> None:
    if importlib.util.find_spec(package) is None:
        raise DataError(f"{path}: {what} needs the '{package}' package (pip install 'gendiff[{extra}]')")


def _is_zarr(path: Path) -> bool:
    return path.suffix.lower() == ".zarr" or (path.is_dir() and ((path / ".zgroup").exists() or
                                                                 (path / "zarr.json").exists()))


def _open_path(path: Path, chunks=None) -> xr.Dataset:
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    suffix = path.suffix.lower()
    if chunks is not None:
        _needs("dask", path, "reading in chunks (chunks=)", "lazy")
    try:
        if _is_zarr(path):
            _needs("zarr", path, "reading zarr", "zarr")
            if importlib.util.find_spec("dask") is None:  # the store read lazily without dask
                return xr.open_dataset(path, engine="zarr", chunks=None)
            return xr.open_zarr(path, chunks="auto" if chunks is None else chunks)
        if path.is_dir():
            raise DataError(f"{path}: a directory but not a zarr store (for many files pass a glob: '{path}/*.nc')")
        if suffix in (".grib", ".grib2", ".grb", ".grb2"):
            _needs("cfgrib", path, "reading GRIB", "grib")
            # indexpath "": no .idx index file is written next to the user's data
            return xr.open_dataset(path, engine="cfgrib", backend_kwargs={"indexpath": ""}, chunks=chunks)
        return xr.open_dataset(path, chunks=chunks)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: cannot be read as netCDF/zarr/GRIB ({type(exc).__name__}: {exc})") from None


def _open_many(paths: list[Path], chunks, label: str) -> xr.Dataset:
    """Files combined along their coordinates (xarray.open_mfdataset, combine='by_coords'), checked first one by
    one: each readable, with a time axis and the same variables (xarray would fill a missing one with NaN), and
    the other coordinates exactly equal (join='exact': a file on another grid is an error, not NaN padding)."""
    _needs("dask", paths[0], f"reading {len(paths)} files as one dataset", "lazy")
    first = None
    for p in paths:
        with _open_path(p) as one:  # metadata only: the values stay on disk
            if TIME not in one.dims:
                raise DataError(f"{p}: no '{TIME}' dimension (dims: {', '.join(map(str, one.dims)) or 'none'}); "
                                f"the files of {label} are combined along '{TIME}'")
            names = sorted(str(v) for v in one.data_vars if TIME in one[v].dims)
            if chunks is None:  # chunks of at most CHUNK_BYTES: a window's read reads whole chunks
                step_bytes = sum(one[v].size // max(1, one.sizes[TIME]) * one[v].dtype.itemsize for v in names)
                chunks = {TIME: max(1, CHUNK_BYTES // max(1, step_bytes))}
        if first is None:
            first = (p, names)
        elif names != first[1]:
            extra = sorted(set(names) ^ set(first[1]))
            raise DataError(f"{p}: variables {', '.join(names)} differ from those of {first[0]} "
                            f"({', '.join(first[1])}): '{extra[0]}' is not in both (mixed variables across files)")
    try:
        return xr.open_mfdataset([str(p) for p in paths], combine="by_coords", parallel=False, join="exact",
                                 engine="zarr" if _is_zarr(paths[0]) else None,
                                 data_vars="minimal", coords="minimal", compat="override",
                                 chunks=chunks)
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{label}: the {len(paths)} files do not combine into one dataset along their coordinates "
                        f"({type(exc).__name__}: {msg})") from None


def open_static(static, label: str):
    """`static` (an xarray Dataset / DataArray or a file) -> a Dataset of time-free fields; DataError otherwise."""
    if isinstance(static, xr.DataArray):
        static = static.to_dataset(name=static.name or "static")
    elif not isinstance(static, xr.Dataset):
        static = _open_path(Path(static))
    if "time" in static.dims:
        raise DataError(f"{label}: static fields must not have a 'time' dimension ({', '.join(static.data_vars)})")
    if not static.data_vars:
        raise DataError(f"{label}: static= holds no variables")
    return static
