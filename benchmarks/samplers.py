"""Sample quality against network evaluations for every sampler, on a 2-D Gaussian mixture with exact eps.

Run: python benchmarks/samplers.py [--n 20000] [--out benchmarks/results]
Prints a table (sliced Wasserstein distance to an exact sample, per sampler, schedule and step count, with the NFE),
writes benchmarks/results/samplers_sw_vs_nfe.png and the table into benchmarks/results/samplers.md (its <!-- latest -->
block; the notes around it stay). The null level is
the distance between two independent exact samples of the same size: no sampler can be told apart below it.
"""
from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path

import torch

from gendiff import samplers, schedules, spaces, toy

from _machine import machine  # noqa: E402  (python puts the script's folder, benchmarks/, on sys.path)
from _results import RESULTS_DIR, write_block  # noqa: E402

STEPS = {
    "ancestral": [10, 20, 50, 100, 250, 1000],
    "ddim": [5, 10, 20, 50, 100],
    "euler_maruyama": [10, 20, 50, 100, 250, 1000],
    "pc": [10, 20, 50, 100, 250, 500],
    "langevin": [10, 20, 50, 100, 200],
    "heun": [3, 5, 10, 18, 35],
    "dpm_solver_pp": [5, 10, 15, 20, 50],
}
SCHEDULES = ["linear", "vp", "edm"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--out", default=str(RESULTS_DIR))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gm = toy.GaussianMixture.default_2d()
    g = torch.Generator().manual_seed(0)
    ref, ref2 = gm.sample(args.n, g), gm.sample(args.n, g)
    null = toy.sliced_wasserstein(ref, ref2)
    space = spaces.EuclideanSpace()
    rows = []
    print(f"null sliced Wasserstein (two exact samples of {args.n}): {null:.4f}")
    print(f"{'schedule':10s} {'sampler':15s} {'steps':>5s} {'NFE':>5s} {'SW':>8s} {'SW/null':>7s} {'sec':>6s}")
    for sched_name in SCHEDULES:
        schedule = schedules.get_schedule(sched_name)
        model = gm.eps_model(schedule)
        for name, step_list in STEPS.items():
            for steps in step_list:
                gen = torch.Generator().manual_seed(1)
                x_T = samplers.prior_sample(schedule, space, torch.zeros(args.n, 2), generator=gen)
                t0 = time.perf_counter()
                x = samplers.sample(name, model, x_T, schedule, space, steps, generator=gen)
                sec = time.perf_counter() - t0
                sw = toy.sliced_wasserstein(x, ref) if torch.isfinite(x).all() else float("nan")
                nfe = samplers.nfe(name, steps, schedule)
                rows.append((sched_name, name, steps, nfe, sw))
                print(f"{sched_name:10s} {name:15s} {steps:5d} {nfe:5d} {sw:8.4f} {sw / null:7.2f} {sec:6.1f}", flush=True)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SCHEDULES), figsize=(5 * len(SCHEDULES), 4), sharey=True)
    for ax, sched_name in zip(axes, SCHEDULES):
        for name in STEPS:
            pts = [(r[3], r[4]) for r in rows if r[0] == sched_name and r[1] == name]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        ax.axhline(null, color="k", ls="--", lw=1, label="null (exact vs exact)")
        ax.set(xscale="log", yscale="log", xlabel="network evaluations", title=f"schedule: {sched_name}")
    axes[0].set_ylabel("sliced Wasserstein to the mixture")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    out = Path(args.out)
    fig.savefig(out / "samplers_sw_vs_nfe.png", dpi=110)

    lines = [
        "## Samplers: quality against network evaluations (2-D Gaussian mixture, exact eps)",
        "",
        f"Command: `python benchmarks/samplers.py --n {args.n}`; machine: {machine()}; date: {datetime.date.today()}.",
        f"Sliced Wasserstein (256 directions) between {args.n} samples and an exact sample; null level (two exact "
        f"samples) = {null:.4f}. Plot: `benchmarks/results/samplers_sw_vs_nfe.png`.",
        "",
        "| schedule | sampler | steps | NFE | SW | SW / null |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    lines += [f"| {s} | {n} | {k} | {f} | {sw:.4f} | {sw / null:.2f} |" for s, n, k, f, sw in rows]
    write_block(out / "samplers.md", "\n".join(lines), title="# Samplers (benchmarks/samplers.py)")


if __name__ == "__main__":
    main()
