"""Sampling grids against the schedule: uniform in t, uniform in log-SNR, and EDM's rho spacing, for the deterministic
samplers on a 2-D Gaussian mixture whose eps is known exactly and then perturbed by a known error.

Run: python benchmarks/grids.py [--n 20000] [--errors 0,0.05] [--out benchmarks/results]
Each sampler sees eps (1 + error) instead of the exact eps, so every step's error is known; a grid that spends its
first steps where alpha is tiny (the molecules' polynomial schedule: alpha(1) ~ 0.003) magnifies it. Prints and
writes benchmarks/results/grids.md (its <!-- latest --> block): sliced Wasserstein to an exact sample per schedule, sampler, steps and spacing,
next to the null level (two exact samples), and the spacing each sampler does best with, for each error level
(0 = the exact eps: the grids' own discretisation error).
"""
from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import torch

from gendiff import samplers, schedules, spaces, toy

from _machine import machine  # noqa: E402  (python puts the script's folder, benchmarks/, on sys.path)
from _results import RESULTS_DIR, write_block  # noqa: E402

SCHEDULES = ["polynomial", "cosine", "linear", "vp", "flow"]
SAMPLERS = ["euler", "heun", "dpm_solver_pp"]
STEPS = [10, 20, 50]
SPACINGS = ["uniform", "log_snr", "karras"]


def perturbed(gm, schedule, error: float):
    """The exact model with eps scaled by (1 + error): a known eps error at every evaluation."""
    if float(schedule.alpha_sigma(schedule.t_max)[0]) == 0:
        return toy.ExactPair(gm, schedule, scale=1 + error)
    exact = gm.eps_model(schedule)
    return lambda x, t, **kw: (1 + error) * exact(x, t, **kw)


def run(n: int, error: float) -> tuple[list, float]:
    gm = toy.GaussianMixture.default_2d()
    g = torch.Generator().manual_seed(0)
    ref, ref2 = gm.sample(n, g), gm.sample(n, g)
    null = toy.sliced_wasserstein(ref, ref2)
    space = spaces.EuclideanSpace()
    rows = []
    for sched_name in SCHEDULES:
        schedule = schedules.get_schedule(sched_name)
        model = perturbed(gm, schedule, error)
        for name in SAMPLERS:
            for steps in STEPS:
                for spacing in SPACINGS:
                    gen = torch.Generator().manual_seed(1)
                    x_T = samplers.prior_sample(schedule, space, torch.zeros(n, 2), generator=gen)
                    x = samplers.sample(name, model, x_T, schedule, space, steps, generator=gen, spacing=spacing)
                    sw = toy.sliced_wasserstein(x, ref) if torch.isfinite(x).all() else float("nan")
                    nfe = samplers.nfe(name, steps, schedule, spacing=spacing)
                    rows.append((sched_name, name, steps, spacing, nfe, sw))
                    print(f"{sched_name:10s} {name:14s} {steps:3d} {spacing:8s} NFE {nfe:3d} SW {sw:.4f}", flush=True)
    return rows, null


def table(rows, null, n: int, error: float) -> list[str]:
    by_key = {(r[0], r[1], r[2], r[3]): r for r in rows}
    what = "the exact eps" if error == 0 else f"the model's eps scaled by {1 + error} at every evaluation"
    lines = [
        f"### eps error {error:+.0%}" if error else "### exact eps",
        "",
        f"Sliced Wasserstein between {n} samples and an exact sample, {what}; null level (two exact samples) = "
        f"{null:.4f}. Lower is better; bold: the best spacing in the row.",
        "",
        "| schedule | sampler | steps | NFE (uniform / log-SNR / rho) | uniform | log-SNR | rho (karras) |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: |",
    ]
    wins = {name: {s: 0 for s in SPACINGS} for name in SAMPLERS}
    for sched_name in SCHEDULES:
        for name in SAMPLERS:
            for steps in STEPS:
                cells = [by_key[(sched_name, name, steps, sp)] for sp in SPACINGS]
                best = min(range(3), key=lambda i: cells[i][5])
                wins[name][SPACINGS[best]] += 1
                sws = [f"**{c[5]:.4f}**" if i == best else f"{c[5]:.4f}" for i, c in enumerate(cells)]
                nfes = " / ".join(str(c[4]) for c in cells)
                lines.append(f"| {sched_name} | {name} | {steps} | {nfes} | " + " | ".join(sws) + " |")
    lines += ["", "Rows won per spacing: " + "; ".join(
        f"{name}: " + ", ".join(f"{s} {k}" for s, k in w.items()) for name, w in wins.items()), ""]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--errors", default="0,0.05", help="relative eps errors injected at every evaluation")
    ap.add_argument("--out", default=str(RESULTS_DIR))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    errors = [float(e) for e in args.errors.split(",")]
    lines = [
        "## Sampling grids: uniform, log-SNR and EDM rho spacing (2-D mixture, exact and perturbed eps)",
        "",
        f"Command: `python benchmarks/grids.py --n {args.n} --errors {args.errors}`; machine: {machine()}; "
        f"date: {datetime.date.today()}. Defaults chosen from these tables: `gendiff.samplers.DEFAULT_SPACING` "
        "and `auto_spacing` (log-SNR for heun and DPM-Solver++ where 0 < alpha(t_max) < 0.005).",
        "",
    ]
    for error in errors:
        rows, null = run(args.n, error)
        lines += table(rows, null, args.n, error)
    write_block(Path(args.out) / "grids.md", "\n".join(lines), title="# Sampling grids (benchmarks/grids.py)")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
