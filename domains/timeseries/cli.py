"""`gendiff train|forecast|sample|evaluate|impute timeseries ...`: argument parsers and runners. make_verbs binds them
to a module of verbs (this package's, or the weather adapter's) and a domain name for the commands it records."""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from gendiff import runs
from gendiff.errors import ConfigError, DataError

from .cli_options import common, compute, lazy, period, threads
from gendiff.device import add_device_argument

from . import demo_co2, verbs
from .impute_cli import add_impute, run_impute
from .joint import JOINT, format_joint
from .peerbase import BASES
from .scoring import SYSTEMS, _open_forecast, card_metrics, format_table
from .tabular_cli import extend_verbs


def add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="lorenz96",
                   help="netCDF / zarr / GRIB file, a quoted glob of files ('era5/*.nc', combined along time), or "
                        "'lorenz96' (default)")
    p.add_argument("--vars", default=None, help="comma-separated variables (default: all with a time dim)")
    p.add_argument("--train-period", default=None, help="START:END, inclusive (default: all the data)")
    p.add_argument("--context", default=None,
                   help="past context length (e.g. 48h; default: twice the horizon, and the longest season + 2)")
    p.add_argument("--horizon", default=None,
                   help="generated horizon per sample (e.g. 24h, or steps; default from the frequency: a day of "
                        "sub-daily data, 14 days of daily, 13 weeks of weekly, 12 months of monthly data, else 8 "
                        "steps)")
    p.add_argument("--season", default="auto",
                   help="season length(s) for the AR base, comma-separated durations or steps (e.g. 7d, or 1d,7d, "
                        "or 52W for weekly data, 12 for monthly): it then also takes the value one season back; the "
                        "context must reach back one season and a step. Default auto: the day, week and year that "
                        "the training data show (lag autocorrelation, frequency.py; the run's card says why); none: "
                        "no season")
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
                        "forecast and score within 20 minutes on 2 CPU cores; benchmarks/RESULTS.md; a table of at "
                        "most 64 series without --steps or --minutes trains for 30 s)")
    p.add_argument("--minutes", type=float, default=None,
                   help="stop training before a step would overrun this many minutes (core TrainConfig.time_budget)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--width", type=int, default=None, help="U-Net base channels (default: 64 unet1d, 32 gridnet)")
    p.add_argument("--arch", choices=("unet1d", "gridnet", "auto"), default=None,
                   help="network: unet1d (every cell a channel), gridnet (one U-Net shared by every location or "
                        "series, any grid or station set) or auto (tables' default: unet1d up to 64 series, gridnet "
                        "on patches of 16 above); default unet1d for gridded data")
    p.add_argument("--base", default=None, choices=("linear", *BASES),
                   help="the forecast the network generates departures from: linear (the damped seasonal AR, the "
                        "default), statsforecast (per series and lead MSTL, AutoETS, AutoARIMA and SeasonalNaive "
                        "weighted by inverse validation MSE; needs statsforecast) or one of those models")
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
    lazy(p)
    p.add_argument("--workers", type=int, default=0,
                   help="DataLoader worker processes reading training windows (each opens the files itself)")
    memory = p.add_mutually_exclusive_group()
    memory.add_argument("--in-memory", dest="in_memory", action="store_const", const=True, default=None,
                        help="read the normalised data into memory before training (default: when they fit)")
    memory.add_argument("--stream", dest="in_memory", action="store_const", const=False,
                        help="read every training window from disk on demand (data larger than memory)")
    compute(p)
    common(p)


def run_train(args) -> int:
    threads(args)
    steps = {} if args.steps is None else {"max_steps": args.steps}
    summary = args._api.train(args.data, args.out, variables=args.vars, train_period=period(args.train_period),
                    context=args.context, horizon=args.horizon, seasons=args.season, **steps, batch_size=args.batch_size,
                    hourly_std={"on": True, "off": False}.get(args.hourly_std, "auto"),
                    insolation=args.insolation == "auto",
                    lr=args.lr, schedule=args.schedule, sampler=args.sampler, static=args.static,
                    patch=args.patch, **({} if args.arch is None else {"arch": args.arch}),
                    **({} if args.base is None else {"base": args.base}),
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
    p.add_argument("--init-every", default=None,
                   help="spacing of init times in the period (a duration or steps; default: the run's horizon)")
    p.add_argument("--members", type=int, default=16)
    p.add_argument("--lead", default=None,
                   help="longest lead time (a duration or steps; rolled out past the horizon); default 24h, or the "
                        "run's horizon for a long table and for monthly, quarterly or yearly data")
    p.add_argument("--level", default=None,
                   help="long tables (unique_id, ds, y): prediction-interval levels in percent (default 80,95), "
                        "written as statsforecast's gendiff-lo-80 / gendiff-hi-80 columns")
    p.add_argument("--future", default=None,
                   help="long tables: a CSV / Parquet file of unique_id, ds and the run's covariate columns over the "
                        "steps to forecast (statsforecast's X_df)")
    p.add_argument("--out", required=True, help="forecast file (.nc, or .zarr with zarr installed)")
    p.add_argument("--sampler", default=None, help="override the run's sampler")
    p.add_argument("--steps", type=int, default=None, help="override the run's sampler steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256, help="windows sampled at once")
    p.add_argument("--chain-base", choices=("level", "ar"), default="level",
                   help="AR base of horizons past the first: from the generated context's level (default) or its "
                        "last steps")
    p.add_argument("--raw", action="store_true", help="skip the run's ensemble calibration")
    p.add_argument("--recalibrate", default=None, choices=["past"],
                   help="past: refit the ensemble calibration for each init on the network's forecasts of the days "
                        "before it whose leads are verified (a sliding window, as operational post-processing; the "
                        "past inits are forecast too), instead of the run's fixed calibration")
    p.add_argument("--recalibrate-days", type=float, default=40.0,
                   help="the sliding window of --recalibrate past, in days (default 40, Gneiting et al. 2005)")
    p.add_argument("--new-locations", action="store_true",
                   help="gridnet runs: forecast locations the run was not trained on (their climatology and AR base "
                        "fitted on the data before the first init)")
    p.add_argument("--static", default=None, help="with --new-locations: static fields of the new locations")
    p.add_argument("--allow-in-sample", action="store_true",
                   help="forecast from init times inside the run's training period (refused otherwise), marking the "
                        "forecast in-sample")
    lazy(p)
    compute(p)
    common(p)


def forecast_command(args) -> str:
    """The command that reproduces a forecast: every option its values depend on, spelled out."""
    parts = ["gendiff", "forecast", args._domain, "--run", str(args.run), "--data", str(args.data)]
    if getattr(args, "future", None):
        parts += ["--future", str(args.future)]
    if args.init_period:
        parts += ["--init-period", str(args.init_period)]
    parts += [*(["--init-every", str(args.init_every)] if args.init_every else []), "--members", str(args.members),
              *(["--lead", str(args.lead)] if args.lead else []),
              "--out", str(args.out), "--seed", str(args.seed)]
    for flag, value in (("--sampler", args.sampler), ("--steps", args.steps)):
        if value is not None:
            parts += [flag, str(value)]
    if args.chain_base != "level":
        parts += ["--chain-base", args.chain_base]
    if getattr(args, "recalibrate", None):
        parts += ["--recalibrate", args.recalibrate, "--recalibrate-days", f"{args.recalibrate_days:g}"]
    parts += [flag for flag, on in (("--raw", args.raw), ("--bf16", args.bf16), ("--compile", args.compile),
                                    ("--new-locations", getattr(args, "new_locations", False)),
                                    ("--allow-in-sample", getattr(args, "allow_in_sample", False))) if on]
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
    threads(args)
    extra = {} if args.lead is None else {"lead": args.lead}
    if args.level is not None:
        extra["level"] = args.level
    if getattr(args, "future", None):
        extra["X_df"] = args.future
    ds = args._api.forecast(args.run, args.data, init_period=period(args.init_period), init_every=args.init_every,
                  members=args.members, sampler=args.sampler, steps=args.steps, seed=args.seed, **extra,
                  batch_size=args.batch_size, out=args.out, progress=not args.quiet, chain_base=args.chain_base,
                  calibrated=not args.raw, device=args.device, bf16=args.bf16, compile=args.compile,
                  command=forecast_command(args), new_locations=args.new_locations, static=args.static,
                  chunks=args.chunks, allow_in_sample=args.allow_in_sample, recalibrate=args.recalibrate,
                  recalibrate_days=args.recalibrate_days)
    if hasattr(ds, "sizes"):
        print(f"wrote {args.out}: {dict(ds.sizes)} in {ds.attrs['forecast_seconds']} s", file=sys.stderr)
    else:  # a long table's forecast: statsforecast's long table
        print(f"wrote {args.out}: {len(ds)} rows, {ds['unique_id'].nunique()} series", file=sys.stderr)
    return 0


def add_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--forecast", required=True,
                   help="forecast file written by `gendiff forecast weather`, or one in WeatherBench2's layout "
                        "(time = init time, prediction_timedelta, ensemble dim number or realization)")
    p.add_argument("--truth", default="lorenz96", help="file with the verifying data, or 'lorenz96'")
    p.add_argument("--train-period", default=None, help="baselines' fitting period (default: the model's)")
    p.add_argument("--systems", default="model,persistence,climatology,linear",
                   help="comma-separated: model, persistence, climatology, linear, ar_calibrated (the run's AR base "
                        "with its held-out calibration and Gaussian noise, no network), ar_base (the AR base alone), "
                        "emos_ar (EMOS on it), emos (EMOS on the model's ensemble; both cross-fitted over two halves "
                        "of the inits), emos_ar_past (EMOS on the AR base fitted on the 40 days before each init: "
                        "past data only, as run operationally), and statsforecast's auto_ets, auto_arima, mstl, seasonal_naive, naive "
                        "(pip install 'gendiff[peers]')")
    p.add_argument("--run", default=None,
                   help="the run for ar_calibrated, ar_base, emos_ar and emos_ar_past: a run folder or pretrained:NAME (default: "
                        "the forecast's gendiff_run attribute)")
    p.add_argument("--out", default=None, help="folder for scores.json, rank histograms and PNG plots")
    p.add_argument("--json", action="store_true", help="print the score records as JSON")
    p.add_argument("--record", action="store_true",
                   help="write the CRPS per lead of model and baselines onto the card of the forecast's run (a "
                        "run folder or pretrained:NAME), with the forecast and evaluate commands")
    p.add_argument("--key", default=None, help="name of the metrics block on the card (default: from the data)")
    p.add_argument("--allow-in-sample", action="store_true",
                   help="score init times inside the model's or the baselines' training period (refused otherwise); "
                        "the records are marked in_sample")
    p.add_argument("--per-series", action="store_true",
                   help="also score each series of a (time, series) table on its own (records with `series`)")
    p.add_argument("--joint", action="store_true",
                   help="also the joint scores over every series, cell and variable per lead: energy score and "
                        "CRPS-sum (one variable), with the model's paired interval against each system "
                        "(joint_scores.json under --out)")
    common(p)


def evaluate_command(args) -> str:
    parts = ["gendiff", "evaluate", args._domain, "--forecast", str(args.forecast), "--truth", str(args.truth)]
    if args.train_period:
        parts += ["--train-period", str(args.train_period)]
    if args.systems != "model,persistence,climatology,linear":
        parts += ["--systems", args.systems]
    if args.run:
        parts += ["--run", str(args.run)]
    if args.key:
        parts += ["--key", args.key]
    if args.allow_in_sample:
        parts.append("--allow-in-sample")
    return shlex.join(parts + ["--record"])


def run_evaluate(args) -> int:
    threads(args)
    systems = [s for s in args.systems.split(",") if s]
    bad = [s for s in systems if s not in SYSTEMS]
    if bad:
        raise ConfigError(f"--systems: unknown system(s) {', '.join(bad)} (choose from {', '.join(SYSTEMS)})")
    records = args._api.evaluate(args.forecast, args.truth, train_period=period(args.train_period), systems=systems,
                       out=args.out, run=args.run, allow_in_sample=args.allow_in_sample,
                       per_series=args.per_series, joint=args.joint)
    joint = [r for r in records if r["variable"] == JOINT]
    records = [r for r in records if r["variable"] != JOINT]
    print(json.dumps(records + joint, indent=1) if args.json else format_table(records)
          + ("\n\n" + format_joint(joint) if joint else ""))
    if args.record:
        record(args, records)
    return 0


def record(args, records) -> None:
    """Write the evaluation onto the card of the forecast's run (its `gendiff_run` attribute)."""
    fc = _open_forecast(args.forecast)
    spec = fc.attrs.get("gendiff_run")
    if not spec:
        raise DataError(f"{args.forecast}: no 'gendiff_run' attribute; --record needs a forecast written by "
                        f"`gendiff forecast {args._domain}`")
    info = runs.read_run(spec, domain="weather")
    block = card_metrics(records, fc)
    fc_cmd = fc.attrs.get("gendiff_command")
    command = (f"{fc_cmd} && " if fc_cmd else "") + evaluate_command(args)
    key = args.key or f"crps_{Path(str(args.truth)).stem}_{block['forecast']['inits']}inits_" \
                      f"{block['forecast']['members']}members"
    runs.record_metrics(info.path, key, block, command)
    print(f"recorded metrics '{key}' on {info.path / runs.CARD}", file=sys.stderr)


def make_verbs(api, domain: str, data_default: str | None = None, defaults: dict | None = None) -> dict:
    """The VERBS table {verb: (add_arguments, run)} of the time-series verbs, their runners calling `api`'s
    train / forecast / evaluate / impute / evaluate_imputation and recording commands as `gendiff VERB domain`;
    `data_default`: the --data of train and forecast when none is given (None: --data is required);
    `defaults`: {verb: {dest: value}} other defaults (the weather adapter keeps 24 h context and horizon, no
    season, inits every 6 h and a 24 h lead)."""

    def bound(add):
        def add_arguments(p: argparse.ArgumentParser) -> None:
            add(p)
            for action in p._actions:
                if action.dest in ("data", "truth") and add is not add_impute:
                    action.default, action.required = data_default, data_default is None
            for verb, values in (defaults or {}).items():
                if add is table[verb][0]:
                    p.set_defaults(**values)
            p.set_defaults(_api=api, _domain=domain)

        return add_arguments

    table = {"train": (add_train, run_train), "forecast": (add_forecast, run_forecast),
             "sample": (add_forecast, run_forecast), "evaluate": (add_evaluate, run_evaluate),
             "impute": (add_impute, run_impute)}
    return extend_verbs({verb: (bound(add), run) for verb, (add, run) in table.items()})


def add_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/timeseries-demo", help="folder for the run, forecast, scores and plots")
    p.add_argument("--minutes", type=float, default=None, help="cap on the training time (default: 200 steps)")
    p.add_argument("--seed", type=int, default=0, help="seed of the training and the forecast's draws")
    add_device_argument(p)
    common(p)


def run_demo(args) -> int:
    threads(args)
    result = demo_co2.demo(args.out, device=args.device, progress=not args.quiet, minutes=args.minutes,
                           seed=args.seed)
    weeks = {7 * 24.0 * w for w in (1, 4, 13, 26, 52)}  # every lead is in scores/scores.json
    print(format_table([r for r in result["records"] if r["lead_time_hours"] in weeks]))
    print(f"done in {result['seconds']['total']} s; forecast.csv, plots and scores in {args.out}", file=sys.stderr)
    return 0


VERBS = {**make_verbs(verbs, "timeseries"), "demo": (add_demo, run_demo)}
