"""`gendiff train|forecast|sample|evaluate|demo weather ...`: argument parsers and runners (heavy imports inside run)."""
from __future__ import annotations

import argparse
import json
import sys

from gendiff.device import add_device_argument  # light: gendiff itself already imports torch


def _period(text: str):
    from .data import parse_period

    return parse_period(text)


def _threads(args) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def _compute(p: argparse.ArgumentParser) -> None:
    """Options of the verbs that run the network: --device, --bf16, --compile."""
    add_device_argument(p)
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the network")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (pays off on long runs)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _lazy(p: argparse.ArgumentParser) -> None:
    """Options for data larger than memory: --chunks."""
    p.add_argument("--chunks", default=None,
                   help="read --data lazily with dask chunks: N time steps per chunk, or DIM=N,... "
                        "(e.g. time=24,latitude=100); default: lazy without dask for one file, the store's chunks "
                        "for zarr")


def add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="lorenz96",
                   help="netCDF / zarr / GRIB file, a quoted glob of files ('era5/*.nc', combined along time), or "
                        "'lorenz96' (default)")
    p.add_argument("--vars", default=None, help="comma-separated variables (default: all with a time dim)")
    p.add_argument("--train-period", default=None, help="START:END, inclusive (default: all the data)")
    p.add_argument("--context", default="24h", help="past context length (e.g. 24h)")
    p.add_argument("--horizon", default="24h", help="generated horizon per sample (e.g. 24h)")
    p.add_argument("--season", default=None,
                   help="season length(s) for the AR base, comma-separated durations or steps (e.g. 7d, or 1d,7d, "
                        "or 52W for weekly data): it then also takes the value one season back; the context must "
                        "reach back one season and a step")
    p.add_argument("--insolation", default="auto", choices=["auto", "off"],
                   help="daylight variables (auto: those that never vary at some hour of the day) on data with "
                        "latitude and longitude: their hourly climatology follows the sun's elevation through the "
                        "season (default auto; off: the training period's, fixed)")
    p.add_argument("--hourly-std", default="auto", choices=["auto", "on", "off"],
                   help="standardise the anomalies by their hour-of-day standard deviation too, for variables whose "
                        "variability follows the daily cycle (default auto: those that never vary at some hour of "
                        "the day, such as solar power and shortwave radiation, 0 every night)")
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--steps", type=int, default=None,
                   help="optimizer steps (default 500: with the other defaults the README's ERA5 commands train, "
                        "forecast and score within 20 minutes on 2 CPU cores; benchmarks/RESULTS.md)")
    p.add_argument("--minutes", type=float, default=None,
                   help="stop training before a step would overrun this many minutes (core TrainConfig.time_budget)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--width", type=int, default=None, help="U-Net base channels (default: 64 unet1d, 32 gridnet)")
    p.add_argument("--arch", choices=("unet1d", "gridnet"), default="unet1d",
                   help="network: unet1d (every cell a channel) or gridnet (one U-Net shared by every location, "
                        "any grid or station set)")
    p.add_argument("--static", default=None,
                   help="gridnet: file of time-free fields on the locations (land-sea mask, orography)")
    p.add_argument("--patch", type=int, default=None,
                   help="gridnet: train on random patches of this many neighbouring locations")
    p.add_argument("--schedule", default="cosine")
    p.add_argument("--sampler", default=None,
                   help="default sampler stored with the run (default dpm_solver_pp for forecasts: on ERA5 it gives "
                        "euler_maruyama's 100-step CRPS at a fifth of the cost, benchmarks/RESULTS.md; "
                        "euler_maruyama for --task impute)")
    p.add_argument("--sample-steps", type=int, default=None, help="its steps (default 20; 100 for --task impute)")
    p.add_argument("--calibration", type=float, default=0.15,
                   help="fraction of the training period (its end) held out to calibrate the ensemble spread; 0: off")
    p.add_argument("--calibration-inits", type=int, default=48,
                   help="inits of the held-out part the calibration forecasts from (evenly spaced; default 48)")
    p.add_argument("--task", choices=("forecast", "impute"), default="forecast",
                   help="forecast (context -> horizon) or impute (hide observed entries of --window steps and "
                        "generate them from the rest; for `gendiff impute`)")
    p.add_argument("--window", default="64", help="--task impute: window length (a duration or a number of steps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    _lazy(p)
    p.add_argument("--workers", type=int, default=0,
                   help="DataLoader worker processes reading training windows (each opens the files itself)")
    memory = p.add_mutually_exclusive_group()
    memory.add_argument("--in-memory", dest="in_memory", action="store_const", const=True, default=None,
                        help="read the normalised data into memory before training (default: when they fit)")
    memory.add_argument("--stream", dest="in_memory", action="store_const", const=False,
                        help="read every training window from disk on demand (data larger than memory)")
    _compute(p)
    _common(p)


def run_train(args) -> int:
    _threads(args)
    from . import train

    steps = {} if args.steps is None else {"max_steps": args.steps}
    summary = train(args.data, args.out, variables=args.vars, train_period=_period(args.train_period),
                    context=args.context, horizon=args.horizon, seasons=args.season, **steps, batch_size=args.batch_size,
                    hourly_std={"on": True, "off": False}.get(args.hourly_std, "auto"),
                    insolation=args.insolation == "auto",
                    lr=args.lr, schedule=args.schedule, sampler=args.sampler, arch=args.arch, static=args.static,
                    patch=args.patch,
                    net=None if args.width is None else {"width": args.width},
                    sample_steps=args.sample_steps, calibration=args.calibration,
                    calibration_inits=args.calibration_inits, seed=args.seed, resume=args.resume,
                    progress=not args.quiet, device=args.device, bf16=args.bf16, compile=args.compile,
                    task=args.task, window=int(args.window) if args.window.isdigit() else args.window,
                    chunks=args.chunks, workers=args.workers, in_memory=args.in_memory,
                    time_budget=None if args.minutes is None else 60.0 * args.minutes)
    print(json.dumps(summary, default=str))
    return 0


def add_forecast(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True,
                   help="run folder written by `gendiff train weather`, or pretrained:NAME (`gendiff list`)")
    p.add_argument("--data", default="lorenz96", help="file with the context (and truth) data, or 'lorenz96'")
    p.add_argument("--init-period", default=None, help="START:END of init times, inclusive")
    p.add_argument("--init-every", default="6h", help="spacing of init times in the period")
    p.add_argument("--members", type=int, default=16)
    p.add_argument("--lead", default="24h", help="longest lead time; rolled out past the horizon")
    p.add_argument("--out", required=True, help="forecast file (.nc, or .zarr with zarr installed)")
    p.add_argument("--sampler", default=None, help="override the run's sampler")
    p.add_argument("--steps", type=int, default=None, help="override the run's sampler steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256, help="windows sampled at once")
    p.add_argument("--chain-base", choices=("level", "ar"), default="level",
                   help="AR base of horizons past the first: from the generated context's level (default) or its "
                        "last steps")
    p.add_argument("--raw", action="store_true", help="skip the run's ensemble calibration")
    p.add_argument("--new-locations", action="store_true",
                   help="gridnet runs: forecast locations the run was not trained on (their climatology and AR base "
                        "fitted on the data before the first init)")
    p.add_argument("--static", default=None, help="with --new-locations: static fields of the new locations")
    _lazy(p)
    _compute(p)
    _common(p)


def forecast_command(args) -> str:
    """The command that reproduces a forecast: every option its values depend on, spelled out."""
    import shlex

    parts = ["gendiff", "forecast", "weather", "--run", str(args.run), "--data", str(args.data)]
    if args.init_period:
        parts += ["--init-period", str(args.init_period)]
    parts += ["--init-every", args.init_every, "--members", str(args.members), "--lead", args.lead,
              "--out", str(args.out), "--seed", str(args.seed)]
    for flag, value in (("--sampler", args.sampler), ("--steps", args.steps)):
        if value is not None:
            parts += [flag, str(value)]
    if args.chain_base != "level":
        parts += ["--chain-base", args.chain_base]
    parts += [flag for flag, on in (("--raw", args.raw), ("--bf16", args.bf16), ("--compile", args.compile),
                                    ("--new-locations", getattr(args, "new_locations", False))) if on]
    if getattr(args, "static", None):
        parts += ["--static", str(args.static)]
    if getattr(args, "chunks", None):
        parts += ["--chunks", str(args.chunks)]
    if args.device != "auto":
        parts += ["--device", args.device]
    if args.threads:
        parts += ["--threads", str(args.threads)]
    return shlex.join(parts)


def run_forecast(args) -> int:
    _threads(args)
    from . import forecast

    ds = forecast(args.run, args.data, init_period=_period(args.init_period), init_every=args.init_every,
                  members=args.members, lead=args.lead, sampler=args.sampler, steps=args.steps, seed=args.seed,
                  batch_size=args.batch_size, out=args.out, progress=not args.quiet, chain_base=args.chain_base,
                  calibrated=not args.raw, device=args.device, bf16=args.bf16, compile=args.compile,
                  command=forecast_command(args), new_locations=args.new_locations, static=args.static,
                  chunks=args.chunks)
    print(f"wrote {args.out}: {dict(ds.sizes)} in {ds.attrs['forecast_seconds']} s", file=sys.stderr)
    return 0


def add_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--forecast", required=True,
                   help="forecast file written by `gendiff forecast weather`, or one in WeatherBench2's layout "
                        "(time = init time, prediction_timedelta, ensemble dim number or realization)")
    p.add_argument("--truth", default="lorenz96", help="file with the verifying data, or 'lorenz96'")
    p.add_argument("--train-period", default=None, help="baselines' fitting period (default: the model's)")
    p.add_argument("--systems", default="model,persistence,climatology,linear",
                   help="comma-separated: model, persistence, climatology, linear, ar_calibrated (the run's AR base "
                        "with its held-out calibration and Gaussian noise, no network; needs the run)")
    p.add_argument("--run", default=None,
                   help="the run for ar_calibrated: a run folder or pretrained:NAME (default: the forecast's "
                        "gendiff_run attribute)")
    p.add_argument("--out", default=None, help="folder for scores.json, rank histograms and PNG plots")
    p.add_argument("--json", action="store_true", help="print the score records as JSON")
    p.add_argument("--record", action="store_true",
                   help="write the CRPS per lead of model and baselines onto the card of the forecast's run (a "
                        "run folder or pretrained:NAME), with the forecast and evaluate commands")
    p.add_argument("--key", default=None, help="name of the metrics block on the card (default: from the data)")
    _common(p)


def evaluate_command(args) -> str:
    import shlex

    parts = ["gendiff", "evaluate", "weather", "--forecast", str(args.forecast), "--truth", str(args.truth)]
    if args.train_period:
        parts += ["--train-period", str(args.train_period)]
    if args.systems != "model,persistence,climatology,linear":
        parts += ["--systems", args.systems]
    if args.run:
        parts += ["--run", str(args.run)]
    if args.key:
        parts += ["--key", args.key]
    return shlex.join(parts + ["--record"])


def run_evaluate(args) -> int:
    _threads(args)
    from gendiff.errors import ConfigError

    from . import evaluate
    from .demo_l96 import format_table
    from .scoring import SYSTEMS

    systems = [s for s in args.systems.split(",") if s]
    bad = [s for s in systems if s not in SYSTEMS]
    if bad:
        raise ConfigError(f"--systems: unknown system(s) {', '.join(bad)} (choose from {', '.join(SYSTEMS)})")
    records = evaluate(args.forecast, args.truth, train_period=_period(args.train_period), systems=systems,
                       out=args.out, run=args.run)
    print(json.dumps(records, indent=1) if args.json else format_table(records))
    if args.record:
        record(args, records)
    return 0


def record(args, records) -> None:
    """Write the evaluation onto the card of the forecast's run (its `gendiff_run` attribute)."""
    from pathlib import Path

    from gendiff import runs
    from gendiff.errors import DataError

    from .scoring import _open_forecast, card_metrics

    fc = _open_forecast(args.forecast)
    spec = fc.attrs.get("gendiff_run")
    if not spec:
        raise DataError(f"{args.forecast}: no 'gendiff_run' attribute; --record needs a forecast written by "
                        "`gendiff forecast weather`")
    info = runs.read_run(spec, domain="weather")
    block = card_metrics(records, fc)
    fc_cmd = fc.attrs.get("gendiff_command")
    command = (f"{fc_cmd} && " if fc_cmd else "") + evaluate_command(args)
    key = args.key or f"crps_{Path(str(args.truth)).stem}_{block['forecast']['inits']}inits_" \
                      f"{block['forecast']['members']}members"
    runs.record_metrics(info.path, key, block, command)
    print(f"recorded metrics '{key}' on {info.path / runs.CARD}", file=sys.stderr)


def add_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/weather-demo", help="folder for data, run, forecast, scores and plots")
    p.add_argument("--from-scratch", action="store_true",
                   help="train a small model first (about two minutes) instead of using pretrained:lorenz96")
    p.add_argument("--steps", type=int, default=None,
                   help="with --from-scratch: training steps (default: sized for ~2 minutes)")
    p.add_argument("--run", default="pretrained:lorenz96", help="without --from-scratch: the Lorenz-96 run to use")
    add_device_argument(p)
    _common(p)


def run_demo(args) -> int:
    _threads(args)
    from .demo_l96 import format_table, run_demo as _demo, run_pretrained_demo

    if args.from_scratch:
        result = _demo(args.out, max_steps=args.steps, progress=not args.quiet, device=args.device)
    else:
        result = run_pretrained_demo(args.out, run=args.run, progress=not args.quiet, device=args.device)
    print(format_table(result["records"]))
    print(f"done in {result['seconds']['total']} s; plots and scores in {args.out}", file=sys.stderr)
    return 0


VERBS = {
    "train": (add_train, run_train),
    "forecast": (add_forecast, run_forecast),
    "sample": (add_forecast, run_forecast),
    "evaluate": (add_evaluate, run_evaluate),
    "demo": (add_demo, run_demo),
}

from .tabular_cli import extend_verbs  # noqa: E402  CSV / Parquet inputs and tidy outputs on the verbs

VERBS = extend_verbs(VERBS)

from .impute_cli import VERBS as _IMPUTE_VERBS  # noqa: E402  gendiff impute weather|timeseries

VERBS.update(_IMPUTE_VERBS)
