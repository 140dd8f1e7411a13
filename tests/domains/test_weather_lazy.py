"""Weather data larger than memory: lazy opening (zarr, globs, lists of files, dask chunks), one-pass statistics
against their in-memory oracles, windows read on demand (DataLoader workers included), eager and lazy training
and forecasting giving the same numbers, and a run under a memory limit smaller than its dataset."""
import functools
import json
import os
import pickle
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from gendiff.errors import ConfigError, DataError
from gendiff.domains.timeseries import stream
from gendiff.domains.timeseries.base import ARBase
from gendiff.domains.timeseries.climatology import HourlyClimatology
from gendiff.domains.timeseries.data import open_data, parse_chunks, write_dataset
from gendiff.domains.timeseries.stream import EncodedValues, fit_statistics, row_blocks
from gendiff.domains.timeseries.windows import window_starts

pytest.importorskip("dask")


def grid_dataset(n_time=120, seed=0, freq="3h", start="2020-01-01"):
    """Two variables on a small grid and a station set, with a never-valid cell, gaps and a diurnal cycle."""
    rng = np.random.default_rng(seed)
    time = pd.date_range(start, periods=n_time, freq=freq)
    hour = time.hour.to_numpy()[:, None, None]
    t = (280 + 3 * np.sin(2 * np.pi * hour / 24) + rng.normal(0, 1, (n_time, 3, 4))).astype(np.float32)
    t[:, 0, 0] = np.nan
    t[rng.random(t.shape) < 0.05] = np.nan
    p = rng.normal(1000, 5, (n_time, 2))
    p[10:14, 1] = np.nan
    return xr.Dataset(
        {"t": (("time", "latitude", "longitude"), t, {"units": "K"}), "p": (("time", "station"), p, {"units": "hPa"})},
        coords={"time": time, "latitude": [52.0, 51.0, 50.0], "longitude": [0.0, 1.0, 2.0, 3.0],
                "station": ["a", "b"]},
        attrs={"title": "synthetic"})


def _oracle(ds):
    """The statistics as the code computed them before streaming, everything in memory."""
    mean = {v: float(np.nanmean(ds[v].values.astype(np.float64))) for v in ds.data_vars}
    std = {v: float(np.nanstd(ds[v].values.astype(np.float64))) for v in ds.data_vars}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        template = {v: ds[v].mean("time", skipna=True).values for v in ds.data_vars}
    return mean, std, template


def test_one_pass_statistics_equal_the_in_memory_ones():
    ds = grid_dataset(n_time=200)
    mean, std, template = _oracle(ds)
    for max_bytes in (None, 8 * 14 * 7, 8 * 14):  # one block, blocks of 7 steps, one step per block
        stats = fit_statistics(ds, max_bytes=max_bytes)
        for v in ds.data_vars:
            assert stats.codec.mean[v] == pytest.approx(mean[v], rel=1e-12)
            assert stats.codec.std[v] == pytest.approx(std[v], rel=1e-9)
            np.testing.assert_allclose(stats.codec.template[v].values, template[v], rtol=1e-6, equal_nan=True)
            assert stats.counts[v] == int(np.isfinite(ds[v].values).sum())
        # the hourly climatology from raw sums equals the old one: nanmean of the normalised values per hour
        codec = stats.codec
        values = codec.encode(ds)
        times = ds["time"].values
        hours = pd.DatetimeIndex(times).hour.to_numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            want = np.nan_to_num(np.stack([np.nanmean(values[hours == h], 0) for h in np.unique(hours)]))
        clim = stats.climatology()
        np.testing.assert_allclose(clim.mean, want, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(HourlyClimatology.fit(values, times, np.arange(len(times))).mean, want,
                                   rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(stats.has_data, np.isfinite(values).any(1))
    # a dask-backed copy gives the same numbers (blocks on its chunk boundaries)
    lazy = fit_statistics(ds.chunk({"time": 17}), max_bytes=8 * 14 * 40)
    for v in ds.data_vars:
        assert lazy.codec.mean[v] == pytest.approx(mean[v], rel=1e-12)
        assert lazy.codec.std[v] == pytest.approx(std[v], rel=1e-9)
    xr.testing.assert_allclose(lazy.codec.template, fit_statistics(ds).codec.template)


def test_row_blocks_follow_chunk_boundaries():
    assert row_blocks(0, 10, 1, max_bytes=8 * 4) == [(0, 4), (4, 8), (8, 10)]
    # chunks of 3: blocks hold whole chunks (at most 4 steps: one chunk each), a chunk of 6 is split
    bounds = np.array([3, 6, 12])
    assert row_blocks(0, 14, 1, max_bytes=8 * 4, bounds=bounds) == [(0, 3), (3, 6), (6, 10), (10, 12), (12, 14)]
    assert row_blocks(0, 12, 1, max_bytes=8 * 7, bounds=np.array([3, 6, 9])) == [(0, 6), (6, 12)]


def test_encoded_values_read_what_encode_gives(tmp_path):
    ds = grid_dataset()
    stats = fit_statistics(ds)
    codec, clim = stats.codec, stats.climatology()
    full = codec.encode(ds) - clim.at(ds["time"].values)
    path = write_dataset(ds, tmp_path / "g.nc")
    lazy = open_data(path, chunks={"time": 16})
    assert all(lazy[v].chunks is not None for v in lazy.data_vars)
    values = EncodedValues(lazy, codec, clim)
    assert values.shape == full.shape and len(values) == len(full)
    np.testing.assert_array_equal(values[5:40], full[5:40])
    np.testing.assert_array_equal(values[7], full[7])
    np.testing.assert_array_equal(values[-3:], full[-3:])
    idx = np.array([[3, 90], [4, 3]])
    np.testing.assert_array_equal(values[idx], full[idx])
    np.testing.assert_array_equal(values[np.arange(0, 120, 30)], full[::30])
    np.testing.assert_array_equal(values.load(), full)
    # pickled (as for a spawned DataLoader worker): reopened where it is unpickled
    again = pickle.loads(pickle.dumps(values))
    np.testing.assert_array_equal(again[10:20], full[10:20])
    by_path = EncodedValues(lazy, codec, clim, reopen=functools.partial(open_data, path, chunks={"time": 16}))
    again = pickle.loads(pickle.dumps(by_path))
    assert again.ds is None  # reopened by path on first read
    np.testing.assert_array_equal(again[10:20], full[10:20])


def test_window_starts_from_step_flags_match_reading_the_values():
    values = np.random.default_rng(0).normal(size=(60, 3)).astype(np.float32)
    values[20:30] = np.nan
    index = np.arange(5, 55)
    old = [s for s in range(60 - 8 + 1) if np.isin(np.arange(s, s + 8), index).all()
           and np.isfinite(values[s + 4:s + 8]).any()]
    np.testing.assert_array_equal(window_starts(60, index, 8, values, 4), old)
    np.testing.assert_array_equal(window_starts(60, index, 8, None, 4, np.isfinite(values).any(1)), old)


def test_ar_fit_in_blocks_equals_the_in_memory_fit(monkeypatch):
    rng = np.random.default_rng(1)
    a = np.zeros((400, 3))
    for t in range(2, 400):
        a[t] = 1.2 * a[t - 1] - 0.4 * a[t - 2] + rng.normal(size=3)
    a = a.astype(np.float32)
    a[50, 1] = np.nan
    times = pd.date_range("2020-01-01", periods=400, freq="6h").values
    starts = np.arange(0, 380)
    whole = ARBase.fit(a, np.arange(10, 390), 2, starts, 6, 4, times, [3])
    monkeypatch.setattr("gendiff.domains.timeseries.blocks.STREAM_BYTES", 8 * 3 * 7)  # blocks of 7 steps
    monkeypatch.setattr("gendiff.domains.timeseries.base.STREAM_BYTES", 8 * 3 * 10 * 5)  # 5 windows per chunk
    blocks = ARBase.fit(a, np.arange(10, 390), 2, starts, 6, 4, times, [3])
    np.testing.assert_allclose(blocks.phi.numpy(), whole.phi.numpy(), rtol=1e-6)
    np.testing.assert_allclose(blocks.scale.numpy(), whole.scale.numpy(), rtol=1e-6)
    np.testing.assert_allclose(blocks.diurnal.numpy(), whole.diurnal.numpy(), rtol=1e-6)


def test_open_zarr_globs_and_lists_of_files(tmp_path):
    pytest.importorskip("zarr")
    ds = grid_dataset()
    parts = [ds.isel(time=slice(i, i + 40)) for i in range(0, 120, 40)]
    files = [write_dataset(p, tmp_path / f"part{i}.nc") for i, p in enumerate(parts)]
    for source in (str(tmp_path / "part*.nc"), files, [str(f) for f in files[::-1]]):
        got = open_data(source)
        assert all(got[v].chunks is not None for v in got.data_vars)  # lazy: dask-backed, nothing read yet
        xr.testing.assert_allclose(got.load(), ds[["t", "p"]])
    store = write_dataset(ds, tmp_path / "g.zarr")
    xr.testing.assert_allclose(open_data(store, chunks="time=10").load(), ds[["t", "p"]])
    assert open_data(store, chunks=10)["t"].chunksizes["time"][0] == 10
    assert parse_chunks("time=24,latitude=-1") == {"time": 24, "latitude": -1} and parse_chunks(6) == {"time": 6}


def test_bad_lazy_inputs_are_one_line_errors(tmp_path):
    pytest.importorskip("zarr")
    ds = grid_dataset()
    with pytest.raises(DataError, match=r"nothing\*.nc: no file matches this pattern"):
        open_data(str(tmp_path / "nothing*.nc"))
    write_dataset(ds.isel(time=slice(0, 60)), tmp_path / "a.nc")
    write_dataset(ds.isel(time=slice(60, 120))[["t"]], tmp_path / "b.nc")
    with pytest.raises(DataError, match=r"b.nc: variables t differ .*'p' is not in both"):
        open_data(str(tmp_path / "*.nc"))
    other = ds.isel(time=slice(60, 120)).assign_coords(latitude=[53.0, 52.0, 51.0])
    write_dataset(other, tmp_path / "b.nc")
    with pytest.raises(DataError, match=r"\*.nc: the 2 files do not combine"):
        open_data(str(tmp_path / "*.nc"))
    write_dataset(ds.isel(time=slice(50, 110)), tmp_path / "b.nc")  # overlapping times
    with pytest.raises(DataError, match=r"\*.nc"):
        open_data(str(tmp_path / "*.nc"))
    write_dataset(ds.isel(time=0, drop=True), tmp_path / "static.zarr")
    with pytest.raises(DataError, match=r"static.zarr: no 'time' dimension"):
        open_data(tmp_path / "static.zarr")
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match=r"folder: a directory but not a zarr store"):
        open_data(tmp_path / "folder")
    with pytest.raises(ConfigError, match="chunks 'time:4'"):
        open_data(tmp_path / "a.nc", chunks="time:4")
    # an all-NaN variable of lazy data is found by the one pass over the training period
    nan = ds.copy()
    nan["p"] = nan["p"] * np.nan
    write_dataset(nan, tmp_path / "nan.nc")
    from gendiff.domains.weather import train

    with pytest.raises(DataError, match=r"nan.nc: variable 'p' is all NaN in the training period"):
        train(str(tmp_path / "nan.nc"), tmp_path / "run", context="12h", horizon="12h", max_steps=1, batch_size=2)


def test_cli_glob_without_match_exits_2(tmp_path, capsys):
    from gendiff.cli import main

    assert main(["train", "weather", "--data", str(tmp_path / "none*.nc"), "--out", str(tmp_path / "run"),
                 "--workers", "2", "--chunks", "24", "--stream"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gendiff: error: ") and "none*.nc: no file matches" in err[0]


TINY = dict(context="12h", horizon="12h", max_steps=3, batch_size=4, log_every=1, ckpt_every=100,
            net={"width": 8, "mults": (1, 2), "heads": 2}, calibration=0.2, sample_steps=2, progress=False,
            device="cpu", seed=3)


def test_lazy_and_eager_training_and_forecasts_agree(tmp_path):
    """The same run from the same data in memory and read on demand (by two DataLoader workers from a glob of files
    with dask chunks): the same codec, climatology, AR base, windows, losses and forecasts."""
    import torch

    from gendiff.domains.weather import forecast, train
    from gendiff.domains.timeseries.run import read_state

    ds = grid_dataset(n_time=160)
    for i in range(0, 160, 40):
        write_dataset(ds.isel(time=slice(i, i + 40)), tmp_path / f"part{i:03d}.nc")
    glob = str(tmp_path / "part*.nc")
    eager = train(ds, tmp_path / "eager", **TINY)
    lazy = train(glob, tmp_path / "lazy", chunks=16, workers=2, **TINY)
    assert eager["in_memory"] and not lazy["in_memory"] and lazy["workers"] == 2
    a, b = (read_state(tmp_path / r / "state.safetensors") for r in ("eager", "lazy"))
    for group in ("climatology", "ar", "codec"):
        for k in a[group]:
            torch.testing.assert_close(b[group][k], a[group][k], rtol=1e-6, atol=1e-7, equal_nan=True)
    ca, cb = (json.loads((tmp_path / r / "config.json").read_text()) for r in ("eager", "lazy"))
    assert cb["windows"] == ca["windows"]
    for v in ca["codec"]["mean"]:
        assert cb["codec"]["mean"][v] == pytest.approx(ca["codec"]["mean"][v], rel=1e-12)
        assert cb["codec"]["std"][v] == pytest.approx(ca["codec"]["std"][v], rel=1e-12)
    la, lb = (pd.read_csv(tmp_path / r / "log.csv")["loss"].to_numpy() for r in ("eager", "lazy"))
    np.testing.assert_allclose(lb, la, rtol=1e-5)
    kw = dict(init_period="2020-01-18:2020-01-19", init_every="12h", members=2, lead="12h", steps=2,
              progress=False, device="cpu", allow_in_sample=True)
    fa = forecast(tmp_path / "eager", ds, **kw)
    fb = forecast(tmp_path / "lazy", glob, chunks=16, **kw)
    xr.testing.assert_allclose(fb, fa, rtol=1e-5, atol=1e-4)


MEMORY_SCRIPT = textwrap.dedent('''
    import json, resource, sys

    import numpy as np
    import torch

    import gendiff.domains.timeseries.training, gendiff.domains.timeseries.forecasting  # noqa: F401  (imports before the limit)
    from gendiff.domains.weather import forecast, train

    def status(key):
        with open("/proc/self/status") as f:
            return int(dict(line.split(":", 1) for line in f if ":" in line)[key].split()[0]) * 1024

    data, out, budget, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[5])
    in_memory = sys.argv[4] == "eager"
    torch.set_num_threads(1)
    resource.setrlimit(resource.RLIMIT_DATA, (status("VmData") + budget, resource.RLIM_INFINITY))
    try:
        np.ones(size, dtype=np.uint8)  # the limit holds: the data cannot be held in memory
        print("limit not enforced")
        sys.exit(3)
    except MemoryError:
        pass
    try:
        summary = train(data, out, context="12h", horizon="12h", max_steps=3, batch_size=4, calibration=0.0,
                        net={"width": 8, "mults": [1, 2], "heads": 2}, sample_steps=2, progress=False,
                        device="cpu", in_memory=True if in_memory else None,
                        train_period="2000-01-01:2000-06-30")
        fc = forecast(out, data, init_period="2000-07-01:2000-07-02", init_every="24h", members=2, lead="12h",
                      steps=2, progress=False, device="cpu")
    except MemoryError as exc:
        import traceback

        print(json.dumps({"memory_error": str(exc), "where": [l for l in traceback.format_exc().splitlines() if "gendiff" in l or "domains" in l or "training" in l]}))
        sys.exit(4)
    print(json.dumps({"in_memory": summary["in_memory"], "windows": summary["windows"],
                      "forecast": dict(fc.sizes), "finite": bool(np.isfinite(fc["t"].values).all()),
                      "peak_rss": status("VmHWM"), "data": status("VmData")}))
''')


def _write_large(path, n_files, steps_per_file, ny, nx, seed=0):
    """Hourly AR(1) fields with a diurnal cycle, written file by file (one file's values in memory at a time)."""
    rng = np.random.default_rng(seed)
    state = np.zeros((ny, nx))
    lat, lon = np.linspace(60, 50, ny), np.linspace(-5, 5, nx)
    t0 = pd.Timestamp("2000-01-01")
    for i in range(n_files):
        times = pd.date_range(t0 + pd.Timedelta(hours=i * steps_per_file), periods=steps_per_file, freq="h")
        vals = np.empty((steps_per_file, ny, nx), dtype=np.float32)
        noise = rng.standard_normal((steps_per_file, ny, nx), dtype=np.float32)
        for k in range(steps_per_file):
            state = 0.95 * state + noise[k]
            vals[k] = state
        vals += (5 * np.sin(2 * np.pi * times.hour.to_numpy() / 24))[:, None, None] + 280
        ds = xr.Dataset({"t": (("time", "latitude", "longitude"), vals, {"units": "K"})},
                        coords={"time": times, "latitude": lat, "longitude": lon})
        ds.to_netcdf(path / f"t_{i:02d}.nc")
        del ds, vals, noise


@pytest.mark.slow
def test_trains_and_forecasts_on_data_larger_than_its_memory_limit(tmp_path):
    """A run on 8 netCDF files of 403 MB of float32 in all (a glob, opened with open_mfdataset), in a subprocess
    whose data segment may grow by at most 280 MB after its imports (resource.RLIMIT_DATA: it counts the heap and
    every private writable mapping, numpy and torch buffers included, and unlike RLIMIT_AS not the address space
    that torch's libraries reserve; glibc is told to serve large buffers by mmap so freed ones leave the count).
    The subprocess first checks that the limit bites (an array the size of the data cannot be allocated), then
    trains (the windows read on demand) and forecasts. The same command with in_memory=True (the values read into
    memory: the eager path) must fail with a MemoryError: the limit is below the data, the lazy path under it.
    DataLoader workers are covered by test_lazy_and_eager_training_and_forecasts_agree (spawned workers each
    import torch and open the files, which this budget does not hold)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    n_files, steps, ny, nx = 8, 3000, 50, 84  # 8 x 3000 x 4200 x 4 bytes = 403 MB
    _write_large(data_dir, n_files, steps, ny, nx)
    size = sum(f.stat().st_size for f in data_dir.iterdir())
    budget = 280 * 2**20
    assert size > budget + 100 * 2**20  # 403 MB of data, 280 MB of budget
    # large buffers by mmap, returned to the system when freed: the data segment then measures live memory
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": str(2**20)}
    glob = str(data_dir / "t_*.nc")

    def run(mode):
        return subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, glob, str(tmp_path / f"run_{mode}"),
                               str(budget), mode, str(size)], capture_output=True, text=True, env=env, timeout=600)

    lazy = run("lazy")
    assert lazy.returncode == 0, lazy.stdout + lazy.stderr[-3000:]
    result = json.loads(lazy.stdout.strip().splitlines()[-1])
    assert not result["in_memory"] and result["finite"]
    assert result["forecast"] == {"init_time": 2, "member": 2, "lead_time": 12, "latitude": ny, "longitude": nx}
    eager = run("eager")
    assert eager.returncode == 4, eager.stdout + eager.stderr[-3000:]
    assert "memory_error" in eager.stdout
