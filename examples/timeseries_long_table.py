"""Time series in statsforecast's long format: a real series in, forecasts with intervals out, held-out CRPS.

    python examples/timeseries_long_table.py [--out runs/examples/timeseries_long_table] [--smoke]

The table is statsmodels' weekly Mauna Loa CO2 as (unique_id, ds, y), gaps as missing rows. Training takes the
defaults from the frequency (weekly: 13 weeks ahead, the yearly season kept if the data show it; the run's card
says why) on 1958-1991; look at the printed forecast (unique_id, ds, cutoff, gendiff, gendiff-lo-80 ...,
OUT/forecast.csv) and the CRPS table of forecasts from 1993-2000 (held out: inits inside the training period are
refused) against persistence, climatology and a linear AR ensemble, each with the model's paired 95% interval.
`--smoke` or GENDIFF_EXAMPLE_SMOKE=1: 2 training steps and a tiny network, 4 members: a check, not a model.
"""
import argparse
import json
import os
from pathlib import Path

from gendiff.domains import timeseries
from gendiff.domains.timeseries.real_series import load
from gendiff.domains.timeseries.scoring import format_table

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--out", default="runs/examples/timeseries_long_table")
p.add_argument("--smoke", action="store_true")
args = p.parse_args()
smoke = args.smoke or os.environ.get("GENDIFF_EXAMPLE_SMOKE") == "1"
out = Path(args.out)

wide = load("co2")  # weekly DatetimeIndex, one column 'co2' (ppm)
long_df = (wide.rename_axis("ds").reset_index().melt("ds", var_name="unique_id", value_name="y")
           .dropna()[["unique_id", "ds", "y"]])
train_period = ("1958-03-29", "1991-12-28")
budget = dict(max_steps=2, net={"width": 8, "mults": [1]}, sample_steps=2) if smoke else \
    dict(max_steps=200, net={"width": 32}, batch_size=32)  # the defaults, a small network
timeseries.train(long_df, out / "run", train_period=train_period, resume="auto", progress=False, **budget)
cfg = json.loads((out / "run" / "config.json").read_text())  # cfg["defaults"] (also on the card) says why
print(f"defaults from the {cfg['defaults']['step']} step: horizon {cfg['horizon_steps']}, context "
      f"{cfg['context_steps']}, seasons {cfg['ar_seasons']} steps ({cfg['defaults']['seasons']['candidates']})")
opts = dict(members=4, steps=2) if smoke else dict(members=16)

fc = timeseries.forecast(out / "run", long_df, h=13, level=[80, 95], out=out / "forecast.csv", progress=False, **opts)
print(fc.head(3).to_string(index=False), f"\n... {len(fc)} rows: {out / 'forecast.csv'}")

held_out = timeseries.forecast(out / "run", timeseries.resolve_data(long_df), output="xarray", progress=False,
                               init_period=("1993-01-02", "2000-12-30"), init_every=26 if smoke else 8, lead=13,
                               **opts)
records = timeseries.evaluate(held_out, long_df, train_period=train_period, plots=False)
print(format_table([r for r in records if r["lead_time_hours"] in (7 * 24, 13 * 7 * 24)]))
