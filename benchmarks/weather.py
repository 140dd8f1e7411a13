"""Weather benchmark: ERA5 UK t2m ensemble skill against baselines, Lorenz-96 against a perfect-model ensemble, speed.

    nice -n 10 python benchmarks/weather.py --out runs/bench-weather            # everything, writes the results fragment
    python benchmarks/weather.py --parts era5 --era5-steps 200 --out /tmp/b     # a quicker partial run
    python benchmarks/weather.py scale                                          # networks against grid size

Results go to the <!-- latest --> block of benchmarks/results/weather.md (command, machine, date, numbers, and
whether each bar is met).

The shipped models (domains/weather/pretrained/NAME, `pretrained:NAME`) are trained and exported by
tools/weather_pretrained.py, and their card metrics measured by the two commands in PRETRAINED_METRICS, which write
the commands onto the card (`gendiff evaluate weather ... --record`).
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
RESULTS = ROOT / "benchmarks" / "results" / "weather.md"
LEADS = (6, 12, 24)
SYSTEMS = ("model", "persistence", "climatology", "linear", "ar_calibrated")
RAW_BASELINES = ("persistence", "climatology", "linear")  # fitted on the training period, not calibrated


from _machine import machine  # noqa: E402  (python puts the script's folder, benchmarks/, on sys.path)
from _results import write_block  # noqa: E402


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
    records = weather.evaluate(out / "era5-forecast.nc", str(ERA5), out=out / "era5-scores", systems=SYSTEMS)
    return {"train": summary, "train_seconds": t_train, "seed": seed, "forecast_seconds": fc.attrs["forecast_seconds"],
            "inits": int(fc.sizes["init_time"]), "members": int(fc.sizes["member"]), "records": records}


def speed(out: Path, members: int = 16, repeats: int = 2) -> dict:
    """Members per second for one 24 h forecast (one init) on this CPU."""
    from gendiff.domains import weather
    from gendiff.domains.timeseries.model import load_run

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
    from gendiff.domains.timeseries.scoring import truth_at_valid_time
    from gendiff.domains.weather.lorenz96 import lorenz96_dataset, perfect_model_ensemble
    from gendiff.domains.weather.metrics import score

    ds = lorenz96_dataset(4000)
    summary = weather.train(ds, out / "l96-run", train_period="2000-01-01:2002-03-31", context="48h",
                            horizon="48h", net={"width": 64, "mults": [1, 2], "dropout": 0.0}, max_steps=steps,
                            lr=1e-3, sample_steps=50, resume="auto", progress=False)
    fc = weather.forecast(out / "l96-run", ds, init_period="2002-05-01:2002-09-20", init_every="72h",
                          members=members, lead="120h", out=out / "l96-forecast.nc", progress=False)
    records = weather.evaluate(fc, ds, out=out / "l96-scores", systems=SYSTEMS)
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


NCEP = ROOT / "../shared/data/ncep_air_na_2013-2014.nc"
PRETRAINED_METRICS = {
    # the commands that measured each shipped card's metrics (they write onto the card with --record)
    "lorenz96": ["gendiff forecast weather --run pretrained:lorenz96 --data lorenz96 --init-period "
                 "2002-05-01:2002-09-20 --init-every 72h --members 16 --lead 120h --out runs/card-lorenz96.nc "
                 "--seed 0 --threads 1",
                 "gendiff evaluate weather --forecast runs/card-lorenz96.nc --truth lorenz96 "
                 "--systems model,persistence,climatology,linear,ar_calibrated --record"],
    "era5-uk-t2m": [f"gendiff forecast weather --run pretrained:era5-uk-t2m --data {ERA5.resolve()} --init-period "
                    "2019-03-25:2019-03-30 --init-every 6h --members 16 --lead 24h --out runs/card-era5-uk-t2m-6h.nc "
                    "--seed 0 --threads 1",
                    f"gendiff evaluate weather --forecast runs/card-era5-uk-t2m-6h.nc --truth {ERA5.resolve()} "
                    "--systems model,persistence,climatology,linear,ar_calibrated,ar_base,emos_ar --record"],
    # the test period of benchmarks/weather_heldout.py: Jul-Dec 2014 inits, never looked at while designing
    "ncep-air": [f"gendiff forecast weather --run pretrained:ncep-air --data {NCEP.resolve()} --init-period "
                 "2014-07-01:2014-12-29 --init-every 24h --members 16 --lead 48h --out runs/card-ncep-air.nc "
                 "--seed 0 --threads 1",
                 f"gendiff evaluate weather --forecast runs/card-ncep-air.nc --truth {NCEP.resolve()} "
                 "--systems model,persistence,climatology,linear,ar_calibrated,ar_base,emos_ar --record"],
}


def _table(records, leads, systems=SYSTEMS) -> list[str]:
    """Fair CRPS per system (the standard CRPS in brackets), then RMSE, spread and SSR of the model and of
    ar_calibrated where scored."""
    by = {(r["system"], r["lead_time_hours"]): r for r in records}
    systems = [s for s in systems if (s, float(leads[0])) in by]
    extra = [s for s in ("model", "ar_calibrated") if s in systems]
    rows = ["| lead (h) | " + " | ".join(f"CRPS {s}" for s in systems) + " | " +
            " | ".join(f"RMSE {s} | spread {s} | SSR {s}" for s in extra) + " |",
            "|---" * (len(systems) + 3 * len(extra) + 1) + "|"]
    for h in leads:
        cells = [f"{by[(s, float(h))]['crps']:.4f} ({by[(s, float(h))]['crps_standard']:.4f})" for s in systems]
        for s in extra:
            r = by[(s, float(h))]
            cells += [f"{r['rmse']:.4f}", f"{r['spread']:.4f}", f"{r['ssr']:.3f}"]
        rows.append(f"| {h:g} | " + " | ".join(cells) + " |")
    return rows


def _bars(records, leads) -> list[str]:
    """Whether the model beats the raw baselines, and ar_calibrated (what the network adds), at each lead."""
    by = {(r["system"], r["lead_time_hours"]): r for r in records}
    lines = []
    raw = [s for s in RAW_BASELINES if (s, float(leads[0])) in by]
    beat = all(by[("model", float(h))]["crps"] < min(by[(s, float(h))]["crps"] for s in raw) for h in leads)
    lines.append(f"- Bar 'model CRPS below {', '.join(raw)} at {', '.join(f'{h:g}' for h in leads)} h': "
                 f"**{'met' if beat else 'NOT met'}**.")
    if ("ar_calibrated", float(leads[0])) in by:
        per = [(h, by[("model", float(h))]["crps"], by[("ar_calibrated", float(h))]["crps"]) for h in leads]
        ok = all(m < a for _, m, a in per)
        lines.append(f"- Bar 'the network adds skill: model CRPS below ar_calibrated (the same AR base, held-out "
                     f"calibration and Gaussian noise, no network) at {', '.join(f'{h:g}' for h in leads)} h': "
                     + ", ".join(f"{h:g} h {m:.4f} vs {a:.4f}" for h, m, a in per)
                     + f": **{'met' if ok else 'NOT met'}**.")
    ssr = [by[("model", float(h))]["ssr"] for h in leads]
    lines.append(f"- Bar 'spread-skill ratio in [0.7, 1.3]' (SSR = spread / RMSE): at "
                 f"{'/'.join(f'{h:g}' for h in leads)} h {', '.join(f'{x:.2f}' for x in ssr)}: "
                 f"**{'met' if all(0.7 <= x <= 1.3 for x in ssr) else 'NOT met'}**.")
    return lines


SCORES_NOTE = ("CRPS in K: the fair CRPS (spread term over the M(M-1) member pairs, as WeatherBench2), the standard "
               "one (over M^2) in brackets; cell-area latitude weights; SSR = ensemble spread / RMSE of the "
               "ensemble mean. Persistence is a one-member ensemble (CRPS = MAE); climatology = the training days' "
               "values at the valid hour; linear = per-point AR(2) on hour-of-day anomalies with residual-covariance "
               "Gaussian noise, same member count (these three fitted on the training period and not calibrated); "
               "ar_calibrated = the run's own AR base with its held-out calibration and Gaussian noise, no network "
               "(what the network adds), calibrated like the model.")


def shipped_era5(forecast: Path) -> dict:
    """Score a forecast of the shipped pretrained:era5-uk-t2m (PRETRAINED_METRICS' file) with all five systems."""
    from gendiff.domains import weather

    records = weather.evaluate(str(forecast), str(ERA5), systems=SYSTEMS, plots=False)
    with xr.open_dataset(forecast) as fc:
        t = fc["init_time"].values
        every = f"{(t[1] - t[0]) / np.timedelta64(1, 'h'):g} h" if len(t) > 1 else "one"
        return {"records": records, "inits": int(fc.sizes["init_time"]), "members": int(fc.sizes["member"]),
                "first_init": str(t[0])[:16], "last_init": str(t[-1])[:16], "every": every,
                "forecast_seconds": float(fc.attrs.get("forecast_seconds", float("nan"))),
                "command": fc.attrs.get("gendiff_command", ""), "forecast": str(forecast)}


def shipped_l96(forecast: Path, sigmas=(0.1,)) -> dict:
    """Score a forecast of the shipped pretrained:lorenz96 (PRETRAINED_METRICS' file) on the default Lorenz-96
    trajectory with all five systems, and a perfect-model ensemble (the true equations from perturbed states)."""
    from gendiff.domains import weather
    from gendiff.domains.weather.lorenz96 import lorenz96_dataset, perfect_model_ensemble
    from gendiff.domains.weather.metrics import score
    from gendiff.domains.timeseries.scoring import truth_at_valid_time

    ds = lorenz96_dataset()
    records = weather.evaluate(str(forecast), ds, systems=SYSTEMS, plots=False)
    with xr.open_dataset(forecast) as fc:
        fc = fc.load()
    truth = truth_at_valid_time(ds["x"], fc["valid_time"])
    perfect = {}
    for sigma in sigmas:
        ens = perfect_model_ensemble(ds, fc["init_time"].values, fc.sizes["lead_time"], fc.sizes["member"],
                                     sigma=sigma)
        perfect[str(sigma)] = score(fc["x"].copy(data=ens.astype(np.float32)), truth)["crps"].values.tolist()
    return {"records": records, "perfect_crps": perfect, "inits": int(fc.sizes["init_time"]),
            "members": int(fc.sizes["member"]), "command": fc.attrs.get("gendiff_command", ""),
            "lead_hours": (fc["lead_time"].values / np.timedelta64(1, "h")).tolist()}


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
                  f"domains/timeseries/calibrate.py) on {len(tr.get('calibration', {}).get('inits', []))} inits in the "
                  f"last 15%; {e['train_seconds']:.0f} s in all. Forecast every 6 h init of 25-30 "
                  f"March ({e['inits']} inits x {e['members']} members) to 24 h ({e['forecast_seconds']:.0f} s). "
                  + SCORES_NOTE, ""]
        lines += _table(e["records"], LEADS) + [""] + _bars(e["records"], LEADS) + [""]
    if "shipped" in res:
        e = res["shipped"]
        lines += ["### ERA5: the shipped pretrained:era5-uk-t2m", "",
                  f"The shipped model (trained on 1-24 March, gendiff/domains/weather/pretrained/era5-uk-t2m) forecasting "
                  f"from inits every {e['every']}, {e['first_init']} to {e['last_init']} ({e['inits']} inits x "
                  f"{e['members']} members) to 24 h "
                  f"({e['forecast_seconds']:.0f} s on CPU), the forecast made by `{e['command']}`. " + SCORES_NOTE, ""]
        lines += _table(e["records"], LEADS) + [""] + _bars(e["records"], LEADS) + [""]
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
    if "shipped_l96" in res:
        l96 = res["shipped_l96"]
        by = {(r["system"], r["lead_time_hours"]): r["crps"] for r in l96["records"]}
        systems = [s for s in SYSTEMS if (s, l96["lead_hours"][0]) in by]
        sig = list(l96["perfect_crps"])
        lines += ["### Lorenz-96: the shipped pretrained:lorenz96", "",
                  f"The shipped model forecasting the default Lorenz-96 trajectory ({l96['inits']} inits x "
                  f"{l96['members']} members, 48 h horizon rolled out to 120 h), the forecast made by "
                  f"`{l96['command']}`. Fair CRPS of every system; perfect-model ensemble: the true equations from "
                  "initial states perturbed by N(0, sigma^2) per site, same members.", "",
                  "| lead (h) | " + " | ".join(f"CRPS {s}" for s in systems) + " | "
                  + " | ".join(f"CRPS perfect (sigma={s})" for s in sig) + " |",
                  "|---" * (1 + len(systems) + len(sig)) + "|"]
        for j, h in enumerate(l96["lead_hours"]):
            lines.append(f"| {h:g} | " + " | ".join(f"{by[(s, h)]:.3f}" for s in systems) + " | "
                         + " | ".join(f"{l96['perfect_crps'][s][j]:.3f}" for s in sig) + " |")
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
    if (sys.argv[1:] if argv is None else list(argv))[:1] == ["scale"]:  # networks against the number of locations
        from weather_scale import main as scale_main

        return scale_main((sys.argv[1:] if argv is None else list(argv))[1:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "runs" / "bench-weather"))
    p.add_argument("--parts", default="era5,speed,lorenz96",
                   help="comma-separated: era5, speed, lorenz96, shipped / shipped_l96 (score --shipped-forecast / "
                        "--shipped-l96-forecast, forecasts of the shipped models, with all five systems)")
    p.add_argument("--shipped-forecast", default=str(ROOT / "runs" / "card-era5-uk-t2m-6h.nc"),
                   help="forecast file of the shipped ERA5 model for --parts shipped (PRETRAINED_METRICS' command)")
    p.add_argument("--shipped-l96-forecast", default=str(ROOT / "runs" / "card-lorenz96.nc"),
                   help="forecast file of the shipped Lorenz-96 model for --parts shipped_l96")
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
    p.add_argument("--export-pretrained", default=None, help=argparse.SUPPRESS)  # moved to tools/
    p.add_argument("--train-pretrained", default=None, help=argparse.SUPPRESS)
    p.add_argument("--trained-commit", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.export_pretrained or args.train_pretrained:
        what, name = ("export", args.export_pretrained) if args.export_pretrained else ("train", args.train_pretrained)
        p.error(f"the shipped models are made by tools/weather_pretrained.py now: "
                f"python tools/weather_pretrained.py {what} {name} --out {args.out}")
    torch.set_num_threads(args.threads)
    import gendiff.domains.timeseries.baselines  # noqa: F401  (load all code now, so later edits cannot mix in)
    import gendiff.domains.weather.demo_l96  # noqa: F401
    import gendiff.domains.timeseries.training  # noqa: F401
    import gendiff.domains.timeseries.forecasting  # noqa: F401
    import gendiff.domains.weather.lorenz96  # noqa: F401
    import gendiff.domains.timeseries.plots  # noqa: F401
    import gendiff.domains.timeseries.scoring  # noqa: F401
    import gendiff.domains.timeseries.calibrate  # noqa: F401
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
    if "shipped" in parts:
        res["shipped"] = shipped_era5(Path(args.shipped_forecast))
        print(json.dumps({k: v for k, v in res["shipped"].items() if k != "records"}), flush=True)
    if "shipped_l96" in parts:
        res["shipped_l96"] = shipped_l96(Path(args.shipped_l96_forecast))
    if "lorenz96" in parts:
        res["lorenz96"] = lorenz96(out, args.l96_steps, args.members)
        print(json.dumps({k: v for k, v in res["lorenz96"].items() if k != "records"}), flush=True)
    for part, value in res.items():
        (out / f"{part}.json").write_text(json.dumps(value, indent=1, default=str))
    for part in ("era5", "shipped", "speed", "lorenz96", "shipped_l96"):  # parts not run now: reuse this out folder's earlier results
        if part not in res and (out / f"{part}.json").exists():
            res[part] = json.loads((out / f"{part}.json").read_text())
    text = write_results(res, "python benchmarks/weather.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    write_block(args.results, text, title="# Weather benchmark (benchmarks/weather.py)")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
