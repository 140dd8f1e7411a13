"""Future-known covariates (exogenous columns: a forcing, a price, a holiday flag): numbers known over the whole
window, context and horizon, that the network reads beside the calendar but never generates or scores.

They travel in the engine's Dataset as data variables beside the generated ones, each on the time and location
dims (a long table's extra columns: (time, series), listed in `ds.attrs["covariates"]`). Training normalises each
by its mean and standard deviation over the training period (one per covariate, kept in config.json's
`covariates`), missing values become 0 (the mean); the network takes them as conditioning channels: unet1d every
covariate of every location (K x N, variable-major like data.Codec), gridnet K channels per location.
A forecast reads them on the grid after each series' end (the long table's `X_df`)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from gendiff.errors import ConfigError, DataError

from .sharednet import location_layout
from .timeaxis import TIME, add_steps

KEY = "covariates"


@dataclass(frozen=True)
class Covariates:
    """The covariates of a run: their names and the training period's mean and standard deviation of each."""

    names: tuple
    mean: tuple
    std: tuple

    def to_config(self) -> dict:
        return {"names": list(self.names), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_config(cls, config: dict) -> "Covariates | None":
        """A run's covariates from its config.json (None for runs trained without: every run before them)."""
        got = config.get(KEY)
        if not got:
            return None
        return cls(tuple(got["names"]), tuple(float(v) for v in got["mean"]), tuple(float(v) for v in got["std"]))

    @classmethod
    def fit(cls, names, raw: np.ndarray, idx: np.ndarray, label: str) -> "Covariates":
        """Mean and standard deviation of each covariate (raw (T, K, N)) over the training period `idx`."""
        mean, std = [], []
        for k, name in enumerate(names):
            v = raw[idx, k]
            if not np.isfinite(v).any():
                raise DataError(f"{label}: covariate '{name}' has no value in the training period")
            m, s = float(np.nanmean(v)), float(np.nanstd(v))
            mean.append(m)
            std.append(s if s > 0 else 1.0)
        return cls(tuple(names), tuple(mean), tuple(std))

    def encode(self, raw: np.ndarray) -> np.ndarray:
        """raw (T, K, N) -> (T, K x N) float32, normalised, variable-major (feature k*N + j: covariate k of
        location j), missing -> 0."""
        z = (raw - np.asarray(self.mean)[None, :, None]) / np.asarray(self.std)[None, :, None]
        return np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0).reshape(raw.shape[0], -1).astype(np.float32)


def names_of(data, given=None) -> list[str]:
    """The covariates of `data`: `given` (a list or 'a,b'; [] for none), else the Dataset's attrs['covariates']."""
    if given is not None:
        return [str(v) for v in (given.split(",") if isinstance(given, str) else given) if str(v)]
    return [str(v) for v in getattr(data, "attrs", {}).get(KEY, [])]


def split(data, names: list[str], label: str):
    """(data without its covariates, a Dataset of the covariates named `names` or None): the generated variables
    and the known ones go separate ways. Only xarray Datasets carry covariates (tables become one: tabular.py)."""
    if not isinstance(data, xr.Dataset):
        if names:
            raise ConfigError(f"{label}: covariates= need a table or an xarray Dataset holding them")
        return data, None
    declared = names_of(data)
    missing = [n for n in names if n not in data.data_vars]
    if missing:
        raise DataError(f"{label}: no covariate column '{missing[0]}' (columns: {', '.join(map(str, data.data_vars))})")
    covs = data[names] if names else None
    drop = sorted(set(declared) | set(names))
    if not drop and KEY not in data.attrs:
        return data, covs
    rest = data.drop_vars(drop)  # a new Dataset: the caller's keeps its attrs
    rest.attrs = {k: v for k, v in data.attrs.items() if k != KEY}
    return rest, covs


def raw_values(covs: xr.Dataset, names, template: xr.Dataset, variables, label: str) -> np.ndarray:
    """(T, K, N) float64: each covariate on the locations of the codec `template` (N: data.Codec's locations)."""
    loc, n, _ = location_layout(template, variables)
    out = []
    for name in names:
        da = covs[name]
        if set(da.dims) != {TIME, *loc}:
            raise DataError(f"{label}: covariate '{name}' has dims {da.dims}; expected time and {', '.join(loc)}")
        try:
            da = da.sel({d: template[d].values for d in loc if d in template.coords and d in da.coords})
        except KeyError as exc:
            raise DataError(f"{label}: covariate '{name}' lacks location {exc}") from None
        try:
            vals = np.asarray(da.transpose(TIME, *loc).values, dtype=np.float64).reshape(da.sizes[TIME], n)
        except (TypeError, ValueError):
            raise DataError(f"{label}: covariate '{name}' is not numeric (dtype {da.dtype})") from None
        out.append(vals)
    return np.stack(out, axis=1)


def check_known(raw: np.ndarray, names, times: np.ndarray, init_idx: np.ndarray, n_lead: int, step, label: str,
                series=None, cutoffs: dict | None = None) -> None:
    """DataError naming the first covariate missing over a forecast's steps (each init's next `n_lead`), for
    every location, or with `cutoffs` ({series: init time}, the long table's forecast) each series from its own."""
    t_all = len(times)
    own = None
    if cutoffs is not None and series is not None:  # each series' own cutoff (NaT: none)
        own = np.array([np.datetime64(cutoffs.get(str(s), "NaT"), "ns") for s in series], dtype="datetime64[ns]")
    for i in init_idx:
        cols = np.arange(raw.shape[2]) if own is None else np.flatnonzero(own == np.datetime64(times[i], "ns"))
        if not len(cols):
            continue
        rows = np.arange(i + 1, i + 1 + n_lead)
        inside = rows[rows < t_all]
        for k, name in enumerate(names):
            have = np.zeros((n_lead, len(cols)), dtype=bool)
            have[:len(inside)] = np.isfinite(raw[inside, k][:, cols])
            if have.all():
                continue
            first, col = np.argwhere(~have)[0]
            when = pd.Timestamp(add_steps(np.asarray([times[i]]), int(first) + 1, step)[0])
            who = "" if series is None else f" for series '{series[cols[col]]}'"
            raise DataError(f"{label}: covariate '{name}' is missing at {when}{who}, a forecast step: pass X_df "
                            f"with unique_id, ds and {', '.join(names)} for the {n_lead} steps after each series' "
                            "end")


def rollout_windows(enc: np.ndarray, init_idx: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(I, len(offsets), F): the encoded covariates at each init + offset, 0 past the data's end."""
    rows = np.asarray(init_idx)[:, None] + np.asarray(offsets)[None, :]
    inside = (rows >= 0) & (rows < len(enc))
    return np.where(inside[..., None], enc[rows.clip(0, len(enc) - 1)], 0.0).astype(np.float32)


def for_forecast(run, data, ds: xr.Dataset, label: str) -> np.ndarray | None:
    """The raw (T, K, N) covariates a forecast with `run` reads from `data` (on `ds`'s times and the run's
    locations); None for a run without. ConfigError for covariates the run was not trained with; DataError for
    one it was, absent from the data."""
    cov = Covariates.from_config(run.config)
    given = names_of(data)
    known = set(cov.names) if cov else set()
    unknown = [n for n in given if n not in known]
    if unknown:
        have = ", ".join(sorted(known)) or "none"
        raise ConfigError(f"{label}: covariate(s) {', '.join(unknown)}: the run was not trained with them (its "
                          f"covariates: {have}); drop them")
    if cov is None:
        return None
    src = data if isinstance(data, xr.Dataset) else None
    absent = [n for n in cov.names if src is None or n not in src.data_vars]
    if absent:
        raise DataError(f"{label}: covariate '{absent[0]}' missing: the run was trained with {', '.join(cov.names)}; "
                        f"pass X_df with unique_id, ds and {', '.join(cov.names)} for the forecast steps")
    src = src[list(cov.names)].reindex({TIME: ds[TIME].values})
    return raw_values(src, cov.names, run.codec.template, run.codec.variables, label)
