"""The time-series demo: a real series shipped in a package (statsmodels' weekly Mauna Loa CO2), trained briefly on
1958-1991, forecast a year ahead from every fourth week of 1993-2000 (held out), scored against persistence, the
climatology and the linear AR ensemble, with a plume and a skill-against-lead plot and the forecast as a tidy CSV."""
from __future__ import annotations

import time
from pathlib import Path

from gendiff.io import write_json_atomic

from . import real_series
from .plots import plot_plume, plot_skill
from .scoring import card_metrics
from .tabular import from_pandas, to_tidy, write_table
from .verbs import evaluate, forecast, train

DEMO = {"context": 104, "horizon": 52, "seasons": "52W", "train_period": ("1958-03-29", "1991-12-28"),
        "init_period": ("1993-01-02", "2000-12-30"), "init_every": 8, "lead": 52, "members": 16,
        "net": {"width": 32}, "max_steps": 200, "batch_size": 32, "sample_steps": 20}


def demo(out="runs/timeseries-demo", device="auto", progress: bool = True, minutes: float | None = None,
         seed: int = 0, **overrides) -> dict:
    """Train, forecast, evaluate and plot on the CO2 series (about a minute on two CPU cores); `minutes` caps the
    training time. Returns the summary also written to out/metrics.json."""
    cfg = {**DEMO, **overrides}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    df = real_series.load("co2")
    budget = {} if minutes is None else {"time_budget": 60.0 * minutes}
    summary = train(df, out / "run", context=cfg["context"], horizon=cfg["horizon"], seasons=cfg["seasons"],
                    train_period=cfg["train_period"], net=cfg["net"], max_steps=cfg["max_steps"],
                    batch_size=cfg["batch_size"], sample_steps=cfg["sample_steps"], progress=progress,
                    device=device, resume="auto", seed=seed, **budget)
    t_train = time.perf_counter() - t0
    fc = forecast(out / "run", df, output="xarray", init_period=cfg["init_period"], init_every=cfg["init_every"],
                  members=cfg["members"], lead=cfg["lead"], progress=progress, device=device, seed=seed)
    write_table(to_tidy(fc), out / "forecast.csv")
    records = evaluate(fc, df, train_period=cfg["train_period"], out=out / "scores", plots=False)
    plot_skill(records, out / "skill.png")
    truth = from_pandas(df)
    plot_plume(fc["value"], truth["value"], out / "plume.png", init_index=fc.sizes["init_time"] // 2,
               context_hours=104 * 7 * 24)
    result = {"data": "statsmodels co2 (weekly Mauna Loa CO2, ppm)",
              "seconds": {"train": round(t_train, 1), "total": round(time.perf_counter() - t0, 1)},
              "train": {k: summary[k] for k in ("step", "loss", "parameters", "windows")},
              "inits": int(fc.sizes["init_time"]), "members": int(fc.sizes["member"]),
              "metrics": card_metrics(records, fc, headline_hours=[7 * 24.0, 13 * 7 * 24.0, 52 * 7 * 24.0]),
              "records": records}
    write_json_atomic(out / "metrics.json", result)
    return result

