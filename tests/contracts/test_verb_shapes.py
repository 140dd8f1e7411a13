"""Issue 28 item 3: the same verb takes the same shape of arguments in every domain: `--out`, `--seed`, `--device`
(`--run` where a trained model is used), and budgets in one unit, minutes (`--minutes`), beside `--steps`."""
from __future__ import annotations

import pytest

from gendiff.cli import build_parser

DOMAINS = ("images", "timeseries", "weather", "molecules")
SHAPE = {
    "train": {"--out", "--seed", "--device", "--minutes", "--steps", "--data", "--resume"},
    "sample": {"--out", "--seed", "--device", "--run", "--steps", "--sampler"},
    "demo": {"--out", "--seed", "--device"},
}


def _options(verb: str, domain: str) -> set[str]:
    parser = build_parser()
    verbs = next(a for a in parser._actions if getattr(a, "choices", None) and verb in a.choices)
    domains = next(a for a in verbs.choices[verb]._actions if getattr(a, "choices", None) and domain in a.choices)
    return {s for action in domains.choices[domain]._actions for s in action.option_strings}


@pytest.mark.parametrize("domain", DOMAINS)
@pytest.mark.parametrize("verb", sorted(SHAPE))
def test_every_domain_takes_the_shared_options(verb, domain):
    missing = SHAPE[verb] - _options(verb, domain)
    assert not missing, f"gendiff {verb} {domain} lacks {sorted(missing)}"


@pytest.mark.parametrize("domain", DOMAINS)
def test_demo_budgets_are_minutes_where_a_demo_trains(domain):
    options = _options("demo", domain)
    assert "--minutes" in options or "--from-scratch" not in options, domain
