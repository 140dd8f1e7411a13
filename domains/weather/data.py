"""xarray <-> tensors: open and validate gridded or station data, stack non-time dims into features, normalise, restore."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from gendiff.errors import ConfigError, DataError
from gendiff.io import atomic_path

TIME = "time"
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
    import glob

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


def check_time(ds: xr.Dataset, label: str) -> np.timedelta64:
    """Require a datetime `time` axis that increases with one constant step; return the step."""
    t = ds[TIME].values
    if not np.issubdtype(t.dtype, np.datetime64):
        raise DataError(f"{label}: '{TIME}' must hold datetimes (dtype {t.dtype})")
    if len(t) < 2:
        raise DataError(f"{label}: '{TIME}' has {len(t)} value(s); need at least 2")
    dt = np.diff(t)
    if (dt <= np.timedelta64(0)).any():
        i = int(np.argmax(dt <= np.timedelta64(0)))
        raise DataError(f"{label}: '{TIME}' is not strictly increasing at index {i + 1} ({t[i]} -> {t[i + 1]})")
    if (dt != dt[0]).any():
        i = int(np.argmax(dt != dt[0]))
        raise DataError(f"{label}: '{TIME}' step is irregular at index {i + 1} ({t[i]} -> {t[i + 1]}, "
                        f"expected step {pd.Timedelta(dt[0])})")
    return dt[0]


def time_step(ds: xr.Dataset) -> pd.Timedelta:
    return pd.Timedelta(ds[TIME].values[1] - ds[TIME].values[0])


def parse_duration(text, step: pd.Timedelta, field: str) -> int:
    """'24h' / '1d' / '30min' (or a plain int = steps) -> a number of data steps; must be a positive multiple of step."""
    if isinstance(text, (int, np.integer)):
        n = int(text)
    else:
        try:
            td = pd.Timedelta(re.sub(r"(?<=\d)d$", "D", str(text).strip()))  # '2d': pandas 4 drops the lower-case 'd'
        except (ValueError, TypeError):
            raise ConfigError(f"{field}: '{text}' is not a duration (examples: 24h, 6h, 2d)") from None
        n, rem = divmod(td, step)
        if rem != pd.Timedelta(0):
            raise ConfigError(f"{field}: {text} is not a multiple of the data time step {step}")
    if n <= 0:
        raise ConfigError(f"{field}: {text} must be positive")
    return int(n)


def parse_period(text) -> tuple[str | None, str | None]:
    """'2019-03-01:2019-03-24' -> (start, end); either side may be empty; ends are inclusive (pandas slicing)."""
    if text is None:
        return None, None
    if isinstance(text, (tuple, list)):
        return tuple(text)
    parts = str(text).split(":") if "T" not in str(text) else _split_iso(str(text))
    if len(parts) != 2:
        raise ConfigError(f"period '{text}' must look like START:END (e.g. 2019-03-01:2019-03-24)")
    for p in parts:
        if p:
            try:
                pd.Timestamp(p)
            except ValueError:
                raise ConfigError(f"period '{text}': '{p}' is not a date") from None
    return parts[0] or None, parts[1] or None


def _split_iso(text: str) -> list[str]:
    """Split START:END where START/END may contain 'HH:MM' times: split on the ':' that precedes a date."""
    for i, ch in enumerate(text):
        if ch == ":" and i + 5 <= len(text) and text[i + 1:i + 5].isdigit() and text[i + 5:i + 6] in ("-", ""):
            return [text[:i], text[i + 1:]]
        if ch == ":" and i == 0:
            return ["", text[1:]]
    return [text[:-1], ""] if text.endswith(":") else [text]


def period_indices(ds: xr.Dataset, period, label: str, what: str) -> np.ndarray:
    """Indices along `time` of the inclusive period; DataError naming the period if it misses the data."""
    start, end = parse_period(period)
    t = pd.DatetimeIndex(ds[TIME].values)
    lo = t[0] if start is None else pd.Timestamp(start)
    hi = t[-1] if end is None else pd.Timestamp(end)
    if end is not None and len(str(end)) <= 10:
        hi = hi + pd.Timedelta(days=1) - pd.Timedelta(1, "ns")
    idx = np.nonzero((t >= lo) & (t <= hi))[0]
    if len(idx) == 0 or lo < t[0] or hi > t[-1] + pd.Timedelta(days=1) - pd.Timedelta(1, "ns"):
        raise DataError(f"{label}: {what} {start or ''}:{end or ''} lies outside the data ({t[0]} to {t[-1]})")
    return idx


def init_indices(ds: xr.Dataset, init_period, init_every, context: int, label: str) -> np.ndarray:
    """Init times in the period, every `init_every`, each with `context` steps of data up to and including it."""
    step = time_step(ds)
    every = parse_duration(init_every, step, "init_every")
    idx = period_indices(ds, init_period, label, "forecast period")
    t = pd.DatetimeIndex(ds["time"].values)
    idx = idx[((t[idx] - t[idx[0]]) // step) % every == 0] if every > 1 else idx
    if (idx - context + 1 < 0).any():
        first_ok = t[context - 1]
        raise DataError(f"{label}: forecast period starts at {t[idx[0]]}, but {context} steps of context are needed "
                        f"before it; the data allow inits from {first_ok} (forecast period outside the data)")
    return idx


def calendar_features(times, day_of_year: bool = True) -> np.ndarray:
    """(T, 4) sin/cos of hour of day and of day of year (zeros when day_of_year is False)."""
    t = pd.DatetimeIndex(np.asarray(times).ravel())
    hour = (t.hour + t.minute / 60.0 + t.second / 3600.0).to_numpy() / 24.0
    doy = (t.day_of_year - 1 + hour).to_numpy() / 365.25
    on = 1.0 if day_of_year else 0.0
    f = np.stack([np.sin(2 * np.pi * hour), np.cos(2 * np.pi * hour),
                  on * np.sin(2 * np.pi * doy), on * np.cos(2 * np.pi * doy)], axis=-1)
    return f.astype(np.float32).reshape(*np.shape(times), 4)


NORMALISE = ("variable", "location")


class Codec:
    """Stack every non-time dim of each variable into features, normalise, and undo it exactly.

    The normalisation is per variable (one mean and standard deviation for all its cells: WeatherBench's and the
    gridded default) or per location (each feature its own, `mean[v]` and `std[v]` arrays of the variable's size:
    each series of a table on its own scale, as DeepAR and GluonTS scale each series, so that a table that mixes
    magnitudes is not modelled at its largest series' scale).

    `compact`: the features that are never valid (NaN in the template: sea cells of land forcing) are left out of
    the encoded arrays, and decode puts NaN back there; the network, the AR base and the climatology then only
    carry cells that have data (unet1d: half the channels on land-only forcing)."""

    def __init__(self, template: xr.Dataset, mean: dict, std: dict, compact: bool = False):
        self.template = template
        self.variables = [str(v) for v in template.data_vars]
        self.full_sizes = [int(template[v].size) for v in self.variables]
        self.compact = bool(compact)
        self.mean, self.std = {}, {}
        for v, n in zip(self.variables, self.full_sizes):
            for name, given, out in (("mean", mean, self.mean), ("std", std, self.std)):
                val = given[v]
                if np.ndim(val) == 0:
                    out[v] = float(val)
                    continue
                arr = np.asarray(val, dtype=np.float64).ravel()
                if arr.size != n:
                    raise DataError(f"codec: the per-location {name} of '{v}' holds {arr.size} values for "
                                    f"{n} features")
                out[v] = arr
        full_valid = [template[v].notnull().values.ravel() for v in self.variables]
        # per variable the indices of its encoded features among its cells (all of them unless compact)
        self.keep = {v: (np.flatnonzero(ok) if self.compact else np.arange(ok.size))
                     for v, ok in zip(self.variables, full_valid)}
        self.sizes = [int(self.keep[v].size) for v in self.variables]
        self.valid = (np.ones(sum(self.sizes), dtype=bool) if self.compact else np.concatenate(full_valid))

    @property
    def full_index(self) -> np.ndarray:
        """(C,) the position of each encoded feature among all cells x variables (the uncompacted layout)."""
        starts = np.cumsum([0, *self.full_sizes[:-1]])
        return np.concatenate([self.keep[v] + a for v, a in zip(self.variables, starts)])

    def _kept(self, d: dict, v: str):
        """mean or std of `v` for its encoded features (a scalar per variable stays one)."""
        return d[v][self.keep[v]] if np.ndim(d[v]) else d[v]

    @property
    def normalise(self) -> str:
        """'location' when the means and deviations are per feature, else 'variable'."""
        return "location" if any(np.ndim(self.mean[v]) for v in self.variables) else "variable"

    def select(self, template: xr.Dataset, features: dict) -> "Codec":
        """The codec of a part of the features: `template` (the part's template) and per variable the indices of
        its features kept (per-location normalisation is sliced with them; per-variable is kept as it is)."""
        if self.compact:
            raise DataError("codec: a compact codec (never-valid cells left out; unet1d runs) has no subregions")
        pick = lambda d: {v: (d[v][np.asarray(features[v])] if np.ndim(d[v]) else d[v])  # noqa: E731
                          for v in self.variables}
        return Codec(template, pick(self.mean), pick(self.std))

    @classmethod
    def fit(cls, ds: xr.Dataset) -> "Codec":
        """Per-variable mean/std over all times and points (NaN ignored); template = time-mean field (NaN = never
        valid); computed in one pass over blocks of time steps (stream.fit_statistics), so `ds` may be larger than
        memory."""
        from .stream import fit_statistics

        return fit_statistics(ds, hourly=False).codec

    @property
    def num_features(self) -> int:
        return int(sum(self.sizes))

    def feature_dims(self, v: str) -> tuple:
        return tuple(self.template[v].dims)

    def encode(self, ds: xr.Dataset, label: str = "data", check: bool = True) -> np.ndarray:
        """Dataset (time, ...) -> normalised float32 (T, C); NaN stays NaN. `check`: variables, dims and coordinates
        against the template (False: already checked on this Dataset, stream.EncodedValues' reads of its slices)."""
        parts = []
        for v in self.variables:
            if check:
                if v not in ds.data_vars:
                    raise DataError(f"{label}: unknown variable '{v}' "
                                    f"(the model was trained on {', '.join(self.variables)})")
                dims = self.feature_dims(v)
                if set(ds[v].dims) != set(dims) | {TIME}:
                    raise DataError(f"{label}: variable '{v}' has dims {ds[v].dims}, "
                                    f"the model expects (time, {', '.join(dims)})")
            da = ds[v].transpose(TIME, *self.feature_dims(v))
            if check:
                self.check_coords(da, v, label)  # first: a coordinate that differs in length is named
                if da.shape[1:] != self.template[v].shape:
                    raise DataError(f"{label}: variable '{v}' has shape {da.shape[1:]}, "
                                    f"expected {self.template[v].shape}")
            vals = da.values.reshape(da.shape[0], int(np.prod(da.shape[1:], dtype=np.int64)))
            if self.compact:
                vals = vals[:, self.keep[v]]
            vals = vals.astype(np.float64)
            parts.append(((vals - self._kept(self.mean, v)) / self._kept(self.std, v)).astype(np.float32))
        return np.concatenate(parts, axis=1)

    def check_coords(self, da: xr.DataArray, v: str, label: str = "data") -> None:
        """The coordinates of `da` (time first, then the model's dims) against those stored in the run, in their
        order: a reversed axis (latitude north-to-south against south-to-north), another order of the same
        stations or another grid is a DataError naming the coordinate; a coordinate the run has that the data lack
        is one only where it is a dimension's own."""
        tmpl = self.template[v]
        for c in tmpl.coords:
            want_da = tmpl.coords[c]
            if not want_da.dims or TIME in want_da.dims:
                continue  # scalar coordinates (GRIB's number, step, ...) say nothing about the grid
            if c not in da.coords:
                if c in tmpl.dims:
                    raise DataError(f"{label}: variable '{v}' has no coordinate '{c}' (the model's runs "
                                    f"{_span(want_da.values)})")
                continue
            got = np.asarray(da.coords[c].transpose(*want_da.dims).values)
            want = np.asarray(want_da.values)
            if got.shape != want.shape:
                raise DataError(f"{label}: coordinate '{c}' of variable '{v}' has shape {got.shape}, "
                                f"the model's {want.shape} (the data run {_span(got)}, the model's {_span(want)})")
            if _coords_equal(got, want):
                continue
            if got.ndim == 1 and _coords_equal(got[::-1], want):
                raise DataError(f"{label}: coordinate '{c}' is reversed: the data run {_span(got)}, the model's "
                                f"{_span(want)} (reorder the data, e.g. ds.sortby('{c}', "
                                f"ascending={bool(want[0] < want[-1]) if want.dtype.kind in 'fiu' else True}))")
            i = int(np.argmax(~_close(got.ravel(), want.ravel())))
            same_set = got.ndim == 1 and _coords_equal(np.sort(got), np.sort(want))
            what = "the same values in another order" if same_set else "another grid"
            raise DataError(f"{label}: coordinate '{c}' of variable '{v}' differs from the model's ({what}: "
                            f"{got.ravel()[i].item()!r} at index {i}, the model has {want.ravel()[i].item()!r}; the data run "
                            f"{_span(got)}, the model's {_span(want)})")

    def decode(self, values: np.ndarray, dims: tuple, coords: dict) -> xr.Dataset:
        """(*lead, C) normalised -> Dataset with dims (*dims, <data dims>), original coords, units, attrs and dtypes."""
        values = np.asarray(values)
        lead = values.shape[:-1]
        out, start = {}, 0
        for v, n in zip(self.variables, self.sizes):
            tmpl = self.template[v]
            chunk = values[..., start:start + n].astype(np.float64) * self._kept(self.std, v) + self._kept(self.mean, v)
            if self.compact:
                full = np.full((*lead, tmpl.size), np.nan)
                full[..., self.keep[v]] = chunk
                chunk = full
            chunk = np.where(tmpl.notnull().values.ravel(), chunk, np.nan)
            start += n
            out[v] = xr.DataArray(chunk.reshape(*lead, *tmpl.shape).astype(tmpl.dtype), dims=(*dims, *tmpl.dims),
                                  coords={**coords, **{k: tmpl.coords[k] for k in tmpl.coords}},
                                  attrs=dict(tmpl.attrs))
        return xr.Dataset(out, attrs=dict(self.template.attrs))

    def to_config(self) -> dict:
        """JSON: the variables and the normalisation; per location the arrays live in state.safetensors
        (to_state), and `mean` / `std` give their averages over the features, for reading."""
        extra = {"compact": True} if self.compact else {}
        if self.normalise == "variable":
            return {"variables": self.variables, "normalise": "variable", "mean": self.mean, "std": self.std, **extra}
        avg = lambda d: {v: float(np.mean(d[v])) for v in self.variables}  # noqa: E731
        return {"variables": self.variables, "normalise": "location", "mean": avg(self.mean), "std": avg(self.std),
                **extra}

    def save(self, path) -> None:
        write_dataset(self.template, path)

    def to_state(self) -> tuple[dict, dict]:
        """(arrays, meta): the template as named numpy arrays (for safetensors) and JSON (dims, dtypes, attrs,
        coordinates that are not numbers), so a run folder holds no netCDF or pickle."""
        arrays, meta = {}, {"attrs": _jsonable(self.template.attrs), "vars": {}, "coords": {}}
        for v in self.variables:
            da = self.template[v]
            arrays[f"codec.var.{v}"] = np.ascontiguousarray(da.values)
            if np.ndim(self.mean[v]):
                arrays[f"codec.mean.{v}"] = np.ascontiguousarray(self.mean[v])
                arrays[f"codec.std.{v}"] = np.ascontiguousarray(self.std[v])
            meta["vars"][v] = {"dims": list(da.dims), "dtype": str(da.dtype), "attrs": _jsonable(da.attrs)}
        for c in self.template.coords:
            da = self.template[c]
            entry = {"dims": list(da.dims), "dtype": str(da.dtype), "attrs": _jsonable(da.attrs)}
            if np.issubdtype(da.dtype, np.number) or np.issubdtype(da.dtype, np.bool_):
                arrays[f"codec.coord.{c}"] = np.ascontiguousarray(da.values)
            elif np.issubdtype(da.dtype, np.datetime64) or np.issubdtype(da.dtype, np.timedelta64):
                arrays[f"codec.coord.{c}"] = np.ascontiguousarray(da.values.view(np.int64))
            else:
                entry["values"] = np.asarray(da.values).astype(str).tolist()
            meta["coords"][str(c)] = entry
        return arrays, meta

    @classmethod
    def from_state(cls, arrays: dict, meta: dict, config: dict, label: str = "state") -> "Codec":
        """Inverse of to_state; a DataError naming `label` when an array is missing."""
        try:
            coords = {}
            for c, e in meta["coords"].items():
                if "values" in e:
                    vals = np.asarray(e["values"], dtype=e["dtype"])
                else:
                    vals = np.asarray(arrays[f"codec.coord.{c}"])
                    if e["dtype"].startswith(("datetime64", "timedelta64")):
                        vals = vals.view(e["dtype"])
                    vals = vals.astype(e["dtype"])
                coords[c] = xr.Variable(e["dims"], vals.reshape(vals.shape), attrs=e["attrs"])
            data = {v: xr.Variable(e["dims"], np.asarray(arrays[f"codec.var.{v}"]).astype(e["dtype"]),
                                   attrs=e["attrs"]) for v, e in meta["vars"].items()}
            mean, std = dict(config["mean"]), dict(config["std"])
            if config.get("normalise", "variable") == "location":
                for v in config["variables"]:
                    mean[v] = np.asarray(arrays[f"codec.mean.{v}"], dtype=np.float64)
                    std[v] = np.asarray(arrays[f"codec.std.{v}"], dtype=np.float64)
        except KeyError as exc:
            raise DataError(f"{label}: codec entry {exc} missing (the file does not match the run config)") from None
        template = xr.Dataset(data, coords=coords, attrs=meta["attrs"])
        return cls(template[list(config["variables"])], mean, std, compact=bool(config.get("compact", False)))

    @classmethod
    def load(cls, path, config: dict) -> "Codec":
        if not Path(path).exists():
            raise DataError(f"{path}: missing codec template (is this a gendiff weather run folder?)")
        with xr.open_dataset(path) as t:
            template = t.load()
        return cls(template, config["mean"], config["std"])


def _close(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Elementwise equality of coordinate values: numbers to float32 precision of their magnitude, others exactly."""
    if got.dtype.kind in "fiu" and want.dtype.kind in "fiu":
        got, want = got.astype(np.float64), want.astype(np.float64)
        tol = 1e-6 * max(1.0, float(np.nanmax(np.abs(want))) if want.size else 1.0)
        return np.isclose(got, want, rtol=0.0, atol=tol) | (np.isnan(got) & np.isnan(want))
    return got.astype(str) == want.astype(str)


def _coords_equal(got: np.ndarray, want: np.ndarray) -> bool:
    return got.shape == want.shape and bool(_close(got, want).all())


def _span(values) -> str:
    v = np.asarray(values).ravel()
    return f"{v[0]} to {v[-1]} ({v.size} values)" if v.size else "no values"


def _jsonable(value):
    """attrs -> JSON values (numpy scalars and arrays to Python numbers and lists)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def write_dataset(ds: xr.Dataset, path) -> Path:
    """Write netCDF (default) or zarr (suffix .zarr) atomically: temporary sibling, then os.replace."""
    path = Path(path)
    ds = ds.copy()
    for v in list(ds.variables):
        ds[v].encoding = {k: e for k, e in ds[v].encoding.items() if k in ("units", "calendar")}
    if path.suffix == ".zarr":
        if importlib.util.find_spec("zarr") is None:
            raise ConfigError(f"{path}: writing zarr needs the 'zarr' package (pip install 'gendiff[zarr]')")
        import os
        import shutil
        import tempfile
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
