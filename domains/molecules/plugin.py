"""The molecules domain as a gendiff plugin (entry point `molecules` of the `gendiff.domains` group in
pyproject.toml)."""

from __future__ import annotations

from gendiff.domain import Domain, deferred


DOMAIN = Domain(
    name="molecules",
    description="3D molecules: E(3)-equivariant diffusion (EDM) on QM9; stability, validity, uniqueness",
    verbs=deferred("gendiff.domains.molecules.cli", "VERBS"),  # the CLI table, imported when a verb needs it
    demo=deferred("gendiff.domains.molecules.demo", "demo"),
    extra="molecules",
    requires=("rdkit", "torch_geometric", "e3nn", "qm9pack", "scipy", "pandas"),
)
