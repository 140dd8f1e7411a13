"""Joint scores over all series (joint.py): equal to the energy score and CRPS-sum computed by hand, able to tell
an ensemble with the truth's dependence across series from independent marginals of the same spread, and
reported by evaluate(joint=True) and the CLI's --joint."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from gendiff.domains.timeseries import probabilistic as P
from gendiff.domains.timeseries.joint import JOINT, joint_records

I, M, L, D = 300, 16, 3, 8


def _datasets(members: np.ndarray, truth: np.ndarray):
    """forecast Dataset (init, member, lead, series) and truth Dataset (time, series) for hourly inits."""
    init = pd.date_range("2020-01-01", periods=I, freq="5h")
    lead = pd.to_timedelta(np.arange(1, L + 1), unit="h")
    valid = init.values[:, None] + lead.values[None, :]
    fc = xr.Dataset({"value": (("init_time", "member", "lead_time", "series"), members)},
                    coords={"init_time": init, "lead_time": lead, "series": [f"s{k}" for k in range(D)],
                            "valid_time": (("init_time", "lead_time"), valid)})
    times = pd.date_range("2020-01-01", periods=I * 5 + L + 1, freq="h")
    tr = xr.Dataset({"value": (("time", "series"), truth)}, coords={"time": times, "series": fc["series"].values})
    return fc, tr


def _truth_at(tr, fc):
    idx = pd.DatetimeIndex(tr["time"].values).get_indexer(fc["valid_time"].values.ravel()).reshape(I, L)
    return tr["value"].values[idx]  # (I, L, D)


def test_joint_scores_equal_the_scores_computed_by_hand():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(I * 5 + L + 1, D))
    members = rng.normal(size=(I, M, L, D))
    fc, tr = _datasets(members, truth)
    recs = joint_records({"model": fc}, tr, ["value"], intervals=False)
    y = _truth_at(tr, fc)
    x = members.transpose(0, 2, 1, 3)  # (I, L, M, D)
    for j, rec in enumerate(recs):
        assert rec["variable"] == JOINT and rec["features"] == D and rec["crps"] is None
        assert np.isclose(rec["energy_score"], P.energy_score(x[:, j], y[:, j]).mean())
        assert np.isclose(rec["crps_sum"], P.crps_sum(x[:, j], y[:, j]))


def test_energy_score_prefers_the_truths_dependence_over_independent_marginals():
    rng = np.random.default_rng(1)
    rho = 0.9
    cov = rho * np.ones((D, D)) + (1 - rho) * np.eye(D)
    chol = np.linalg.cholesky(cov)
    truth = rng.normal(size=(I * 5 + L + 1, D)) @ chol.T  # series share a common factor
    dependent = rng.normal(size=(I, M, L, D)) @ chol.T  # the same joint law
    independent = rng.normal(size=(I, M, L, D))  # the same N(0, 1) marginals, no dependence
    fc, tr = _datasets(dependent, truth)
    ind = fc.copy(data={"value": independent})
    recs = joint_records({"model": fc, "independent": ind}, tr, ["value"], intervals=True)
    by = {(r["system"], r["lead_time_hours"]): r for r in recs}
    for h in (1.0, 2.0, 3.0):
        vs = by[("independent", h)]["vs_model_energy"]
        assert vs["hi"] < 0, vs  # the model's energy score is lower, and the interval says so
        assert by[("model", h)]["crps_sum"] < by[("independent", h)]["crps_sum"]
    # the marginals alone cannot tell them apart: the mean univariate CRPS agrees within a few percent
    y = _truth_at(tr, fc)
    c_dep = P.crps_sum(dependent.transpose(0, 2, 1, 3)[..., :1], y[..., :1])
    c_ind = P.crps_sum(independent.transpose(0, 2, 1, 3)[..., :1], y[..., :1])
    assert abs(c_dep - c_ind) / c_ind < 0.15


def test_evaluate_and_the_cli_report_joint_scores(tmp_path, capsys):
    from gendiff.cli import main
    from gendiff.domains import timeseries

    rng = np.random.default_rng(2)
    t = pd.date_range("2020-01-01", periods=600, freq="h")
    common = np.cumsum(rng.normal(size=600))
    df = pd.DataFrame({f"s{k}": common + rng.normal(0, 0.3, 600) for k in range(3)}, index=t.rename("time"))
    run = tmp_path / "run"
    timeseries.train(df, run, context=24, horizon=6, train_period=("2020-01-01", "2020-01-20"), max_steps=2,
                     batch_size=4, net={"width": 8, "mults": [1]}, sample_steps=2, progress=False, calibration=0.0)
    fc = timeseries.forecast(run, df, output="xarray", init_period=("2020-01-22", "2020-01-24"), init_every="12h",
                             members=4, steps=2, lead=6, progress=False)
    fc.to_netcdf(tmp_path / "fc.nc")
    records = timeseries.evaluate(fc, df, systems=["model", "persistence"], plots=False, joint=True,
                                  out=tmp_path / "scores")
    joint = [r for r in records if r["variable"] == JOINT]
    assert {r["system"] for r in joint} == {"model", "persistence"} and len(joint) == 2 * 6
    assert all(r["features"] == 3 and r["energy_score"] > 0 and r["crps_sum"] > 0 for r in joint)
    assert (tmp_path / "scores" / "joint_scores.json").is_file()
    df.to_csv(tmp_path / "truth.csv")
    assert main(["evaluate", "timeseries", "--forecast", str(tmp_path / "fc.nc"), "--truth",
                 str(tmp_path / "truth.csv"), "--systems", "model,persistence", "--joint"]) == 0
    assert "joint scores over all features" in capsys.readouterr().out
