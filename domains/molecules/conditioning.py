"""Property conditioning of a molecules run (EDM's conditional QM9 protocol): what config.json records (the
properties, their units and the mean / MAD they are normalised with, the data and half trained on), the training
side (QM9 molecules with their normalised properties as each molecule's context) and the sampling side (the
`condition` a caller gives, checked against the run, as the network's per-molecule context).

The normalised properties reach the network as per-molecule invariant context channels, after the formula's when
composition is 'formula' (EDM concatenates them to every node's features h; scalars, so equivariance holds)."""
from __future__ import annotations

import numpy as np
import torch

from gendiff.device import make_generator
from gendiff.errors import ConfigError

from .properties import (PROPERTIES, ConditionedDataset, check_properties, normalise, normaliser, property_values,
                         qm9_half)


def conditioning_config(names, norm: dict, data: str = "qm9", half: str | None = None, n: int | None = None) -> dict:
    """config.json's 'conditioning' (absent from unconditional runs): properties, units, mean and MAD, and the
    molecules they came from (`data`, `half`, `n` molecules: the pool condition='dataset' draws from)."""
    names = list(names)
    return {"properties": names, "units": {k: PROPERTIES[k][2] for k in names}, "mean": dict(norm["mean"]),
            "mad": dict(norm["mad"]), "data": data, "half": half, "n_molecules": n}


def conditioned_training_data(ds, names, half: str | None, limit: int | None = None):
    """QM9 dataset `ds` (its first `limit` molecules) with each molecule's normalised properties as its context ->
    (ConditionedDataset, config.json's 'conditioning')."""
    n = min(int(limit), len(ds)) if limit else len(ds)
    values = property_values(ds, names)[:n]
    norm = normaliser(values, names)
    base = torch.utils.data.Subset(ds, range(n)) if n < len(ds) else ds
    return ConditionedDataset(base, normalise(values, names, norm)), conditioning_config(names, norm, "qm9", half, n)


def parse_condition(items) -> dict | str | None:
    """The CLI's --condition NAME=VALUE (repeatable, or comma-separated) or --condition dataset -> sample()'s
    `condition`; a malformed item is one ConfigError."""
    if not items:
        return None
    parts = [p.strip() for item in items for p in str(item).split(",") if p.strip()]
    if parts == ["dataset"]:
        return "dataset"
    out = {}
    for part in parts:
        name, sep, value = part.partition("=")
        try:
            if not sep:
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"--condition {part!r}: expected PROPERTY=VALUE (e.g. alpha=80) or 'dataset'") from None
    return out


def _values(spec: dict, condition: dict, n: int) -> np.ndarray:
    """(n, properties) targets from condition {name: value or per-molecule sequence}, checked against the run."""
    names = spec["properties"]
    trained = ", ".join(names)
    for key in condition:
        if key not in names:
            raise ConfigError(f"condition on {key!r}: this run was trained conditioned on {trained} only")
    for key in names:
        if key not in condition:
            raise ConfigError(f"missing condition for {key!r}: this run was trained conditioned on {trained}; give "
                              f"condition={{{', '.join(repr(k) + ': VALUE' for k in names)}}} or 'dataset'")
    cols = []
    for key in names:
        v = np.asarray(condition[key], dtype=np.float64).reshape(-1)
        if v.size == 1:
            v = np.full(int(n), float(v[0]))
        if v.size != int(n) or not np.isfinite(v).all():
            raise ConfigError(f"condition {key!r}: expected one finite value or {n} of them, got {v.size}")
        cols.append(v)
    return np.stack(cols, axis=1)


def _from_dataset(spec: dict, n: int, seed: int) -> tuple[np.ndarray, torch.Tensor]:
    """EDM's sampling of targets: (property, atom count) pairs drawn jointly, with replacement, from the molecules
    the run was conditioned on (a random molecule's properties and its N)."""
    if spec.get("data") != "qm9":
        raise ConfigError("condition='dataset' needs a run conditioned on QM9")
    ds = qm9_half(spec.get("half"))
    pool = int(spec.get("n_molecules") or len(ds))
    gen = make_generator("cpu", int(seed))
    pick = torch.randint(pool, (int(n),), generator=gen).numpy()
    values = property_values(ds, spec["properties"])[pick]
    return values, torch.as_tensor(ds.num_atoms[pick], dtype=torch.long)


def sampling_condition(config: dict, condition, n: int, seed: int):
    """The context of a run's sampling -> (targets (n, properties) in the properties' units or None, their
    normalised context (n, properties) or None, atom counts (n,) or None: drawn from the histogram).

    A condition on an unconditional run, none on a conditional one, or a property the run was not trained on is
    one ConfigError naming it."""
    spec = config.get("conditioning")
    if spec is None:
        if condition is not None:
            names = list(condition) if isinstance(condition, dict) else [condition]
            raise ConfigError(f"condition on {', '.join(map(str, names))}: this run was trained without conditioning")
        return None, None, None
    names = spec["properties"]
    if condition is None:
        raise ConfigError(f"this run was trained conditioned on {', '.join(names)}: give condition="
                          f"{{{', '.join(repr(k) + ': VALUE' for k in names)}}} (CLI --condition "
                          f"{names[0]}=VALUE) or condition='dataset'")
    check_properties(names)
    counts = None
    if isinstance(condition, str):
        if condition != "dataset":
            raise ConfigError(f"condition {condition!r}: expected a dict {{property: value}} or 'dataset'")
        values, counts = _from_dataset(spec, n, seed)
    elif isinstance(condition, dict):
        values = _values(spec, condition, n)
    else:
        raise ConfigError(f"condition of type {type(condition).__name__}: expected a dict or 'dataset'")
    return values, normalise(values, names, spec), counts
