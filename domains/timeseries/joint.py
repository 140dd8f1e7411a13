"""Joint scores of ensembles over every series, cell and variable at once (multivariate forecasts): the energy score
and CRPS-sum per lead time, each system's with a paired interval against the model's.

What a univariate CRPS cannot see: whether the members' departures are dependent across series, cells and
variables as the truth's are. An ensemble of independent marginals (statsforecast's models per series, EMOS per
cell) can match the model's CRPS and still lose here.

- energy score (probabilistic.energy_score, fair form): over the vector of all features of an init and lead; with
  several variables each is divided by its truth's standard deviation over the scored cases first (so that
  Berlin's radiation in J/m^2 does not outweigh its temperature in K); one variable stays in data units.
- CRPS-sum (probabilistic.crps_sum, ensemble form; Rasul et al. 2021): the CRPS of the members summed over the
  features against the summed truth, normalised by |summed truth|, per lead; one variable only (a sum across
  units means nothing).

Features where the truth or the model has a gap at any scored case are left out of the vector (all systems alike),
so that every case is scored on the same components."""
from __future__ import annotations

import numpy as np
import xarray as xr

from .intervals import paired_block_bootstrap
from .layout import truth_at_valid_time
from .probabilistic import crps_sum, energy_score

JOINT = "joint"  # the `variable` of the joint records
CORE = ("init_time", "lead_time", "member")
UNIVARIATE = ("crps", "crps_standard", "crps_fair", "rmse", "spread", "ssr")  # None in the joint records


def _stacked(f: xr.Dataset, truth: xr.Dataset, variables, scale: dict) -> tuple[np.ndarray, np.ndarray]:
    """(members (I, L, M, D), truth (I, L, D)) over every feature of `variables`, each divided by scale[v]."""
    xs, ys = [], []
    for v in variables:
        da = f[v]
        other = [d for d in da.dims if d not in CORE]
        y = truth_at_valid_time(truth[v], f["valid_time"]).transpose("init_time", "lead_time", *other)
        x = da.transpose("init_time", "lead_time", "member", *other).values
        n_i, n_l, n_m = x.shape[:3]
        xs.append(x.reshape(n_i, n_l, n_m, -1).astype(np.float64) / scale[v])
        ys.append(np.asarray(y.values, dtype=np.float64).reshape(n_i, n_l, -1) / scale[v])
    return np.concatenate(xs, -1), np.concatenate(ys, -1)


def joint_records(forecasts: dict, truth: xr.Dataset, variables, intervals: bool = True, seed: int = 0) -> list[dict]:
    """Records {variable: JOINT, lead_time_hours, system, energy_score, crps_sum, features} per lead and system of
    `forecasts` ({system: Dataset with init_time, member, lead_time}; "model" among them), each competitor's with
    `vs_model_energy` = the model's energy score minus its [95% paired block-bootstrap interval over the inits]."""
    variables = list(variables)
    multi = len(variables) > 1
    scale = {v: (float(np.nanstd(truth[v].values)) or 1.0) if multi else 1.0 for v in variables}
    stacked = {s: _stacked(f, truth, variables, scale) for s, f in forecasts.items()}
    x_model, y = stacked["model"]
    keep = np.isfinite(y).all((0, 1)) & np.isfinite(x_model).all((0, 1, 2))
    leads = forecasts["model"]["lead_time"].values
    hours = [float(lt / np.timedelta64(1, "h")) for lt in leads]
    per_init, records = {}, []
    for system, (x, _) in stacked.items():
        x = x[..., keep]
        es = energy_score(x, y[..., keep], member_axis=-2, vector_axis=-1)  # (I, L)
        per_init[system] = es
        for j, h in enumerate(hours):
            rec = {"variable": JOINT, "lead_time_hours": h, "system": system, **dict.fromkeys(UNIVARIATE),
                   "energy_score": float(np.nanmean(es[:, j])) if np.isfinite(es[:, j]).any() else None,
                   "crps_sum": None if multi else crps_sum(x[:, j], y[:, j][..., keep], member_axis=-2, vector_axis=-1),
                   "features": int(keep.sum()), "scaled": multi}
            records.append(rec)
    if intervals:
        for rec in records:
            if rec["system"] == "model":
                continue
            j = hours.index(rec["lead_time_hours"])
            a, b = per_init["model"][:, j], per_init[rec["system"]][:, j]
            if np.isfinite(a - b).sum() >= 2:
                res = paired_block_bootstrap(a, b, seed=seed)
                rec["vs_model_energy"] = {"diff": res["mean_diff"], "lo": res["lo"], "hi": res["hi"],
                                          "win_rate": res["win_rate"], "n": res["n"]}
    return records


def format_joint(records: list[dict]) -> str:
    """Plain text: per lead, each system's energy score (and CRPS-sum), and the model's difference [95%]."""
    lines = ["joint scores over all features (energy score; CRPS-sum for one variable):"]
    for rec in records:
        cell = f"{rec['lead_time_hours']:g} h  {rec['system']:<14} ES {rec['energy_score']:.4g}"
        if rec.get("crps_sum") is not None:
            cell += f"  CRPS-sum {rec['crps_sum']:.4g}"
        vs = rec.get("vs_model_energy")
        if vs is not None:
            cell += f"  model - it {vs['diff']:+.4g} [{vs['lo']:+.4g}, {vs['hi']:+.4g}]"
        lines.append(cell)
    return "\n".join(lines)
