"""A run shared across series (arch 'gridnet') on other locations than it was trained on: a part of its grid
(subregion: the per-location state cut to it), or another or larger region (regrid: the per-location state fitted on
the new locations' history before the first init)."""
from __future__ import annotations

import numpy as np
import torch

from gendiff.errors import DataError

from .base import ARBase
from .data import Codec, _close, open_static, time_step
from .run import Run
from .sharednet import location_features, static_inputs
from .stream import EncodedValues, fit_statistics
from .timeaxis import check_run_step
from .windows import window_starts


def subregion(run: Run, ds, label: str = "data") -> Run:
    """The run restricted to the locations of `ds` when they are a part of the run's, in the run's order (a
    gridnet run forecasts any such subregion: its weights are the same at every location; the codec template,
    the climatology, the AR base and the static inputs are cut to the subregion's locations). The run itself
    when `ds` has the run's locations, or when they are not an ordered part of them (Codec.check_coords then names
    the coordinate that differs)."""
    if run.arch != "gridnet":
        return run
    loc = list(run.config["locations"]["location_dims"])
    tmpl = run.codec.template
    picks = {}
    for d in loc:
        if d not in tmpl.coords or d not in ds.coords or ds[d].ndim != 1:
            return run
        want, got = np.asarray(tmpl[d].values), np.asarray(ds[d].values)
        if got.shape == want.shape and bool(_close(got, want).all()):
            continue
        hit = _close(got[:, None], want[None, :])  # (n_got, n_want)
        if not hit.any(1).all():
            return run
        idx = hit.argmax(1)
        if len(idx) > 1 and not (np.diff(idx) > 0).all():
            return run
        picks[d] = idx
    if not picks:
        return run
    sizes = [tmpl.sizes[d] for d in loc]
    grid = np.arange(int(np.prod(sizes))).reshape(sizes)
    cells = grid[np.ix_(*[picks.get(d, np.arange(n)) for d, n in zip(loc, sizes)])].ravel()
    return restrict(run, cells, tmpl.isel({d: idx for d, idx in picks.items()}))


def restrict(run: Run, cells: np.ndarray, template=None) -> Run:
    """A gridnet run cut to the locations `cells` (flat indices over its location dims, increasing): the codec
    (with `template`, the cut template, when the locations lie on a grid; else the template's location dims
    indexed by `cells`, for a single location dim), climatology, AR base and static inputs."""
    loc = list(run.config["locations"]["location_dims"])
    tmpl = run.codec.template
    if template is None:
        if len(loc) != 1:
            raise DataError(f"restrict: a run with location dims {loc} needs the cut template")
        template = tmpl.isel({loc[0]: np.asarray(cells)})
    n_cells = int(np.prod([tmpl.sizes[d] for d in loc]))
    local = {v: location_features(size // n_cells, n_cells, cells)  # per variable its kept features
             for v, size in zip(run.codec.variables, run.codec.sizes)}
    feat = location_features(sum(run.codec.sizes) // n_cells, n_cells, cells)  # and overall
    codec = run.codec.select(template, local)
    clim = run.climatology.select(feat)
    ar = None
    if run.ar is not None:
        ar = run.ar.select(feat)
    config = {**run.config, "locations": {**run.config["locations"], "locations": int(len(cells))}}
    static = run.static[torch.as_tensor(cells, device=run.static.device)]
    return Run(run.path, config, codec, run.denoiser, run.space, clim, ar, spec=run.spec, card=run.card,
               static=static)


def regrid(run: Run, ds, until: int, static=None, label: str = "data") -> Run:
    """A gridnet run moved to the locations of `ds` (another or a larger region of the same variables): the codec
    template (the time mean), the hourly climatology and the AR base with its error level per lead are fitted on
    ds's first `until` steps (the data before the first init: nothing from the forecast period), the static inputs
    are those of the new locations (`static`: their fields, required when the run was trained with some); the
    network, the spread calibration and a normalisation per variable stay the run's (a normalisation per location
    is fitted on the new locations' history, like the template)."""
    if run.arch != "gridnet":
        raise DataError(f"{label}: new_locations needs a gridnet run (arch='gridnet'); {run.path} is "
                        f"{run.arch}, whose network is tied to its grid")
    check_run_step(time_step(ds), run.config, label)
    length = run.context + run.horizon
    if until < length + 1:
        raise DataError(f"{label}: new_locations fits the per-location state on the data before the first init; "
                        f"{until} steps there, at least {length + 1} needed (start the data earlier)")
    fields = run.config["locations"]["fields"]
    if fields and static is None:
        raise DataError(f"{label}: the run was trained with static fields {', '.join(fields)}; pass static= "
                        "with them on the new locations")
    if not fields and static is not None:
        raise DataError(f"{label}: the run was trained without static fields; static= has nowhere to go")
    per_location = run.codec.normalise == "location"
    stats = fit_statistics(ds.isel(time=slice(0, until))[run.codec.variables], label,
                           normalise=run.codec.normalise)
    # per variable the run's normalisation; per location that of the new locations' own history
    codec = stats.codec if per_location else Codec(stats.codec.template, run.codec.mean, run.codec.std)
    if static is not None:
        static = open_static(static, label)
        missing = [f for f in fields if f not in static.data_vars]
        if missing:
            raise DataError(f"{label}: static= lacks the run's field(s) {', '.join(missing)}")
        static = static[fields]
    static_values, info = static_inputs(codec.template, codec.variables, static, label)
    old = run.config["locations"]
    if info["channels"] != old["channels"] or info["pos_kind"] != old["pos_kind"] or \
            info["pos_dims"] != old["pos_dims"]:
        raise DataError(f"{label}: the new locations have {info['channels']} channels and {info['pos_kind']} "
                        f"positions, the run {old['channels']} and {old['pos_kind']}")
    times = ds["time"].values
    index = np.arange(until)
    clim = stats.climatology(codec, std=run.config.get("hourly_std", False) if run.climatology.std is not None
                             else False,  # the run's choices, made again on the new locations' history
                             insolation=run.climatology.solar is not None)
    values = EncodedValues(ds, codec, clim, label)
    ar = None
    if run.ar is not None:
        has_data = np.zeros(len(times), dtype=bool)
        has_data[:until] = stats.has_data
        starts = window_starts(len(times), index, length, None, run.context, has_data)
        ar = ARBase.fit(values, index, run.ar.lags, starts, run.context, run.horizon, times, codec.sizes)
        ar.to(run.ar.device)
    config = {**run.config, "locations": {**old, **{k: info[k] for k in ("locations", "fields")}}}
    return Run(run.path, config, codec, run.denoiser, run.space, clim, ar, spec=run.spec, card=run.card,
               static=torch.from_numpy(static_values).to(run.device))
