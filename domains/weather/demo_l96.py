"""Lorenz-96 demos: the shipped pretrained:lorenz96 forecasting fresh data (no training), or end to end from scratch
(train a small model, forecast an ensemble, score it against baselines, draw the plots)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from gendiff.io import write_json_atomic

from gendiff.domains.timeseries import scoring
from gendiff.domains.timeseries.data import write_dataset
from gendiff.domains.timeseries.forecasting import forecast
from gendiff.domains.timeseries.plots import plot_plume, plot_skill
from gendiff.domains.timeseries.run import load_run
from gendiff.domains.timeseries.training import train

from .lorenz96 import lorenz96_dataset
from .metrics import latitude_weights

DEMO = {"n_times": 3200, "train_period": ("2000-01-01", "2001-12-31"), "init_period": ("2002-01-10", "2002-03-05"),
        "init_every": "24h", "context": "48h", "horizon": "48h", "lead": "96h", "members": 16,
        "net": {"width": 48, "mults": [1, 2], "dropout": 0.0, "heads": 4}, "max_steps": 600, "batch_size": 32,
        "lr": 1e-3, "sample_steps": 25}


def run_demo(out, *, max_steps: int | None = None, progress: bool = True, device="auto", seed: int = 0,
             time_budget: float | None = None, **overrides) -> dict:
    """Returns the summary also written to out/summary.json (scores of model and baselines at each lead);
    training and forecasting on `device` (gendiff.device.resolve_device), scoring on the CPU (numpy)."""
    cfg = {**DEMO, **overrides}
    if max_steps is not None:
        cfg["max_steps"] = max_steps
    out = Path(out)
    t0 = time.perf_counter()
    ds = lorenz96_dataset(cfg["n_times"])
    write_dataset(ds, out / "lorenz96.nc")
    summary = train(ds, out / "run", train_period=cfg["train_period"], context=cfg["context"], seasons=None,
                    horizon=cfg["horizon"], net=cfg["net"], max_steps=cfg["max_steps"], batch_size=cfg["batch_size"],
                    lr=cfg["lr"], sample_steps=cfg["sample_steps"], progress=progress, warmup_steps=50,
                    ckpt_every=10**9, resume="auto", device=device, seed=seed,
                    **({} if time_budget is None else {"time_budget": time_budget}))
    t_train = time.perf_counter() - t0
    fc = forecast(out / "run", ds, init_period=cfg["init_period"], init_every=cfg["init_every"],
                  members=cfg["members"], lead=cfg["lead"], out=out / "forecast.nc", progress=progress,
                  device=device, seed=seed)
    t_fc = time.perf_counter() - t0 - t_train
    records = scoring.evaluate(fc, ds, out=out / "scores", weights=latitude_weights)
    result = {"seconds": {"train": round(t_train, 1), "forecast": round(t_fc, 1),
                          "total": round(time.perf_counter() - t0, 1)},
              "train": {k: summary[k] for k in ("step", "loss", "parameters", "windows")},
              "inits": int(fc.sizes["init_time"]), "members": int(fc.sizes["member"]), "records": records}
    write_json_atomic(out / "summary.json", result)
    return result


PRETRAINED_DEMO = {"n_times": 4000, "init_period": ("2002-05-01", "2002-06-05"), "init_every": "120h",
                   "lead": "96h", "members": 16}


def run_pretrained_demo(out, *, run="pretrained:lorenz96", progress: bool = True, device="auto", seed: int = 0,
                        **overrides) -> dict:
    """No training: forecast freshly generated Lorenz-96 data (after the shipped model's training period) with
    `run`, score it against persistence, climatology and the linear ensemble, and write out/plume.png (members,
    mean and truth at four sites), out/skill.png (CRPS, RMSE, spread and SSR against lead), out/metrics.json and
    out/scores.json. About ten seconds on two CPU cores."""
    cfg = {**PRETRAINED_DEMO, **overrides}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model = load_run(run, device=device)
    ds = lorenz96_dataset(cfg["n_times"])
    fc = forecast(model, ds, init_period=cfg["init_period"], init_every=cfg["init_every"], members=cfg["members"],
                  lead=cfg["lead"], progress=progress, seed=seed)
    t_fc = time.perf_counter() - t0
    records = scoring.evaluate(fc, ds, out=out, plots=False, weights=latitude_weights)
    plot_skill(records, out / "skill.png")
    plot_plume(fc["x"], ds["x"], out / "plume.png")
    result = {"run": str(run), "seconds": {"forecast": round(t_fc, 1), "total": round(time.perf_counter() - t0, 1)},
              "inits": int(fc.sizes["init_time"]), "members": int(fc.sizes["member"]),
              "metrics": scoring.card_metrics(records, fc), "card_metrics": (model.card or {}).get("metrics", {}),
              "records": records}
    write_json_atomic(out / "metrics.json", result)
    return result


if __name__ == "__main__":  # pragma: no cover
    import sys

    print(json.dumps(run_demo(sys.argv[1] if len(sys.argv) > 1 else "runs/weather-demo")["seconds"]))
