"""Issue 28 item 7: no shipped JSON (a pretrained model's config, card, calibration) holds an absolute path of the
machine it was made on; a path there is a file name or a path relative to the project."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "domains").glob("*/pretrained/*/*.json"))
ABSOLUTE = re.compile(r"^(/(work|root|home|tmp|Users|mnt|opt|var)/|[A-Za-z]:\\)")


def _strings(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)
    elif isinstance(node, str):
        yield node


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_absolute_machine_path_in_shipped_json(path):
    found = [s for s in _strings(json.loads(path.read_text())) if ABSOLUTE.match(s)]
    assert not found, f"{path.relative_to(ROOT)}: {found[:3]}"


def test_shipped_json_exists():
    assert len(SHIPPED) >= 6
