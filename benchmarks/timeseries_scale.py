"""Many series in one long table (issue 29): gendiff against statsforecast on time and peak memory, side by side on
the same table and machine. A table of N series x T hourly steps (statsforecast's unique_id / ds / y; series start at
different times) is written once; every system then runs in its own process (so that its peak resident memory is its
own): gendiff trains with the defaults (arch 'auto': one temporal U-Net shared by the series, on patches of 16)
within a CPU budget and forecasts every series `h` steps from its own end; each statsforecast model fits and
forecasts the same table. The last `h` steps of every series are held out and score the point forecast (MAE) and the
80% interval (coverage).

    OMP_NUM_THREADS=2 nice python benchmarks/timeseries_scale.py --series 10000 --steps 1000 --minutes 5
    python benchmarks/timeseries_scale.py --series 200 --steps 400 --minutes 0.5 --no-write      # a quick look

The table is synthetic (a daily cycle of random amplitude and phase on a random level, AR(1) noise of random
persistence and scale; seeded): this measures cost, not skill (benchmarks/timeseries_peers.py races on real data).
Needs statsforecast (pip install 'gendiff[peers]'). Writes benchmarks/results/timeseries_scale.md.
"""
from __future__ import annotations

import argparse
import json
import resource
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from _machine import machine  # noqa: E402  (python puts the script's folder, benchmarks/, on sys.path)
from _results import write_block  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "timeseries_scale.md"
PEERS = ("seasonal_naive", "mstl", "auto_ets")


def make_table(n: int, length: int, seed: int = 0) -> pd.DataFrame:
    """N hourly series of up to `length` steps, each starting at a random step of the first fifth."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    amp, phase = rng.uniform(0.5, 3, n), rng.uniform(0, 2 * np.pi, n)
    level, scale, phi = rng.uniform(-5, 50, n), rng.uniform(0.2, 2, n), rng.uniform(0.5, 0.95, n)
    noise = np.zeros((length, n))
    eps = rng.standard_normal((length, n)) * scale
    for i in range(1, length):
        noise[i] = phi * noise[i - 1] + eps[i]
    y = level + amp * np.sin(2 * np.pi * t[:, None] / 24 + phase) + noise
    start = rng.integers(0, length // 5, n)
    keep = t[None, :] >= start[:, None]  # (n, T)
    ds = pd.date_range("2020-01-01", periods=length, freq="h").to_numpy()
    ids = np.array([f"s{i:05d}" for i in range(n)])
    return pd.DataFrame({"unique_id": np.repeat(ids, length)[keep.ravel()], "ds": np.tile(ds, n)[keep.ravel()],
                         "y": y.T.ravel()[keep.ravel()].astype(np.float32)})


def split(df: pd.DataFrame, h: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test): each series' last h rows held out."""
    last = df.groupby("unique_id")["ds"].transform("max")
    test = df["ds"] > last - pd.Timedelta(hours=h)
    return df[~test].reset_index(drop=True), df[test].reset_index(drop=True)


def child_gendiff(train: pd.DataFrame, args) -> pd.DataFrame:
    from gendiff.domains import timeseries
    out = Path(args.work) / "gendiff_run"
    t0 = time.perf_counter()
    summary = timeseries.train(train, out, horizon=args.h, time_budget=60.0 * args.minutes, max_steps=100_000,
                               progress=False, seed=0, resume=False)
    t1 = time.perf_counter()
    fc = timeseries.forecast(out, train, h=args.h, level=[80], members=args.members, progress=False)
    t2 = time.perf_counter()
    fc = fc.rename(columns={"gendiff": "point", "gendiff-lo-80": "lo", "gendiff-hi-80": "hi"})
    fc.attrs = {"fit_seconds": t1 - t0, "forecast_seconds": t2 - t1, "steps": int(summary["step"]),
                "arch": json.loads((out / "config.json").read_text())["arch"]}
    return fc


def child_peer(train: pd.DataFrame, name: str, args) -> pd.DataFrame:
    from statsforecast import StatsForecast
    from statsforecast.models import MSTL, AutoETS, SeasonalNaive
    model = {"seasonal_naive": lambda: SeasonalNaive(24), "auto_ets": lambda: AutoETS(season_length=24),
             "mstl": lambda: MSTL(season_length=[24, 168])}[name]()
    t0 = time.perf_counter()
    sf = StatsForecast(models=[model], freq="h", n_jobs=args.jobs)
    fc = sf.forecast(df=train, h=args.h, level=[80])
    col = [c for c in fc.columns if c not in ("unique_id", "ds") and "-lo-" not in c and "-hi-" not in c][0]
    fc = fc.rename(columns={col: "point", f"{col}-lo-80": "lo", f"{col}-hi-80": "hi"})
    fc.attrs = {"fit_seconds": time.perf_counter() - t0, "forecast_seconds": 0.0}
    return fc


def child(args) -> None:
    t0 = time.perf_counter()
    train = pd.read_parquet(Path(args.work) / "train.parquet")
    read = time.perf_counter() - t0
    fc = child_gendiff(train, args) if args.child == "gendiff" else child_peer(train, args.child, args)
    fc = fc.reset_index() if "unique_id" not in fc.columns else fc
    fc[["unique_id", "ds", "point", "lo", "hi"]].to_parquet(Path(args.work) / f"fc_{args.child}.parquet")
    info = {**fc.attrs, "read_seconds": read, "wall_seconds": time.perf_counter() - t0,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "cpu_seconds": sum(resource.getrusage(resource.RUSAGE_SELF)[:2])}
    (Path(args.work) / f"info_{args.child}.json").write_text(json.dumps(info))


def score(work: Path, system: str, test: pd.DataFrame) -> dict:
    fc = pd.read_parquet(work / f"fc_{system}.parquet")
    fc["unique_id"] = fc["unique_id"].astype(str)
    m = test.merge(fc, on=["unique_id", "ds"], how="left")
    info = json.loads((work / f"info_{system}.json").read_text())
    return {**info, "mae": float(np.nanmean(np.abs(m["y"] - m["point"]))),
            "coverage_80": float(np.nanmean((m["y"] >= m["lo"]) & (m["y"] <= m["hi"]))),
            "missing": int(m["point"].isna().sum())}


def table(res: dict, args) -> list[str]:
    g = res["gendiff"]
    lines = ["| system | fit s | forecast s | wall s (process) | CPU s | peak RSS MB | wall / gendiff's | "
             "RSS / gendiff's | MAE (last 24 h) | 80% coverage |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in res.items():
        lines.append(f"| {name} | {r['fit_seconds']:.0f} | {r['forecast_seconds']:.0f} | {r['wall_seconds']:.0f} | "
                     f"{r['cpu_seconds']:.0f} | {r['peak_rss_mb']:.0f} | {r['wall_seconds'] / g['wall_seconds']:.2f} | "
                     f"{r['peak_rss_mb'] / g['peak_rss_mb']:.2f} | {r['mae']:.3f} | {r['coverage_80']:.3f} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--series", type=int, default=10_000)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--h", type=int, default=24)
    p.add_argument("--minutes", type=float, default=5.0, help="gendiff's training budget (wall minutes)")
    p.add_argument("--members", type=int, default=16)
    p.add_argument("--peers", default=",".join(PEERS))
    p.add_argument("--jobs", type=int, default=2, help="statsforecast's n_jobs")
    p.add_argument("--work", default="runs/bench-scale")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    train, test = split(make_table(args.series, args.steps), args.h)
    train.to_parquet(work / "train.parquet")
    test["unique_id"] = test["unique_id"].astype(str)
    res = {}
    for system in ["gendiff", *[s for s in args.peers.split(",") if s]]:
        cmd = [sys.executable, __file__, *sys.argv[1:], "--child", system]
        subprocess.run(cmd, check=True)
        res[system] = score(work, system, test)
        print(system, json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in res[system].items()}),
              flush=True)
    lines = table(res, args)
    print("\n".join(lines))
    if not args.no_write:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        body = [f"## {args.series} series x {args.steps} hourly steps (written {stamp})", "",
                f"- command: `python benchmarks/timeseries_scale.py {shlex.join(sys.argv[1:])}`",
                f"- machine: {machine()}", f"- gendiff: arch {res['gendiff'].get('arch')}, "
                f"{res['gendiff'].get('steps')} training steps in {args.minutes} min, {args.members} members; "
                f"statsforecast n_jobs={args.jobs}; each system in its own process (peak RSS is its own)", "",
                *lines]
        write_block(RESULTS, "\n".join(body), title="# Many series: gendiff against statsforecast on time and memory")


if __name__ == "__main__":
    main()
