"""The images domain as a gendiff plugin (entry point `images` of the `gendiff.domains` group in pyproject.toml)."""

from __future__ import annotations

from gendiff.domain import Domain


def _verbs():
    from .cli import VERBS  # the CLI table, imported only when a verb needs it

    return VERBS


def _demo(*args, **kwargs):
    from .demo import demo

    return demo(*args, **kwargs)


DOMAIN = Domain(
    name="images",
    description="images: U-Net diffusion on MNIST, digits, image folders; FD, KID, accuracy, bits/dim",
    verbs=_verbs,
    demo=_demo,
    extra="images",
    requires=("PIL", "matplotlib", "sklearn", "mlxtend"),
)
