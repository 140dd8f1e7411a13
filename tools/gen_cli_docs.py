"""Write docs/cli.md from the command line's argparse parser (gendiff.cli.build_parser()).

    python tools/gen_cli_docs.py            # rewrite docs/cli.md
    python tools/gen_cli_docs.py --check    # exit 1 when docs/cli.md differs from what the parser says

Every verb and every domain subparser gets a section: its usage line, its description and a table of its
arguments (flags, value, default, help). The page is built from the parser's actions, not from argparse's
formatted help, so it does not depend on the terminal width or on the Python version's help layout.
tests/core/test_cli_docs.py regenerates it in memory and fails when the committed page is stale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI_MD = ROOT / "docs" / "cli.md"
REGENERATE = "python tools/gen_cli_docs.py"

HEADER = f"""# Command line

Generated from `gendiff.cli.build_parser()` by `{REGENERATE}`; do not edit by hand
(`tests/core/test_cli_docs.py` fails when this page and the parser disagree).

Bad arguments or unreadable input print one line `gendiff: error: ...` and exit with status 2.
`gendiff <verb> <domain> --help` prints the same as a section below.
"""


def _subparsers(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, help, subparser) of the parser's sub-commands, in the order they were added."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                out.append((name, helps.get(name, ""), sub))
    return out


def _cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _help_text(action: argparse.Action, prog: str) -> str:
    text = action.help or ""
    if "%" in text:
        params = dict(vars(action), prog=prog)
        for name in list(params):
            if params[name] is argparse.SUPPRESS:
                del params[name]
        if params.get("choices") is not None:
            params["choices"] = ", ".join(str(c) for c in params["choices"])
        try:
            text = text % params
        except (KeyError, TypeError, ValueError):
            pass
    return text


def _value(action: argparse.Action) -> str:
    if action.nargs == 0:
        return ""
    if action.choices is not None:
        return "{" + ",".join(str(c) for c in action.choices) + "}"
    metavar = action.metavar if action.metavar is not None else (action.dest.upper() if action.option_strings
                                                                 else action.dest)
    if isinstance(metavar, tuple):
        metavar = " ".join(metavar)
    if action.nargs in ("*", "+"):
        return f"{metavar} ..."
    if action.nargs == "?":
        return f"[{metavar}]"
    if isinstance(action.nargs, int) and action.nargs > 1:
        return " ".join([str(metavar)] * action.nargs)
    return str(metavar)


def _default(action: argparse.Action) -> str:
    if action.nargs == 0 or action.default in (None, argparse.SUPPRESS) or action.required:
        return ""
    if isinstance(action.default, (list, tuple)):
        return ", ".join(str(v) for v in action.default)
    return str(action.default)


def _usage(parser: argparse.ArgumentParser) -> str:
    parts = [parser.prog]
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            if isinstance(action, argparse._SubParsersAction):
                parts.append(action.metavar or "{" + ",".join(action.choices) + "}")
            continue
        if action.help is argparse.SUPPRESS:
            continue
        value = _value(action)
        if action.option_strings:
            item = action.option_strings[0] + (f" {value}" if value else "")
            parts.append(item if action.required else f"[{item}]")
        else:
            parts.append(value)
    return " ".join(parts)


def _section(parser: argparse.ArgumentParser, level: int, title: str, help_text: str) -> list[str]:
    lines = [f"{'#' * level} `{title}`", ""]
    description = parser.description or help_text
    if description and description != title:
        lines += [_cell(description), ""]
    lines += ["```", _usage(parser), "```", ""]
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) or action.help is argparse.SUPPRESS:
            continue
        flags = ", ".join(f"`{o}`" for o in action.option_strings) or f"`{action.dest}`"
        value = _value(action)
        required = " (required)" if action.required and action.option_strings else ""
        rows.append(f"| {flags}{required} | {_cell(value) and '`' + _cell(value) + '`'} | {_cell(_default(action))} "
                    f"| {_cell(_help_text(action, parser.prog))} |")
    if rows:
        lines += ["| argument | value | default | help |", "| --- | --- | --- | --- |", *rows, ""]
    return lines


def render() -> str:
    """The text of docs/cli.md for the installed package's parser."""
    from gendiff.cli import build_parser

    parser = build_parser()
    lines = [HEADER, "## Verbs", "", "| verb | domains | what |", "| --- | --- | --- |"]
    verbs = _subparsers(parser)
    for name, help_text, sub in verbs:
        domains = ", ".join(f"`{d}`" for d, _, _ in _subparsers(sub))
        lines.append(f"| `{name}` | {domains} | {_cell(help_text)} |")
    lines.append("")
    lines += _section(parser, 2, "gendiff", parser.description or "")
    for name, help_text, sub in verbs:
        subs = _subparsers(sub)
        if not subs:
            lines += _section(sub, 2, f"gendiff {name}", help_text)
            continue
        lines += [f"## `gendiff {name}`", "", _cell(sub.description or help_text), ""]
        for domain, domain_help, dp in subs:
            lines += _section(dp, 3, f"gendiff {name} {domain}", domain_help)
    return "\n".join(lines).rstrip() + "\n"


def unavailable_domains(parser: argparse.ArgumentParser | None = None) -> list[str]:
    """Domains whose verbs cannot be loaded here: the CLI gives them a catch-all subparser (`_accepts_any`) that
    answers with the reason. The page would then describe a partial install, so it is not written."""
    if parser is None:
        from gendiff.cli import build_parser

        parser = build_parser()
    out = []
    for _, _, verb_parser in _subparsers(parser):
        for domain, _, domain_parser in _subparsers(verb_parser):
            if domain_parser.get_default("_accepts_any") and domain not in out:
                out.append(domain)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 when docs/cli.md is stale instead of writing it")
    p.add_argument("--out", default=str(CLI_MD))
    args = p.parse_args(argv)
    missing = unavailable_domains()
    if missing:
        print(f"refusing: domains unavailable in this environment: {', '.join(missing)}", file=sys.stderr)
        return 2
    text = render()
    out = Path(args.out)
    if args.check:
        if not out.is_file() or out.read_text() != text:
            print(f"{out} is stale; regenerate it with: {REGENERATE}", file=sys.stderr)
            return 1
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
