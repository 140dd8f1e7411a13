"""The weather domain as a gendiff plugin (entry point `weather` of the `gendiff.domains` group in pyproject.toml)."""

from __future__ import annotations

from gendiff.domain import Domain, deferred


DOMAIN = Domain(
    name="weather",
    description="weather and climate: gridded fields (netCDF, zarr, GRIB) to calibrated ensemble forecasts and scores",
    verbs=deferred("gendiff.domains.weather.cli", "VERBS"),  # the CLI table, imported when a verb needs it
    demo=deferred("gendiff.domains.weather", "demo"),
    extra="weather",
    requires=("pandas", "xarray", "netCDF4", "matplotlib"),
)
