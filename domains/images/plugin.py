"""The images domain as a gendiff plugin (entry point `images` of the `gendiff.domains` group in pyproject.toml)."""

from __future__ import annotations

from gendiff.domain import Domain, deferred


DOMAIN = Domain(
    name="images",
    description="images: U-Net diffusion on MNIST, digits, image folders; FD, KID, accuracy, bits/dim",
    verbs=deferred("gendiff.domains.images.cli", "VERBS"),  # the CLI table, imported when a verb needs it
    demo=deferred("gendiff.domains.images.demo", "demo"),
    extra="images",
    requires=("PIL", "matplotlib", "sklearn", "mlxtend"),
)
