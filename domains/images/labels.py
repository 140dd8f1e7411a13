"""Class labels for sampling: parsed from text ('balanced', '3', '0-9', '0,2,4-6'), resolved to a tensor of n
class indices, and the sample grid's columns they imply."""
from __future__ import annotations

import re

import torch

from gendiff.errors import ConfigError

LABELS_HELP = ("none (unconditional), balanced (every class in turn), or classes to cycle through: "
               "a class index (3), a range (0-9) or a comma list of both (0,2,4-6)")


def parse_labels(text: str | None):
    """None for None / 'none'; 'balanced'; else a list of class indices from '3', '0-9' or '0,2,4-6'."""
    if text is None or text.strip().lower() == "none":
        return None
    text = text.strip().lower()
    if text == "balanced":
        return "balanced"
    values = []
    for part in (p.strip() for p in text.split(",")):
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        if m and int(m[1]) <= int(m[2]):
            values.extend(range(int(m[1]), int(m[2]) + 1))
        elif part.isdigit():
            values.append(int(part))
        else:
            raise ConfigError(f"labels {text!r}: expected {LABELS_HELP}")
    return values


def resolve_labels(labels, n: int, num_classes: int | None) -> torch.Tensor | None:
    """None (unconditional), 'balanced' (0, 1, ..., K-1, 0, ...), an int, a sequence of n class indices, or a
    text of classes to cycle through ('3', '0-9', '0,2,4-6'; see parse_labels)."""
    if labels is None:
        return None
    if isinstance(labels, str):
        labels = parse_labels(labels)
        if labels is None:
            return None
        if labels != "balanced":
            labels = [labels[i % len(labels)] for i in range(n)]
    if num_classes is None:
        raise ConfigError("labels were given but this run is unconditional (trained without class labels)")
    if isinstance(labels, str):
        out = torch.arange(n) % num_classes
    elif isinstance(labels, int):
        out = torch.full((n,), labels, dtype=torch.long)
    else:
        out = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        if len(out) != n:
            raise ConfigError(f"got {len(out)} labels for n={n} samples")
    if out.numel() and (out.min() < 0 or out.max() >= num_classes):
        raise ConfigError(f"labels must be in [0, {num_classes - 1}], got {out.min().item()}..{out.max().item()}")
    return out.long()


def grid_columns(labels, n: int, num_classes: int | None) -> int | None:
    """Columns of a sample grid: one per class when the labels cycle through classes ('balanced' or a text such
    as '0-9'), so each column shows one class; None (a square grid) otherwise."""
    if isinstance(labels, str):
        labels = parse_labels(labels)
        k = num_classes if labels == "balanced" else (len(labels) if labels else None)
        return k if k and 1 < k <= n else None
    return None
