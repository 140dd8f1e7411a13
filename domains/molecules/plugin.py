"""The molecules domain as a gendiff plugin (entry point `molecules` of the `gendiff.domains` group in
pyproject.toml)."""

from __future__ import annotations

from gendiff.domain import Domain


def _verbs():
    from .cli import VERBS  # the CLI table, imported only when a verb needs it

    return VERBS


def _demo(*args, **kwargs):
    from .demo import demo

    return demo(*args, **kwargs)


DOMAIN = Domain(
    name="molecules",
    description="3D molecules: E(3)-equivariant diffusion (EDM) on QM9; stability, validity, uniqueness",
    verbs=_verbs,
    demo=_demo,
    extra="molecules",
    requires=("rdkit", "torch_geometric", "e3nn", "qm9pack", "scipy", "pandas"),
)
