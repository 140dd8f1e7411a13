"""Time series as pandas tables and CSV / Parquet files: validation, round trips, many series, tidy output, CLI."""
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from gendiff import cli
from gendiff.domains import timeseries, weather
from gendiff.domains.timeseries import tabular
from gendiff.errors import ConfigError, DataError

NET = {"width": 8, "mults": [1, 2], "blocks_per_level": 1, "heads": 2, "dropout": 0.0}
TINY = dict(context="12h", horizon="6h", net=NET, max_steps=4, batch_size=8, sample_steps=3, progress=False,
            train_period="2024-01-01:2024-01-09")


def hourly_frame(days=12, seed=0):
    """Three hourly series of different scales, starts, ends and gaps (NaN) in one table, with skipped rows."""
    idx = pd.date_range("2024-01-01", periods=24 * days, freq="h")
    h = np.arange(len(idx))
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"north": 10 + np.sin(2 * np.pi * h / 24) + 0.1 * rng.standard_normal(len(h)),
                       "south": 100 + 5 * np.cos(2 * np.pi * h / 24) + rng.standard_normal(len(h)),
                       "3": np.sin(2 * np.pi * h / 12)}, index=idx)
    df.loc[:idx[30], "south"] = np.nan  # starts a day late
    df.loc[idx[-20]:, "3"] = np.nan  # ends early
    df.iloc[100:110, 0] = np.nan  # a gap
    return df


def test_frame_to_dataset_regular_grid_with_skipped_rows_as_gaps():
    df = hourly_frame()
    skipped = df.drop(df.index[150:153])
    ds = weather.from_pandas(skipped)
    assert dict(ds.sizes) == {"time": len(df), "series": 3} and list(ds["series"].values) == ["north", "south", "3"]
    assert ds["time"].dtype == np.dtype("datetime64[ns]")
    back = weather.to_frame(ds)
    assert np.isnan(back.iloc[150:153].to_numpy()).all()  # skipped rows became NaN, nothing was interpolated
    expected = df.copy()
    expected.iloc[150:153] = np.nan
    np.testing.assert_array_equal(back.to_numpy(), expected.to_numpy())
    assert back.index.equals(pd.DatetimeIndex(df.index))
    assert np.isnan(back["south"].iloc[:31]).all() and np.isfinite(back["south"].iloc[31:150]).all()


def test_series_input_and_time_column_and_timezone():
    s = pd.Series([1.0, 2.0, np.nan, 4.0], index=pd.date_range("2024-03-01", periods=4, freq="30min"), name="load")
    ds = tabular.from_pandas(s)
    assert list(ds["series"].values) == ["load"] and np.isnan(ds["value"].values[2, 0])
    unnamed = tabular.from_pandas(s.rename(None))
    assert list(unnamed["series"].values) == ["value"]
    df = pd.DataFrame({"id": [1, 2, 3], "stamp": pd.date_range("2024-03-01 01:00", periods=3, freq="h",
                                                                    tz="Europe/Paris"), "x": [1.0, 2.0, 3.0]})
    ds = tabular.from_pandas(df, time_column="stamp")  # the numeric 'id' column is a series, not the time
    assert list(ds["series"].values) == ["id", "x"]
    assert str(ds["time"].values[0])[:16] == "2024-03-01T00:00"  # 01:00 Paris = 00:00 UTC


def test_csv_time_strings_with_daylight_saving_offsets(tmp_path):
    stamps = pd.date_range("2024-03-31 00:00", periods=4, freq="h", tz="Europe/London")  # clocks go forward at 01:00
    path = tmp_path / "london.csv"
    pd.DataFrame({"t": [s.isoformat() for s in stamps], "load": [1.0, 2.0, 3.0, 4.0]}).to_csv(path, index=False)
    assert "+01:00" in path.read_text() and "+00:00" in path.read_text()
    ds = weather.resolve_data(str(path))
    assert (ds["time"].values == stamps.tz_convert("UTC").tz_localize(None).as_unit("ns").values).all()


@pytest.mark.parametrize("make,match", [
    (lambda: pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]}), r"no datetime column.*columns: a, b"),
    (lambda: pd.DataFrame({"a": [1.0, 2.0, 3.0]},
                          index=pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-02"])),
     r"duplicated timestamp 2024-01-02 00:00:00 \(rows 1 and 2\)"),
    (lambda: pd.DataFrame({"a": [1.0, 2.0, 3.0]},
                          index=pd.to_datetime(["2024-01-01", "2024-01-03", "2024-01-02"])),
     r"not sorted: 2024-01-02 00:00:00 \(row 2\) comes after 2024-01-03"),
    (lambda: pd.DataFrame({"a": np.arange(5.0)}, index=pd.to_datetime(
        ["2024-01-01 00:00", "2024-01-01 01:00", "2024-01-01 02:00", "2024-01-01 02:17", "2024-01-01 03:00"])),
     r"irregular time step at 2024-01-01 02:17:00 \(row 3\)"),
    (lambda: pd.DataFrame({"a": np.arange(5.0)}, index=pd.to_datetime(
        ["2024-01-01", "2024-02-01", "2024-03-01", "2024-03-15", "2024-04-01"])),
     r"irregular time step at 2024-03-15 00:00:00 \(row 3\): not on a month start"),
    (lambda: pd.DataFrame({"time": pd.date_range("2024-01-01", periods=3, freq="h"), "a": [1.0, 2.0, 3.0],
                           "site": ["x", "y", "z"]}), r"column 'site' is not numeric \(value 'x' at 2024-01-01"),
    (lambda: pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [np.nan] * 3},
                          index=pd.date_range("2024-01-01", periods=3, freq="D")), r"series 'b' is all NaN"),
])
def test_bad_frames_one_clear_error(make, match):
    with pytest.raises(DataError, match=match) as info:
        tabular.from_pandas(make(), name="obs.csv")
    assert str(info.value).startswith("obs.csv: ") and "\n" not in str(info.value)


def test_bad_files_name_the_file(tmp_path):
    path = tmp_path / "obs.csv"
    path.write_text("when,a\n2024-01-01,1\n2024-01-02,oops\n2024-01-03,3\n")
    with pytest.raises(DataError, match=r"obs.csv: column 'a' is not numeric \(value 'oops' at 2024-01-02"):
        weather.resolve_data(str(path))
    with pytest.raises(DataError, match=r"obs.csv: no column 'stamp' \(columns: when, a\)"):
        weather.resolve_data(str(path), time_column="stamp")
    with pytest.raises(DataError, match=r"missing.csv: no such file"):
        weather.resolve_data(str(tmp_path / "missing.csv"))
    with pytest.raises(ConfigError, match="time_column"):
        weather.resolve_data(xr.Dataset(), time_column="when")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_file_round_trip(tmp_path, suffix):
    df = hourly_frame(days=3)
    path = tmp_path / f"obs{suffix}"
    table = df.rename_axis("stamp").reset_index()
    table.insert(0, "station_id", 7)  # a numeric column before the time column is a series, not the time
    if suffix == ".csv":
        table.to_csv(path, index=False)
    else:
        table.to_parquet(path, index=False)
    ds = weather.resolve_data(str(path))
    assert ds.attrs["source"] == str(path)
    back = weather.to_frame(ds)
    assert list(back.columns) == ["station_id", "north", "south", "3"]
    np.testing.assert_allclose(back[["north", "south", "3"]].to_numpy(), df.to_numpy(), rtol=1e-12)
    assert back.index.equals(pd.DatetimeIndex(df.index))


def test_to_tidy_columns_dtypes_quantiles_and_back():
    init = pd.date_range("2024-01-05", periods=2, freq="6h").values
    lead = pd.to_timedelta([1, 2, 3], unit="h").values
    rng = np.random.default_rng(1)
    vals = rng.standard_normal((2, 5, 3, 2))
    fc = xr.Dataset({"value": (("init_time", "member", "lead_time", "series"), vals)},
                    coords={"init_time": init, "member": np.arange(5), "lead_time": lead,
                            "series": ["b", "a"]})
    fc = fc.assign_coords(valid_time=(("init_time", "lead_time"), init[:, None] + lead[None, :]))
    tidy = weather.to_tidy(fc)
    assert list(tidy.columns) == tabular.TIDY_COLUMNS and len(tidy) == vals.size
    assert str(tidy["init_time"].dtype) == "datetime64[ns]" and str(tidy["lead_time"].dtype) == "timedelta64[ns]"
    assert tidy["member"].dtype == np.int64 and tidy["value"].dtype == np.float64
    assert tidy["series"].map(type).eq(str).all()
    row = tidy[(tidy.init_time == init[1]) & (tidy.lead_time == lead[2]) & (tidy.series == "a") & (tidy.member == 4)]
    assert row["value"].item() == vals[1, 4, 2, 1]
    xr.testing.assert_equal(weather.from_tidy(tidy).sortby("series"), fc.sortby("series"))
    q = weather.to_tidy(fc, quantiles=[0.9, 0.1, 0.5])
    assert list(q.columns) == tabular.QUANTILE_COLUMNS and len(q) == 2 * 3 * 2 * 3
    assert sorted(q["quantile"].unique()) == [0.1, 0.5, 0.9]
    cell = q[(q.init_time == init[0]) & (q.lead_time == lead[0]) & (q.series == "b")]
    from gendiff.domains.timeseries.ensquantile import ensemble_quantile  # rank q (M + 1); 0.1 of 5: a normal tail
    np.testing.assert_allclose(cell["value"].to_numpy(), ensemble_quantile(vals[0, :, 0, 0], [0.1, 0.5, 0.9]))
    with pytest.raises(ConfigError, match="not in"):
        weather.to_tidy(fc, quantiles=[0.5, 1.5])
    with pytest.raises(DataError, match="no column.*member.*quantiles cannot"):
        weather.from_tidy(q)
    grid = fc.rename(value="t2m").rename(series="station")  # other variables / dims: labelled var[dim=coord]
    assert set(weather.to_tidy(grid)["series"]) == {"t2m[station=a]", "t2m[station=b]"}


def test_train_forecast_evaluate_many_series_from_a_frame(tmp_path):
    df = hourly_frame().drop(hourly_frame().index[150:153])
    summary = timeseries.train(df, tmp_path / "run", **TINY)
    assert summary["step"] == 4
    kw = dict(init_period="2024-01-10:2024-01-10T12:00", init_every="6h", members=3, lead="9h", progress=False)
    tidy = timeseries.forecast(tmp_path / "run", df, **kw)
    assert isinstance(tidy, pd.DataFrame) and list(tidy.columns) == tabular.TIDY_COLUMNS
    assert len(tidy) == 3 * 9 * 3 * 3 and set(tidy["series"]) == {"north", "south", "3"}
    assert tidy["value"].notna().all()
    # series keep their scale: each ensemble sits near its own series, not a pooled mean
    means = tidy.groupby("series")["value"].mean()
    assert abs(means["south"] - 100) < 15 and abs(means["north"] - 10) < 5 and abs(means["3"]) < 5
    ds = timeseries.forecast(tmp_path / "run", df, output="xarray", out=tmp_path / "fc.parquet", quantiles="0.5",
                             **kw)
    assert isinstance(ds, xr.Dataset) and dict(ds.sizes)["series"] == 3
    pd.testing.assert_frame_equal(weather.to_tidy(ds), tidy)  # same seed, same ensemble
    on_disk = pd.read_parquet(tmp_path / "fc.parquet")
    assert list(on_disk.columns) == tabular.QUANTILE_COLUMNS and len(on_disk) == 3 * 9 * 3
    records = timeseries.evaluate(tidy, df, train_period=("2024-01-01", "2024-01-09"))
    assert {r["system"] for r in records} == {"model", "persistence", "climatology", "linear"}
    assert all(r["crps"] is not None and r["crps"] >= 0 for r in records)
    with pytest.raises(ConfigError, match="output="):
        timeseries.forecast(tmp_path / "run", df, output="json", **kw)


def test_network_shared_across_series_has_one_size(tmp_path):
    """arch='gridnet' on a table: one temporal U-Net for every series (issue 13, many series), so three series and
    six give the same parameter count, and each forecast keeps its own series' scale."""
    df = hourly_frame()
    wide = pd.concat([df, 2 * df.add_suffix("_b")], axis=1)
    net = {"width": 8, "mults": [1, 2], "heads": 2, "neighbours": 2, "dropout": 0.0}
    sizes = []
    for name, frame in (("three", df), ("six", wide)):
        summary = timeseries.train(frame, tmp_path / name, arch="gridnet", **{**TINY, "net": net, "max_steps": 3})
        sizes.append(summary["parameters"])
        tidy = timeseries.forecast(tmp_path / name, frame, init_period="2024-01-10:2024-01-10", init_every="6h",
                                   members=2, lead="6h", progress=False)
        assert set(tidy["series"]) == set(frame.columns) and tidy["value"].notna().all()
        means = tidy.groupby("series")["value"].mean()
        assert abs(means["south"] - 100) < 15 and abs(means["north"] - 10) < 5
    assert sizes[0] == sizes[1] > 0
    assert abs(means["south_b"] - 200) < 30 and abs(means["north_b"] - 20) < 10


def test_weather_is_the_gridded_adapter_of_the_engine():
    """issue 27: the engine lives in timeseries; weather's verbs hand the engine their data (lorenz96 by default)
    and the modules that moved keep their old import path, with one FutureWarning each."""
    import importlib
    import warnings

    assert weather.train.__module__ == "gendiff.domains.weather" and timeseries.train.__module__.startswith(
        "gendiff.domains.timeseries")
    old = importlib.import_module("gendiff.domains.weather.tabular")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert old.from_pandas is tabular.from_pandas and old.to_tidy is tabular.to_tidy
    assert len(caught) <= 1 and all("moved to gendiff.domains.timeseries.tabular" in str(w.message) for w in caught)
    assert timeseries.from_pandas is tabular.from_pandas and timeseries.to_tidy is tabular.to_tidy
    from gendiff.domains.timeseries.cli import VERBS

    from gendiff.domains.weather.cli import VERBS as WEATHER_VERBS
    assert set(VERBS) == set(WEATHER_VERBS) == {"train", "forecast", "sample", "evaluate", "impute", "demo"}


def test_cli_csv_train_forecast_evaluate(tmp_path, capsys):
    df = hourly_frame()
    csv = tmp_path / "obs.csv"
    df.rename_axis("stamp").reset_index().to_csv(csv, index=False)
    run = tmp_path / "run"
    assert cli.main(["train", "timeseries", "--data", str(csv), "--time-column", "stamp", "--out", str(run),
                     "--context", "12h", "--horizon", "6h", "--steps", "3", "--batch-size", "8", "--width", "8",
                     "--sample-steps", "3", "--train-period", "2024-01-01:2024-01-09", "--quiet"]) == 0
    capsys.readouterr()
    out = tmp_path / "fc.csv"
    common = ["--run", str(run), "--data", str(csv), "--init-period", "2024-01-10:2024-01-10T06:00",
              "--members", "4", "--lead", "6h", "--quiet"]
    assert cli.main(["forecast", "weather", *common, "--out", str(out), "--quantiles", "0.1,0.9"]) == 0
    assert "wrote " + str(out) in capsys.readouterr().err
    table = pd.read_csv(out)
    assert list(table.columns) == tabular.QUANTILE_COLUMNS and len(table) == 2 * 6 * 3 * 2
    members = tmp_path / "members.parquet"
    assert cli.main(["forecast", "timeseries", *common, "--out", str(members)]) == 0
    assert len(pd.read_parquet(members)) == 2 * 6 * 3 * 4
    nc = tmp_path / "fc.nc"
    assert cli.main(["forecast", "timeseries", *common, "--out", str(nc)]) == 0
    capsys.readouterr()
    assert cli.main(["evaluate", "timeseries", "--forecast", str(nc), "--truth", str(csv), "--json"]) == 0
    from_nc = capsys.readouterr().out
    assert '"system": "persistence"' in from_nc
    # the tidy members file scores the same (it carries no training period: name it)
    assert cli.main(["evaluate", "timeseries", "--forecast", str(members), "--truth", str(csv), "--json",
                     "--train-period", "2024-01-01:2024-01-09"]) == 0
    assert capsys.readouterr().out == from_nc
    assert cli.main(["evaluate", "timeseries", "--forecast", str(members), "--truth", str(csv)]) == 2
    assert "train_period" in capsys.readouterr().err


@pytest.mark.parametrize("argv,needle", [
    (["--data", "{bad}"], "obs.csv: duplicated timestamp 2024-01-02 00:00:00"),
    (["--data", "{bad}", "--time-column", "nope"], "obs.csv: no column 'nope'"),
    (["--data", "lorenz96", "--time-column", "t"], "--time-column applies to CSV / Parquet"),
])
def test_cli_bad_table_exit_2_one_line(tmp_path, capsys, argv, needle):
    bad = tmp_path / "obs.csv"
    bad.write_text("t,a\n2024-01-01,1\n2024-01-02,2\n2024-01-02,3\n")
    argv = [a.replace("{bad}", str(bad)) for a in argv]
    assert cli.main(["train", "timeseries", *argv, "--out", str(tmp_path / "run"), "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gendiff: error: ") and needle in err[0], err
    assert not (tmp_path / "run").exists()


def test_cli_subprocess_bad_csv_no_traceback(tmp_path, run_cli):
    bad = tmp_path / "obs.csv"
    bad.write_text("a,b\n1,2\n3,4\n")
    out = run_cli("train", "timeseries", "--data", bad, "--out", tmp_path / "run", "--steps", "1")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "obs.csv: no datetime column" in lines[0], out.stderr


def test_cli_output_format_conflicts(tmp_path, capsys):
    argv = ["forecast", "timeseries", "--run", str(tmp_path / "none"), "--data", str(tmp_path / "d.csv"), "--out",
            str(tmp_path / "x.csv")]
    assert cli.main([*argv, "--output-format", "netcdf"]) == 2
    assert "name the file .nc" in capsys.readouterr().err
    assert cli.main([*argv[:-1], str(tmp_path / "x.nc"), "--quantiles", "0.5"]) == 2
    assert "--quantiles needs a csv or parquet" in capsys.readouterr().err
