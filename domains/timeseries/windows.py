"""Windows of past context plus future horizon over the normalised values: where they start, and the Dataset
that turns each into network inputs (base.ARBase departures, inputs.make_inputs)."""
from __future__ import annotations

import numpy as np
import torch

from .base import ARBase
from .inputs import make_inputs
from .sharednet import location_features


class WindowDataset(torch.utils.data.Dataset):
    """All windows of length context + horizon starting at `starts` over normalised values (T, C): a numpy array
    in memory, or a stream.EncodedValues whose windows are read from disk in __getitem__ (each DataLoader worker
    reading its own). `valid` (C,): the features that are ever valid (default: those with a finite value in
    `values`, which reads everything; training passes the codec's). `covariates` (T, F): future-known covariates,
    encoded (covariates.py), read over each whole window into the conditioning channels. `offsets` (n, H, C): the
    base forecast of each window's horizon from a statsforecast base (peerbase.py), subtracted from it."""

    def __init__(self, values, calendar: np.ndarray, starts: np.ndarray, context: int, horizon: int,
                 residual: bool = True, base: ARBase | None = None, times: np.ndarray | None = None,
                 missing_flag: bool = False, valid: np.ndarray | None = None,
                 covariates: np.ndarray | None = None, offsets: np.ndarray | None = None):
        self.values = torch.from_numpy(values) if isinstance(values, np.ndarray) else values
        # windows read from files: DataLoader workers start fresh ('spawn'; gendiff.training.Trainer) and reopen
        # them (stream.EncodedValues); HDF5's state in a forked copy of this process is not safe to use
        self.worker_context = None if isinstance(values, np.ndarray) else "spawn"
        self.calendar, self.residual = torch.from_numpy(calendar), residual
        self.base, self.missing_flag = base, bool(missing_flag)
        self.starts, self.context, self.length = np.asarray(starts), context, context + horizon
        self.scale = self.slot = None
        if base is not None:  # one (L, C) scale per time-of-day slot of the init, built once
            self.slot = (base.slots(times[self.starts + context - 1]) if times is not None
                         else np.zeros(len(self.starts), dtype=np.int64))
            n_slots = 1 if base.diurnal is None else base.diurnal.shape[0]
            self.scale = base.window_scale(self.length, context, np.arange(n_slots))
        self.valid = torch.from_numpy(np.asarray(valid, dtype=bool) if valid is not None
                                      else np.isfinite(np.asarray(values)).any(0))
        self.covariates = None if covariates is None else torch.from_numpy(np.asarray(covariates, np.float32))
        self.offsets = None if offsets is None else torch.from_numpy(np.asarray(offsets, np.float32))

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int):
        s = int(self.starts[i])
        window = self.values[s:s + self.length]
        window = (window if isinstance(window, torch.Tensor) else torch.from_numpy(window))[None]
        if self.offsets is not None:  # a statsforecast base: the horizon as departures from its forecast
            window = window.clone()
            window[0, self.context:] -= self.offsets[i]
        base = None if self.base is None else self.base.window_base(window, self.context)
        scale = None if self.scale is None else self.scale[self.slot[i]]
        cov = None if self.covariates is None else self.covariates[None, s:s + self.length]
        x0, mask, cond = make_inputs(window, self.calendar[None, s:s + self.length], self.context, self.valid,
                                     self.residual, base, scale, self.missing_flag, cov)
        return {"x0": x0[0], "mask": mask[0], "cond": cond[0]}


def horizon_values(values, init_idx, n: int) -> np.ndarray:
    """(I, n, C): the n steps of `values` (an array or stream.EncodedValues) after each init index, the truth a
    forecast from it is scored against."""
    return np.stack([np.asarray(values[i + 1:i + 1 + n]) for i in np.asarray(init_idx)])


def window_starts(n_times: int, index: np.ndarray, length: int, values, context: int,
                  has_data: np.ndarray | None = None) -> np.ndarray:
    """Window starts whose whole window lies inside the (contiguous) index and whose horizon has data.

    `has_data` (n_times,): whether each step holds any finite value (stream.fit_statistics), in place of reading
    `values` (which may then be None)."""
    inside = np.zeros(n_times, dtype=bool)
    inside[index] = True
    if has_data is None:
        has_data = np.isfinite(np.asarray(values)).any(1)
    n = n_times - length + 1
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    c_in = np.concatenate([[0], np.cumsum(inside)])
    c_data = np.concatenate([[0], np.cumsum(np.asarray(has_data, dtype=bool))])
    s = np.arange(n)
    ok = (c_in[s + length] - c_in[s] == length) & (c_data[s + length] - c_data[s + context] > 0)
    return s[ok].astype(np.int64)


class WorkerRandom:
    """A training dataset's random stream, one per DataLoader worker: a forked worker would otherwise repeat the
    draws of every other (the same generator state copied into each); in the main process the seeded stream."""

    def _init_random(self, seed: int) -> None:
        self.seed, self.rng, self._worker = int(seed), np.random.default_rng(seed), None

    def random(self) -> np.random.Generator:
        info = torch.utils.data.get_worker_info()
        if info is not None and self._worker != info.id:
            self._worker, self.rng = info.id, np.random.default_rng([self.seed, info.id])
        return self.rng


class LocationPatches(WorkerRandom):
    """The locations of a gridnet's training windows: their static inputs (N, S) and, with `patch`, the random
    patches of `patch` locations a window covers, the nearest to a location drawn at random (by
    `static[:, :pos_dims]`; a random subset without positions). The features are K x N, variable-major
    (data.Codec), so feature k*N + j is channel k of location j."""

    def _set_locations(self, static: np.ndarray, locations: int, pos_dims: int, patch: int | None, seed: int,
                       features: int) -> None:
        self.static = torch.from_numpy(np.asarray(static, dtype=np.float32))
        self.n, self.pos = int(locations), np.asarray(static, dtype=np.float64)[:, :pos_dims]
        self.k = int(features) // self.n
        self.patch = None if patch is None or patch >= self.n else int(patch)
        self._init_random(seed)

    def locations_of(self) -> np.ndarray:
        """Sorted location indices of one random patch (each DataLoader worker its own draws: WorkerRandom)."""
        rng = self.random()
        if self.pos.shape[1] == 0:
            return np.sort(rng.choice(self.n, self.patch, replace=False))
        centre = self.pos[rng.integers(self.n)]
        d = ((self.pos - centre) ** 2).sum(1)
        return np.sort(np.argpartition(d, self.patch - 1)[:self.patch])

    def features_of(self, sel: np.ndarray, k: int | None = None) -> np.ndarray:
        """The feature indices (K x len(sel), variable-major) of the locations `sel` (`k`: another K, such as the
        covariates' count)."""
        return location_features(self.k if k is None else k, self.n, sel)


class GridWindowDataset(LocationPatches, WindowDataset):
    """WindowDataset for the location-shared network (gridnet): each window carries the static inputs of its
    locations, cond = {"seq": make_inputs' channels, "static": (N, S)}. With `patch`, a window covers `patch`
    locations only (LocationPatches): the shared weights learn from many small regions, at a cost independent
    of the grid's size. `locations`: N."""

    def __init__(self, *args, static: np.ndarray, locations: int, pos_dims: int, patch: int | None = None,
                 seed: int = 0, **kwargs):
        super().__init__(*args, missing_flag=True, **kwargs)
        self._set_locations(static, locations, pos_dims, patch, seed, self.values.shape[1])

    def __getitem__(self, i: int):
        item = super().__getitem__(i)
        if self.patch is None:
            return {**item, "cond": {"seq": item["cond"], "static": self.static}}
        sel = self.locations_of()
        feat = torch.from_numpy(self.features_of(sel))
        c, cond = self.values.shape[1], item["cond"]
        seq = [cond[:c][feat], cond[c:c + 5], cond[c + 5:2 * c + 5][feat]]
        if self.covariates is not None:  # their K per location, of the patch's locations
            seq.append(cond[2 * c + 5:][torch.from_numpy(self.features_of(sel, self.covariates.shape[1] // self.n))])
        seq = torch.cat(seq)
        return {"x0": item["x0"][feat], "mask": item["mask"][feat],
                "cond": {"seq": seq, "static": self.static[torch.from_numpy(sel)]}}
