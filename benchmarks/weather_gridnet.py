"""The location-shared network (arch='gridnet') on Lorenz-96, trained briefly with the shipped model's recipe,
scored against the baselines and the shipped unet1d model's card, side by side.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/weather_gridnet.py --out runs/gridnet-l96 --steps 600

Train on 2000-01-01 to 2002-03-31 (context 48 h, horizon 48 h, lr 1e-3, as benchmarks/weather.py's lorenz96
recipe), forecast every --init-every (72 h as the shipped card) init of 2002-05-01 to 2002-09-20 to 120 h with
--members members, score model and baselines on those inits. Resumable (checkpoints in --out). Writes the
<!-- latest --> block of benchmarks/results/weather_gridnet.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
LEADS = (24, 72, 120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/gridnet-l96")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--neighbours", type=int, default=8)
    p.add_argument("--members", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--sample-steps", type=int, default=50)
    p.add_argument("--init-every", default="72h")
    p.add_argument("--results", default=str(HERE / "results" / "weather_gridnet.md"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from _machine import machine  # python puts the script's folder, benchmarks/, on sys.path
    from _results import write_block
    from weather import SYSTEMS
    from gendiff.domains import weather
    from gendiff.domains.weather.lorenz96 import lorenz96_dataset

    out = Path(args.out)
    ds = lorenz96_dataset(4000)
    t0 = time.perf_counter()
    summary = weather.train(ds, out / "run", arch="gridnet", train_period="2000-01-01:2002-03-31", context="48h",
                            horizon="48h", net={"width": args.width, "mults": [1, 2], "neighbours": args.neighbours},
                            max_steps=args.steps, lr=1e-3, sample_steps=args.sample_steps, resume="auto",
                            progress=False, ckpt_every=50, batch_size=args.batch_size)
    t_train = time.perf_counter() - t0
    fc = weather.forecast(out / "run", ds, init_period="2002-05-01:2002-09-20", init_every=args.init_every,
                          members=args.members, lead="120h", out=out / "forecast.nc", progress=False)
    records = weather.evaluate(fc, ds, systems=SYSTEMS, plots=False, run=out / "run")
    crps = {(r["system"], round(r["lead_time_hours"])): r["crps"] for r in records}
    card = json.loads((HERE.parent / "domains/weather/pretrained/lorenz96/card.json").read_text())
    shipped = next(iter(card["metrics"].values()))
    lines = ["# gridnet on Lorenz-96", "",
             f"Command: `python benchmarks/weather_gridnet.py --out {args.out} --steps {args.steps} --width "
             f"{args.width} --neighbours {args.neighbours} --members {args.members} --batch-size {args.batch_size} "
             f"--sample-steps {args.sample_steps} --init-every {args.init_every}`; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
             f"{machine('cpu')}; one torch thread; train {t_train:.0f} s ({summary.get('parameters')} parameters, "
             f"{summary.get('step')} steps), forecast {fc.attrs['forecast_seconds']:.0f} s, "
             f"{fc.sizes['init_time']} inits x {fc.sizes['member']} members.", "",
             "| lead | gridnet | " + " | ".join(s for s in SYSTEMS if s != "model") +
             " | shipped unet1d (its card: 48 inits x 16 members, 50 steps) |",
             "|---:|---:|" + "---:|" * (len(SYSTEMS) - 1) + "---:|"]
    for h in LEADS:
        row = [f"{crps[('model', h)]:.3f}"] + [f"{crps[(s, h)]:.3f}" for s in SYSTEMS if s != "model"]
        lines.append(f"| {h} h | " + " | ".join(row) + f" | {shipped.get(f'crps_{h}h', float('nan')):.3f} |")
    at_or_below = all(crps[("model", round(r["lead_time_hours"]))] <= crps[("climatology", round(r["lead_time_hours"]))]
                      for r in records if r["system"] == "climatology")
    lines += ["", f"gridnet CRPS at or below climatology at every lead: {at_or_below}.", "", "```json",
              json.dumps({f"{s}@{h}": v for (s, h), v in crps.items()}), "```"]
    write_block(args.results, "\n".join(lines[1:]).strip("\n"),
                title="# The shared network (gridnet) on Lorenz-96 (benchmarks/weather_gridnet.py)")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
