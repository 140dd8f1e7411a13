"""Gridded forecast skill on untouched test periods (issue 30): gendiff against EMOS on its own AR base, the AR base
alone, the AR base with calibrated Gaussian departures, persistence and climatology, per lead from 6 h to 48 h.

    OMP_NUM_THREADS=1 nice python benchmarks/weather_heldout.py --datasets ncep --minutes 30 --out runs/bench-heldout
    python benchmarks/weather_heldout.py --datasets berlin --minutes 2 --no-write      # a quick look

Splits (../shared/data/README.md), recorded with the results:
- NCEP air temperature (6-hourly, 25 x 53, North America): the network trains on 2013, the spread calibration is
  fitted on inits of Jan-Jun 2014 (the validation period: the last third of the training period), the test
  period is the inits of Jul-Dec 2014, looked at only for this table.
- ERA5 Berlin 2017 (hourly, 9 variables, 6 cells): the network trains on Jan-Aug, the calibration on Sep-Oct
  inits, the test period is the inits of Nov-Dec.

Paired 95% intervals: moving-block bootstrap over the test inits (comparison.attach_intervals); `verdict` win/loss
where the interval of the model's CRPS minus the competitor's excludes 0. Writes benchmarks/results/
weather_heldout.md (its block per dataset set)."""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _results import heading, write_block  # noqa: E402  (python puts benchmarks/ on sys.path)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results" / "weather_heldout.md"
SYSTEMS = ("model", "emos_ar", "emos_ar_past", "ar_base", "ar_calibrated", "persistence", "climatology")
REFEREES = ("emos_ar", "emos_ar_past", "ar_base")  # the model minus each, with its paired interval and verdict
LEADS = (6, 12, 24, 36, 48)
DATASETS = {
    "ncep": dict(file="ncep_air_na_2013-2014.nc", variables=None, train_period="2013-01-01:2014-06-30T18:00",
                 calibration=0.331, test_period="2014-07-01:2014-12-29", init_every="24h", context="48h",
                 horizon="48h", net={"width": 64, "mults": [1, 2, 2]}),
    "berlin": dict(file="era5_berlin_2017.nc", variables=None, train_period="2017-01-01:2017-10-31T23:00",
                   calibration=0.2, test_period="2017-11-01:2017-12-29", init_every="12h", context="48h",
                   horizon="48h", net={"width": 64, "mults": [1, 2, 2]}),
}


def run(name: str, out: Path, minutes: float, members: int, seed: int, sample_steps: int, reuse: bool = False,
        recalibrate: str | None = None) -> dict:
    from gendiff.domains import weather

    cfg = DATASETS[name]
    path = str((SHARED / cfg["file"]).resolve())
    suffix = f"-{recalibrate}" if recalibrate else ""  # recalibrate="past": the calibration refitted per init
    run_dir, fc_path = out / name / "run", out / name / f"test-forecast{suffix}.nc"
    t0 = time.perf_counter()
    card = run_dir / "card.json"
    if reuse and card.is_file():  # a finished run of an earlier invocation: score it again
        training = json.loads(card.read_text())["training"]
        summary = {"step": training["steps"], "seconds": training.get("wall_seconds")}
    else:
        summary = weather.train(path, run_dir, variables=cfg["variables"], train_period=cfg["train_period"],
                                calibration=cfg["calibration"], context=cfg["context"], horizon=cfg["horizon"],
                                net=cfg["net"], max_steps=1_000_000, time_budget=60.0 * minutes,
                                sample_steps=sample_steps, sampler="dpm_solver_pp", resume="auto", progress=False,
                                seed=seed)
    t1 = time.perf_counter()
    if reuse and fc_path.is_file():
        import xarray as xr
        fc = xr.open_dataset(fc_path)
    else:
        fc = weather.forecast(run_dir, path, init_period=cfg["test_period"], init_every=cfg["init_every"],
                              members=members, lead=cfg["horizon"], out=fc_path, progress=False, seed=seed,
                              recalibrate=recalibrate)
    t2 = time.perf_counter()
    records = weather.evaluate(fc_path, path, out=out / name / f"test-scores{suffix}", systems=list(SYSTEMS), seed=seed,
                               joint=True)
    train_seconds = summary.get("seconds") if reuse and card.is_file() else t1 - t0
    return {"dataset": name, "config": cfg, "recalibrate": recalibrate, "train_steps": int(summary["step"]),
            "train_seconds": round(train_seconds, 1),
            "forecast_seconds": round(float(fc.attrs.get("forecast_seconds", t2 - t1)), 1),
            "evaluate_seconds": round(time.perf_counter() - t2, 1),
            "inits": int(fc.sizes["init_time"]), "members": members, "records": records}


def rows(r: dict) -> list[str]:
    """Per variable and lead: CRPS of each system, the model's spread/skill, and the model against EMOS-on-AR and
    the AR base with 95% intervals."""
    recs = [x for x in r["records"] if "series" not in x and x["variable"] != "joint"]
    variables = sorted({x["variable"] for x in recs})
    by = {(x["variable"], x["system"], round(x["lead_time_hours"])): x for x in recs}
    systems = [s for s in SYSTEMS if any(k[1] == s for k in by)]
    refs = [s for s in REFEREES if s in systems]
    head = ("| variable | lead (h) | " + " | ".join(f"CRPS {s}" for s in systems) + " | SSR model | cover80 model | "
            "cover95 model | " + " | ".join(f"model - {s} [95%]" for s in refs) + f" | verdict vs {' / '.join(refs)} |")
    lines = [head, "|---|---|" + "---|" * (len(systems) + 4 + len(refs))]
    for v in variables:
        for h in LEADS:
            if (v, "model", h) not in by:
                continue
            m = by[(v, "model", h)]
            cells = [_f(by.get((v, s, h), {}).get("crps")) for s in systems]
            verdicts, diffs = [], []
            for s in refs:
                vs = by.get((v, s, h), {}).get("vs_model")
                if vs is None:
                    diffs.append("n/a")
                    verdicts.append("n/a")
                    continue
                diffs.append(f"{vs['diff']:+.4g} [{vs['lo']:+.4g}, {vs['hi']:+.4g}]")
                verdicts.append("win" if vs["hi"] < 0 else "loss" if vs["lo"] > 0 else "tie")
            lines.append(f"| {v} | {h} | " + " | ".join(cells) + f" | {_f(m.get('ssr'), 3)} | "
                         f"{_f(m.get('coverage_80'), 3)} | {_f(m.get('coverage_95'), 3)} | {' | '.join(diffs)} | "
                         f"{' / '.join(verdicts)} |")
    return lines


def joint_rows(r: dict) -> list[str]:
    """Per lead: each system's energy score over all cells and variables, and the model's difference [95%]."""
    recs = [x for x in r["records"] if x["variable"] == "joint"]
    if not recs:
        return []
    by = {(x["system"], round(x["lead_time_hours"])): x for x in recs}
    systems = [s for s in SYSTEMS if any(k[0] == s for k in by)]
    refs = [s for s in REFEREES if s in systems]
    lines = ["| lead (h) | " + " | ".join(f"ES {s}" for s in systems) + " | "
             + " | ".join(f"model - {s} [95%]" for s in refs) + " |", "|---|" + "---|" * (len(systems) + len(refs))]
    for h in LEADS:
        if ("model", h) not in by:
            continue
        cells = [_f(by.get((s, h), {}).get("energy_score")) for s in systems]
        diffs = []
        for s in refs:
            vs = by.get((s, h), {}).get("vs_model_energy")
            diffs.append("n/a" if vs is None else f"{vs['diff']:+.4g} [{vs['lo']:+.4g}, {vs['hi']:+.4g}]")
        lines.append(f"| {h} | " + " | ".join(cells) + " | " + " | ".join(diffs) + " |")
    return lines


def _f(x, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}g}"


def write(results: list[dict], command: str) -> None:
    lines = heading("Gridded test periods", command) + [
             "Fair CRPS in data units on the test inits; emos_ar: EMOS of the AR base (Gaussian N(a + b m, c) per "
             "lead and cell, minimum CRPS; comparison.emos_system) cross-fitted over two halves of the test inits "
             "(each half's forecasts from the other's fit: a competitor that saw test-period data); emos_ar_past: "
             "the same EMOS fitted for each init on the AR base's forecasts of the 40 days before it whose leads "
             "are verified (Gneiting et al.'s sliding window, past data only, as run operationally); ar_base: the "
             "run's AR mean forecast alone (a point forecast: CRPS = MAE); ar_calibrated: the AR base plus "
             "Gaussian departures with the run's held-out calibration. The model is the run with its spread "
             "calibration.", ""]
    for r in results:
        cfg = r["config"]
        lines += [f"**{r['dataset']}** ({cfg['file']}): training period {cfg['train_period']} (its last "
                  f"{cfg['calibration']:.0%} held out from the network for the spread calibration: the validation "
                  f"period), test inits {cfg['test_period']} every {cfg['init_every']}; {r['train_steps']} training "
                  f"steps in {r['train_seconds']} s, {r['inits']} inits x {r['members']} members forecast in "
                  f"{r['forecast_seconds']} s, scored in {r['evaluate_seconds']} s."
                  + (" The model's calibration refitted for each init on its own verified forecasts of the 40 days "
                     "before it (forecast(recalibrate='past'); the past inits forecast too, in the time above)."
                     if r.get("recalibrate") else ""), ""]
        lines += rows(r) + [""]
        joint = joint_rows(r)
        if joint:
            lines += ["Joint: the energy score over every cell and variable of an init and lead (each variable "
                      "divided by its truth's standard deviation when there are several); model minus each with "
                      "a 95% paired interval over the inits.", ""] + joint + [""]
    block = "latest-" + "-".join(r["dataset"] + (f"-{r['recalibrate']}" if r.get("recalibrate") else "")
                                 for r in results)
    write_block(RESULTS, "\n".join(lines), block=block,
                title="# Gridded forecasts on untouched test periods (benchmarks/weather_heldout.py)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="ncep,berlin")
    p.add_argument("--out", default="runs/bench-heldout")
    p.add_argument("--minutes", type=float, default=30.0, help="training budget per data set (CPU wall minutes)")
    p.add_argument("--members", type=int, default=16)
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reuse", action="store_true", help="score the run and test forecast of an earlier invocation")
    p.add_argument("--recalibrate", default=None, choices=["past"],
                   help="forecast with the calibration refitted per init on the 40 days before it (recalibrate.py)")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    command = shlex.join(["python", "benchmarks/weather_heldout.py", *(argv or sys.argv[1:])])
    results = []
    for name in [n for n in args.datasets.split(",") if n]:
        if name not in DATASETS:
            print(f"weather_heldout: unknown data set {name!r} (choose from {', '.join(DATASETS)})", file=sys.stderr)
            return 2
        r = run(name, Path(args.out), args.minutes, args.members, args.seed, args.sample_steps, args.reuse,
                args.recalibrate)
        results.append(r)
        print("\n".join(rows(r) + [""] + joint_rows(r)), file=sys.stderr)
    if not args.no_write:
        write(results, command)
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
