"""`gendiff train|forecast|sample|evaluate|impute|demo weather ...`: the time-series verbs on gridded data (Lorenz-96
by default, scores with cell-area latitude weights) and the Lorenz-96 demo."""
from __future__ import annotations

import argparse
import sys

from gendiff.device import add_device_argument
from gendiff.domains import weather
from gendiff.domains.timeseries.cli import make_verbs
from gendiff.domains.timeseries.cli_options import common, threads
from gendiff.domains.timeseries.scoring import format_table


def add_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/weather-demo", help="folder for data, run, forecast, scores and plots")
    p.add_argument("--from-scratch", action="store_true",
                   help="train a small model first (about two minutes) instead of using pretrained:lorenz96")
    p.add_argument("--steps", type=int, default=None,
                   help="with --from-scratch: training steps (default: sized for ~2 minutes)")
    p.add_argument("--minutes", type=float, default=None,
                   help="with --from-scratch: training time budget in minutes, as in every domain")
    p.add_argument("--seed", type=int, default=0, help="seed of the training and the forecast's draws")
    p.add_argument("--run", default="pretrained:lorenz96", help="without --from-scratch: the Lorenz-96 run to use")
    add_device_argument(p)
    common(p)


def run_demo(args) -> int:
    threads(args)
    if args.from_scratch:
        budget = {} if args.minutes is None else {"time_budget": 60.0 * args.minutes}
        result = weather.demo(args.out, from_scratch=True, max_steps=args.steps, progress=not args.quiet,
                              device=args.device, seed=args.seed, **budget)
    else:
        result = weather.demo(args.out, run=args.run, progress=not args.quiet, device=args.device, seed=args.seed)
    print(format_table(result["records"]))
    print(f"done in {result['seconds']['total']} s; plots and scores in {args.out}", file=sys.stderr)
    return 0


VERBS = {**make_verbs(weather, "weather", data_default="lorenz96", defaults=weather.CLI_DEFAULTS),
         "demo": (add_demo, run_demo)}
