"""Behaviour pinned across the engine move (issue 27): what the shipped `pretrained:lorenz96` and
`pretrained:era5-uk-t2m` forecast through the CLI for fixed seeds and inits, and what `gendiff evaluate weather`
prints for them, recorded before the time-series engine left `domains/weather/` and compared after it.

Re-record (only when a change is meant to move these numbers, and say which in the commit):
    python tests/domains/test_weather_golden.py --record"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from gendiff.cli import main

RECORD = Path(__file__).with_name("golden") / "weather_pretrained.json"
ERA5 = Path(__file__).resolve().parents[3] / "shared" / "data" / "era5_uk_t2m_2019-03.nc"
CASES = {
    "lorenz96": ["--run", "pretrained:lorenz96", "--data", "lorenz96", "--init-period", "2002-05-01:2002-05-02",
                 "--init-every", "24h", "--members", "3", "--lead", "24h", "--steps", "8", "--seed", "3"],
    "era5-uk-t2m": ["--run", "pretrained:era5-uk-t2m", "--data", str(ERA5), "--init-period",
                    "2019-03-26T00:00:2019-03-26T12:00", "--init-every", "12h", "--members", "2", "--lead", "12h",
                    "--steps", "6", "--seed", "1"],
}
EVALUATE = {"lorenz96": ["--truth", "lorenz96"],
            "era5-uk-t2m": ["--truth", str(ERA5), "--train-period", "2019-03-01:2019-03-24",
                            "--systems", "model,persistence,climatology,linear,ar_calibrated"]}


# tiny trainings through the CLI, then a forecast (or an imputation) from the fresh run: the training path pinned
TRAINED = {
    "train-l96": (["--data", "lorenz96", "--steps", "3", "--width", "16", "--batch-size", "8", "--seed", "2",
                   "--calibration-inits", "4"],
                  ["forecast", "--data", "lorenz96", "--allow-in-sample", "--init-period", "2002-05-01:2002-05-02",
                   "--init-every", "24h",
                   "--members", "2", "--lead", "12h", "--steps", "4"]),
    "train-era5-gridnet": (["--data", str(ERA5), "--arch", "gridnet", "--patch", "64", "--width", "8", "--steps", "3",
                            "--batch-size", "4", "--train-period", "2019-03-01:2019-03-12", "--season", "24h", "--context", "30h", "--horizon", "6h",
                            "--calibration", "0"],
                           ["forecast", "--data", str(ERA5), "--init-period", "2019-03-20T00:00:2019-03-20T06:00",
                            "--init-every", "6h", "--members", "2", "--lead", "6h", "--steps", "4"]),
    "train-csv": (["--data", "{csv}", "--steps", "3", "--width", "16", "--batch-size", "8", "--season", "24h", "--context", "30h",
                   "--calibration-inits", "4"],
                  ["forecast", "--data", "{csv}", "--allow-in-sample", "--init-period", "2021-02-20T00:00:2021-02-21T00:00",
                   "--init-every", "12h", "--members", "2", "--lead", "12h", "--steps", "4", "--output-format",
                   "netcdf"]),
    "train-impute": (["--data", "lorenz96", "--task", "impute", "--window", "32", "--steps", "3", "--width", "16",
                      "--batch-size", "8", "--calibration", "0"],
                     ["impute", "--data", "{gappy}", "--members", "2", "--steps", "4"]),
}


def _tables(folder: Path) -> dict:
    """A two-series hourly CSV with a daily cycle, and Lorenz-96 sites with gaps, made the same way every time."""
    import pandas as pd

    from gendiff.domains.weather.lorenz96 import lorenz96_dataset

    t = pd.date_range("2021-01-01", periods=24 * 60, freq="h")
    rng = np.random.default_rng(5)
    day = np.sin(2 * np.pi * t.hour.to_numpy() / 24)
    df = pd.DataFrame({"time": t, "north": 10 + 3 * day + rng.normal(0, 0.5, len(t)),
                       "south": 15 + 2 * day + np.cumsum(rng.normal(0, 0.1, len(t)))})
    df.to_csv(folder / "series.csv", index=False)
    ds = lorenz96_dataset(400, seed=4)
    x = ds["x"].values.copy()
    x[rng.random(x.shape) < 0.1] = np.nan
    ds["x"] = ds["x"].copy(data=x)
    ds.to_netcdf(folder / "gappy.nc")
    return {"csv": str(folder / "series.csv"), "gappy": str(folder / "gappy.nc")}


def trained(name: str, folder: Path) -> dict:
    torch.set_num_threads(1)
    paths = _tables(folder)
    train_args, (verb, *use_args) = TRAINED[name]
    fill = [a.format(**paths) for a in train_args]
    run = folder / "run"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", "weather", *fill, "--out", str(run), "--quiet"]) == 0
    out = folder / "out.nc"
    args = [verb, "weather" if verb == "forecast" else "timeseries", "--run", str(run),
            *[a.format(**paths) for a in use_args], "--out", str(out)]
    if verb == "forecast":
        args.append("--quiet")
    assert main(args) == 0
    with xr.open_dataset(out) as ds:
        var = next(v for v in ds.data_vars if "member" in ds[v].dims)
        return {"forecast": _digest(ds[var].values), "evaluate": None}


def _digest(values: np.ndarray) -> dict:
    flat = np.ascontiguousarray(values, dtype=np.float32).ravel()
    step = max(1, flat.size // 64)
    return {"shape": list(values.shape), "sha256": hashlib.sha256(flat.tobytes()).hexdigest(),
            "mean": float(np.nanmean(flat.astype(np.float64))),
            "missing": int(np.isnan(flat).sum()), "every": step, "values": flat[::step].tolist()}


def compute(name: str, folder: Path) -> dict:
    """Forecast and evaluate one shipped model through the CLI; the numbers and the printed table."""
    torch.set_num_threads(1)
    fc_path = folder / f"{name}.nc"
    assert main(["forecast", "weather", *CASES[name], "--out", str(fc_path), "--quiet"]) == 0
    with xr.open_dataset(fc_path) as fc:
        var = next(v for v in fc.data_vars if "member" in fc[v].dims)
        forecast = _digest(fc[var].values)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["evaluate", "weather", "--forecast", str(fc_path), *EVALUATE[name]]) == 0
    return {"forecast": forecast, "evaluate": printed.getvalue()}


def _usable(name: str) -> bool:
    return "era5" not in name or ERA5.exists()


@pytest.mark.parametrize("name", list(CASES))
def test_pretrained_forecast_and_evaluate_match_the_record(name, tmp_path):
    if not _usable(name):
        pytest.skip("the shared ERA5 sample is not on this machine")
    want = json.loads(RECORD.read_text())[name]
    _compare(compute(name, tmp_path), want)


@pytest.mark.parametrize("name", list(TRAINED))
def test_tiny_trainings_forecast_what_they_did_before_the_move(name, tmp_path):
    if not _usable(name):
        pytest.skip("the shared ERA5 sample is not on this machine")
    _compare(trained(name, tmp_path), json.loads(RECORD.read_text())[name])


def _compare(got: dict, want: dict) -> None:
    fc, ref = got["forecast"], want["forecast"]
    assert fc["shape"] == ref["shape"] and fc["missing"] == ref["missing"]
    np.testing.assert_allclose(fc["values"], ref["values"], rtol=1e-5, atol=1e-5)
    assert fc["mean"] == pytest.approx(ref["mean"], rel=1e-6, abs=1e-6)
    if want["evaluate"] is not None:  # the table as recorded; issue 29 added the paired intervals below it
        table, _, intervals = got["evaluate"].partition("\n\nmodel CRPS minus")
        assert table + ("\n" if intervals else "") == want["evaluate"] and "95% paired" in intervals


if __name__ == "__main__" and "--record" in sys.argv:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = {case: compute(case, Path(tmp)) for case in CASES}
        for case in TRAINED:
            (Path(tmp) / case).mkdir()
            out[case] = trained(case, Path(tmp) / case)
    RECORD.parent.mkdir(exist_ok=True)
    RECORD.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {RECORD}")
