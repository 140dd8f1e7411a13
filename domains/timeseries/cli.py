"""`gendiff train|forecast|sample|evaluate|demo timeseries ...`: the weather domain's verbs under the time-series name."""
from gendiff.domains.weather.cli import VERBS  # noqa: F401
