"""Training for probabilistic imputation (CSDI, Tashiro et al. 2021): hide observed entries of a window, generate
them conditioned on the rest.

A window (L steps x C features) holds observed entries and missing ones. Training hides a part of the observed
entries (the targets) and conditions on the others (the known entries), with a per-entry known flag so that an
unknown value is not read as the 0 it is filled with. The hiding follows CSDI's "mix" strategy (a random ratio per
window, or the missing pattern of another window: "historical"), plus contiguous blocks, since real gaps (weeks of
a broken sensor) are runs, which random entries rarely form.

The known values enter relative to the window's level (the mean of its known values per feature): a series with
a trend (Mauna Loa CO2 climbs 60 ppm in 40 years) leaves the training range, its departures from the local level
do not. The targets are generated as departures from the linear interpolation of the known values: no AR base
(the network sees both sides of a gap), but the deterministic part a straight line gets right is not left to it.
"""
from __future__ import annotations

import numpy as np
import torch

from .windows import LocationPatches, WorkerRandom

STRATEGIES = ("random", "historical", "block")


def window_level(window: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """(B, C): the mean of the known values of windows (B, L, C) per feature; 0 where none is known."""
    zero = torch.zeros((), dtype=window.dtype, device=window.device)
    total = torch.where(known, window, zero).sum(1)
    count = known.sum(1)
    return torch.where(count > 0, total / count.clamp(min=1).to(window.dtype), zero)


def interpolate_known(window: torch.Tensor, known: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """(B, L, C): the known values of windows (B, L, C) linearly interpolated in time per feature, constant beyond
    the first and last known step, `level` (B, C) where a feature has none."""
    length = window.shape[1]
    steps = torch.arange(length, device=window.device)[None, :, None].expand_as(window)
    prev = torch.where(known, steps, torch.full_like(steps, -1)).cummax(1).values
    nxt = torch.where(known, steps, torch.full_like(steps, length)).flip(1).cummin(1).values.flip(1)
    filled = torch.nan_to_num(torch.where(known, window, torch.zeros((), dtype=window.dtype, device=window.device)))
    v_prev = filled.gather(1, prev.clamp(min=0))
    v_next = filled.gather(1, nxt.clamp(max=length - 1))
    w = (steps - prev).to(window.dtype) / (nxt - prev).clamp(min=1).to(window.dtype)
    inside = v_prev + w * (v_next - v_prev)
    out = torch.where(prev < 0, v_next, torch.where(nxt >= length, v_prev, inside))
    none = ~known.any(1, keepdim=True)
    return torch.where(none, level[:, None, :].expand_as(out), out)


def make_impute_inputs(window: torch.Tensor, calendar: torch.Tensor, known: torch.Tensor, target: torch.Tensor):
    """windows (B, L, C) normalised (NaN allowed where not known), calendar (B, L, 4), known and target entries
    (B, L, C) bool -> x0, mask, cond (each (B, *, L)) and the base (B, L, C) the targets are generated about.

    x0: the targets' departures from the base, the linear interpolation of the known values (interpolate_known;
    0 elsewhere): a short gap in a smooth series is then a small correction to a good guess, not a value to
    rebuild to a tenth of a percent from the window's level; mask: the targets (what is generated and scored);
    cond: [known values' departures from the window's level (0 where unknown), 1 at steps with any known value,
    calendar, 1 where an entry is not known]: make_inputs' layout (inputs.cond_channels(C, missing_flag=True)),
    so the same networks take it."""
    level = window_level(window, known)
    base = interpolate_known(window, known, level)
    centred = (window - level[:, None, :]).transpose(1, 2)  # (B, C, L)
    known_t, target_t = known.transpose(1, 2), target.transpose(1, 2)
    zero = torch.zeros((), dtype=centred.dtype, device=centred.device)
    x0 = torch.where(target_t, torch.nan_to_num((window - base).transpose(1, 2)), zero)
    step_flag = known_t.any(1, keepdim=True).to(x0.dtype)
    cond = torch.cat([torch.where(known_t, torch.nan_to_num(centred), zero), step_flag,
                      calendar.transpose(1, 2).to(x0.dtype), (~known_t).to(x0.dtype)], dim=1)
    return x0, target_t, cond, base


def hide(observed: np.ndarray, rng: np.random.Generator, strategy: str, pattern: np.ndarray | None = None,
         max_block: int | None = None) -> np.ndarray:
    """Targets (L, C) bool among the observed entries (L, C) of one window; always at least one, and one observed
    entry stays known when there are two or more.

    random: a ratio drawn uniformly in [0, 1), that fraction of the observed entries at random (CSDI's get_randmask);
    historical: the observed entries missing in `pattern` (another window's observed mask; CSDI's get_hist_mask),
    random when that hides nothing; block: one run of 1 to `max_block` steps (default L / 2) of one feature."""
    n_obs = int(observed.sum())
    if n_obs == 0:
        return np.zeros_like(observed)
    if strategy == "historical" and pattern is not None:
        target = observed & ~pattern
        if 0 < target.sum() < n_obs:
            return target
        strategy = "random"
    if strategy == "block":
        length, c = observed.shape
        feature = rng.choice(np.nonzero(observed.any(0))[0])
        size = int(rng.integers(1, max(1, max_block or length // 2) + 1))
        start = int(rng.integers(0, max(1, length - size + 1)))
        target = np.zeros_like(observed)
        target[start:start + size, feature] = observed[start:start + size, feature]
        if 0 < target.sum() < n_obs:
            return target
        strategy = "random"
    k = int(round(n_obs * rng.random()))
    k = min(max(k, 1), max(n_obs - 1, 1))
    flat = np.flatnonzero(observed)
    target = np.zeros(observed.size, dtype=bool)
    target[rng.choice(flat, k, replace=False)] = True
    return target.reshape(observed.shape)


class ImputeWindowDataset(WorkerRandom, torch.utils.data.Dataset):
    """Windows of `length` steps starting at `starts` over normalised values (T, C), with targets hidden by a
    strategy drawn per window (`weights` over STRATEGIES): x0, mask (the targets), cond (make_impute_inputs); each
    DataLoader worker hides with its own draws (WorkerRandom)."""

    def __init__(self, values: np.ndarray, calendar: np.ndarray, starts: np.ndarray, length: int, seed: int = 0,
                 weights=(0.4, 0.3, 0.3)):
        self.values, self.calendar = torch.from_numpy(values), torch.from_numpy(calendar)
        self.observed = np.isfinite(values)
        self.starts, self.length = np.asarray(starts), int(length)
        self.weights = np.asarray(weights, dtype=np.float64) / np.sum(weights)
        self._init_random(seed)

    def __len__(self) -> int:
        return len(self.starts)

    def window(self, i: int, features: np.ndarray | None = None) -> dict:
        """Window i (of the features `features` only, when given): targets hidden, x0, mask and cond."""
        s, n, rng = int(self.starts[i]), self.length, self.random()
        strategy = STRATEGIES[rng.choice(len(STRATEGIES), p=self.weights)]
        other = int(self.starts[rng.integers(len(self.starts))])
        observed, pattern, values = self.observed[s:s + n], self.observed[other:other + n], self.values[s:s + n]
        if features is not None:
            observed, pattern, values = observed[:, features], pattern[:, features], values[:, features]
        target = hide(observed, rng, strategy, pattern)
        known = observed & ~target
        x0, mask, cond, _ = make_impute_inputs(values[None], self.calendar[None, s:s + n],
                                               torch.from_numpy(known)[None], torch.from_numpy(target)[None])
        return {"x0": x0[0], "mask": mask[0], "cond": cond[0]}

    def __getitem__(self, i: int):
        return self.window(i)


class GridImputeWindowDataset(LocationPatches, ImputeWindowDataset):
    """ImputeWindowDataset for the location-shared network (gridnet): cond = {"seq": make_impute_inputs'
    channels (make_inputs' layout, the one GridNet reads), "static": the locations' (N, S)}; with `patch`, each
    window covers a random patch of locations (windows.LocationPatches), hidden within the patch."""

    def __init__(self, values: np.ndarray, calendar: np.ndarray, starts: np.ndarray, length: int, *,
                 static: np.ndarray, locations: int, pos_dims: int, patch: int | None = None, seed: int = 0,
                 weights=(0.4, 0.3, 0.3)):
        super().__init__(values, calendar, starts, length, seed, weights)
        self._set_locations(static, locations, pos_dims, patch, seed, values.shape[1])

    def __getitem__(self, i: int):
        if self.patch is None:
            item = self.window(i)
            return {**item, "cond": {"seq": item["cond"], "static": self.static}}
        sel = self.locations_of()
        item = self.window(i, self.features_of(sel))
        return {**item, "cond": {"seq": item["cond"], "static": self.static[torch.from_numpy(sel)]}}
