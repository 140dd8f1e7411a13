"""The codec: xarray variables <-> (time, feature) arrays, every non-time dim stacked into features, normalised per
variable or per location, with the never-valid cells (a land-only field's sea) optionally left out."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from gendiff.errors import DataError

from .timeaxis import TIME
from .writer import write_dataset

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

    def decode(self, values: np.ndarray, dims: tuple, coords: dict, nonnegative=()) -> xr.Dataset:
        """(*lead, C) normalised -> Dataset with dims (*dims, <data dims>), original coords, units, attrs and dtypes.
        The variables named in `nonnegative` (daylight radiation: insolation.SolarScale.variables) are floored at
        their physical 0: a generated member below it, and the float32 round-off of a night's exact 0, become 0."""
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
            if v in nonnegative:
                chunk = np.maximum(chunk, 0.0)  # NaN stays NaN
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
