"""Probabilistic imputation with a run trained for it (train(task="impute")): every interior gap of every series
filled with `members` independent draws conditioned on the observed values on both sides.

Windows of the run's length L tile the series twice. Pass 1 samples tiles at 0, L, 2L, ... (all at once: they do
not overlap) and keeps the draws in the middle half of each tile, where at least L/4 steps of the tile lie on
either side; pass 2 samples the windows centred on the tile boundaries, conditioned on the observed values and on
pass 1's draws around them, and keeps their middle halves. So each member is one coherent draw across windows,
and the whole series costs two batched sampler calls. A gap longer than L/2 steps is an error naming the series,
its start and length (no window would hold an observed value on either side of its middle): train a longer
window. Leading and trailing NaN (before a series' first or after its last observation) are not gaps and stay
NaN, as do features that are never valid. Observed values are returned as they were, bit for bit.
"""
from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd
import torch
import xarray as xr
from tqdm.auto import tqdm

from gendiff.device import make_generator
from gendiff.errors import ConfigError, DataError
from gendiff.samplers import prior_sample, sample

from .data import Codec, calendar_features, open_data, source_label
from .ensquantile import ensemble_quantile
from .forecasting import check_time_step, nonnegative_variables, sequence_batch, use_run
from .imputation import make_impute_inputs
from .inputs import grid_cond
from .run import Run, require_task
from .tabular import SERIES, VALUE, parse_quantiles
from .timeaxis import add_steps, time_step


def feature_labels(codec: Codec) -> list[str]:
    """A name per stacked feature, as the tables name series: the series for a table's `value` (time, series),
    else 'var[dim=c,...]'."""
    template = codec.template.expand_dims(member=[0], time=[0])
    labels = [lab for lab, _ in _series_arrays(template)]
    return [labels[i] for i in codec.full_index] if codec.compact else labels


def interior_gaps(observed: np.ndarray) -> np.ndarray:
    """(T, C) bool: entries missing between a feature's first and last observation."""
    t = np.arange(observed.shape[0])[:, None]
    any_obs = observed.any(0)
    first = np.where(any_obs, np.argmax(observed, 0), observed.shape[0])
    last = np.where(any_obs, observed.shape[0] - 1 - np.argmax(observed[::-1], 0), -1)
    return ~observed & (t > first) & (t < last)


def longest_gaps(gaps: np.ndarray) -> list[tuple[int, int, int]]:
    """(length, start, feature) of the longest run of True per feature (features without one left out)."""
    out = []
    for c in range(gaps.shape[1]):
        g = np.concatenate([[0], gaps[:, c].astype(np.int8), [0]])
        edges = np.flatnonzero(np.diff(g))
        if len(edges):
            starts, ends = edges[0::2], edges[1::2]
            k = int(np.argmax(ends - starts))
            out.append((int(ends[k] - starts[k]), int(starts[k]), c))
    return out


def check_gaps(gaps: np.ndarray, length: int, codec: Codec, times: np.ndarray, label: str) -> None:
    """DataError naming the series, start and length of the longest gap when it exceeds half the run's window."""
    limit = length // 2
    worst = max(longest_gaps(gaps), default=(0, 0, 0))
    n, start, c = worst
    if n > limit:
        raise DataError(f"{label}: series '{feature_labels(codec)[c]}' has a gap of {n} steps from "
                        f"{pd.Timestamp(times[start])}; the run's window of {length} steps imputes gaps of up to "
                        f"{limit} (train with a window of at least {2 * n} steps)")


def plan(n_times: int, length: int) -> tuple[int, int, list[tuple[np.ndarray, int, int]]]:
    """(front padding q, padded length, passes): each pass (window starts, keep from, keep to), the kept part
    relative to the window start, in padded steps. Tiles k L keep [q, L - q), windows k L + L/2 keep the tile
    boundaries between them, [L - q, L + q) relative to the tile; together they cover the padded series once."""
    q = length // 4
    n = max(1, -(-(n_times + 2 * q) // length))
    if n == 1:
        return q, length, [(np.zeros(1, dtype=np.int64), 0, length)]
    h = length // 2
    return q, n * length, [(np.arange(n) * length, q, length - q),
                           (np.arange(n - 1) * length + h, length - q - h, length + q - h)]


def impute_tensor(run: Run, values: np.ndarray, times: np.ndarray, members: int, *, sampler: str, steps: int,
                  seed: int = 0, batch_size: int = 256, progress: bool = False) -> np.ndarray:
    """(M, T, C) draws of the normalised values (T, C) (NaN where missing) at their interior gaps; the observed
    entries as given, the others NaN."""
    device = run.device
    length = run.horizon
    observed = np.isfinite(values) & run.codec.valid[None, :]
    gaps = interior_gaps(observed)
    t_n, c_n = values.shape
    q, padded, passes = plan(t_n, length)
    ptimes = add_steps(times[0], np.arange(padded) - q, time_step(times))
    cal = torch.from_numpy(calendar_features(ptimes, bool(run.config.get("day_of_year", True)))).to(device)
    hist = torch.full((members, padded, c_n), float("nan"), device=device)
    hist[:, q:q + t_n] = torch.from_numpy(np.where(observed, values, np.nan).astype(np.float32)).to(device)
    todo = torch.zeros(padded, c_n, dtype=torch.bool, device=device)
    todo[q:q + t_n] = torch.from_numpy(gaps).to(device)
    generator = make_generator(device, seed)
    batch_size = sequence_batch(run, batch_size)
    jobs = []
    for starts, lo, hi in passes:
        keep = [s for s in starts if bool(todo[s + lo:s + hi].any())]
        jobs.append((keep, lo, hi))
    bar = tqdm(total=sum(-(-len(k) * members // batch_size) for k, _, _ in jobs), disable=not progress,
               desc="impute", leave=False)
    with torch.no_grad():
        for keep, lo, hi in jobs:
            pairs = [(s, m) for s in keep for m in range(members)]
            for b in range(0, len(pairs), batch_size):
                chunk = pairs[b:b + batch_size]
                idx_s = torch.tensor([s for s, _ in chunk], device=device)
                idx_m = torch.tensor([m for _, m in chunk], device=device)
                span = idx_s[:, None] + torch.arange(length, device=device)[None, :]  # (B, L)
                window = hist[idx_m[:, None], span]  # (B, L, C)
                target = todo[span]
                known = torch.isfinite(window) & ~target
                x0, mask, cond, base = make_impute_inputs(window, cal[span], known, target)
                if run.arch == "gridnet":  # each series a location of the shared U-Net
                    cond = grid_cond(cond, run.static)
                like = torch.zeros_like(x0)
                x_T = prior_sample(run.denoiser.schedule, run.space, like, mask=mask, generator=generator)
                x = sample(sampler, run.denoiser, x_T, run.denoiser.schedule, run.space, steps, mask=mask,
                           cond=cond, generator=generator)
                drawn = x.float().transpose(1, 2) + base  # (B, L, C)
                put = target.clone()
                put[:, :lo] = False
                put[:, hi:] = False
                sub = hist[idx_m[:, None], span]
                hist[idx_m[:, None], span] = torch.where(put, drawn, sub)
                bar.update(1)
            for s in keep:
                todo[s + lo:s + hi] = False
    bar.close()
    return hist[:, q:q + t_n].cpu().numpy()


def impute(run, data, *, members: int = 16, sampler: str | None = None, steps: int | None = None, seed: int = 0,
           batch_size: int = 256, progress: bool = True, device=None, label: str | None = None) -> xr.Dataset:
    """`members` draws filling the interior gaps of `data` (path, Dataset or DataArray with a time dim): a Dataset
    with the data's variables over (member, time, <data dims>), observed values bit-identical to the input's,
    attrs naming the run, sampler and seconds. `run`: a Run, run folder or pretrained:NAME trained with
    task='impute'; `sampler` / `steps`: override the run's."""
    if members < 1:
        raise ConfigError(f"members={members} must be >= 1")
    run = use_run(run, device)
    require_task(run, "impute")
    label = label or source_label(data)
    ds = open_data(data, run.codec.variables, name=label)
    check_time_step(ds, run, label)
    times = ds["time"].values
    values = run.codec.encode(ds, label)
    check_gaps(interior_gaps(np.isfinite(values) & run.codec.valid[None, :]), run.horizon, run.codec, times, label)
    sampler = sampler or run.config["sampler"]
    steps = int(steps or run.config["sample_steps"])
    anomalies = run.climatology.remove(values, times)
    t0 = time.perf_counter()
    draws = impute_tensor(run, anomalies, times, members, sampler=sampler, steps=steps, seed=seed,
                          batch_size=batch_size, progress=progress)
    seconds = time.perf_counter() - t0
    decoded = run.codec.decode(run.climatology.restore(draws, times), ("member", "time"),
                               {"member": np.arange(members), "time": times}, nonnegative_variables(run))
    out = xr.Dataset(attrs={"gendiff_run": str(run.spec or run.path), "sampler": sampler, "sampler_steps": steps,
                            "seed": seed, "impute_seconds": round(seconds, 3), "members": members,
                            "history": f"gendiff impute, {members} members, window {run.horizon} steps"})
    for v in run.codec.variables:
        orig = ds[v].transpose("time", *run.codec.feature_dims(v))
        filled = decoded[v].transpose("member", "time", *orig.dims[1:])
        vals = np.where(orig.notnull().values[None], orig.values[None], filled.values.astype(orig.dtype))
        out[v] = xr.DataArray(vals, dims=filled.dims, coords={**orig.coords, "member": np.arange(members)},
                              attrs=dict(orig.attrs))
    return out


def _series_arrays(ds: xr.Dataset):
    """(label, (M, T) values, (T,) observed) per series of an imputed Dataset (labels as tabular.to_tidy's)."""
    for v in ds.data_vars:
        da = ds[v]
        other = [d for d in da.dims if d not in ("member", "time")]
        da = da.transpose("member", "time", *other)
        if not other:
            yield str(v), da.values
            continue
        stacked = da.stack(_point=other)
        for k in range(stacked.sizes["_point"]):
            key = stacked["_point"].values[k]
            key = key if isinstance(key, tuple) else (key,)
            lab = str(key[0]) if (str(v) == VALUE and other == [SERIES]) else \
                f"{v}[" + ",".join(f"{d}={c}" for d, c in zip(other, key)) + "]"
            yield lab, stacked.isel(_point=k).values


def observed_of(data: xr.Dataset, imputed: xr.Dataset) -> dict:
    """{series label: (T,) bool}: where the input `data` holds a value, labelled as in the tables."""
    sub = xr.Dataset({v: data[v].transpose("time", *[d for d in imputed[v].dims if d not in ("member", "time")])
                      .expand_dims(member=[0]) for v in imputed.data_vars})
    return {lab: np.isfinite(np.asarray(vals[0], dtype=np.float64)) for lab, vals in _series_arrays(sub)}


def to_tidy(imputed: xr.Dataset, data: xr.Dataset, quantiles=None) -> pd.DataFrame:
    """Imputed Dataset -> tidy DataFrame, one row per time, series and member (columns time, series, member, value,
    observed) or with `quantiles` per quantile (time, series, quantile, value, observed); `observed` is True where
    `data` (the input) holds the value, which every member and quantile then repeats."""
    qs = parse_quantiles(quantiles)
    observed = observed_of(data, imputed)
    times = np.asarray(imputed["time"].values, dtype="datetime64[ns]")
    frames = []
    for lab, vals in _series_arrays(imputed):
        vals = np.asarray(vals, dtype=np.float64)  # (M, T)
        if qs is not None:
            vals = ensemble_quantile(vals, qs, axis=0)  # (Q, T); leading / trailing NaN: all-NaN members
            inner, name = np.asarray(qs, dtype=np.float64), "quantile"
        else:
            inner, name = np.asarray(imputed["member"].values, dtype=np.int64), "member"
        k, t = vals.shape
        frames.append(pd.DataFrame({"time": np.repeat(times, k), "series": np.full(t * k, lab, dtype=object),
                                    name: np.tile(inner, t), "value": vals.T.reshape(-1),
                                    "observed": np.repeat(observed[lab], k)}))
    return pd.concat(frames, ignore_index=True)


def to_wide(imputed: xr.Dataset, data: xr.Dataset) -> pd.DataFrame:
    """Imputed Dataset -> a DataFrame shaped as the input table on its regular grid (DatetimeIndex `time`, a column
    per series): observed values as they were, gaps filled with the members' median."""
    observed = observed_of(data, imputed)
    cols = {}
    for lab, vals in _series_arrays(imputed):
        vals = np.asarray(vals, dtype=np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(vals, axis=0)
        cols[lab] = np.where(observed[lab], vals[0], med)
    return pd.DataFrame(cols, index=pd.DatetimeIndex(imputed["time"].values, name="time")).rename_axis(
        columns="series")
