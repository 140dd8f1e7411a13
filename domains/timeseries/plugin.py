"""The timeseries domain as a gendiff plugin (entry point `timeseries` of the `gendiff.domains` group in
pyproject.toml)."""

from __future__ import annotations

from gendiff.domain import Domain


def _verbs():
    from .cli import VERBS  # the CLI table, imported only when a verb needs it

    return VERBS


def _demo(*args, **kwargs):
    from . import demo

    return demo(*args, **kwargs)


DOMAIN = Domain(
    name="timeseries",
    description="time series: tables (CSV, Parquet, pandas) to probabilistic forecasts and gap filling",
    verbs=_verbs,
    demo=_demo,
    extra="timeseries",
    requires=("pandas", "xarray"),
)
