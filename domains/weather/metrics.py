"""WeatherBench2's spatial weighting: cell-area latitude weights, and the engine's ensemble scores
(gendiff.domains.timeseries.scores) averaged with them."""
from __future__ import annotations

import numpy as np
import xarray as xr

from gendiff.domains.timeseries import scores
from gendiff.domains.timeseries.insolation import LAT_NAMES, LON_NAMES
from gendiff.domains.timeseries.scores import (crps_ensemble, ensemble_mean_squared_error, ensemble_variance,
                                               rank_histogram, spread_skill_ratio, weighted_mean)
from gendiff.errors import DataError

__all__ = ["LAT_NAMES", "LON_NAMES", "cell_edges", "latitude_weights", "score", "crps_ensemble", "weighted_mean",
           "ensemble_mean_squared_error", "ensemble_variance", "rank_histogram", "spread_skill_ratio"]


def cell_edges(lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) latitude edges in degrees of the cells centred on `lat` (any order, regular or irregular
    spacing): the midpoints between neighbouring centres, the outer edges half a spacing beyond the first and last
    centre, all clipped to +-90. A single latitude gets the edges +-90 (one cell, weight 1 after normalising)."""
    lat = np.asarray(lat, dtype=np.float64)
    order = np.argsort(lat, kind="stable")
    s = lat[order]
    if len(s) == 1:
        lower, upper = np.array([-90.0]), np.array([90.0])
    else:
        mid = 0.5 * (s[:-1] + s[1:])
        lower = np.concatenate([[s[0] - 0.5 * (s[1] - s[0])], mid])
        upper = np.concatenate([mid, [s[-1] + 0.5 * (s[-1] - s[-2])]])
    lower, upper = np.clip(lower, -90.0, 90.0), np.clip(upper, -90.0, 90.0)
    out_lo, out_up = np.empty_like(lower), np.empty_like(upper)
    out_lo[order], out_up[order] = lower, upper
    return out_lo, out_up


def latitude_weights(da: xr.DataArray | xr.Dataset) -> xr.DataArray | None:
    """Cell-area weights over the latitude dim, sin(upper edge) - sin(lower edge) (cell_edges), normalised to mean
    1, as WeatherBench2 weights its spatial means; None without a latitude dim. For evenly spaced latitudes away
    from the poles these are proportional to cos(latitude); they differ at the poles and on uneven grids."""
    for name in LAT_NAMES:
        if name in da.dims:
            lat = np.asarray(da[name].values, dtype=np.float64)
            bad = ~np.isfinite(lat) | (np.abs(lat) > 90.0)
            if bad.any():
                raise DataError(f"coordinate '{name}': latitude {lat[bad][0]!r} is not within -90 to 90 degrees")
            if len(np.unique(lat)) != len(lat):
                raise DataError(f"coordinate '{name}': repeated latitudes; cell areas need distinct centres")
            lower, upper = cell_edges(lat)
            w = np.sin(np.deg2rad(upper)) - np.sin(np.deg2rad(lower))
            if not (w > 0).any():
                raise DataError(f"coordinate '{name}': the latitude cells have no area")
            return xr.DataArray(w / w.mean(), dims=(name,), coords={name: da[name].values})
    return None


def score(forecast: xr.DataArray, truth: xr.DataArray, ensemble_dim: str = "member",
          keep_dims=("lead_time",), rank_seed: int = 0) -> xr.Dataset:
    """timeseries.scores.score averaged with cell-area latitude weights (WeatherBench2's spatial means)."""
    return scores.score(forecast, truth, ensemble_dim, keep_dims, rank_seed, weights=latitude_weights)
