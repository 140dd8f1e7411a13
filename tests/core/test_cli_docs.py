"""docs/cli.md is what tools/gen_cli_docs.py writes from the installed parser (gendiff.cli.build_parser())."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "tools" / "gen_cli_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_docs_are_current():
    gen = _generator()
    missing = gen.unavailable_domains()
    if missing:
        pytest.skip(f"domains unavailable in this environment ({', '.join(missing)}): docs/cli.md describes a full "
                    "install")
    committed = (ROOT / "docs" / "cli.md").read_text() if (ROOT / "docs" / "cli.md").is_file() else ""
    fresh = gen.render()
    if committed != fresh:
        old, new = committed.splitlines(), fresh.splitlines()
        first = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b), min(len(old), len(new)))
        pytest.fail(f"docs/cli.md is stale (first difference at line {first + 1}: "
                    f"{old[first] if first < len(old) else '<end>'!r} vs {new[first] if first < len(new) else '<end>'!r}); "
                    f"regenerate it with: {gen.REGENERATE}")


def test_cli_docs_cover_every_verb_and_domain():
    gen = _generator()
    if gen.unavailable_domains():
        pytest.skip("a domain is unavailable in this environment")
    text = gen.render()
    from gendiff.cli import build_parser

    for verb, _, sub in gen._subparsers(build_parser()):
        domains = gen._subparsers(sub)
        assert f"`gendiff {verb}`" in text
        for domain, _, _ in domains:
            assert f"### `gendiff {verb} {domain}`" in text
