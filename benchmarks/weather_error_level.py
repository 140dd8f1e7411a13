"""How hard the forecast period is against the training period, for the AR base alone: why a spread calibrated on
the training period gives an SSR below 1 on the ERA5 sample's last week.

    python benchmarks/weather_error_level.py --data ../shared/data/era5_uk_t2m_2019-03.nc

The hourly climatology and the per-cell AR(2) base of a gendiff run (climatology.py, base.ARBase) are fitted on the
training period; their mean forecast is scored (RMSE over cells, every `--init-every` init) at each lead on the
training period's own inits, on the held-out days the spread calibration uses (its last `--calibration` fraction)
and on the forecast period. The ratio forecast / training is the SSR a spread right for the training period can
reach at best. It also reports whether the recent AR residuals in the context (a realised volatility, the last 24 h)
track the error: a spread that followed them could see a stormier week coming. Prints its tables; the measured
ones are in benchmarks/results/weather_error_level.md.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--vars", default=None)
    p.add_argument("--train-period", default="2019-03-01:2019-03-24")
    p.add_argument("--forecast-period", default="2019-03-25:2019-03-30")
    p.add_argument("--init-every", type=int, default=6, help="steps between inits")
    p.add_argument("--leads", default="6,12,24", help="lead steps")
    p.add_argument("--calibration", type=float, default=0.15)
    a = p.parse_args(argv)
    from gendiff.domains.timeseries.base import ARBase
    from gendiff.domains.timeseries.data import open_data
    from gendiff.domains.timeseries.stream import EncodedValues, fit_statistics

    ds = open_data(a.data, a.vars.split(",") if a.vars else None)
    times = pd.DatetimeIndex(ds["time"].values)
    t0, t1 = (pd.Timestamp(x) for x in a.train_period.split(":"))
    f0, f1 = (pd.Timestamp(x) for x in a.forecast_period.split(":"))
    train = np.flatnonzero((times >= t0) & (times <= t1 + pd.Timedelta(hours=23)))
    stats = fit_statistics(ds.isel(time=train))
    values = EncodedValues(ds, stats.codec, stats.climatology()).load().astype(np.float64)
    ar = ARBase.fit(values, train, 2)
    phi = ar.phi.double().numpy()  # (C, 2)
    leads = [int(x) for x in a.leads.split(",")]
    std = np.concatenate([np.broadcast_to(np.asarray(stats.codec._kept(stats.codec.std, v), np.float64), (n,))
                          for v, n in zip(stats.codec.variables, stats.codec.sizes)])  # back to data units

    def errors(inits: np.ndarray) -> dict:
        out = {}
        for lead in leads:
            prev, prev2 = values[inits], values[inits - 1]
            for _ in range(lead):
                prev, prev2 = phi[:, 0] * prev + phi[:, 1] * prev2, prev
            out[lead] = ((prev - values[inits + lead]) * std) ** 2  # (I, C)
        return out

    residual = np.zeros_like(values)
    residual[2:] = values[2:] - (phi[:, 0] * values[1:-1] + phi[:, 1] * values[:-2])
    last = int(train[-1])
    step = a.init_every
    sets = {"training": train[(train >= 26) & (train + max(leads) <= last)][::step]}
    n_hold = int(round(len(train) * a.calibration))
    hold = train[len(train) - n_hold:]
    sets["calibration days"] = hold[hold + max(leads) <= last][::step]
    fc = np.flatnonzero((times >= f0) & (times <= f1 + pd.Timedelta(hours=23)))
    sets["forecast period"] = fc[fc + max(leads) < len(times)][::step]
    rmse = {name: {lead: float(np.sqrt(e.mean())) for lead, e in errors(idx).items()} for name, idx in sets.items()}
    vol = {name: np.array([np.mean(residual[i - 23:i + 1] ** 2) for i in idx]) for name, idx in sets.items()}
    err = {name: errors(idx) for name, idx in sets.items()}
    report = {"data": a.data, "train_period": a.train_period, "forecast_period": a.forecast_period,
              "inits": {k: int(len(v)) for k, v in sets.items()}, "rmse": rmse,
              "ratio_forecast_to_training": {lead: round(rmse["forecast period"][lead] / rmse["training"][lead], 3)
                                             for lead in leads},
              "volatility_ratio_forecast_to_training": round(float(vol["forecast period"].mean()
                                                                   / vol["training"].mean()), 3),
              "corr_volatility_error_training": {
                  lead: round(float(np.corrcoef(vol["training"], err["training"][lead].mean(1))[0, 1]), 3)
                  for lead in leads}}
    print(json.dumps(report, indent=1))
    for lead in leads:
        print(f"lead {lead:>3} steps: AR base RMSE training {rmse['training'][lead]:.3f}, calibration days "
              f"{rmse['calibration days'][lead]:.3f}, forecast period {rmse['forecast period'][lead]:.3f} "
              f"(x{report['ratio_forecast_to_training'][lead]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
