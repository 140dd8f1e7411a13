"""CSV / Parquet on the weather verbs: --time-column for the input tables, --quantiles and --output-format for the
forecast file. extend_verbs wraps a domain's VERBS table; the wrapped runners hand the weather verbs tabular.TableFile
and tabular.TableOutput paths (strings that carry these options), which the package's entry points read."""
from __future__ import annotations

import argparse

from gendiff.errors import ConfigError

from .tabular import TableFile, TableOutput, file_format, is_table, parse_quantiles

INPUTS = ("data", "truth")
FORECAST_VERBS = ("forecast", "sample")


def _add(add, verb: str):
    def add_arguments(p: argparse.ArgumentParser) -> None:
        add(p)
        p.add_argument("--time-column", default=None,
                       help="time column of CSV / Parquet inputs (default: the first datetime column)")
        if verb in FORECAST_VERBS:
            p.add_argument("--quantiles", default=None,
                           help="comma-separated quantiles (e.g. 0.1,0.5,0.9) written in place of the members "
                                "(csv / parquet output)")
            p.add_argument("--output-format", choices=("csv", "parquet", "netcdf"), default=None,
                           help="format of --out (default: from its suffix; netcdf otherwise): csv / parquet write "
                                "the tidy table init_time, lead_time, series, member, value")

    return add_arguments


def _run(run, verb: str):
    def run_command(args) -> int:
        tables = [f for f in INPUTS if isinstance(getattr(args, f, None), str) and is_table(getattr(args, f))]
        if args.time_column is not None and not tables:
            raise ConfigError("--time-column applies to CSV / Parquet inputs (--data / --truth ending in .csv or "
                              ".parquet)")
        for field in tables:
            setattr(args, field, TableFile(getattr(args, field), args.time_column))
        if verb in FORECAST_VERBS:
            quantiles = parse_quantiles(args.quantiles)
            fmt = args.output_format or file_format(args.out) or "netcdf"
            if fmt in ("csv", "parquet"):
                args.out = TableOutput(args.out, fmt, quantiles)
            elif file_format(args.out) in ("csv", "parquet"):
                raise ConfigError(f"--output-format netcdf with --out {args.out}: name the file .nc")
            elif quantiles is not None:
                raise ConfigError("--quantiles needs a csv or parquet --out (or --output-format csv / parquet)")
        return run(args)

    return run_command


def extend_verbs(verbs: dict) -> dict:
    """A copy of a VERBS table whose train / forecast / sample / evaluate take CSV / Parquet tables."""
    out = dict(verbs)
    for verb in ("train", "forecast", "sample", "evaluate"):
        if verb in verbs:
            add, run = verbs[verb]
            out[verb] = (_add(add, verb), _run(run, verb))
    return out
