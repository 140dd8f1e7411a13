"""Data larger than memory: blocks of time steps, the codec's statistics and the hourly climatology in one pass over
them, and the normalised values read on demand (EncodedValues) by the training windows, the AR fit and the forecasts.

Every consumer of the normalised values (T, C) takes either a numpy array or an EncodedValues and reads it by time
slices (`values[a:b]`), so data in memory and data on disk go through the same code and give the same numbers."""
from __future__ import annotations

import contextlib
import os
import resource
from dataclasses import dataclass

import numpy as np
import xarray as xr

from gendiff.errors import ConfigError

from .blocks import row_blocks, time_blocks
from .climatology import HourlySums
from .data import NORMALISE, TIME, Codec, is_lazy
from .insolation import feature_coordinates

IN_MEMORY_BYTES = 2 * 2**30  # train(in_memory=None) reads the values into memory up to this size (float32)


def memory_headroom() -> int | None:
    """Bytes this process may still allocate: the memory the system has available, or less under a resource limit
    on data size or address space (as a batch system or a test sets); None where neither can be read."""
    room = []
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        room.append(int(info["MemAvailable"].split()[0]) * 1024)
        with open("/proc/self/status") as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
        for limit, used in ((resource.RLIMIT_DATA, "VmData"), (resource.RLIMIT_AS, "VmSize")):
            soft = resource.getrlimit(limit)[0]
            if soft != resource.RLIM_INFINITY:
                room.append(soft - int(status[used].split()[0]) * 1024)
    except (OSError, KeyError, ValueError):
        pass
    return max(0, min(room)) if room else None


def decide_in_memory(in_memory: bool | None, values: "EncodedValues", chose_lazy: bool) -> bool:
    """train's in_memory: as given, else False when the caller chose lazy data (`chose_lazy`: dask chunks or a
    dask-backed Dataset), else whether the float32 values fit in IN_MEMORY_BYTES and a quarter of the headroom."""
    if in_memory is not None:
        return bool(in_memory)
    if chose_lazy:
        return False
    size = 4 * values.shape[0] * values.shape[1]
    room = memory_headroom()
    return size <= IN_MEMORY_BYTES and (room is None or size <= room // 4)


@contextlib.contextmanager
def _synchronous():
    """dask computes in the calling thread: window reads are small, and a DataLoader worker forked from a process
    whose dask thread pool existed has a copy of that pool without its threads (it would wait forever)."""
    try:
        import dask
    except ImportError:
        yield
        return
    with dask.config.set(scheduler="synchronous"):
        yield


@dataclass
class Statistics:
    """What one pass over the training period gives: the codec (per-variable mean and std, the time-mean
    template), the raw per-hour sums of the hourly climatology, and which time steps hold any finite value."""

    codec: Codec
    hourly: object | None  # climatology.HourlySums of the raw values, or None
    has_data: np.ndarray  # (T,) bool
    counts: dict  # finite values per variable

    def climatology(self, codec: Codec | None = None, std: bool | str = False, insolation: bool = False):
        """The hourly climatology of the values normalised by `codec` (default: the fitted one); `std`: with the
        hour-of-day standard deviations, True / False / "auto" (standardised anomalies,
        climatology.HourlyClimatology); `insolation`: the daylight variables' climatology follows the sun through
        the season where the data have latitude and longitude (insolation.SolarScale)."""
        codec = codec or self.codec
        offset, scale = feature_normalisation(codec, full=True)  # the sums are over every cell
        coords = feature_coordinates(codec.template, codec.variables) if insolation else None
        clim = self.hourly.climatology(offset, scale, std=std, coords=coords)
        if codec.compact:
            clim = clim.select(codec.full_index)
        return clim


def feature_normalisation(codec: Codec, full: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature (mean, std) of the codec's normalisation (per variable or per location), (C,) each; `full`:
    over every cell, the never-valid ones of a compact codec included."""
    sizes = codec.full_sizes if full else codec.sizes
    pick = (lambda d, v: d[v]) if full else codec._kept  # noqa: E731
    pairs = list(zip(codec.variables, sizes))
    offset = np.concatenate([np.broadcast_to(np.asarray(pick(codec.mean, v), np.float64), (n,)) for v, n in pairs])
    scale = np.concatenate([np.broadcast_to(np.asarray(pick(codec.std, v), np.float64), (n,)) for v, n in pairs])
    return offset, scale


def fit_statistics(ds: xr.Dataset, label: str = "data", hourly: bool = True,
                   max_bytes: int | None = None, normalise: str = "variable") -> Statistics:
    """One pass over `ds` in blocks of time steps (time_blocks): per variable the mean and standard deviation of
    all finite values (float64, blocks merged with Chan et al.'s pairwise update, so equal to numpy's nanmean and
    nanstd of everything in memory to rounding); with `normalise="location"` the same per feature (each series or
    cell its own; a feature without values, or a constant one, takes its variable's), per feature the time mean (the codec's template; NaN = never
    valid), with `hourly` the per-hour sums of the hourly climatology (climatology.HourlySums), and per step whether any
    value is finite (window_starts). Only one block's values are in memory at a time."""
    variables = [str(v) for v in ds.data_vars]
    dims = {v: tuple(d for d in ds[v].dims if d != TIME) for v in variables}
    sizes = [int(ds[v].size // max(1, ds.sizes[TIME])) for v in variables]
    times = ds[TIME].values
    sums = HourlySums(times, sum(sizes)) if hourly else None
    n = {v: 0 for v in variables}
    mean = {v: 0.0 for v in variables}
    m2 = {v: 0.0 for v in variables}
    point_sum = {v: np.zeros(s) for v, s in zip(variables, sizes)}
    point_count = {v: np.zeros(s, dtype=np.int64) for v, s in zip(variables, sizes)}
    point_mean = {v: np.zeros(s) for v, s in zip(variables, sizes)}  # per feature (normalise="location")
    point_m2 = {v: np.zeros(s) for v, s in zip(variables, sizes)}
    if normalise not in NORMALISE:
        raise ConfigError(f"normalise={normalise!r}: expected one of {', '.join(map(repr, NORMALISE))}")
    has_data = np.zeros(len(times), dtype=bool)
    for a, b in time_blocks(ds, max_bytes):
        start = 0
        for v, size in zip(variables, sizes):
            with _synchronous():  # one block in memory, not one per dask thread
                x = np.asarray(ds[v].isel({TIME: slice(a, b)}).transpose(TIME, *dims[v]).values)
            x = x.reshape(b - a, -1).astype(np.float64)
            finite = np.isfinite(x)
            x[~finite] = 0.0
            has_data[a:b] |= finite.any(1)
            nb_f = finite.sum(0)
            if normalise == "location" and nb_f.any():
                with np.errstate(invalid="ignore", divide="ignore"):
                    mb_f = np.where(nb_f > 0, x.sum(0) / np.maximum(nb_f, 1), 0.0)
                d = np.where(finite, x - mb_f, 0.0)
                tot = point_count[v] + nb_f
                delta = mb_f - point_mean[v]
                frac = np.where(tot > 0, nb_f / np.maximum(tot, 1), 0.0)
                point_m2[v] += (d * d).sum(0) + delta * delta * point_count[v] * frac
                point_mean[v] += delta * frac
            point_sum[v] += x.sum(0)
            point_count[v] += nb_f
            if sums is not None:
                sums.add(x, finite, times[a:b], slice(start, start + size))
            start += size
            nb = int(finite.sum())
            if nb == 0:
                continue
            mb = float(x.sum() / nb)
            x -= mb
            x[~finite] = 0.0
            m2b = float((x * x).sum())
            delta, total = mb - mean[v], n[v] + nb
            mean[v] += delta * nb / total
            m2[v] += m2b + delta * delta * n[v] * nb / total
            n[v] = total
    fields = {}
    for v in variables:
        first = ds[v].isel({TIME: 0}, drop=True)
        timed = [c for c in ds[v].coords if TIME in ds[v][c].dims]
        first = first.drop_vars([c for c in timed if c in first.coords], errors="ignore")
        with np.errstate(invalid="ignore", divide="ignore"):
            tm = np.where(point_count[v] > 0, point_sum[v] / np.maximum(point_count[v], 1), np.nan)
        field = xr.DataArray(tm.reshape(first.shape).astype(ds[v].dtype), dims=first.dims, coords=first.coords,
                             attrs=dict(ds[v].attrs))
        fields[v] = field
    template = xr.Dataset(fields, attrs=dict(ds.attrs))
    means = {v: (mean[v] if n[v] else float("nan")) for v in variables}
    stds = {}
    for v in variables:
        s = float(np.sqrt(m2[v] / n[v])) if n[v] else float("nan")
        stds[v] = s if s > 0 else 1.0
    if normalise == "location":
        for v in variables:
            cnt = point_count[v]
            with np.errstate(invalid="ignore", divide="ignore"):
                sd = np.sqrt(point_m2[v] / np.maximum(cnt, 1))
            means[v] = np.where(cnt > 0, point_mean[v], means[v])
            stds[v] = np.where((cnt > 0) & (sd > 0), sd, stds[v])
    return Statistics(Codec(template, means, stds), sums, has_data, dict(n))


_INHERITED: list = []  # file handles a forked process found open: kept (closing them could touch shared state)


def _forget_open_files() -> None:
    """Make xarray reopen, in this process, every file it had open before a fork (its file cache is inherited):
    netCDF / HDF5 handles are not safe to share between processes."""
    from xarray.backends.file_manager import FILE_CACHE

    for key in list(FILE_CACHE):
        _INHERITED.append(FILE_CACHE.pop(key, None))


class EncodedValues:
    """The normalised values (T, C) of a Dataset, numpy- or dask-backed or lazily opened, read on demand:
    `values[a:b]` reads steps a..b-1 from `ds`, encodes them with `codec` (data.Codec.encode) and removes the
    hourly `climatology` (when given): the same numbers as encoding everything, with only the slice in memory.

    In another process (a DataLoader worker, forked or spawned) the data are reopened there: by `reopen` (a
    picklable callable returning the Dataset: open_data by path) when given, else by emptying xarray's inherited
    file cache, so no netCDF / HDF5 handle is shared between processes; dask computes in the reading thread."""

    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, ds: xr.Dataset, codec: Codec, climatology=None, label: str = "data", reopen=None):
        codec.encode(ds.isel({TIME: slice(0, 0)}), label)  # variables, dims and coordinates checked once, no read
        self.ds, self.codec, self.climatology, self.label, self.reopen = ds, codec, climatology, label, reopen
        self.times = ds[TIME].values
        self.shape = (len(self.times), codec.num_features)
        self.lazy = is_lazy(ds)
        self._pid = os.getpid()

    def __len__(self) -> int:
        return self.shape[0]

    def _data(self) -> xr.Dataset:
        if self._pid != os.getpid():
            self._pid = os.getpid()
            if self.reopen is not None:
                self.ds = self.reopen()
            else:
                _forget_open_files()
        return self.ds

    def read(self, a: int, b: int) -> np.ndarray:
        """Steps a..b-1 (0 <= a <= b <= T) as float32 (b - a, C)."""
        with _synchronous():
            out = self.codec.encode(self._data().isel({TIME: slice(a, b)}), self.label, check=False)
        if self.climatology is not None and b > a:
            out = self.climatology.remove(out, self.times[a:b])
        return out

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, tuple):  # values[rows, cols]
            return self[key[0]][(slice(None), *key[1:])]
        if isinstance(key, slice):
            a, b, step = key.indices(self.shape[0])
            return self.read(a, max(a, b))[::step] if step > 0 else self.read(b + 1, a + 1)[::step]
        if isinstance(key, (int, np.integer)):
            i = int(key) + (self.shape[0] if key < 0 else 0)
            if not 0 <= i < self.shape[0]:
                raise IndexError(f"index {key} out of range for {self.shape[0]} time steps")
            return self.read(i, i + 1)[0]
        idx = np.asarray(key)
        if idx.dtype == bool:
            idx = np.nonzero(idx)[0]
        flat = np.where(idx.ravel() < 0, idx.ravel() + self.shape[0], idx.ravel())
        if flat.size == 0:
            return np.empty((*idx.shape, self.shape[1]), dtype=np.float32)
        rows = np.unique(flat)
        if rows[0] < 0 or rows[-1] >= self.shape[0]:
            raise IndexError(f"time index out of range for {self.shape[0]} time steps")
        parts = []
        for a, b in row_blocks(int(rows[0]), int(rows[-1]) + 1, self.shape[1]):
            inside = rows[(rows >= a) & (rows < b)]
            if 8 * len(inside) >= b - a:  # dense enough: one read of the block
                parts.append(self.read(a, b)[inside - a])
            else:
                parts.extend(self.read(int(r), int(r) + 1) for r in inside)
        got = np.concatenate(parts)
        return got[np.searchsorted(rows, flat)].reshape(*idx.shape, self.shape[1])

    def __array__(self, dtype=None, copy=None):
        out = self.load()
        return out if dtype is None else out.astype(dtype)

    def load(self) -> np.ndarray:
        """Everything, read block by block into one float32 (T, C) array."""
        out = np.empty(self.shape, dtype=np.float32)
        for a, b in time_blocks(self._data()):
            out[a:b] = self.read(a, b)
        return out

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self.reopen is not None:
            state["ds"] = None  # reopened where it is unpickled
        state["_pid"] = None
        return state


def fit_codec(ds: xr.Dataset) -> Codec:
    """Per-variable mean/std over all times and points (NaN ignored); template = time-mean field (NaN = never
    valid); one pass over blocks of time steps (fit_statistics), so `ds` may be larger than memory."""
    return fit_statistics(ds, hourly=False).codec
