"""`gendiff train|sample|evaluate|forecast|impute|demo <domain> ...`: argparse front end over the domains' verbs.

The domains are plugins (gendiff.domain): every entry point of the `gendiff.domains` group names a `Domain`, whose
`verbs()` gives `{verb: (add_arguments, run)}`; this module names no domain. A domain that cannot be loaded (a
missing extra, a broken dependency) answers every verb with one line saying why. Errors (GendiffError, bad
arguments, missing files) print one line `gendiff: error: ...` on stderr and exit with status 2, without a
traceback.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .domain import Domain, discover, one_line
from .errors import GendiffError
from .runs import list_pretrained
from .samplers import list_samplers
from .schedules import list_schedules

VERB_HELP = {
    "train": "train a model on a domain's data",
    "sample": "draw samples from a trained run",
    "evaluate": "score samples, forecasts or files",
    "forecast": "ensemble forecasts from a trained run",
    "impute": "fill the gaps of series with draws from a run trained to impute",
    "demo": "train briefly on embedded data, sample and evaluate",
}
UNAVAILABLE = "__unavailable__"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse prints usage too; we keep it to the error line)
        sys.stderr.write(f"gendiff: error: {message}\n")
        sys.exit(2)


def _domain_tables(only: str | None = None) -> dict[str, dict]:
    """{domain: its verbs table, or {UNAVAILABLE: reason}} for every installed domain plugin, by name (for the
    domain `only` alone when one of that name is installed: the others are not imported)."""
    found = discover([only]) if only else {}
    tables: dict[str, dict] = {}
    for name, entry in (found or discover()).items():
        if not isinstance(entry, Domain):
            tables[name] = {UNAVAILABLE: entry.reason}
            continue
        try:
            tables[name] = entry.load_verbs()
        except Exception as exc:  # a missing extra, a missing or broken dependency (ImportError, OSError, ...)
            tables[name] = {UNAVAILABLE: one_line(exc)}
    return tables


def _unavailable(domain: str, reason: str):
    def add_arguments(parser):
        parser.set_defaults(_accepts_any=True)  # whatever follows, the answer is that the domain is unavailable

    def run(args):
        raise GendiffError(f"{domain} is unavailable: {reason}")

    return add_arguments, run


def _list_command(args) -> int:
    print("samplers: " + ", ".join(list_samplers()))
    print("schedules: " + ", ".join(list_schedules()))
    for domain, table in _domain_tables().items():
        if UNAVAILABLE in table:
            state = f"unavailable: {table[UNAVAILABLE]}"
        else:
            state = ", ".join([v for v in VERB_HELP if v in table] + [v for v in table if v not in VERB_HELP])
        print(f"domain {domain}: {state}")
    rows = list_pretrained()
    print("pretrained models (use --run pretrained:NAME):" + ("" if rows else " none shipped"))
    for row in rows:
        if "error" in row:
            print(f"  {row['name']}: broken ({row['error']})")
            continue
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in row["metrics"].items())
        print(
            f"  {row['name']} ({row['domain']}, {row['bytes'] / 1e6:.1f} MB, {row['steps']} steps): "
            f"{metrics or 'no metrics on its card'}"
        )
    return 0


def _verb_help(verb: str, tables: dict[str, dict]) -> str:
    """The verb's help line; a verb that only some available domains offer names them."""
    available = {d: t for d, t in tables.items() if UNAVAILABLE not in t}
    offering = [d for d, t in available.items() if verb in t]
    text = VERB_HELP.get(verb, f"{verb} (a domain's own verb)")
    if offering and len(offering) < len(available):
        text += f" ({', '.join(offering)})"
    return text


def build_parser(domain: str | None = None) -> argparse.ArgumentParser:
    """The parser of every verb of every domain (of `domain` alone when given and installed)."""
    tables = _domain_tables(domain)
    parser = _Parser(
        prog="gendiff",
        description="Domain-general diffusion models" + (f": {', '.join(tables)}." if tables else "."),
    )
    parser.add_argument("--version", action="version", version=f"gendiff {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    verbs.required = True
    lst = verbs.add_parser("list", help="list the samplers, schedules, domains and shipped models")
    lst.set_defaults(_run=_list_command)
    extra_verbs = [v for t in tables.values() for v in t if v != UNAVAILABLE and v not in VERB_HELP]
    for verb in list(VERB_HELP) + list(dict.fromkeys(extra_verbs)):
        help_text = _verb_help(verb, tables)
        vp = verbs.add_parser(verb, help=help_text, description=help_text)
        domains = vp.add_subparsers(dest="domain", metavar="DOMAIN", parser_class=_Parser)
        domains.required = True
        for domain, table in tables.items():
            if UNAVAILABLE in table:
                add_arguments, run = _unavailable(domain, table[UNAVAILABLE])
            elif verb not in table:
                continue
            else:
                add_arguments, run = table[verb]
            dp = domains.add_parser(domain, help=f"{verb} {domain}", description=f"gendiff {verb} {domain}")
            add_arguments(dp)
            dp.set_defaults(_run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # `gendiff VERB DOMAIN ...` needs that domain's verbs only: the other domains are not imported
    named = argv[1] if len(argv) >= 2 and argv[0] != "list" and not argv[0].startswith("-") else None
    parser = build_parser(named if named and not named.startswith("-") else None)
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
        filename = f"{exc.filename}: " if exc.filename else ""
        sys.stderr.write(f"gendiff: error: {filename}{exc.strerror or exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("gendiff: error: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
