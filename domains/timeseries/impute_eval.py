"""Imputation skill as CSDI measures it (Tashiro et al. 2021, sec. 6.1): hide a fraction of the observed values at
random, impute them, score the draws at the hidden entries; against linear interpolation and a seasonal baseline,
scored the same way.

Scores over the N hidden entries (data units): `crps` the fair ensemble CRPS (metrics.crps_ensemble, as the
forecasts are scored), `crps_standard` the M^2 one, `ncrps` sum(crps_standard) / sum|y| (the exact counterpart of
CSDI's normalised CRPS), `ncrps_csdi` CSDI's own definition (utils.calc_quantile_CRPS: the quantile loss at the 19
levels 0.05, ..., 0.95 of the members, normalised by sum|y|), `mae` of the members' median, `rmse` of their mean.
A one-member (deterministic) system has crps = crps_standard = its MAE, and ncrps_csdi = sum|y - x| / sum|y|.
"""
from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd
import xarray as xr

from gendiff.errors import ConfigError, DataError

from .data import open_data, period_indices, time_step
from .gapfill import impute
from .scores import crps_ensemble
from .timeaxis import CalendarStep

CSDI_QUANTILES = np.arange(0.05, 1.0, 0.05)  # CSDI utils.calc_quantile_CRPS
SYSTEMS = ("model", "linear_interpolation", "seasonal")


def quantile_crps_normalised(samples: np.ndarray, truth: np.ndarray, quantiles=CSDI_QUANTILES) -> float:
    """CSDI's normalised CRPS: (1 / Q) sum_q 2 sum_n |(y_n - x_q,n) ((y_n <= x_q,n) - q)| / sum_n |y_n|, with
    x_q,n the q-quantile of the members at entry n (linear interpolation, as torch.quantile). samples (N, M),
    truth (N,)."""
    samples, truth = np.asarray(samples, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    denom = np.abs(truth).sum()
    if not denom > 0:
        raise DataError("normalised CRPS: the hidden targets sum to 0 in absolute value")
    total = 0.0
    for q in quantiles:
        xq = np.quantile(samples, q, axis=1)
        total += 2.0 * np.abs((xq - truth) * ((truth <= xq) * 1.0 - q)).sum() / denom
    return float(total / len(quantiles))


def score_draws(samples: np.ndarray, truth: np.ndarray) -> dict:
    """The scores of module doc over hidden entries: samples (N, M) in data units, truth (N,)."""
    samples, truth = np.asarray(samples, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if samples.ndim != 2 or samples.shape[0] != truth.shape[0] or not len(truth):
        raise DataError(f"imputation scores: samples {samples.shape} do not match {truth.shape[0]} targets")
    if not (np.isfinite(samples).all() and np.isfinite(truth).all()):
        raise DataError("imputation scores: a hidden entry was left unimputed (NaN)")
    x = xr.DataArray(samples, dims=("target", "member"))
    y = xr.DataArray(truth, dims=("target",))
    fair = crps_ensemble(x, y, "member", fair=True).values
    standard = crps_ensemble(x, y, "member", fair=False).values
    return {"n": int(len(truth)), "members": int(samples.shape[1]), "crps": float(fair.mean()),
            "crps_standard": float(standard.mean()), "ncrps": float(standard.sum() / np.abs(truth).sum()),
            "ncrps_csdi": quantile_crps_normalised(samples, truth),
            "mae": float(np.abs(np.median(samples, axis=1) - truth).mean()),
            "rmse": float(np.sqrt(((samples.mean(1) - truth) ** 2).mean()))}


def hide_observed(observed: np.ndarray, fraction: float, seed: int = 0, rows: np.ndarray | None = None) -> np.ndarray:
    """(T, C) bool: round(fraction x n) of the n observed entries (in `rows` only, when given) chosen at random with
    `seed`, never a feature's first or last observation (so that every hidden entry lies in a gap)."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"fraction={fraction!r} must be in (0, 1)")
    pool = observed.copy()
    if rows is not None:
        keep = np.zeros(len(observed), dtype=bool)
        keep[rows] = True
        pool &= keep[:, None]
    for c in range(observed.shape[1]):
        obs = np.flatnonzero(observed[:, c])
        if len(obs):
            pool[obs[0], c] = pool[obs[-1], c] = False
    flat = np.flatnonzero(pool)
    k = int(round(fraction * observed[rows if rows is not None else slice(None)].sum()))
    if k < 1 or len(flat) < k:
        raise DataError(f"fraction={fraction}: {k} entries to hide among {len(flat)} that can be")
    hidden = np.zeros(observed.size, dtype=bool)
    hidden[np.random.default_rng(seed).choice(flat, k, replace=False)] = True
    return hidden.reshape(observed.shape)


def linear_interpolation(values: np.ndarray) -> np.ndarray:
    """(T, C): each feature's NaN filled by linear interpolation in time between its observed values (constant
    beyond its first and last); never-observed features stay NaN."""
    out = np.array(values, dtype=np.float64)
    t = np.arange(len(out))
    for c in range(out.shape[1]):
        ok = np.isfinite(out[:, c])
        if ok.any():
            out[~ok, c] = np.interp(t[~ok], t[ok], out[ok, c])
    return out


def seasonal_fill(values: np.ndarray, season: int, periods: int = 3) -> np.ndarray:
    """(T, C): each NaN filled by the mean of the observed values one season before and after (t -+ season), or
    failing both, k seasons away for the smallest k <= `periods` with one; linear interpolation where none is."""
    if season < 1:
        raise ConfigError(f"season={season} must be >= 1 step")
    vals = np.asarray(values, dtype=np.float64)
    out = vals.copy()
    todo = ~np.isfinite(vals)
    n = len(vals)
    for k in range(1, periods + 1):
        acc, cnt = np.zeros_like(vals), np.zeros_like(vals)
        for shift in (-k * season, k * season):
            src = np.arange(n) + shift
            inside = (src >= 0) & (src < n)
            v = np.full_like(vals, np.nan)
            v[inside] = vals[src[inside]]
            ok = np.isfinite(v)
            acc += np.where(ok, v, 0.0)
            cnt += ok
        fill = todo & (cnt > 0)
        out[fill] = acc[fill] / cnt[fill]
        todo &= ~fill
    if todo.any():
        lin = linear_interpolation(vals)
        out[todo] = lin[todo]
    return out


def default_season(step) -> int:
    """Steps per seasonal cycle: a day for sub-daily steps that divide it, a week of days, a year of weeks, a year
    of months or quarters."""
    if isinstance(step, CalendarStep) and 12 % step.months == 0 and step.months < 12:
        return 12 // step.months
    if isinstance(step, CalendarStep):
        raise ConfigError(f"no default season for a time step of {step}; pass season= (--season) in steps")
    day = pd.Timedelta(days=1)
    if step < day and day % step == pd.Timedelta(0):
        return int(day // step)
    if step == day:
        return 7
    if step == pd.Timedelta(days=7):
        return 52
    raise ConfigError(f"no default season for a time step of {step}; pass season= (--season) in steps")


def evaluate_imputation(run, data, *, fraction: float = 0.1, seed: int = 0, members: int = 16, period=None,
                        season: int | None = None, sampler: str | None = None, steps: int | None = None,
                        device=None, progress: bool = False, label: str | None = None) -> dict:
    """Hide `fraction` of the observed values of `data` (within `period`, START:END inclusive, when given; seeded),
    impute them with `run` (gapfill.impute) and with the baselines, and score all three on the hidden entries.

    Returns {"records": [{system, n, members, crps, crps_standard, ncrps, ncrps_csdi, mae, rmse, seconds}],
    "hidden": n, "fraction", "seed", "season"}; `seasonal` is seasonal_fill with `season` steps (default_season)."""
    label = label or (str(data) if isinstance(data, (str,)) else "data")
    ds = open_data(data, name=label)
    variables = [str(v) for v in ds.data_vars]
    step = time_step(ds)
    season = int(season) if season is not None else default_season(step)
    rows = None if period is None else period_indices(ds, period, label, "evaluation period")
    stacked = [ds[v].transpose("time", ...).values.reshape(ds.sizes["time"], -1) for v in variables]
    truth = np.concatenate(stacked, axis=1).astype(np.float64)
    hidden = hide_observed(np.isfinite(truth), fraction, seed, rows)
    masked = ds.copy()
    start = 0
    for v, arr in zip(variables, stacked):
        h = hidden[:, start:start + arr.shape[1]].reshape(ds[v].transpose("time", ...).shape)
        masked[v] = ds[v].transpose("time", ...).where(~h)
        start += arr.shape[1]
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = impute(run, masked, members=members, sampler=sampler, steps=steps, seed=seed, device=device,
                     progress=progress, label=label)
    seconds = time.perf_counter() - t0
    draws = np.concatenate([out[v].transpose("member", "time", ...).values.reshape(members, ds.sizes["time"], -1)
                            for v in variables], axis=2)  # (M, T, C)
    y = truth[hidden]
    records = [{"system": "model", **score_draws(draws[:, hidden].T, y), "seconds": round(seconds, 3)}]
    masked_values = np.where(hidden, np.nan, truth)
    for name, fill in (("linear_interpolation", linear_interpolation), ("seasonal",
                                                                        lambda a: seasonal_fill(a, season))):
        t0 = time.perf_counter()
        filled = fill(masked_values)
        records.append({"system": name, **score_draws(filled[hidden][:, None], y),
                        "seconds": round(time.perf_counter() - t0, 3)})
    return {"records": records, "hidden": int(hidden.sum()), "fraction": fraction, "seed": seed, "season": season,
            "sampler": out.attrs["sampler"], "sampler_steps": out.attrs["sampler_steps"]}


def format_records(records: list[dict]) -> str:
    """A plain-text table of evaluate_imputation's records."""
    cols = ("crps", "crps_standard", "ncrps", "ncrps_csdi", "mae", "rmse")
    lines = ["system                 " + " ".join(f"{c:>13}" for c in cols) + "      n"]
    for r in records:
        lines.append(f"{r['system']:<22} " + " ".join(f"{r[c]:13.5g}" for c in cols) + f" {r['n']:6d}")
    return "\n".join(lines)
