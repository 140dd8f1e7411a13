"""gendiff against statsforecast on the real series, held out (issue 29): each series' gendiff run (the recipe of
benchmarks/timeseries.py, a CPU-time budget) and statsforecast's AutoETS, MSTL, SeasonalNaive and Naive (AutoARIMA
with --arima) fitted on the same training period, scored by the same `evaluate` on the same held-out inits and leads,
with the model's CRPS minus the best peer's, a 95% paired block-bootstrap interval over the inits, and the win rate.

    OMP_NUM_THREADS=1 nice python benchmarks/timeseries_peers.py --minutes 3 --out runs/bench-peers
    python benchmarks/timeseries_peers.py --datasets co2 --minutes 1 --no-write        # a quick look

Needs statsforecast (pip install 'gendiff[peers]'). Writes benchmarks/results/timeseries_peers.md (its latest block).
"""
from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _results import heading, write_block  # noqa: E402  (python puts benchmarks/ on sys.path)
from timeseries import CONFIGS  # noqa: E402  the same series, periods and recipes as benchmarks/timeseries.py

from gendiff.domains import timeseries
from gendiff.domains.timeseries import real_series

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "timeseries_peers.md"
PEERS = ("auto_ets", "mstl", "seasonal_naive", "naive")
SEASONS = {"co2": [52], "solar": [48], "taylor": [48, 336], "wine": [12], "sunspots": [11], "elnino": [12]}
# monthly wine sales (pmdarima's wineind), with gendiff's defaults (horizon 12, season 12 when the data show it):
# trained on 1980-01 to 1990-12, scored from every month of 1991-01 to 1993-08 (a test period never looked at)
WINE = dict(context=None, horizon=None, lead=12, init_every=1, train_period=("1980-01-01", "1990-12-01"),
            init_period=("1991-01-01", "1993-08-01"), leads=(1, 3, 6, 12), unit="month", seasons="auto")


# yearly sunspots (statsmodels), gendiff's defaults (horizon 8 years): trained on 1700-1950, scored from every year
# of 1951-2000; the peers take the solar cycle (11 years) as their season
SUNSPOTS = dict(context=None, horizon=None, lead=8, init_every=1, train_period=("1700-01-01", "1950-01-01"),
                init_period=("1951-01-01", "2000-01-01"), leads=(1, 2, 4, 8), unit="year", seasons="auto")
# monthly El Nino sea surface temperature (statsmodels), defaults (horizon 12): trained on 1950-1995, scored from
# every month of 1996-2009
ELNINO = dict(context=None, horizon=None, lead=12, init_every=1, train_period=("1950-01-01", "1995-12-01"),
              init_period=("1996-01-01", "2009-12-01"), leads=(1, 3, 6, 12), unit="month", seasons="auto")
EXTRA = {"wine": WINE, "sunspots": SUNSPOTS, "elnino": ELNINO}


def run(name: str, out: Path, minutes: float, members: int, arima: bool, seed: int, base: str = "linear",
        resume: bool = False) -> dict:
    cfg = EXTRA.get(name) or CONFIGS[name]
    df = real_series.load(name)
    run_dir = out / name / ("run" if base == "linear" else f"run-{base}")
    if run_dir.exists() and not resume:  # a fresh run of `minutes`, not one more sitting of an earlier invocation's
        shutil.rmtree(run_dir)
    t0 = time.perf_counter()
    summary = timeseries.train(df, run_dir, context=cfg["context"], horizon=cfg["horizon"],
                               train_period=cfg["train_period"], seasons=cfg["seasons"] or "none",
                               max_steps=100_000, time_budget=60.0 * minutes, net={"width": 32}, batch_size=32,
                               sample_steps=20, progress=False, seed=seed, resume=resume, base=base)
    fc = timeseries.forecast(run_dir, df, output="xarray", init_period=cfg["init_period"],
                             init_every=cfg["init_every"], members=members, lead=cfg["lead"], progress=False,
                             seed=seed)
    peers = list(PEERS) + (["auto_arima"] if arima else [])
    t1 = time.perf_counter()
    own = ["ar_base", "ar_calibrated"]  # the run's own base alone, and it with calibrated Gaussian departures
    records = timeseries.evaluate(fc, df, train_period=cfg["train_period"], systems=["model", *peers, *own],
                                  season_length=SEASONS[name], seed=seed, plots=False)
    truth = timeseries.resolve_data(df)
    peer_base = json.loads((run_dir / "config.json").read_text()).get("peer_base")
    return {"dataset": name, "config": cfg, "train_steps": int(summary["step"]), "base": base, "peer_base": peer_base,
            "train_seconds": round(summary.get("seconds", 0.0), 1), "evaluate_seconds": round(time.perf_counter() - t1, 1),
            "inits": int(fc.sizes["init_time"]), "members": members, "records": records, "peers": peers,
            "step_hours": float((truth["time"].values[1] - truth["time"].values[0]) / np.timedelta64(1, "h")),
            "wall_seconds": round(time.perf_counter() - t0, 1), "fc": fc, "truth": truth}


def best_peer_rows(r: dict) -> list[str]:
    """Per reported lead: gendiff's CRPS, each peer's, the best peer, model - best [95% CI], win rate."""
    cfg, h = r["config"], r["step_hours"]
    by = {(x["system"], round(x["lead_time_hours"] / h)): x for x in r["records"]}
    lines = [f"| lead ({cfg['unit']}s) | gendiff | " + " | ".join(r["peers"]) + " | best peer | gendiff - best "
             "[95% interval] | gendiff wins | verdict | own base | base + Gaussian | gendiff - (base + Gaussian) "
             "[95% interval] |", "|---|---|" + "---|" * len(r["peers"]) + "---|---|---|---|---|---|---|"]
    for lead in cfg["leads"]:
        m = by[("model", lead)]
        peers = {p: by[(p, lead)] for p in r["peers"] if (p, lead) in by}
        best = min(peers, key=lambda p: peers[p]["crps"] if peers[p]["crps"] is not None else np.inf)
        vs = peers[best].get("vs_model")
        if vs is None:
            cell, wins, verdict = "n/a", "n/a", "n/a"
        else:
            cell = f"{vs['diff']:+.4g} [{vs['lo']:+.4g}, {vs['hi']:+.4g}]"
            wins = f"{100 * vs['win_rate']:.0f}%"
            verdict = "win" if vs["hi"] < 0 else "loss" if vs["lo"] > 0 else "tie"
        own, gauss = by.get(("ar_base", lead)), by.get(("ar_calibrated", lead))
        gain = gauss.get("vs_model") if gauss else None
        gain_cell = "n/a" if gain is None else f"{gain['diff']:+.4g} [{gain['lo']:+.4g}, {gain['hi']:+.4g}]"
        lines.append(f"| {lead} | {m['crps']:.4g} | " + " | ".join(f"{peers[p]['crps']:.4g}" for p in r["peers"])
                     + f" | {best} | {cell} | {wins} | {verdict} | {_crps(own)} | {_crps(gauss)} | {gain_cell} |")
    return lines


def _crps(rec) -> str:
    return "n/a" if rec is None or rec.get("crps") is None else f"{rec['crps']:.4g}"


def write(results: list[dict], command: str) -> None:
    lines = heading("gendiff against statsforecast, held out", command) + [
             "Fair CRPS in data units on the held-out inits of each series (periods as benchmarks/timeseries.py); "
             "the peers fitted once on the same training period and forecast from each init (gendiff.domains."
             "timeseries.peers), members drawn from their Gaussian predictive; intervals: 95% paired moving-block "
             "bootstrap over the inits (gendiff.domains.timeseries.intervals). verdict: win / loss where the interval "
             "excludes 0, tie otherwise.", ""]
    for r in results:
        cfg = r["config"]
        lines += [f"**{r['dataset']}**: gendiff trained {r['train_steps']} steps in {r['train_seconds']} s on "
                  f"{cfg['train_period'][0]} to {cfg['train_period'][1]}; {r['inits']} inits from "
                  f"{cfg['init_period'][0]} to {cfg['init_period'][1]} x {r['members']} members; peers and scores "
                  f"in {r['evaluate_seconds']} s.", ""]
        if r.get("peer_base"):
            pb = r["peer_base"]
            lines += [f"Base: {r['base']} -> {', '.join(pb['systems'])} (validation MAE in anomalies: "
                      f"{pb.get('validation_mae') or 'fixed'}).", ""]
        lines += best_peer_rows(r) + [""]
    names = [r["dataset"] for r in results]
    block = "latest" if names == ["co2", "solar", "taylor"] else "latest-" + "-".join(names)
    if results and results[0].get("base", "linear") != "linear":
        block += f"-base-{results[0]['base']}"
    write_block(RESULTS, "\n".join(lines), block=block, title="# gendiff against statsforecast on real series "
                                                              "(benchmarks/timeseries_peers.py)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="co2,solar,taylor")
    p.add_argument("--out", default="runs/bench-peers")
    p.add_argument("--minutes", type=float, default=3.0, help="gendiff's training budget per series")
    p.add_argument("--members", type=int, default=16)
    p.add_argument("--arima", action="store_true", help="AutoARIMA too (slow with long seasons)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--base", default="linear", help="the base the network departs from: linear (AR), "
                   "statsforecast (chosen per series on validation) or one statsforecast model (mstl, auto_ets, ...)")
    p.add_argument("--resume", action="store_true", help="train the runs in --out one more sitting of --minutes "
                   "(default: each series a fresh run)")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    command = shlex.join(["python", "benchmarks/timeseries_peers.py", *(argv or sys.argv[1:])])
    results = []
    for name in [n for n in args.datasets.split(",") if n]:
        r = run(name, Path(args.out), args.minutes, args.members, args.arima, args.seed, args.base, args.resume)
        results.append(r)
        print(f"{name}: {r['wall_seconds']} s", file=sys.stderr)
        print("\n".join(best_peer_rows(r)), file=sys.stderr)
    if not args.no_write:
        write(results, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
