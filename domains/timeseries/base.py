"""The AR(p) mean forecast the network's targets are departures from (on the anomalies climatology.py leaves).

Data flow: data.Codec (normalised values) -> climatology (removed) -> base (AR mean forecast) -> windows -> inputs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from gendiff.errors import ConfigError, DataError

from .baselines import ar_lags, ar_sums, solve_ar
from .blocks import STREAM_BYTES, row_blocks


class ARBase:
    """Per-feature AR mean forecast of anomalies, rolled from the context over the horizon.

    The lags are 1..p (`ar_order`), and with seasons also each season s and s + 1 (a seasonal AR: the value a week
    or a year back, and its step-to-step change, enter the mean forecast as they do in SARIMA's
    (p, 0, 0) x (1, 0, 0)_s form, here with the cross lag s + 1 fitted freely). The context must reach back to the
    largest lag.

    With `base="linear"` the network generates the departures of the future from this deterministic forecast (as
    CorrDiff generates residuals of a regression model): the linear part of the predictability is exact from the
    start, and the network's capacity goes to the state-dependent, spatially correlated error distribution.

    `damp` (H x C, fitted with the error level): the iterated forecast's anomaly at each lead is multiplied by the
    least-squares factor of the truth on it over the training windows, pooled per variable and clipped to [0, 1]
    (a direct multi-step correction of the iterated AR, as Marcellino, Stock and Watson 2006 compare the two): where
    the one-step AR's recursion carries an anomaly further than it lasts (wind a day ahead, whose iterated
    forecast errs more than climatology on the training days), the base goes back towards climatology; where the AR
    holds, the factor is 1."""

    def __init__(self, phi, scale=None, diurnal=None, step_seconds: float | None = None, lags=None, damp=None):
        self.phi = torch.as_tensor(np.asarray(phi), dtype=torch.float32)  # (C, K), in the order of `lags`
        self.lags = tuple(range(1, self.phi.shape[1] + 1)) if lags is None else tuple(int(k) for k in lags)
        if len(self.lags) != self.phi.shape[1]:
            raise DataError(f"AR base: {self.phi.shape[1]} coefficients per feature for {len(self.lags)} lags")
        self.scale = None if scale is None else torch.as_tensor(np.asarray(scale), dtype=torch.float32)  # (H, C)
        # (S, H, C): the error level's factor by the init's time of day (S slots of one time step per day)
        self.diurnal = None if diurnal is None else torch.as_tensor(np.asarray(diurnal), dtype=torch.float32)
        self.step_seconds = step_seconds
        self.damp = None if damp is None else torch.as_tensor(np.asarray(damp), dtype=torch.float32)  # (H, C)

    MIN_SLOT_WINDOWS = 5

    def to(self, device) -> "ARBase":
        """Move the coefficients, scale and time-of-day factors to `device` (where they meet the network's
        tensors); returns self."""
        self.phi = self.phi.to(device)
        self.scale = None if self.scale is None else self.scale.to(device)
        self.diurnal = None if self.diurnal is None else self.diurnal.to(device)
        self.damp = None if self.damp is None else self.damp.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.phi.device

    @staticmethod
    def lags_for(order: int, seasons=()) -> tuple[int, ...]:
        """Lags 1..order, and s and s + 1 for each season s (in steps)."""
        lags = set(range(1, int(order) + 1))
        for s in seasons or ():
            if int(s) < 2:
                raise ConfigError(f"season: {s} step; a season is at least 2 steps")
            lags |= {int(s), int(s) + 1}
        return tuple(sorted(lags))

    @classmethod
    def fit(cls, values: np.ndarray, index: np.ndarray, order=2, starts: np.ndarray | None = None,
            context: int | None = None, horizon: int | None = None, times: np.ndarray | None = None,
            groups: list[int] | None = None, damp: bool = True) -> "ARBase":
        """Least-squares AR per feature on values[index], on lags 1..order (an int) or the given lags (a sequence,
        lags_for); with training window `starts`, also the RMS error
        of its forecast per lead and feature (`scale`, H x C), by which the generated departures are divided so
        that the network sees unit-variance targets at every lead (the diffusion schedules assume unit-variance
        data; the departures grow from a few hundredths of a standard deviation at the first step).

        With `times` and a time step that divides a day, the error level also depends on the init's time of day
        (`diurnal`, S x H x C, S = steps per day): a 6 h forecast of 2 m temperature made at 06 UTC runs through the
        morning warming and errs twice as much as one made at 00 UTC. The factor is the RMS error of the windows
        whose init falls in that slot over the all-window RMS, pooled over the features of each variable (`groups`:
        feature counts per variable) so that a few weeks of data give a stable estimate; 1 for slots with fewer
        than MIN_SLOT_WINDOWS windows. With `damp` (and window starts) also the per-lead damping factors (class
        docstring), fitted on the same windows, pooled over each variable's features; the error level is then that
        of the damped forecast."""
        c = values.shape[1]
        lags = ar_lags(order)
        k, m = len(lags), lags[-1]
        if context is not None and context < m:
            raise DataError(f"the AR base's largest lag is {m} steps: the context must be at least {m} steps, "
                            f"got {context}")
        index = np.asarray(index)
        if len(index) and (np.diff(index) == 1).all():  # the normal equations summed block by block of steps
            gram, rhs = np.zeros((c, k, k)), np.zeros((c, k))
            lo, hi = int(index[0]), int(index[-1]) + 1
            for a, b in row_blocks(lo, hi, c * 4 * (k + 1)):  # ar_sums holds ~4 (K + 1) copies
                g, r = ar_sums(np.asarray(values[max(lo, a - m):b], dtype=np.float64), lags)
                gram, rhs = gram + g, rhs + r
        else:
            gram, rhs = ar_sums(np.asarray(values[index], dtype=np.float64), lags)
        ar = cls(solve_ar(gram, rhs), lags=lags)
        if starts is None:
            return ar
        starts = np.asarray(starts)
        n_slots, slot = 1, np.zeros(len(starts), dtype=np.int64)
        if times is not None and len(times) > 1:
            step_s = pd.Timedelta(times[1] - times[0]).total_seconds()
            if 0 < step_s < 86400 and 86400 % step_s == 0:
                ar.step_seconds, n_slots = step_s, int(86400 // step_s)
                slot = ar.slots(times[starts + context - 1])
        # per slot, lead and feature: sums of truth^2, base * truth, base^2 and the count over the windows
        stt, sbt, sbb, n = (np.zeros((n_slots, horizon, c)) for _ in range(4))
        length = context + horizon
        per_chunk = int(max(1, min(256, STREAM_BYTES // (8 * length * c))))
        for chunk in np.array_split(np.arange(len(starts)), max(1, -(-len(starts) // per_chunk))):
            if len(chunk) == 0:
                continue
            s0 = int(starts[chunk[0]])  # one read covers the chunk's windows (starts are increasing)
            span = np.asarray(values[s0:int(starts[chunk[-1]]) + length])
            w = torch.from_numpy(np.stack([span[s - s0:s - s0 + length] for s in starts[chunk]]))
            truth = w[:, context:].double().numpy()
            base = ar.window_base(w, context)[:, context:].double().numpy()
            ok = np.isfinite(truth)
            truth, base = np.where(ok, truth, 0.0), np.where(ok, base, 0.0)
            for acc, x in ((stt, truth * truth), (sbt, base * truth), (sbb, base * base), (n, ok)):
                np.add.at(acc, slot[chunk], x)
        fac = np.ones((horizon, c))
        if damp:
            for g in _group_slices(groups, c):
                bt, bb = sbt[:, :, g].sum((0, 2)), sbb[:, :, g].sum((0, 2))
                fac[:, g] = np.clip(np.where(bb > 0, bt / np.maximum(bb, 1e-300), 1.0), 0.0, 1.0)[:, None]
            ar.damp = torch.from_numpy(fac).float()
        sq = np.maximum(stt - 2 * fac[None] * sbt + fac[None] ** 2 * sbb, 0.0)  # the (damped) forecast's errors
        rms = np.sqrt(sq.sum(0) / np.maximum(n.sum(0), 1))
        floor = max(1e-3, 1e-2 * float(np.nanmax(rms)))
        ar.scale = torch.from_numpy(np.where(n.sum(0) > 0, np.maximum(rms, floor), 1.0)).float()
        if n_slots > 1:
            fac = np.ones((n_slots, horizon, c))
            counts = np.bincount(slot, minlength=n_slots)
            for g in _group_slices(groups, c):
                ms_all = sq[:, :, g].sum((0, 2)) / np.maximum(n[:, :, g].sum((0, 2)), 1)  # (H,)
                ms_slot = sq[:, :, g].sum(2) / np.maximum(n[:, :, g].sum(2), 1)  # (S, H)
                f = np.sqrt(ms_slot / np.maximum(ms_all, 1e-300))
                f = np.where((counts[:, None] >= cls.MIN_SLOT_WINDOWS) & (ms_slot > 0), f, 1.0)
                fac[:, :, g] = f[:, :, None]
            ar.diurnal = torch.from_numpy(fac).float()
        return ar

    @property
    def order(self) -> int:
        """The largest lag: the context steps the base reads."""
        return int(self.lags[-1])

    @property
    def short_lags(self) -> int:
        """p of lags 1..p (the leading run of consecutive lags; the seasonal ones come after)."""
        p = 0
        while p < len(self.lags) and self.lags[p] == p + 1:
            p += 1
        return p

    def slots(self, init_times) -> np.ndarray:
        """Time-of-day slot of each init time (0 when the error level has no time-of-day factor)."""
        t = pd.DatetimeIndex(np.asarray(init_times).ravel())
        if self.step_seconds is None:
            return np.zeros(len(t), dtype=np.int64)
        sec = t.hour * 3600 + t.minute * 60 + t.second
        n_slots = int(86400 // self.step_seconds)
        return (np.asarray(sec) // int(self.step_seconds)).astype(np.int64) % n_slots

    def window_base(self, window: torch.Tensor, context: int, level_only: bool = False) -> torch.Tensor:
        """(B, L, C): the context as given (NaN -> 0), then the AR mean recursion: step t is the sum over the lags
        k of phi_k times the value at t - k, from the context or from the recursion's own earlier steps.

        `level_only`: the short lags (1..p) start from the mean of the last p context steps (their level, no
        slope), for contexts that are themselves generated (chained horizons): they are rougher step to step than
        real data, and an AR fitted close to a unit root (Lorenz-96: 1.87, -0.93) turns that roughness into growing
        swings. Seasonal lags read the context as it is."""
        known = torch.nan_to_num(window[:, :context], nan=0.0)
        if context < self.order:
            raise DataError(f"the AR base needs a context of at least {self.order} steps, got {context}")
        horizon = window.shape[1] - context
        if horizon <= 0:
            return known
        phi = self.phi.to(known)
        seq = list(known.unbind(1)) + [None] * horizon  # the context steps, then the recursion's
        p = self.short_lags
        short = {}  # lag-k reads of the last p context steps, replaced by their level
        if level_only and p:
            level = torch.stack(seq[context - p:context]).mean(0)
            short = {context - 1 - j: level for j in range(p)}
        for t in range(context, context + horizon):
            nxt = 0
            for k, lag in enumerate(self.lags):
                src = short.get(t - lag, seq[t - lag]) if lag <= p else seq[t - lag]
                nxt = nxt + phi[:, k] * src
            seq[t] = nxt
        out = torch.stack(seq, 1)
        if self.damp is not None:  # per lead; leads beyond the fitted horizon take the last factor
            lead = torch.clamp(torch.arange(horizon, device=self.damp.device), max=self.damp.shape[0] - 1)
            out[:, context:] *= self.damp[lead].to(out)
        return out

    def window_scale(self, length: int, context: int, slots=None) -> torch.Tensor:
        """(L, C): 1 over the context, `scale` over the horizon (ones without a fitted scale); with `slots` (B,),
        the init times' time-of-day slots, (B, L, C) with the horizon scaled by the time-of-day factor."""
        out = torch.ones(length, self.phi.shape[0], device=self.phi.device)
        if self.scale is not None:
            if length - context != self.scale.shape[0]:
                raise DataError(f"AR scale was fitted for a {self.scale.shape[0]}-step horizon, not {length - context}")
            out[context:] = self.scale
        if slots is None:
            return out
        out = out.expand(len(slots), -1, -1).clone()
        if self.scale is not None and self.diurnal is not None:
            out[:, context:] *= self._slot_factors(slots)
        return out

    def _slot_factors(self, slots) -> torch.Tensor:
        """(B, H, C): the time-of-day factors of the given slots."""
        return self.diurnal[torch.as_tensor(np.asarray(slots), dtype=torch.long, device=self.diurnal.device)]

    def level(self, slots=None) -> torch.Tensor:
        """(H, C): the RMS error level per lead, averaged in square over the given init slots (all windows if None)."""
        if slots is None or self.diurnal is None:
            return self.scale
        return self.scale * (self._slot_factors(slots) ** 2).mean(0).sqrt()

    def state(self, groups: list[int] | None = None) -> dict:
        """Tensors that rebuild the base. With `groups` (feature counts per variable) a time-of-day factor or damping
        that is constant over each variable's features (as fit pools them) is stored once per variable
        (`diurnal_groups`, S x H x G; `damp_groups`, H x G), not per feature: 3.7 MB -> 2 KB for a 33 x 49 grid."""
        out = {"phi": self.phi.cpu()}
        if self.lags != tuple(range(1, len(self.lags) + 1)):
            out["lags"] = torch.tensor(self.lags, dtype=torch.long)
        if self.scale is not None:
            out["scale"] = self.scale.cpu()
        if self.diurnal is not None:
            out["step_seconds"] = torch.tensor(float(self.step_seconds), dtype=torch.float64)
        for name in ("diurnal", "damp"):
            x = getattr(self, name)
            if x is None:
                continue
            compact = _per_group(x.cpu(), groups)
            if compact is None:
                out[name] = x.cpu()
            else:
                out.update({f"{name}_groups": compact, "groups": torch.as_tensor(list(groups), dtype=torch.long)})
        return out

    @classmethod
    def from_state(cls, state: dict) -> "ARBase":
        def full(name):
            if name not in state and f"{name}_groups" in state:
                return state[f"{name}_groups"].repeat_interleave(state["groups"].long(), dim=-1).cpu().numpy()
            return None if state.get(name) is None else state[name].cpu().numpy()

        scale = state.get("scale")
        step, lags = state.get("step_seconds"), state.get("lags")
        return cls(state["phi"].cpu().numpy(), None if scale is None else scale.cpu().numpy(), full("diurnal"),
                   None if step is None else float(step), None if lags is None else lags.tolist(), full("damp"))

    def select(self, features) -> "ARBase":
        """The base of a subset of the features (an index array), on the same device."""
        f = torch.as_tensor(np.asarray(features), dtype=torch.long, device=self.phi.device)
        pick = lambda x: None if x is None else x[..., f].cpu().numpy()  # noqa: E731
        return ARBase(self.phi[f].cpu().numpy(), pick(self.scale), pick(self.diurnal), self.step_seconds, self.lags,
                      pick(self.damp)).to(self.phi.device)


def _group_slices(groups, c: int):
    """The feature slice of each variable (`groups`: feature counts per variable; one group of all `c` if None)."""
    start = 0
    for size in (groups or [c]):
        yield slice(start, start + size)
        start += size


def _per_group(x: torch.Tensor, groups) -> torch.Tensor | None:
    """x (..., C) as (..., G) when it is constant over each group of features (`groups`: their counts), else None."""
    if not groups:
        return None
    sizes = torch.as_tensor(list(groups), dtype=torch.long)
    if int(sizes.sum()) != x.shape[-1]:
        return None
    compact = x[..., torch.cumsum(sizes, 0) - sizes]
    return compact.contiguous() if torch.equal(compact.repeat_interleave(sizes, dim=-1), x) else None
