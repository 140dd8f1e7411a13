"""Lorenz-96 (Lorenz 1996, eq. 1: dx_k/dt = (x_{k+1} - x_{k-2}) x_{k-1} - x_k + F), RK4, as an xarray Dataset."""
from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

MODEL_TIME_PER_6H = 0.05  # Lorenz (1996): 0.05 model time units ~ 6 hours of atmospheric error doubling


def tendency(x: np.ndarray, forcing: float) -> np.ndarray:
    """Lorenz (1996) eq. 1 on the last axis (cyclic)."""
    k = x.shape[-1]
    xp = np.concatenate([x[..., k - 2:], x, x[..., :1]], axis=-1)  # pad: x_{-2}, x_{-1} | x | x_{K}
    return (xp[..., 3:] - xp[..., :k]) * xp[..., 1:k + 1] - x + forcing


def rk4_step(x: np.ndarray, dt: float, forcing: float) -> np.ndarray:
    """Classical fourth-order Runge-Kutta step."""
    k1 = tendency(x, forcing)
    k2 = tendency(x + 0.5 * dt * k1, forcing)
    k3 = tendency(x + 0.5 * dt * k2, forcing)
    k4 = tendency(x + dt * k3, forcing)
    return x + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)


def integrate(x0: np.ndarray, n_out: int, *, out_dt: float = MODEL_TIME_PER_6H, dt: float = 0.01,
              forcing: float = 8.0) -> np.ndarray:
    """Run from x0 (..., K) and return n_out states (n_out, ..., K) spaced out_dt apart (x0 excluded)."""
    sub = max(1, int(round(out_dt / dt)))
    h = out_dt / sub
    x = np.asarray(x0, dtype=np.float64)
    out = np.empty((n_out, *x.shape))
    for i in range(n_out):
        for _ in range(sub):
            x = rk4_step(x, h, forcing)
        out[i] = x
    return out


def lorenz96_dataset(n_times: int = 4000, *, k: int = 40, forcing: float = 8.0, step_hours: int = 6, seed: int = 0,
                     spinup: int = 400, start: str = "2000-01-01") -> xr.Dataset:
    """Generate a Lorenz-96 trajectory as Dataset x(time, site); one output step = step_hours (0.05 units per 6 h)."""
    rng = np.random.default_rng(seed)
    x0 = forcing * np.ones(k) + rng.normal(0.0, 0.01, k)
    out_dt = MODEL_TIME_PER_6H * step_hours / 6.0
    traj = integrate(x0, spinup + n_times, out_dt=out_dt, forcing=forcing)[spinup:]
    time = pd.date_range(start, periods=n_times, freq=f"{step_hours}h")
    return xr.Dataset(
        {"x": xr.DataArray(traj.astype(np.float32), dims=("time", "site"),
                           attrs={"long_name": "Lorenz-96 state", "units": "1"})},
        coords={"time": time, "site": np.arange(k)},
        attrs={"title": f"Lorenz-96 K={k} F={forcing}, RK4 dt=0.01, output every {step_hours} h "
                        f"({out_dt} model time units)",
               "forcing": forcing, "model_time_per_step": out_dt, "seed": seed})


def perfect_model_ensemble(ds: xr.Dataset, init_times, lead_steps: int, members: int, *, sigma: float = 0.1,
                           seed: int = 0) -> np.ndarray:
    """The true equations from Gaussian-perturbed initial states: (I, M, lead_steps, K)."""
    rng = np.random.default_rng(seed)
    forcing = float(ds.attrs.get("forcing", 8.0))
    out_dt = float(ds.attrs.get("model_time_per_step", MODEL_TIME_PER_6H))
    x0 = ds["x"].sel(time=np.asarray(init_times)).values.astype(np.float64)  # (I, K)
    x0 = x0[:, None, :] + sigma * rng.standard_normal((x0.shape[0], members, x0.shape[1]))
    traj = integrate(x0, lead_steps, out_dt=out_dt, forcing=forcing)  # (L, I, M, K)
    return traj.transpose(1, 2, 0, 3)
