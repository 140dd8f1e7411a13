"""`gendiff train|sample|evaluate|forecast|impute|demo <domain> ...`: argparse front end over the domains' cli modules.

Each domain's `cli.py` exposes `VERBS = {verb: (add_arguments, run)}`. Errors (GendiffError, bad arguments, missing
files) print one line `gendiff: error: ...` on stderr and exit with status 2, without a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import GendiffError

DOMAINS = ("images", "weather", "timeseries", "molecules")  # timeseries: the weather verbs under that name
VERB_HELP = {
    "train": "train a model on a domain's data",
    "sample": "draw samples from a trained run",
    "evaluate": "score samples, forecasts or files",
    "forecast": "ensemble forecasts from a trained run (weather, timeseries)",
    "impute": "fill the gaps of series with draws from a run trained to impute (weather, timeseries)",
    "demo": "train briefly on embedded data, sample and evaluate",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse prints usage too; we keep it to the error line)
        sys.stderr.write(f"gendiff: error: {message}\n")
        sys.exit(2)


def _domain_verbs(domain: str) -> dict:
    """The domain's VERBS table, or {"__unavailable__": reason} when its module cannot be imported."""
    try:
        module = importlib.import_module(f"gendiff.domains.{domain}.cli")
    except Exception as exc:  # a missing or broken dependency (ImportError, OSError from a shared library, ...)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return {"__unavailable__": f"{reason} ({type(exc).__name__})"}
    return getattr(module, "VERBS", {})


def _unavailable(domain: str, reason: str):
    def add_arguments(parser):
        parser.set_defaults(_accepts_any=True)  # whatever follows, the answer is that the domain is unavailable

    def run(args):
        raise GendiffError(f"{domain} is unavailable: {reason}")

    return add_arguments, run


def _list_command(args) -> int:
    from .samplers import list_samplers
    from .schedules import list_schedules

    print("samplers: " + ", ".join(list_samplers()))
    print("schedules: " + ", ".join(list_schedules()))
    for domain in DOMAINS:
        table = _domain_verbs(domain)
        state = f"unavailable: {table['__unavailable__']}" if "__unavailable__" in table else ", ".join(
            v for v in VERB_HELP if v in table)
        print(f"domain {domain}: {state}")
    from .runs import list_pretrained

    rows = list_pretrained()
    print("pretrained models (use --run pretrained:NAME):" + ("" if rows else " none shipped"))
    for row in rows:
        if "error" in row:
            print(f"  {row['name']}: broken ({row['error']})")
            continue
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in row["metrics"].items())
        print(f"  {row['name']} ({row['domain']}, {row['bytes'] / 1e6:.1f} MB, {row['steps']} steps): "
              f"{metrics or 'no metrics on its card'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gendiff", description="Domain-general diffusion models: images, weather, molecules.")
    parser.add_argument("--version", action="version", version=f"gendiff {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    verbs.required = True
    lst = verbs.add_parser("list", help="list the registered samplers and schedules")
    lst.set_defaults(_run=_list_command)
    tables = {d: _domain_verbs(d) for d in DOMAINS}
    for verb, help_text in VERB_HELP.items():
        vp = verbs.add_parser(verb, help=help_text, description=help_text)
        domains = vp.add_subparsers(dest="domain", metavar="DOMAIN", parser_class=_Parser)
        domains.required = True
        for domain, table in tables.items():
            if "__unavailable__" in table:
                add_arguments, run = _unavailable(domain, table["__unavailable__"])
            elif verb not in table:
                continue
            else:
                add_arguments, run = table[verb]
            dp = domains.add_parser(domain, help=f"{verb} {domain}", description=f"gendiff {verb} {domain}")
            add_arguments(dp)
            dp.set_defaults(_run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "_accepts_any", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args._run(args) or 0)
    except GendiffError as exc:
        sys.stderr.write(f"gendiff: error: {exc}\n")
        return 2
    except FileNotFoundError as exc:
        sys.stderr.write(f"gendiff: error: {exc.filename or exc}: no such file or directory\n")
        return 2
    except OSError as exc:  # permissions, a read-only install, a full disk: one line, the file named
        sys.stderr.write(f"gendiff: error: {exc.filename or ''}{': ' if exc.filename else ''}"
                         f"{exc.strerror or exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("gendiff: error: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
