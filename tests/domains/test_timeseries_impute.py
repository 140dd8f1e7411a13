"""Probabilistic imputation (train(task='impute'), impute, evaluate_imputation, gendiff impute): gaps filled,
observed values untouched bit for bit, independent members, tables in and out, one-line errors, and the metrics
and baselines against brute-force oracles."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from gendiff.cli import main
from gendiff.domains import timeseries
from gendiff.domains.timeseries.imputation import hide, make_impute_inputs
from gendiff.domains.timeseries.gapfill import interior_gaps, plan
from gendiff.domains.timeseries.impute_eval import (hide_observed, linear_interpolation, quantile_crps_normalised,
                                                 score_draws, seasonal_fill)
from gendiff.errors import ConfigError, DataError

WINDOW = 16


def _frame(n=400, seed=0):
    """Two hourly series (a daily sine and its negative with noise), gaps of 1-5 steps, one series starting late."""
    rng = np.random.default_rng(seed)
    t = pd.date_range("2024-01-01", periods=n, freq="h", name="time")
    phase = 2 * np.pi * np.arange(n) / 24
    df = pd.DataFrame({"a": 10 + 3 * np.sin(phase) + 0.1 * rng.standard_normal(n),
                       "b": -2 * np.cos(phase) + 0.1 * rng.standard_normal(n)}, index=t)
    for start, length in ((50, 3), (130, 5), (260, 1), (331, 4)):
        df.iloc[start:start + length, 0] = np.nan
    for start, length in ((90, 2), (200, 6)):
        df.iloc[start:start + length, 1] = np.nan
    df.iloc[:7, 1] = np.nan  # 'b' starts late: its leading NaN are not a gap
    return df


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("impute") / "run"
    timeseries.train(_frame(), out, task="impute", window=WINDOW, max_steps=12, batch_size=8, net={"width": 8},
                     sampler="ddim", sample_steps=4, progress=False)
    return out


def _bits(a):
    return np.asarray(a, dtype=np.float64).view(np.int64)


def test_impute_fills_every_gap_and_keeps_observed_bits(run):
    df = _frame()
    ds = timeseries.impute(run, df, members=3, output="xarray", progress=False)
    vals = ds["value"].transpose("member", "time", "series").values
    orig = df.to_numpy()
    obs = np.isfinite(orig)
    assert vals.shape == (3, *orig.shape)
    assert (_bits(vals[:, obs]) == _bits(orig[obs])[None]).all()  # bit for bit
    gaps = interior_gaps(obs)
    assert gaps.sum() == np.isnan(orig).sum() - 7 and np.isfinite(vals[:, gaps]).all()
    assert np.isnan(vals[:, :7, 1]).all()  # leading NaN of 'b' stay NaN
    assert np.ptp(vals[:, gaps], axis=0).min() > 0  # the members are different draws at every gap entry
    again = timeseries.impute(run, df, members=3, output="xarray", progress=False)
    np.testing.assert_array_equal(again["value"].values, ds["value"].values)  # seeded
    other = timeseries.impute(run, df, members=3, output="xarray", progress=False, seed=1)
    assert not np.array_equal(other["value"].values, ds["value"].values)


def test_impute_tables_tidy_quantiles_wide(run, tmp_path):
    df = _frame()
    tidy = timeseries.impute(run, df, members=2, progress=False)
    assert list(tidy.columns) == ["time", "series", "member", "value", "observed"] and len(tidy) == df.size * 2
    a = tidy[(tidy["series"] == "a") & (tidy["member"] == 1)].set_index("time")["value"]
    assert (_bits(a[df["a"].notna()]) == _bits(df["a"].dropna())).all()
    assert tidy["observed"].sum() == df.notna().sum().sum() * 2
    bands = timeseries.impute(run, df, members=4, quantiles=[0.1, 0.9], progress=False, out=tmp_path / "q.parquet")
    assert list(bands.columns) == ["time", "series", "quantile", "value", "observed"]
    wide_q = bands.pivot_table(index=["time", "series"], columns="quantile", values="value")
    assert (wide_q[0.1] <= wide_q[0.9]).all()
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "q.parquet"), bands)
    wide = timeseries.impute(run, df, members=3, output="wide", progress=False)
    assert wide.shape == df.shape and (wide.index == df.index).all() and list(wide.columns) == ["a", "b"]
    assert (_bits(wide.to_numpy()[df.notna().to_numpy()]) == _bits(df.to_numpy()[df.notna().to_numpy()])).all()
    assert wide["a"].notna().all() and wide["b"].isna().sum() == 7


def test_cli_csv_round_trip_and_evaluate(run, tmp_path, capsys):
    df = _frame()
    csv = tmp_path / "gappy.csv"
    df.reset_index().rename(columns={"time": "date"}).to_csv(csv, index=False)
    out = tmp_path / "filled.csv"
    assert main(["impute", "timeseries", "--run", str(run), "--data", str(csv), "--time-column", "date",
                 "--members", "2", "--out", str(out), "--quiet"]) == 0
    back = pd.read_csv(out, parse_dates=["time"])
    read = pd.read_csv(csv)["a"].to_numpy()
    got = back[(back["series"] == "a") & (back["member"] == 0)]["value"].to_numpy()
    ok = np.isfinite(read)
    assert (_bits(got[ok]) == _bits(read[ok])).all() and np.isfinite(got).all()
    wide = tmp_path / "wide.csv"
    assert main(["impute", "timeseries", "--run", str(run), "--data", str(csv), "--members", "2", "--wide",
                 "--out", str(wide), "--quiet"]) == 0
    assert pd.read_csv(wide).shape == (len(df), 3)
    capsys.readouterr()
    assert main(["impute", "timeseries", "--run", str(run), "--data", str(csv), "--evaluate", "--members", "4",
                 "--fraction", "0.1", "--json", "--quiet", "--out", str(tmp_path / "scores.json")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["system"] for r in result["records"]] == ["model", "linear_interpolation", "seasonal"]
    n = int(round(0.1 * df.notna().sum().sum()))
    assert result["hidden"] == n and all(r["n"] == n for r in result["records"]) and result["season"] == 24
    for r in result["records"]:
        assert r["crps"] >= 0 and r["ncrps_csdi"] > 0 and r["mae"] >= 0
    lin = result["records"][1]
    assert lin["crps"] == pytest.approx(lin["mae"]) and lin["crps_standard"] == pytest.approx(lin["mae"])
    assert json.loads((tmp_path / "scores.json").read_text())["hidden"] == n


def test_errors_are_one_line(run, tmp_path, capsys):
    df = _frame()
    long = df.copy()
    long.iloc[100:100 + WINDOW // 2 + 1, 1] = np.nan
    with pytest.raises(DataError, match=r"series 'b' has a gap of 9 steps from 2024-01-05 04:00:00.*up to 8"):
        timeseries.impute(run, long, members=2, progress=False)
    with pytest.raises(ConfigError, match="members=0"):
        timeseries.impute(run, df, members=0, progress=False)
    with pytest.raises(ConfigError, match="output='long'"):
        timeseries.impute(run, df, output="long", progress=False)
    with pytest.raises(ConfigError, match="quantiles go with the tidy table"):
        timeseries.impute(run, df, output="wide", quantiles=[0.5], progress=False)
    with pytest.raises(DataError, match="time step 0 days 02:00:00 differs"):
        timeseries.impute(run, df.iloc[::2], progress=False)
    with pytest.raises(ConfigError, match="task='impute' takes the per-entry known flags: missing_flag"):
        timeseries.train(df, tmp_path / "g", task="impute", missing_flag=False, max_steps=1)
    with pytest.raises(ConfigError, match="task='nowcast'"):
        timeseries.train(df, tmp_path / "g", task="nowcast", max_steps=1)
    fc_run = tmp_path / "fc"
    timeseries.train(df, fc_run, context=8, horizon=4, max_steps=1, batch_size=4, net={"width": 8},
                     calibration=0.0, progress=False)
    with pytest.raises(ConfigError, match="task 'forecast'; imputation needs one trained with task='impute'"):
        timeseries.impute(fc_run, df, progress=False)
    with pytest.raises(ConfigError, match="task 'impute'; forecasting needs one trained with task='forecast'"):
        timeseries.forecast(run, df, init_times=[df.index[100]], progress=False)
    capsys.readouterr()
    rc = main(["impute", "timeseries", "--run", str(run), "--data", str(tmp_path / "none.csv"), "--out",
               str(tmp_path / "x.csv")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("gendiff: error:") and "none.csv" in err
    assert main(["impute", "timeseries", "--run", str(run), "--data", "x.csv", "--quantiles", "0.5",
                 "--out", str(tmp_path / "x.nc")]) == 2
    assert "--quantiles and --wide need a csv" in capsys.readouterr().err
    assert main(["impute", "timeseries", "--run", str(run), "--data", "x.csv", "--evaluate", "--wide"]) == 2
    assert "--evaluate writes scores" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"fraction=1.5 must be in \(0, 1\)"):
        timeseries.evaluate_imputation(run, df, fraction=1.5)


def test_gridnet_imputation_has_one_size_for_any_number_of_series(tmp_path):
    """arch='gridnet' with task='impute' (issue 13): one temporal U-Net shared by the series, so three series and
    six train the same number of parameters; impute fills every gap of each, observed values bit for bit."""
    base = _frame()
    three = base.assign(c=base["a"].shift(5) - 4)  # a third series, gappy where 'a' is, five steps later
    six = pd.concat([three, (2 * three).add_suffix("_x")], axis=1)
    net = {"width": 8, "mults": [1, 2], "heads": 2, "neighbours": 2}
    sizes = []
    for name, frame in (("three", three), ("six", six)):
        summary = timeseries.train(frame, tmp_path / name, task="impute", arch="gridnet", window=WINDOW,
                                   max_steps=2, batch_size=4, net=net, sampler="ddim", sample_steps=3,
                                   progress=False)
        sizes.append(summary["parameters"])
        ds = timeseries.impute(tmp_path / name, frame, members=2, output="xarray", progress=False)
        assert list(ds["series"].values) == list(frame.columns)
        vals = ds["value"].transpose("member", "time", "series").values
        orig = frame.to_numpy()
        obs = np.isfinite(orig)
        gaps = interior_gaps(obs)
        assert gaps.sum() > 0 and np.isfinite(vals[:, gaps]).all()  # every gap filled
        assert (_bits(vals[:, obs]) == _bits(orig[obs])[None]).all()  # observed bit for bit
        assert np.isnan(vals[:, ~obs & ~gaps]).all()  # leading NaN stay NaN
        assert np.ptp(vals[:, gaps], axis=0).min() > 0  # independent members
        wide = timeseries.impute(tmp_path / name, frame, members=2, output="wide", progress=False)
        assert list(wide.columns) == list(frame.columns) and wide.shape == frame.shape
    assert sizes[0] == sizes[1] > 0


def test_gridnet_imputation_windows_of_a_patch():
    from gendiff.domains.timeseries.imputation import GridImputeWindowDataset

    values = np.random.default_rng(0).standard_normal((40, 6)).astype(np.float32)  # K = 1 channel, N = 6 series
    values[5:9, 2] = np.nan
    ds = GridImputeWindowDataset(values, np.zeros((40, 4), np.float32), np.arange(0, 24, 4), WINDOW,
                                 static=np.zeros((6, 0), np.float32), locations=6, pos_dims=0, patch=2)
    for i in range(len(ds)):
        item = ds[i]
        assert item["x0"].shape == item["mask"].shape == (2, WINDOW) and item["mask"].any()
        assert item["cond"]["seq"].shape == (2 * 2 + 5, WINDOW) and item["cond"]["static"].shape == (2, 0)
    full = GridImputeWindowDataset(values, np.zeros((40, 4), np.float32), np.arange(0, 24, 4), WINDOW,
                                   static=np.zeros((6, 0), np.float32), locations=6, pos_dims=0)[0]
    assert full["x0"].shape == (6, WINDOW) and full["cond"]["static"].shape == (6, 0)


def test_quantile_crps_matches_brute_force():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(40, 9)) * 2 + 5, rng.normal(size=40) + 5
    brute = 0.0
    for q in np.arange(0.05, 1.0, 0.05):
        for n in range(40):
            xs = np.sort(x[n])
            pos = q * (len(xs) - 1)  # linear interpolation between order statistics, as torch.quantile
            lo = int(np.floor(pos))
            xq = xs[lo] + (pos - lo) * (xs[min(lo + 1, len(xs) - 1)] - xs[lo])
            brute += 2 * (q - (y[n] < xq)) * (y[n] - xq) if y[n] != xq else 0.0
    brute /= 19 * np.abs(y).sum()
    assert quantile_crps_normalised(x, y) == pytest.approx(brute, rel=1e-12)
    point = x[:, :1]  # a deterministic system: every quantile is the point, the score its normalised MAE
    assert quantile_crps_normalised(point, y) == pytest.approx(np.abs(point[:, 0] - y).sum() / np.abs(y).sum())
    s = score_draws(x, y)
    standard = np.mean([np.abs(x[n] - y[n]).mean() - np.abs(x[n][:, None] - x[n][None]).mean() / 2
                        for n in range(40)])
    assert s["crps_standard"] == pytest.approx(standard) and s["crps"] < s["crps_standard"]
    assert s["ncrps"] == pytest.approx(standard * 40 / np.abs(y).sum())
    assert s["mae"] == pytest.approx(np.abs(np.median(x, 1) - y).mean())
    with pytest.raises(DataError, match="left unimputed"):
        score_draws(np.full((2, 3), np.nan), np.ones(2))


def test_baselines_on_known_signals():
    t = np.arange(100, dtype=np.float64)
    line = np.stack([3 * t - 7, -0.5 * t], axis=1)
    gappy = line.copy()
    gappy[[5, 6, 7, 40, 80], 0] = np.nan
    gappy[[0, 1, 99], 1] = np.nan
    filled = linear_interpolation(gappy)
    np.testing.assert_allclose(filled[:, 0], line[:, 0])  # exact on a line
    assert filled[0, 1] == filled[1, 1] == line[2, 1] and filled[99, 1] == line[98, 1]  # constant beyond the ends
    sine = np.sin(2 * np.pi * t / 10)[:, None]
    gappy = sine.copy()
    gappy[[3, 4, 50, 95], 0] = np.nan
    np.testing.assert_allclose(seasonal_fill(gappy, 10), sine, atol=1e-12)  # exact on a periodic signal
    gappy[[13, 23], 0] = np.nan  # 3: 13 missing too -> only 3 + 10 k for k = 2 (23 missing) or 3 (33)
    np.testing.assert_allclose(seasonal_fill(gappy, 10)[3], sine[3], atol=1e-12)


def test_hiding_and_inputs():
    obs = np.ones((50, 2), dtype=bool)
    obs[10:14, 0] = False
    h = hide_observed(obs, 0.2, seed=4, rows=np.arange(20, 50))
    assert h.sum() == round(0.2 * obs[20:].sum()) and not (h & ~obs).any() and not h[:20].any()
    assert not h[49].any() and (h == hide_observed(obs, 0.2, seed=4, rows=np.arange(20, 50))).all()
    rng = np.random.default_rng(0)
    pattern = np.ones((16, 2), dtype=bool)
    pattern[3:6] = False
    for strategy in ("random", "historical", "block"):
        for _ in range(20):
            target = hide(obs[:16], rng, strategy, pattern)
            assert target.any() and not (target & ~obs[:16]).any() and (obs[:16] & ~target).any()
    assert (hide(obs[:16], rng, "historical", pattern) == (obs[:16] & ~pattern)).all()
    nan = float("nan")
    window = torch.tensor([[[0.0, 5.0], [5.0, nan], [2.0, 7.0], [4.0, nan]]])  # (1, L=4, C=2)
    known = torch.tensor([[[True, True], [False, False], [True, False], [True, False]]])
    target = torch.tensor([[[False, False], [True, False], [False, True], [False, False]]])
    x0, mask, cond, base = make_impute_inputs(window, torch.zeros(1, 4, 4), known, target)
    # a: level 2, interpolation 1 at step 1; b: one known value, held
    np.testing.assert_allclose(base[0], [[0.0, 5.0], [1.0, 5.0], [2.0, 5.0], [4.0, 5.0]])
    np.testing.assert_allclose(x0[0], [[0.0, 4.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]])
    assert (mask[0] == target[0].T).all() and cond.shape == (1, 2 + 1 + 4 + 2, 4)
    np.testing.assert_allclose(cond[0, :2], [[-2.0, 0.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(cond[0, 2], [1.0, 0.0, 1.0, 1.0])
    np.testing.assert_allclose(cond[0, 7:], [[0.0, 1.0, 0.0, 0.0], [0.0, 1.0, 1.0, 1.0]])
    none = make_impute_inputs(window, torch.zeros(1, 4, 4), torch.zeros_like(known), target)[3]
    assert (none == 0).all()  # nothing known: the base is the (zero) level


@pytest.mark.parametrize("n,length", [(10, 64), (100, 64), (2284, 64), (65, 8), (7, 8), (33, 10)])
def test_plan_keeps_each_step_once(n, length):
    q, padded, passes = plan(n, length)
    cover = np.zeros(padded, dtype=int)
    for starts, lo, hi in passes:
        assert (starts + length <= padded).all()
        seen = np.zeros(padded, dtype=int)
        for s in starts:
            seen[s:s + length] += 1
            cover[s + lo:s + hi] += 1
        assert seen.max() <= 1  # the windows of one pass do not overlap: one batched sampler call
    assert (cover[q:q + n] == 1).all()


def test_xarray_dataset_in_and_out(run):
    ds = timeseries.from_pandas(_frame())
    out = timeseries.impute(run, ds, members=2, progress=False)
    assert isinstance(out, xr.Dataset) and out["value"].dims == ("member", "time", "series")
    assert (out["series"].values == ds["series"].values).all() and out.attrs["members"] == 2


def test_readme_imputation_example_runs(tmp_path):
    import re
    from pathlib import Path

    pytest.importorskip("statsmodels")
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = re.search(r"<!-- impute:start -->\s*```python\n(.*?)```\s*<!-- impute:end -->", text, re.S)
    assert block, "README lost its imputation example"
    script = tmp_path / "impute_example.py"
    script.write_text("import torch\ntorch.set_num_threads(1)\n" + block.group(1))
    done = subprocess.run([sys.executable, "-W", "ignore", str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "['time', 'series', 'member', 'value', 'observed'] 18272"  # 2,284 weeks x 8 members
    assert lines[1] == "0 59"  # NaN left in the wide frame, gaps filled
    systems = json.loads(lines[-1].replace("'", '"'))
    assert set(systems) == {"model", "linear_interpolation", "seasonal"} and all(v > 0 for v in systems.values())
    assert (tmp_path / "co2_filled.csv").is_file()
