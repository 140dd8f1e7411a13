"""`gendiff impute weather|timeseries`: fill the gaps of a series file with draws from a run trained with
`--task impute`, or with --evaluate hide a fraction of the observed values and score the imputation against linear
interpolation and a seasonal baseline (impute_eval.py)."""
from __future__ import annotations

import argparse
import json
import sys

from gendiff.device import add_device_argument
from gendiff.errors import ConfigError
from gendiff.io import write_json_atomic

from .cli_options import period, threads
from .impute_eval import format_records
from .tabular import TableFile, TableOutput, file_format, is_table, parse_quantiles


def add_impute(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="run folder written by `gendiff train timeseries --task impute`")
    p.add_argument("--data", required=True, help="CSV / Parquet table or netCDF / zarr file with the gaps (NaN)")
    p.add_argument("--time-column", default=None,
                   help="time column of CSV / Parquet inputs (default: the first datetime column)")
    p.add_argument("--members", type=int, default=16, help="independent draws per gap")
    p.add_argument("--out", default=None,
                   help="output file: .csv / .parquet (tidy table time, series, member, value, observed), .nc "
                        "(member, time, ...); with --evaluate: a JSON file of the scores")
    p.add_argument("--output-format", choices=("csv", "parquet", "netcdf"), default=None,
                   help="format of --out (default: from its suffix)")
    p.add_argument("--quantiles", default=None, help="comma-separated quantiles written in place of the members")
    p.add_argument("--wide", action="store_true",
                   help="write the input's shape (a column per series), gaps filled with the members' median")
    p.add_argument("--evaluate", action="store_true",
                   help="hide --fraction of the observed values, impute them and score model, linear "
                        "interpolation and seasonal baseline (CRPS, normalised CRPS as CSDI reports it, MAE)")
    p.add_argument("--fraction", type=float, default=0.1, help="with --evaluate: fraction of observed values hidden")
    p.add_argument("--period", default=None, help="with --evaluate: START:END where values are hidden")
    p.add_argument("--season", type=int, default=None,
                   help="with --evaluate: season of the seasonal baseline in steps (default: from the time step)")
    p.add_argument("--json", action="store_true", help="with --evaluate: print the score records as JSON")
    p.add_argument("--sampler", default=None, help="override the run's sampler")
    p.add_argument("--steps", type=int, default=None, help="override the run's sampler steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256, help="windows x members sampled at once")
    add_device_argument(p)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run_impute(args) -> int:
    threads(args)
    data = args.data
    if is_table(data):
        data = TableFile(data, args.time_column)
    elif args.time_column is not None:
        raise ConfigError("--time-column applies to CSV / Parquet inputs (--data ending in .csv or .parquet)")
    common = dict(members=args.members, sampler=args.sampler, steps=args.steps, seed=args.seed,
                  device=args.device, progress=not args.quiet)
    if args.evaluate:
        if args.quantiles or args.wide or args.output_format:
            raise ConfigError("--evaluate writes scores: --quantiles, --wide and --output-format do not apply")
        result = args._api.evaluate_imputation(args.run, data, fraction=args.fraction, period=period(args.period),
                                     season=args.season, **common)
        print(json.dumps(result, indent=1) if args.json else format_records(result["records"]))
        if args.out:
            write_json_atomic(args.out, result)
        return 0
    if args.period or args.season is not None:
        raise ConfigError("--period and --season are options of --evaluate")
    if args.out is None:
        raise ConfigError("--out is required (an imputed .csv / .parquet / .nc file), unless --evaluate")
    quantiles = parse_quantiles(args.quantiles)
    fmt = args.output_format or file_format(args.out)
    if fmt == "netcdf" and file_format(args.out) in ("csv", "parquet"):
        raise ConfigError(f"--output-format netcdf with --out {args.out}: name the file .nc")
    if fmt in ("csv", "parquet"):
        out = TableOutput(args.out, fmt, quantiles)
        out.wide = bool(args.wide)
    elif fmt == "netcdf" or fmt is None:
        if quantiles is not None or args.wide:
            raise ConfigError("--quantiles and --wide need a csv or parquet --out (or --output-format csv / parquet)")
        out = args.out
    ds = args._api.impute(args.run, data, out=out, output="xarray", batch_size=args.batch_size, **common)
    print(f"wrote {args.out}: {dict(ds.sizes)} in {ds.attrs['impute_seconds']} s", file=sys.stderr)
    return 0

