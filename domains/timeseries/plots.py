"""PNG figures: skill against lead time per system, rank histograms, maps of ensemble mean, spread and truth."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from gendiff.io import atomic_path

COLORS = {"model": "C3", "persistence": "C0", "climatology": "C2", "linear": "C1", "ar_calibrated": "C4"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return Path(path)


def plot_skill(records: list[dict], path) -> Path:
    """Fair CRPS, RMSE, spread and spread-skill ratio against lead time, one line per system (and variable)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    keys = sorted({(r["variable"], r["system"]) for r in records})
    for v, system in keys:
        rows = sorted((r for r in records if r["variable"] == v and r["system"] == system),
                      key=lambda r: r["lead_time_hours"])
        lead = [r["lead_time_hours"] for r in rows]
        for ax, metric in zip(axes, ("crps", "rmse", "spread", "ssr")):
            vals = [np.nan if r[metric] is None else r[metric] for r in rows]
            ax.plot(lead, vals, marker=".", color=COLORS.get(system), label=f"{v} {system}" if len(
                {k[0] for k in keys}) > 1 else system)
    for ax, title in zip(axes, ("CRPS (fair)", "ensemble-mean RMSE", "ensemble spread", "spread / skill")):
        ax.set_title(title)
        ax.set_xlabel("lead time (h)")
        ax.grid(alpha=0.3)
    axes[3].axhline(1.0, color="k", lw=0.8, ls="--")
    axes[0].legend(fontsize=8)
    return _save(fig, path)


def plot_rank_histograms(hists: dict, path) -> Path:
    """Rank histograms (summed over lead times) per (system, variable); flat = calibrated."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(hists), figsize=(3.2 * len(hists), 3), squeeze=False)
    for ax, ((system, v), h) in zip(axes[0], hists.items()):
        counts = h.sum([d for d in h.dims if d != "rank"]).values.astype(float)
        ax.bar(np.arange(len(counts)), counts / max(counts.sum(), 1), color=COLORS.get(system, "C7"))
        ax.axhline(1.0 / len(counts), color="k", lw=0.8, ls="--")
        ax.set_title(f"{system} ({v})", fontsize=9)
        ax.set_xlabel("rank of truth")
    return _save(fig, path)


MAX_LEAD_PANELS = 8
MAX_LEAD_ROWS = 12  # (system, variable) rows of the per-lead figure: the model's first (Berlin's 9 variables x 6
# systems drew 432 panels, minutes of matplotlib)


def plot_rank_histograms_by_lead(hists: dict, path) -> Path:
    """Rank histograms per lead time: a row per (system, variable) (at most MAX_LEAD_ROWS, the model's first), a
    column per lead (at most MAX_LEAD_PANELS, evenly spread over the leads); flat = calibrated at that lead, U = too
    narrow, dome = too wide. All counts per lead are in rank_histograms.nc."""
    plt = _plt()
    keys = sorted(hists, key=lambda k: k[0] != "model")[:MAX_LEAD_ROWS]  # stable: the rest keep their order
    hists = {k: hists[k] for k in keys}
    first = next(iter(hists.values()))
    leads = first["lead_time"].values if "lead_time" in first.dims else np.array([None])
    pick = np.unique(np.linspace(0, len(leads) - 1, min(len(leads), MAX_LEAD_PANELS)).round().astype(int))
    fig, axes = plt.subplots(len(hists), len(pick), figsize=(2.2 * len(pick), 2.3 * len(hists)), squeeze=False,
                             sharey="row")
    fig.subplots_adjust(hspace=0.7)
    for row, ((system, v), h) in enumerate(hists.items()):
        for col, k in enumerate(pick):
            sel = h.isel(lead_time=k) if "lead_time" in h.dims else h
            counts = sel.sum([d for d in sel.dims if d != "rank"]).values.astype(float)
            ax = axes[row, col]
            ax.bar(np.arange(len(counts)), counts / max(counts.sum(), 1), color=COLORS.get(system, "C7"))
            ax.axhline(1.0 / len(counts), color="k", lw=0.8, ls="--")
            hours = None if leads[k] is None else leads[k] / np.timedelta64(1, "h")
            ax.set_title(f"{system} ({v})" + ("" if hours is None else f", {hours:g} h"), fontsize=8)
            ax.tick_params(labelsize=7)
    return _save(fig, path)


def plot_maps(forecast: xr.DataArray, truth: xr.DataArray, path, init_index: int = 0, lead_index: int = -1) -> Path:
    """Ensemble mean, spread and truth for one case; 2-D fields as maps, 1-D as lines, more dims: first slices."""
    plt = _plt()
    f = forecast.isel(init_time=init_index, lead_time=lead_index)
    y = truth.isel(init_time=init_index, lead_time=lead_index)
    space = [d for d in f.dims if d != "member"]
    extra = space[:-2] if len(space) > 2 else []
    f, y = f.isel({d: 0 for d in extra}), y.isel({d: 0 for d in extra})
    mean, spread = f.mean("member"), f.std("member", ddof=1) if f.sizes["member"] > 1 else f.isel(member=0) * 0
    when = f"init {np.datetime_as_string(forecast.init_time.values[init_index], unit='h')}, " \
           f"lead {int(forecast.lead_time.values[lead_index] / np.timedelta64(1, 'h'))} h"
    units = forecast.attrs.get("units", "")
    if len(space) - len(extra) == 2:
        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        lo, hi = float(np.nanmin([mean.min(), y.min()])), float(np.nanmax([mean.max(), y.max()]))
        for ax, da, title, kw in ((axes[0], mean, "ensemble mean", {"vmin": lo, "vmax": hi}),
                                  (axes[1], spread, "ensemble spread", {"cmap": "viridis"}),
                                  (axes[2], y, "truth", {"vmin": lo, "vmax": hi})):
            da.plot(ax=ax, cbar_kwargs={"label": units}, **kw)
            ax.set_title(f"{title}\n{when}", fontsize=9)
    else:
        fig, ax = plt.subplots(figsize=(8, 3.5))
        xs = np.arange(mean.size) if not mean.dims else mean[mean.dims[0]].values
        ax.fill_between(xs, (mean - spread).values, (mean + spread).values, alpha=0.3, label="mean +/- spread")
        ax.plot(xs, mean.values, label="ensemble mean")
        ax.plot(xs, y.values, "k--", label="truth")
        ax.set_title(f"{forecast.name}: {when}", fontsize=9)
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_plume(forecast: xr.DataArray, truth: xr.DataArray, path, init_index: int = 0, points=None,
               context_hours: float = 48.0) -> Path:
    """Forecast plume: every member, the ensemble mean and the 10-90 % band against lead time, with the truth
    (context before the init and the verifying values after), for a few points (`points`: indices into the
    flattened non-member dims; default four spread over them)."""
    plt = _plt()
    f = forecast.isel(init_time=init_index)
    space = [d for d in f.dims if d not in ("member", "lead_time")]
    flat = f.stack(point=space) if space else f.expand_dims(point=[0])
    n_points = flat.sizes["point"]
    points = list(points) if points is not None else sorted({int(i) for i in np.linspace(0, n_points - 1, 4)})
    init = forecast["init_time"].values[init_index]
    lead_h = forecast["lead_time"].values / np.timedelta64(1, "h")
    t = truth.sel(time=slice(init - np.timedelta64(int(context_hours * 3600), "s"),
                             init + forecast["lead_time"].values[-1]))
    t_flat = t.stack(point=space) if space else t.expand_dims(point=[0], axis=-1)
    t_h = (t["time"].values - init) / np.timedelta64(1, "h")
    fig, axes = plt.subplots(1, len(points), figsize=(4.2 * len(points), 3.4), squeeze=False)
    for ax, p in zip(axes[0], points):
        ens = flat.isel(point=p).transpose("member", "lead_time").values
        for m in ens:
            ax.plot(lead_h, m, color="C3", lw=0.5, alpha=0.35)
        ax.fill_between(lead_h, np.nanpercentile(ens, 10, 0), np.nanpercentile(ens, 90, 0), color="C3", alpha=0.2,
                        label="10-90 %")
        ax.plot(lead_h, np.nanmean(ens, 0), color="C3", lw=1.8, label="ensemble mean")
        ax.plot(t_h, t_flat.isel(point=p).values, "k", lw=1.4, label="truth")
        ax.axvline(0, color="k", lw=0.8, ls=":")
        label = ", ".join(f"{d}={v}" for d, v in zip(space, np.atleast_1d(flat["point"].values[p])
                                                    if len(space) == 1 else flat["point"].values[p]))
        ax.set_title(f"{forecast.name} {label}", fontsize=9)
        ax.set_xlabel("hours from init")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"init {np.datetime_as_string(init, unit='h')}, {forecast.sizes['member']} members", fontsize=10)
    return _save(fig, path)
