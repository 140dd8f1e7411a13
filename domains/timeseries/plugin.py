"""The timeseries domain as a gendiff plugin (entry point `timeseries` of the `gendiff.domains` group in
pyproject.toml)."""

from __future__ import annotations

from gendiff.domain import Domain, deferred


DOMAIN = Domain(
    name="timeseries",
    description="time series: tables (CSV, Parquet, pandas) to probabilistic forecasts and gap filling",
    verbs=deferred("gendiff.domains.timeseries.cli", "VERBS"),  # the CLI table, imported when a verb needs it
    demo=deferred("gendiff.domains.timeseries", "demo"),
    extra="timeseries",
    requires=("pandas", "xarray"),
)
