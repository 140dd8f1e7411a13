"""Scoring molecules: EDM's metrics of a file or a list, a run sampled and scored in one call (measure), and
molecules written with their 2-D depictions."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from gendiff import runs
from gendiff.errors import ConfigError

from .bondmetrics import carries_bonds, generated_bond_metrics
from .data import load_molecules
from .defaults import DEFAULT_PRETRAINED, DEFAULT_SAMPLER, DEFAULT_SPACING, DEFAULT_STEPS
from .io import write_molecules as write_file
from .metrics import draw_grid, evaluate_molecules, qm9_reference_smiles
from .sampling import sample


def evaluate(input=None, molecules: Sequence | None = None, reference=None, file_bonds: bool = False) -> dict:
    """Atom stability, molecule stability, RDKit validity, uniqueness (and novelty against `reference`), from
    distances as EDM measures them; molecules that all carry bonds (an explicit-bond run's samples; an SDF's bond
    blocks with `file_bonds`) also get the scores of those bonds (bondmetrics.GENERATED_BOND_KEYS)."""
    if (input is None) == (molecules is None):
        raise ConfigError("evaluate needs exactly one of input=FILE or molecules=[...]")
    if input is not None:
        molecules = load_molecules(input, keep_bonds=file_bonds)
    ref = reference
    if isinstance(reference, str) and reference.lower() == "qm9":
        ref = qm9_reference_smiles()
    elif isinstance(reference, str) and reference.lower() == "none":
        ref = None
    elif isinstance(reference, str):
        raise ConfigError(f"--reference {reference!r}: expected 'qm9' or 'none' (or pass a list of SMILES)")
    metrics = evaluate_molecules(list(molecules), reference_smiles=ref)
    if carries_bonds(list(molecules)):
        metrics.update(generated_bond_metrics(list(molecules)))
    return metrics


def write_molecules(path, mols: Sequence) -> Path:
    """Write .sdf or .xyz (by suffix) and a PNG grid of the first 50 next to it; returns the PNG path."""
    path = Path(path)
    if path.suffix.lower() not in (".sdf", ".xyz"):
        raise ConfigError(f"--out {path}: expected a .sdf or .xyz file name")
    write_file(path, mols)
    return draw_grid(path.with_suffix(".png"), list(mols))


def measure(run=DEFAULT_PRETRAINED, n: int = 500, sampler: str = DEFAULT_SAMPLER, steps: int = DEFAULT_STEPS,
            seed: int = 0, *, spacing: str = DEFAULT_SPACING, reference=None, batch_size: int = 256,
            device: str = "auto", progress: bool = False) -> tuple[dict, list]:
    """Sample n molecules from a run and evaluate them -> (metrics with sampler, steps, spacing, seed,
    sample_seconds and sample_cpu_seconds, molecules). What `gendiff evaluate molecules --run RUN` prints and
    records on the card."""
    wall, cpu = runs.timer()
    mols = sample(run, n=n, sampler=sampler, steps=steps, seed=seed, batch_size=batch_size, device=device,
                  progress=progress, spacing=spacing)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    metrics = evaluate(molecules=mols, reference=reference)
    metrics.update(sampler=sampler, steps=int(steps), spacing=spacing, seed=int(seed), sample_seconds=round(wall, 2),
                   sample_cpu_seconds=round(cpu, 2))
    return metrics, mols
