"""Weather benchmark: ERA5 UK t2m ensemble skill against baselines, Lorenz-96 against a perfect-model ensemble, speed.

    nice -n 10 python benchmarks/weather.py --out runs/bench-weather            # everything, writes the results fragment
    python benchmarks/weather.py --parts era5 --era5-steps 200 --out /tmp/b     # a quicker partial run

Results go to benchmarks/results_weather.md (command, machine, date, numbers, and whether each bar is met).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
ERA5 = ROOT / "../shared/data/era5_uk_t2m_2019-03.nc"
RESULTS = ROOT / "benchmarks" / "results_weather.md"
LEADS = (6, 12, 24)
SYSTEMS = ("model", "persistence", "climatology", "linear")


from _machine import machine  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def era5(out: Path, steps: int, members: int, sample_steps: int, sampler: str, net: dict | None = None,
         weight_decay: float = 0.0, context_noise: float = 0.0, seed: int = 0, **train_kw) -> dict:
    """Train on 1-24 March, forecast every 6 h init of 25-30 March to 24 h, score model and baselines."""
    from gendiff.domains import weather

    t0 = time.perf_counter()
    summary = weather.train(str(ERA5), out / "era5-run", variables=["t2m"], train_period="2019-03-01:2019-03-24",
                            context="24h", horizon="24h", max_steps=steps, sample_steps=sample_steps, sampler=sampler,
                            net=net, weight_decay=weight_decay, context_noise=context_noise, resume="auto",
                            progress=False, seed=seed, **train_kw)
    t_train = time.perf_counter() - t0
    fc = weather.forecast(out / "era5-run", str(ERA5), init_period="2019-03-25:2019-03-30", init_every="6h",
                          members=members, lead="24h", out=out / "era5-forecast.nc", progress=False, seed=seed)
    records = weather.evaluate(out / "era5-forecast.nc", str(ERA5), out=out / "era5-scores")
    return {"train": summary, "train_seconds": t_train, "seed": seed, "forecast_seconds": fc.attrs["forecast_seconds"],
            "inits": int(fc.sizes["init_time"]), "members": int(fc.sizes["member"]), "records": records}


def speed(out: Path, members: int = 16, repeats: int = 2) -> dict:
    """Members per second for one 24 h forecast (one init) on this CPU."""
    from gendiff.domains import weather
    from gendiff.domains.weather.model import load_run

    run = load_run(out / "era5-run")
    rates = []
    for r in range(repeats):
        fc = weather.forecast(run, str(ERA5), init_times=["2019-03-27T00:00"], members=members, lead="24h",
                              seed=r, progress=False)
        rates.append(members / fc.attrs["forecast_seconds"])
    return {"members_per_second": max(rates), "members": members, "sampler": run.config["sampler"],
            "steps": run.config["sample_steps"], "threads": torch.get_num_threads()}


def lorenz96(out: Path, steps: int, members: int, sigmas=(0.1,)) -> dict:
    """Model CRPS over a perfect-model ensemble's CRPS (true equations from perturbed initial states), per lead."""
    from gendiff.domains import weather
    from gendiff.domains.weather.scoring import truth_at_valid_time
    from gendiff.domains.weather.lorenz96 import lorenz96_dataset, perfect_model_ensemble
    from gendiff.domains.weather.metrics import score

    ds = lorenz96_dataset(4000)
    summary = weather.train(ds, out / "l96-run", train_period="2000-01-01:2002-03-31", context="48h",
                            horizon="48h", net={"width": 64, "mults": [1, 2], "dropout": 0.0}, max_steps=steps,
                            lr=1e-3, sample_steps=50, resume="auto", progress=False)
    fc = weather.forecast(out / "l96-run", ds, init_period="2002-05-01:2002-09-20", init_every="72h",
                          members=members, lead="120h", out=out / "l96-forecast.nc", progress=False)
    records = weather.evaluate(fc, ds, out=out / "l96-scores")
    lead_steps = fc.sizes["lead_time"]
    truth = truth_at_valid_time(ds["x"], fc["valid_time"])
    model = score(fc["x"], truth)["crps"]
    perfect = {}
    for sigma in sigmas:
        ens = perfect_model_ensemble(ds, fc["init_time"].values, lead_steps, members, sigma=sigma)
        pm = fc["x"].copy(data=ens.astype(np.float32))  # dims (init_time, member, lead_time, site)
        perfect[sigma] = score(pm, truth)["crps"]
    hours = (fc["lead_time"].values / np.timedelta64(1, "h")).tolist()
    return {"train": summary, "records": records, "lead_hours": hours,
            "model_crps": model.values.tolist(),
            "perfect_crps": {str(s): p.values.tolist() for s, p in perfect.items()},
            "inits": int(fc.sizes["init_time"]), "members": members}


def _table(records, leads, systems=SYSTEMS) -> list[str]:
    rows = ["| lead (h) | " + " | ".join(f"CRPS {s}" for s in systems) + " | RMSE model | spread model | SSR model |",
            "|---" * (len(systems) + 4) + "|"]
    by = {(r["system"], r["lead_time_hours"]): r for r in records}
    for h in leads:
        crps = [by[(s, float(h))]["crps"] for s in systems]
        m = by[("model", float(h))]
        rows.append(f"| {h:g} | " + " | ".join(f"{c:.4f}" for c in crps) +
                    f" | {m['rmse']:.4f} | {m['spread']:.4f} | {m['ssr']:.3f} |")
    return rows


def write_results(res: dict, command: str) -> str:
    lines = ["## Weather (gendiff.domains.weather)", "",
             f"- Command: `{command}`", f"- Machine: {machine()}",
             f"- Date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}", ""]
    if "era5" in res:
        e = res["era5"]
        tr = e["train"]
        lines += ["### ERA5 UK 2 m temperature (33 x 49 grid, hourly, March 2019)", "",
                  f"Train 1-24 March: AR(2) base, codec and climatology on all of it; the network on its first 85% "
                  f"({tr['windows']} windows of 24 h context + 24 h horizon, {tr['step']} steps, "
                  f"{tr['parameters']:,} parameters); the ensemble calibration (mean shrinkage and spread, "
                  f"domains/weather/calibrate.py) on {len(tr.get('calibration', {}).get('inits', []))} inits in the "
                  f"last 15%; {e['train_seconds']:.0f} s in all. Forecast every 6 h init of 25-30 "
                  f"March ({e['inits']} inits x {e['members']} members) to 24 h ({e['forecast_seconds']:.0f} s). "
                  "CRPS in K, cos(latitude)-weighted; persistence is a one-member ensemble (CRPS = MAE); "
                  "climatology = the training days' values at the valid hour; linear = per-point AR(2) on hour-of-day "
                  "anomalies with residual-covariance Gaussian noise, same member count.", ""]
        lines += _table(e["records"], LEADS) + [""]
        by = {(r["system"], r["lead_time_hours"]): r for r in e["records"]}
        beat = all(by[("model", float(h))]["crps"] < min(by[(s, float(h))]["crps"] for s in SYSTEMS[1:])
                   for h in LEADS)
        ssr = [by[("model", float(h))]["ssr"] for h in LEADS]
        all_ssr = [r["ssr"] for r in e["records"] if r["system"] == "model"]
        lines += [f"- Bar 'model CRPS below persistence, climatology and linear at 6, 12, 24 h': "
                  f"**{'met' if beat else 'NOT met'}**.",
                  f"- Bar 'spread-skill ratio in [0.7, 1.3]': at 6/12/24 h {', '.join(f'{s:.2f}' for s in ssr)}; "
                  f"over all 24 leads {min(all_ssr):.2f} to {max(all_ssr):.2f}: "
                  f"**{'met' if all(0.7 <= s <= 1.3 for s in ssr) else 'NOT met'}** (at 6/12/24 h).", ""]
    if "lorenz96" in res:
        l96 = res["lorenz96"]
        lines += ["### Lorenz-96 (K=40, F=8, RK4; one step = 0.05 model time units = 6 h)", "",
                  f"Train on 2000-01-01..2002-03-31 ({l96['train']['windows']} windows, {l96['train']['step']} steps); "
                  f"{l96['inits']} inits every 72 h in May-Sep 2002, {l96['members']} members, 48 h context, "
                  "48 h horizon rolled out to 120 h. Perfect-model ensemble: the true equations from initial states "
                  "perturbed by N(0, sigma^2) per site.", "",
                  "| lead (h) | CRPS model | " + " | ".join(f"CRPS perfect (sigma={s})" for s in l96["perfect_crps"])
                  + " | " + " | ".join(f"ratio (sigma={s})" for s in l96["perfect_crps"]) + " |",
                  "|---" * (2 + 2 * len(l96["perfect_crps"])) + "|"]
        for j, h in enumerate(l96["lead_hours"]):
            pm = [l96["perfect_crps"][s][j] for s in l96["perfect_crps"]]
            lines.append(f"| {h:g} | {l96['model_crps'][j]:.3f} | " + " | ".join(f"{p:.3f}" for p in pm) + " | " +
                         " | ".join(f"{l96['model_crps'][j] / p:.2f}" for p in pm) + " |")
        lines.append("")
    if "speed" in res:
        s = res["speed"]
        lines += ["### Forecast speed", "",
                  f"- ERA5 model, one 24 h forecast (one 24 h horizon sample per member, {s['sampler']} sampler, "
                  f"{s['steps']} steps), {s['members']} members in one batch: **{s['members_per_second']:.2f} "
                  f"members/s** on CPU with {s['threads']} thread(s) on a machine shared with other jobs. "
                  "No GPU was available in this session, so no GPU number is reported.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "runs" / "bench-weather"))
    p.add_argument("--parts", default="era5,speed,lorenz96")
    p.add_argument("--era5-steps", type=int, default=1200)
    p.add_argument("--l96-steps", type=int, default=1500)
    p.add_argument("--members", type=int, default=16)
    p.add_argument("--sample-steps", type=int, default=100)
    p.add_argument("--sampler", default="euler_maruyama")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--width", type=int, default=64, help="ERA5 U-Net base channels")
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--precondition", type=int, default=1, help="EDM preconditioning of the network (1/0)")
    p.add_argument("--prediction", default="x0", help="x0, eps or v (without preconditioning)")
    p.add_argument("--context-noise", type=float, default=0.0, help="conditioning augmentation (std, normalised)")
    p.add_argument("--seed", type=int, default=0, help="ERA5 training and forecast seed (replicates)")
    p.add_argument("--results", default=str(RESULTS))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    import gendiff.domains.weather.baselines  # noqa: F401  (load all code now, so later edits cannot mix in)
    import gendiff.domains.weather.demo_l96  # noqa: F401
    import gendiff.domains.weather.fit  # noqa: F401
    import gendiff.domains.weather.forecasting  # noqa: F401
    import gendiff.domains.weather.lorenz96  # noqa: F401
    import gendiff.domains.weather.plots  # noqa: F401
    import gendiff.domains.weather.scoring  # noqa: F401
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    parts = args.parts.split(",")
    res = {}
    if "era5" in parts:
        if not ERA5.exists():
            print(f"ERA5 sample not found at {ERA5}; skipping the ERA5 part", file=sys.stderr)
        else:
            res["era5"] = era5(out, args.era5_steps, args.members, args.sample_steps, args.sampler,
                               {"width": args.width, "dropout": args.dropout}, args.weight_decay,
                               args.context_noise, seed=args.seed, precondition=bool(args.precondition),
                               prediction=args.prediction)
            (out / "era5.json").write_text(json.dumps(res["era5"], indent=1, default=str))
            print(json.dumps({k: v for k, v in res["era5"].items() if k != "records"}), flush=True)
    if "speed" in parts and (out / "era5-run" / "checkpoint.pt").exists():
        res["speed"] = speed(out, args.members)
        (out / "speed.json").write_text(json.dumps(res["speed"], indent=1, default=str))
        print(json.dumps(res["speed"]), flush=True)
    if "lorenz96" in parts:
        res["lorenz96"] = lorenz96(out, args.l96_steps, args.members)
        print(json.dumps({k: v for k, v in res["lorenz96"].items() if k != "records"}), flush=True)
    for part, value in res.items():
        (out / f"{part}.json").write_text(json.dumps(value, indent=1, default=str))
    for part in ("era5", "speed", "lorenz96"):  # parts not run now: reuse this out folder's earlier results
        if part not in res and (out / f"{part}.json").exists():
            res[part] = json.loads((out / f"{part}.json").read_text())
    text = write_results(res, "python benchmarks/weather.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    Path(args.results).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
