"""The weather domain as a gendiff plugin (entry point `weather` of the `gendiff.domains` group in pyproject.toml)."""

from __future__ import annotations

from gendiff.domain import Domain


def _verbs():
    from .cli import VERBS  # the CLI table, imported only when a verb needs it

    return VERBS


def _demo(*args, **kwargs):
    from . import demo

    return demo(*args, **kwargs)


DOMAIN = Domain(
    name="weather",
    description="weather and climate: gridded fields (netCDF, zarr, GRIB) to calibrated ensemble forecasts and scores",
    verbs=_verbs,
    demo=_demo,
    extra="weather",
    requires=("pandas", "xarray", "netCDF4", "matplotlib"),
)
