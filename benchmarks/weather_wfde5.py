"""Multi-variable gridded forcing with NaN over the sea (issue 12): the WFDE5-shaped synthetic dataset
(domains/weather/forcing.py), trained, forecast and scored through the CLI with its defaults, timed end to end.

    python benchmarks/weather_wfde5.py --out runs/bench_wfde5            # 40 x 60 cells (half sea), 5 variables
    python benchmarks/weather_wfde5.py --train-args "--minutes 5"        # extra `gendiff train weather` options
    python benchmarks/weather_wfde5.py --data ../shared/data/era5_uk_t2m_2019-03.nc --out runs/bench_era5_defaults
                                                                         # the README's ERA5 commands, same checks

Prints and appends to benchmarks/results/weather_wfde5.md: wall time of each stage against the 20-minute budget,
whether NaN stays over the sea and nowhere else in every member and lead, and the fair CRPS of the model against
persistence and climatology (and the linear ensemble) per variable at 6, 12 and 24 h.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from _machine import machine  # noqa: E402  (python puts the script's folder, benchmarks/, on sys.path)

RESULTS = Path(__file__).resolve().parent / "results" / "weather_wfde5.md"
LEADS_H = (6, 12, 24)


def _gendiff(args: list[str], env: dict) -> tuple[float, str]:
    """Run `gendiff ARGS` in a fresh process (as a user would); (wall seconds, stdout); exits on failure."""
    cmd = [sys.executable, "-m", "gendiff", *args]
    print("$ gendiff " + " ".join(shlex.quote(a) for a in args), flush=True)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-4000:])
        raise SystemExit(f"gendiff {args[0]} failed (exit {out.returncode})")
    return wall, out.stdout


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench_wfde5", help="folder for the data file, the run and the forecast")
    p.add_argument("--data", default=None,
                   help="a data file to use instead of the synthetic forcing (read by path, never copied); its "
                        "'sea' is the cells with no value at any time")
    p.add_argument("--nlat", type=int, default=40)
    p.add_argument("--nlon", type=int, default=60)
    p.add_argument("--days", type=int, default=31)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-period", default="2019-03-01:2019-03-24")
    p.add_argument("--init-period", default="2019-03-25:2019-03-30")
    p.add_argument("--init-every", default="6h")
    p.add_argument("--members", type=int, default=16)
    p.add_argument("--lead", default="24h")
    p.add_argument("--threads", type=int, default=2, help="torch threads of each gendiff process (2: both cores)")
    p.add_argument("--train-args", default="", help="extra `gendiff train weather` options (default: none)")
    p.add_argument("--forecast-args", default="", help="extra `gendiff forecast weather` options (default: none)")
    p.add_argument("--systems", default="model,persistence,climatology,linear,ar_calibrated",
                   help="systems scored (ar_calibrated: the run's AR base + calibration + Gaussian noise, no network)")
    p.add_argument("--budget-minutes", type=float, default=20.0, help="the bar: train + forecast + evaluate")
    p.add_argument("--no-record", action="store_true")
    a = p.parse_args(argv)

    import xarray as xr

    from gendiff.domains.weather.forcing import wfde5_like_dataset

    root = Path(a.out)
    root.mkdir(parents=True, exist_ok=True)
    run, fc = root / "run", root / "forecast.nc"
    if a.data is None:
        data = root / "forcing.nc"
        ds = wfde5_like_dataset(a.nlat, a.nlon, a.days, seed=a.seed)
        ds.to_netcdf(data)
        land = ds["lsm"].values > 0
    else:
        data = Path(a.data)
        ds = xr.open_dataset(data)
    variables = [v for v in ds.data_vars if "time" in ds[v].dims]
    if a.data is not None:
        land = np.isfinite(ds[variables[0]].values).any(0)
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    if run.exists():
        import shutil

        shutil.rmtree(run)
    train_args = ["train", "weather", "--data", str(data), "--train-period", a.train_period, "--out", str(run),
                  "--threads", str(a.threads), "--quiet", *shlex.split(a.train_args)]
    t_train, _ = _gendiff(train_args, env)
    fc_args = ["forecast", "weather", "--run", str(run), "--data", str(data), "--init-period", a.init_period,
               "--init-every", a.init_every, "--members", str(a.members), "--lead", a.lead, "--out", str(fc),
               "--threads", str(a.threads), "--quiet", *shlex.split(a.forecast_args)]
    t_fc, _ = _gendiff(fc_args, env)
    ev_args = ["evaluate", "weather", "--forecast", str(fc), "--truth", str(data), "--train-period", a.train_period,
               "--systems", a.systems, "--run", str(run), "--json"]
    t_ev, text = _gendiff(ev_args, env)
    records = json.loads(text)
    out = xr.open_dataset(fc)
    nan_ok = all(bool(np.isnan(out[v].values[..., ~land]).all() and np.isfinite(out[v].values[..., land]).all())
                 for v in variables)
    config = json.loads((run / "config.json").read_text())
    card = json.loads((run / "card.json").read_text()) if (run / "card.json").is_file() else {}
    res = {"date": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC", "machine": machine(),
           "data": str(data) if a.data else "synthetic WFDE5-shaped forcing",
           "grid": list(land.shape), "land_cells": int(land.sum()), "variables": variables,
           "train_seconds": round(t_train, 1), "forecast_seconds": round(t_fc, 1), "evaluate_seconds": round(t_ev, 1),
           "total_minutes": round((t_train + t_fc + t_ev) / 60, 2), "budget_minutes": a.budget_minutes,
           "nan_only_over_sea": nan_ok, "train_steps": (card.get("training") or {}).get("steps"),
           "net": config.get("net"), "sampler": config.get("sampler"), "sample_steps": config.get("sample_steps"),
           "commands": [" ".join(["gendiff", *x]) for x in (train_args, fc_args, ev_args)], "crps": {}}
    for r in records:
        lead_h = int(round(float(r["lead_time_hours"])))
        if lead_h in LEADS_H:
            res["crps"].setdefault(r["variable"], {}).setdefault(lead_h, {})[r["system"]] = r["crps"]
            if r["system"] == "model":
                res.setdefault("ssr", {}).setdefault(r["variable"], {})[lead_h] = r.get("ssr")
    beats = {v: all(c["model"] < min(c["persistence"], c["climatology"]) for c in by_lead.values())
             for v, by_lead in res["crps"].items()}
    res["model_beats_persistence_and_climatology"] = beats
    print(json.dumps(res, indent=1, default=str))
    text = _markdown(res)
    print(text)
    if not a.no_record:
        with open(RESULTS, "a") as fh:
            fh.write(text)
    return 0


def _markdown(res: dict) -> str:
    rows = ""
    for v, by_lead in res["crps"].items():
        for lead, c in sorted(by_lead.items()):
            rows += (f"| {v} | {lead} | {c.get('model', float('nan')):.4g} | {c.get('persistence', float('nan')):.4g} | "
                     f"{c.get('climatology', float('nan')):.4g} | {c.get('linear', float('nan')):.4g} | "
                     f"{c.get('ar_calibrated', float('nan')):.4g} | "
                     f"{res.get('ssr', {}).get(v, {}).get(lead, float('nan')):.3f} |\n")
    ok = res["total_minutes"] <= res["budget_minutes"]
    return (f"\n### {res['data']}, CLI defaults ({res['date']})\n\n"
            f"- machine: {res['machine']}\n- grid {res['grid'][0]} x {res['grid'][1]}, "
            f"{res['land_cells']} land cells, variables {', '.join(res['variables'])}; network {res['net']}, "
            f"{res['train_steps']} training steps, sampler {res['sampler']} x {res['sample_steps']}\n"
            + "".join(f"- `{c}`\n" for c in res["commands"]) +
            f"- wall time: train {res['train_seconds']} s, forecast {res['forecast_seconds']} s, evaluate "
            f"{res['evaluate_seconds']} s: **{res['total_minutes']} min** against {res['budget_minutes']} "
            f"({'met' if ok else 'not met'})\n"
            f"- NaN over the sea and nowhere else, every member and lead: **{res['nan_only_over_sea']}**\n"
            f"- model CRPS below persistence and climatology at {', '.join(map(str, LEADS_H))} h: "
            + ", ".join(f"{v} {'yes' if b else 'no'}" for v, b in res["model_beats_persistence_and_climatology"].items())
            + "\n\n| variable | lead (h) | model | persistence | climatology | linear | ar_calibrated | SSR model |\n"
            "|---|---|---|---|---|---|---|---|\n"
            + rows)


if __name__ == "__main__":
    raise SystemExit(main())
