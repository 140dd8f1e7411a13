"""Weather networks against the number of locations: parameters, train step time and peak memory, old design
(unet1d: every cell a channel) against new (gridnet: one temporal U-Net shared by every location), side by side.

    python benchmarks/weather.py scale [--sizes 100,300,1000,3000,10000] [--batch 2] [--patch 256]

Each (design, size) runs in its own process (one torch thread): the network exactly as `train` builds it for a
regular lat/lon grid of that many cells (one variable, 12 + 12 steps), a batch of random windows through
loss.make_step_fn and an Adam step; the time is the median of 3 steps after one warm-up, the peak memory the
process's maximum resident set less that of the same process before the network was built. gridnet is measured
on the whole grid and on training patches of --patch locations (train(patch=...), the cost then independent of
the grid). Writes the <!-- latest --> block of benchmarks/results/weather_scale.md and
benchmarks/results/weather_scale.png, and prints the table.
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONTEXT = HORIZON = 12


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure(design: str, n: int, batch: int, patch: int | None) -> dict:
    """One (design, size) in this process; returns parameters, seconds per step and peak MB."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from gendiff.losses import constant_weight
    from gendiff.schedules import get_schedule, schedule_config
    from gendiff.domains.timeseries.config import GRID_DEFAULTS, NET_DEFAULTS
    from gendiff.domains.timeseries.sharednet import location_positions
    from gendiff.domains.timeseries.inputs import cond_channels
    from gendiff.domains.timeseries.loss import VariableBalancedSpace, make_step_fn
    from gendiff.domains.timeseries.network import build_denoiser
    import xarray as xr

    side_lat = max(1, int(round(math.sqrt(n))))
    side_lon = max(1, n // side_lat)
    n = side_lat * side_lon
    grid = xr.Dataset({"t": (("latitude", "longitude"), np.zeros((side_lat, side_lon), np.float32))},
                      coords={"latitude": np.linspace(60, 40, side_lat), "longitude": np.linspace(-10, 10, side_lon)})
    length = CONTEXT + HORIZON
    sched = get_schedule("cosine")
    base_cfg = {"schedule": schedule_config(sched), "prediction": "x0", "precondition": True, "sigma_data": 1.0}
    g = torch.Generator().manual_seed(0)
    rss0 = _rss_mb()
    locs = n if patch is None else min(patch, n)
    if design == "unet1d":
        net = {**NET_DEFAULTS, "mults": list(NET_DEFAULTS["mults"]), "channels": n,
               "cond_channels": cond_channels(n, True), "known_in_cond": True}
        cfg = {**base_cfg, "arch": "unet1d", "net": net}
        c = n
        cond = torch.randn(batch, cond_channels(n, True), length, generator=g)
    else:
        pos, _ = location_positions(grid, ("latitude", "longitude"))
        net = {**GRID_DEFAULTS, "mults": list(GRID_DEFAULTS["mults"]), "channels": 1, "static": 3, "pos_dims": 3}
        cfg = {**base_cfg, "arch": "gridnet", "net": net}
        c = locs
        static = torch.from_numpy(pos[:locs].astype(np.float32))
        cond = {"seq": torch.randn(batch, 2 * c + 5, length, generator=g), "static": static.expand(batch, -1, -1)}
    den = build_denoiser(cfg)
    x0 = torch.randn(batch, c, length, generator=g)
    mask = torch.zeros(batch, c, length, dtype=torch.bool)
    mask[..., CONTEXT:] = True
    batch_d = {"x0": x0, "mask": mask, "cond": cond}
    step_fn = make_step_fn(sched, VariableBalancedSpace([c]), 0.0, constant_weight())
    opt = torch.optim.Adam(den.parameters(), lr=1e-4)
    times = []
    for i in range(4):
        t0 = time.perf_counter()
        loss = step_fn(den, batch_d, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    return {"design": design, "locations": n, "trained_locations": c if design == "gridnet" else n,
            "patch": patch, "batch": batch, "parameters": int(sum(p.numel() for p in den.parameters())),
            "step_seconds": float(sorted(times)[len(times) // 2]), "peak_mb": max(0.0, _rss_mb() - rss0)}


def run_all(sizes, batch: int, patch: int) -> list[dict]:
    rows = []
    for n in sizes:
        for design, p in (("unet1d", None), ("gridnet", None), ("gridnet", patch)):
            cmd = [sys.executable, str(Path(__file__).resolve()), "--one", design, str(n), str(batch),
                   "0" if p is None else str(p)]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stderr[-2000:]}")
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows, patch: int) -> list[str]:
    by = {}
    for r in rows:
        key = "old" if r["design"] == "unet1d" else ("new" if r["patch"] is None else "patch")
        by.setdefault(r["locations"], {})[key] = r
    out = ["| locations | unet1d params | unet1d step s | unet1d peak MB | gridnet params | gridnet step s "
           f"(whole grid) | gridnet peak MB | gridnet step s (patch {patch}) | gridnet peak MB (patch) |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n in sorted(by):
        o, w, p = by[n].get("old"), by[n].get("new"), by[n].get("patch")
        out.append(f"| {n:,} | {o['parameters']:,} | {o['step_seconds']:.3f} | {o['peak_mb']:.0f} | "
                   f"{w['parameters']:,} | {w['step_seconds']:.3f} | {w['peak_mb']:.0f} | "
                   f"{p['step_seconds']:.3f} | {p['peak_mb']:.0f} |")
    return out


def plot(rows, path: Path, patch: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    series = [("unet1d", None, "unet1d (cells as channels)"), ("gridnet", None, "gridnet, whole grid"),
              ("gridnet", patch, f"gridnet, patch {patch}")]
    for ax, key, label in zip(axes, ("parameters", "step_seconds", "peak_mb"),
                              ("parameters", "train step (s, 1 thread)", "peak memory (MB)")):
        for design, p, name in series:
            pts = sorted((r["locations"], r[key]) for r in rows if r["design"] == design and r["patch"] == p)
            ax.plot([a for a, _ in pts], [max(b, 1e-3) for _, b in pts], marker="o", label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("locations")
        ax.set_title(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100,300,1000,3000,10000")
    p.add_argument("--batch", type=int, default=1, help="windows per train step")
    p.add_argument("--patch", type=int, default=256, help="locations per training patch (gridnet)")
    p.add_argument("--results", default=str(HERE / "results" / "weather_scale.md"))
    p.add_argument("--png", default=str(HERE / "results" / "weather_scale.png"))
    p.add_argument("--one", nargs=4, metavar=("DESIGN", "N", "BATCH", "PATCH"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        design, n, batch, patch = args.one
        print(json.dumps(measure(design, int(n), int(batch), int(patch) or None)))
        return 0
    sizes = [int(s) for s in args.sizes.split(",") if s]
    t0 = time.time()
    rows = run_all(sizes, args.batch, args.patch)
    from _machine import machine  # python puts the script's folder, benchmarks/, on sys.path
    from _results import write_block

    lines = [
             f"Command: `python benchmarks/weather.py scale --sizes {args.sizes} --batch {args.batch} "
             f"--patch {args.patch}`; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {machine('cpu')}; "
             f"one torch thread, one process per row; {time.time() - t0:.0f} s in all.", "",
             "One variable on a regular lat/lon grid, windows of 12 + 12 steps, batch of "
             f"{args.batch} windows, one Adam step (median of 3 after a warm-up); peak = the process's maximum "
             "resident set less its size before the network was built. unet1d as train builds it (width 64, "
             "every cell a channel in and out); gridnet with train's defaults (width 32, neighbourhood attention "
             "over the 16 nearest locations at the coarsest temporal level and the middle block).", "", *table(rows, args.patch), "",
             f"![scale]({Path(args.png).name})", "", "```json", json.dumps(rows, indent=None), "```"]
    write_block(args.results, "\n".join(lines),
                title="# Weather networks against the number of locations (benchmarks/weather_scale.py)")
    plot(rows, Path(args.png), args.patch)
    print("\n".join(table(rows, args.patch)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
