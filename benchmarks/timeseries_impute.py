"""Imputation benchmark on real series, CSDI's protocol (Tashiro et al. 2021, sec. 6.1), run by
`benchmarks/timeseries.py --impute` (and with `--csdi-repo PATH`, ermongroup/CSDI's own code beside gendiff):

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/timeseries.py --impute --minutes 4 --csdi-repo /tmp/csdi

For each series, gendiff trains an imputation run (train(task="impute"), window `window` steps) on the training
period for a wall-clock budget; with a CSDI checkout, CSDI_Physio trains on the same windows of the same
normalised values for the CPU time gendiff took, on as many threads (_csdi_harness.py). Then 10% of the observed values of the
evaluation period are hidden (seeded), the whole series is imputed by each method (`members` draws), and
everything is scored by gendiff's evaluator (impute_eval.score_draws) on the same hidden entries: CRPS (fair and
standard), normalised CRPS (exact, and CSDI's 19-quantile definition), MAE of the median, RMSE of the mean,
beside linear interpolation and the seasonal baseline. Results: benchmarks/results/timeseries_impute.md (its <!-- latest --> block).
"""
from __future__ import annotations

import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "timeseries_impute.md"

# periods inclusive; window in steps (64 weeks of CO2 hold a year and a quarter; 64 half hours of demand 32 h)
CONFIGS = {
    "co2": dict(window=64, train_period=("1958-03-29", "1991-12-28"), eval_period=("1992-01-04", "2001-12-29"),
                unit="week"),
    "taylor": dict(window=64, train_period=("2000-06-05", "2000-08-13T23:30"),
                   eval_period=("2000-08-14", "2000-08-27T23:30"), unit="half hour"),
}


def run_gendiff(name: str, df, out: Path, seconds: float, members: int, width: int, sampler: str, steps: int,
                seed: int, fraction: float) -> dict:
    from gendiff.domains import timeseries

    cfg = CONFIGS[name]
    run = out / name / "impute-run"
    shutil.rmtree(run, ignore_errors=True)  # a fresh run: the budget is this sitting's
    summary = timeseries.train(df, run, task="impute", window=cfg["window"], train_period=cfg["train_period"],
                               max_steps=1_000_000, time_budget=seconds, net={"width": width}, batch_size=32,
                               sampler=sampler, sample_steps=steps, progress=False, seed=seed)
    train_cpu, train_wall = summary["cpu_seconds"], summary["seconds"]  # the training loop's, as CSDI's
    result = timeseries.evaluate_imputation(run, df, fraction=fraction, seed=seed, members=members,
                                            period=cfg["eval_period"])
    result.update(train_steps=int(summary["step"]), train_cpu=round(train_cpu, 1), train_wall=round(train_wall, 1),
                  parameters=int(summary["parameters"]))
    return result


def run_csdi(repo, name: str, df, cpu_seconds: float, members: int, seed: int, fraction: float) -> dict:
    """CSDI trained (for `cpu_seconds` of CPU time) and sampled by its own code on the series, scored by
    gendiff's evaluator on the entries evaluate_imputation hid."""
    import _csdi_harness as harness

    from gendiff.domains.timeseries.data import period_indices
    from gendiff.domains.timeseries.impute_eval import hide_observed, score_draws
    from gendiff.domains.timeseries.tabular import from_pandas

    cfg = CONFIGS[name]
    ds = from_pandas(df)
    truth = ds["value"].transpose("time", "series").values.astype(np.float64)
    train_rows = period_indices(ds, cfg["train_period"], name, "training period")
    rows = period_indices(ds, cfg["eval_period"], name, "evaluation period")
    hidden = hide_observed(np.isfinite(truth), fraction, seed, rows)  # the entries evaluate_imputation hides
    mean, std = np.nanmean(truth[train_rows], 0), np.nanstd(truth[train_rows], 0)
    norm = (truth - mean) / std
    fit = harness.train(repo, norm, train_rows, cfg["window"], cpu_seconds, seed=seed)
    given = np.isfinite(truth) & ~hidden
    t0 = time.perf_counter()
    draws = harness.impute(fit["model"], norm, given, hidden, cfg["window"], members, seed=seed) * std + mean
    seconds_impute = time.perf_counter() - t0
    rec = {"system": "csdi", **score_draws(draws[:, hidden].T, truth[hidden]), "seconds": round(seconds_impute, 3)}
    return {"record": rec, "train_steps": fit["steps"], "train_cpu": round(fit["cpu_seconds"], 1),
            "train_wall": round(fit["wall_seconds"], 1), "parameters": fit["parameters"]}


def table(name: str, ours: dict, csdi: dict | None) -> list[str]:
    """method, train CPU-s, steps, CRPS, normalised CRPS (exact, CSDI's), MAE; ratios ours / CSDI."""
    by = {r["system"]: r for r in ours["records"]}
    rows = [("gendiff", ours["train_cpu"], ours["train_steps"], by["model"])]
    if csdi is not None:
        rows.append(("CSDI (ermongroup code)", csdi["train_cpu"], csdi["train_steps"], csdi["record"]))
    rows += [("linear interpolation", 0.0, "-", by["linear_interpolation"]),
             (f"seasonal ({ours['season']} steps)", 0.0, "-", by["seasonal"])]
    lines = ["| method | train CPU-s | steps | CRPS (fair) | CRPS (standard) | normalised CRPS | CSDI's normalised "
             "CRPS (19 quantiles) | MAE (median) | RMSE (mean) |", "|---|---|---|---|---|---|---|---|---|"]
    for label, cpu, steps, r in rows:
        lines.append(f"| {label} | {cpu:.0f} | {steps} | {r['crps']:.4g} | {r['crps_standard']:.4g} | "
                     f"{r['ncrps']:.4g} | {r['ncrps_csdi']:.4g} | {r['mae']:.4g} | {r['rmse']:.4g} |")
    if csdi is not None:
        c = csdi["record"]
        m = by["model"]
        lines.append(f"| ratio gendiff / CSDI | {ours['train_cpu'] / max(csdi['train_cpu'], 1e-9):.2f} | | "
                     f"{m['crps'] / c['crps']:.3f} | {m['crps_standard'] / c['crps_standard']:.3f} | "
                     f"{m['ncrps'] / c['ncrps']:.3f} | {m['ncrps_csdi'] / c['ncrps_csdi']:.3f} | "
                     f"{m['mae'] / c['mae']:.3f} | {m['rmse'] / c['rmse']:.3f} |")
    return lines


def run(args, command: str) -> int:
    from _csdi_harness import missing
    from _machine import machine

    from gendiff.domains.timeseries import real_series

    torch.set_num_threads(args.threads)
    names = [n for n in args.datasets.split(",") if n]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise SystemExit(f"timeseries.py: error: --impute knows dataset(s) {', '.join(CONFIGS)}, not "
                         f"{', '.join(unknown)}")
    why = missing(args.csdi_repo)
    if args.csdi_repo is not None and why:
        print(f"CSDI skipped: {why}")
    out = Path(args.out)
    seconds = 60.0 * args.minutes
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"### Time-series imputation benchmark ({stamp})", "", f"Command: `{command}`", "",
             f"Machine: {machine()}, the same for every method", ""]
    if why:
        lines += [f"CSDI not run: {why}.", ""]
    for name in names:
        df = real_series.load(name)
        cfg = CONFIGS[name]
        ours = run_gendiff(name, df, out, seconds, args.members, args.width, args.sampler, args.sample_steps,
                           args.seed, args.fraction)
        csdi = None if why else run_csdi(args.csdi_repo, name, df, ours["train_cpu"], args.members, args.seed,
                                         args.fraction)  # CSDI gets the CPU time gendiff's training took
        block = table(name, ours, csdi)
        print(f"\n{name}:\n" + "\n".join(block))
        lines += [f"**{name}** ({len(df)} steps of a {cfg['unit']}, {int(df.isna().sum().sum())} missing; trained "
                  f"on {cfg['train_period'][0]} to {cfg['train_period'][1]}, gendiff for {args.minutes:g} min wall, "
                  f"CSDI for the CPU time that took, "
                  f"windows of {cfg['window']} steps; {ours['hidden']} observed values of {cfg['eval_period'][0]} "
                  f"to {cfg['eval_period'][1]} hidden ({args.fraction:.0%}, seed {args.seed}), the whole series "
                  f"imputed with {args.members} members (gendiff: {ours['sampler']} {ours['sampler_steps']} steps, "
                  f"{ours['records'][0]['seconds']:.0f} s" + ("" if csdi is None else
                                                            f"; CSDI: its 50-step ancestral sampler, "
                                                            f"{csdi['record']['seconds']:.0f} s") +
                  f"); gendiff {ours['parameters']} parameters" +
                  ("" if csdi is None else f", CSDI {csdi['parameters']}") + "; scores in data units)", ""]
        lines += block + [""]
    if not args.no_write:
        from _results import write_block

        write_block(RESULTS, "\n".join(lines), title="# Time-series imputation (benchmarks/timeseries.py --impute)")
    return 0
