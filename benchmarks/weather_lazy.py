"""Training steps per second with the values in memory against windows read on demand (stream.EncodedValues), on the
ERA5 sample read by path (never copied into the repo). Prints one JSON line per mode; the table in
benchmarks/results/weather_lazy.md is written from them by hand.

    python benchmarks/weather_lazy.py --data /work/shared/data/era5_uk_t2m_2019-03.nc --steps 40
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

MODES = {"in_memory": {"in_memory": True}, "stream": {"in_memory": False},
         "stream_chunks24": {"in_memory": False, "chunks": 24}, "stream_2workers": {"in_memory": False, "workers": 2}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--modes", default=",".join(MODES))
    args = p.parse_args()
    import torch

    from gendiff.domains.weather import train

    torch.set_num_threads(1)
    for mode in args.modes.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            s = train(args.data, Path(tmp) / "run", variables=["t2m"], train_period="2019-03-01:2019-03-24",
                      context="24h", horizon="24h", max_steps=args.steps, batch_size=16, calibration=0.0,
                      net={"width": 32}, progress=False, device="cpu", log_every=args.steps, **MODES[mode])
            total = time.perf_counter() - t0
        print(json.dumps({"mode": mode, "steps": args.steps, "loop_seconds": round(s["loop_seconds"], 2),
                          "steps_per_sec": round(args.steps / s["loop_seconds"], 2),
                          "total_seconds": round(total, 2), "in_memory": s["in_memory"]}), flush=True)


if __name__ == "__main__":
    main()
