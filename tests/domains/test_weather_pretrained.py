"""The shipped weather models `pretrained:lorenz96`, `pretrained:era5-uk-t2m` and `pretrained:ncep-air`: shipped as
package data in the core run format (safetensors and JSON only), they load strictly and compute what they computed when shipped (so a change
to the network code that breaks them fails here), Lorenz-96 passes its quality floor on freshly generated data (CRPS
below persistence), the ERA5 model forecasts the shared ERA5 sample where it is present, the default demo uses the
shipped model without training, and broken copies give one line `gendiff: error:` naming the file, exit status 2."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from gendiff import runs
from gendiff.cli import main
from gendiff.domains import weather
from gendiff.domains.weather.lorenz96 import lorenz96_dataset
from gendiff.domains.weather.metrics import score
from gendiff.domains.timeseries.model import STATE, load_run, output_check
from gendiff.domains.timeseries.scoring import truth_at_valid_time
from gendiff.errors import DataError

torch.set_num_threads(1)
NAMES = ("lorenz96", "era5-uk-t2m", "ncep-air")
ERA5 = Path(__file__).resolve().parents[3] / "shared" / "data" / "era5_uk_t2m_2019-03.nc"


@pytest.fixture(scope="module", params=NAMES)
def shipped(request):
    return runs.read_run(f"pretrained:{request.param}", domain="weather")


@pytest.fixture(scope="module")
def l96():
    return load_run("pretrained:lorenz96")


@pytest.fixture
def copy(tmp_path):
    return shutil.copytree(runs.read_run("pretrained:lorenz96").path, tmp_path / "lorenz96")


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("gendiff: error: ")
    return err[0]


def _forecast_cli(run, tmp_path) -> int:
    return main(["forecast", "weather", "--run", str(run), "--init-period", "2002-05-01:2002-05-02",
                 "--init-every", "24h", "--members", "2", "--lead", "6h", "--steps", "2", "--out",
                 str(tmp_path / "fc.nc"), "--quiet"])


def test_shipped_as_package_data_in_the_run_format(shipped):
    assert shipped.domain == "weather" and shipped.config["format"] == runs.FORMAT
    files = {p.name for p in shipped.path.iterdir()}
    assert files >= {"config.json", "weights.safetensors", "card.json", STATE, "calibration.json"}
    assert all(f.endswith((".json", ".safetensors")) for f in files), files  # nothing pickled ships
    size = sum(p.stat().st_size for p in shipped.path.iterdir())
    assert size < 6e6, size  # all domains together must stay under 30 MB
    training = shipped.card["training"]
    assert training["steps"] > 0 and training["wall_seconds"] > 0 and training["commit"]
    assert training["data"] and any(tool in training["command"] for tool in (
        "benchmarks/weather.py --train-pretrained", "tools/weather_pretrained.py train"))


def test_loads_strictly_and_computes_what_it_did_when_shipped(shipped):
    from safetensors.torch import load_file

    run = load_run(f"pretrained:{shipped.path.name}")
    assert not run.denoiser.training and run.config == shipped.config
    assert set(load_file(str(shipped.weights))) == set(run.denoiser.state_dict())  # loaded strictly
    got, check = output_check(run), shipped.card["check"]
    assert got["x0_norm"] == pytest.approx(check["x0_norm"], rel=1e-4)
    assert got["x0_mean"] == pytest.approx(check["x0_mean"], rel=1e-3, abs=1e-5)
    assert got["x0_per_sample_norm"] == pytest.approx(check["x0_per_sample_norm"], rel=1e-4)
    assert got["x0_first"] == pytest.approx(check["x0_first"], rel=1e-3, abs=1e-4)


def test_lorenz96_quality_floor_crps_below_persistence(l96):
    """A fresh Lorenz-96 trajectory (another seed than the training one), 6 inits, 8 members, to 48 h: the
    ensemble's CRPS is below persistence's at every lead and on average by a wide margin."""
    ds = lorenz96_dataset(160, seed=11)
    fc = weather.forecast(l96, ds, init_times=ds["time"].values[[20, 40, 60, 80, 100, 120]], members=8,
                          lead="48h", steps=25, seed=0, progress=False,
                          allow_in_sample=True)  # another trajectory (seed 11) on the training period's dates
    truth = truth_at_valid_time(ds["x"], fc["valid_time"])
    model = score(fc["x"], truth)["crps"].values
    idx = np.searchsorted(ds["time"].values, fc["init_time"].values)
    persist = fc["x"].isel(member=[0]).copy(data=np.broadcast_to(
        ds["x"].values[idx][:, None, None, :], (len(idx), 1, fc.sizes["lead_time"], ds.sizes["site"])).copy())
    persistence = score(persist, truth)["crps"].values
    assert (model < persistence).all(), (model, persistence)
    assert model.mean() < 0.8 * persistence.mean(), (model.mean(), persistence.mean())


def test_card_metrics_carry_the_command_that_measured_them(shipped):
    blocks = shipped.card["metrics"]
    assert blocks, "no measured metrics on the card"
    for key, block in blocks.items():
        cmd = block["command"]
        assert cmd.startswith(f"gendiff forecast weather --run pretrained:{shipped.path.name} "), cmd
        assert "gendiff evaluate weather" in cmd and "--record" in cmd
        assert block["model_crps_below_at_all_leads"]["persistence"], key
        assert "fair CRPS" in block["scores"] and "cell-area" in block["scores"], key  # today's definitions
        per = block["per_lead"]
        for v in per:
            assert set(per[v]) >= {"model", "persistence", "climatology", "linear", "ar_calibrated"}
            for system, scores in per[v].items():  # fair below standard for ensembles, equal for persistence
                fair, standard = np.array(scores["crps"]), np.array(scores["crps_standard"])
                assert (fair <= standard + 1e-12).all() and (system != "persistence" or np.allclose(fair, standard))


def test_era5_card_is_every_6h_init_of_25_to_30_march_and_the_network_beats_ar_calibrated(shipped):
    """The bar of issue 12: on ERA5 the model's CRPS is below the same AR base with the same held-out calibration
    and Gaussian noise and no network (ar_calibrated) at 6, 12 and 24 h, on every 6 h init of 25-30 March."""
    if shipped.path.name != "era5-uk-t2m":
        pytest.skip("ERA5 card only")
    (block,) = shipped.card["metrics"].values()
    assert block["forecast"]["inits"] == 24 and block["forecast"]["members"] == 16
    assert block["forecast"]["first_init"] == "2019-03-25T00:00" and block["forecast"]["last_init"] == "2019-03-30T18:00"
    for h in (6, 12, 24):
        assert block[f"crps_{h}h"] < block[f"crps_{h}h_ar_calibrated"], h


def test_ncep_card_is_the_untouched_test_period_and_beats_emos_and_its_base_with_calibrated_spread(shipped):
    """Issue 30's gridded bar on NCEP: every daily init of Jul-Dec 2014 (the test period; the network trained on
    2013, the calibration on Jan-Jun 2014), CRPS below EMOS of the AR base (cross-fitted on the test inits) and below
    the AR base alone at every lead from 6 h to 48 h, spread / skill within 0.9-1.1."""
    if shipped.path.name != "ncep-air":
        pytest.skip("NCEP card only")
    (block,) = shipped.card["metrics"].values()
    assert block["forecast"]["inits"] == 182 and block["forecast"]["members"] == 16
    assert block["forecast"]["first_init"] == "2014-07-01T00:00" and block["forecast"]["last_init"] == "2014-12-29T00:00"
    per = block["per_lead"]["air"]
    assert block["lead_hours"] == [6.0 * k for k in range(1, 9)]
    for k in range(8):
        model = per["model"]["crps"][k]
        assert model < per["emos_ar"]["crps"][k] and model < per["ar_base"]["crps"][k], k
        assert 0.9 <= per["model"]["ssr"][k] <= 1.1, (k, per["model"]["ssr"][k])


@pytest.mark.skipif(not ERA5.exists(), reason="the shared ERA5 sample is not on this machine")
def test_era5_forecasts_the_shared_sample():
    run = load_run("pretrained:era5-uk-t2m")
    fc = weather.forecast(run, str(ERA5), init_times=["2019-03-26T00:00", "2019-03-28T12:00"], members=4,
                          lead="6h", steps=20, progress=False)
    assert fc["t2m"].shape == (2, 4, 6, 33, 49) and bool(fc["t2m"].notnull().all())
    from gendiff.domains.timeseries.data import open_data

    y = truth_at_valid_time(open_data(str(ERA5), ["t2m"])["t2m"], fc["valid_time"])
    crps = float(score(fc["t2m"], y)["crps"].mean())
    assert 0 < crps < 1.5, crps  # K; persistence is about 1.6 K at 6 h on these days


def test_list_shows_the_shipped_models(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out.splitlines()
    for name in NAMES:
        line = next(line for line in out if line.strip().startswith(f"{name} ("))
        assert "weather" in line and "crps_24h" in line, line


def test_default_demo_uses_the_shipped_model_without_training(tmp_path, monkeypatch):
    from gendiff.domains.timeseries import training as fit

    monkeypatch.setattr(fit, "train", lambda *a, **k: pytest.fail("the demo trained"))
    result = weather.demo(tmp_path / "demo", init_period=("2002-05-01", "2002-05-06"), members=4, lead="24h")
    for f in ("plume.png", "skill.png", "metrics.json", "scores.json"):
        assert (tmp_path / "demo" / f).stat().st_size > 0, f
    assert (tmp_path / "demo" / "plume.png").read_bytes()[:4] == b"\x89PNG"
    metrics = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert metrics["run"] == "pretrained:lorenz96" and metrics["card_metrics"]
    assert {r["system"] for r in result["records"]} == {"model", "persistence", "climatology", "linear"}


def test_cli_forecast_from_pretrained(tmp_path):
    assert _forecast_cli("pretrained:lorenz96", tmp_path) == 0
    import xarray as xr

    with xr.open_dataset(tmp_path / "fc.nc") as fc:
        assert fc.attrs["gendiff_run"] == "pretrained:lorenz96" and "gendiff forecast weather" in fc.attrs[
            "gendiff_command"]


def test_unknown_pretrained_name_exit_2(tmp_path, capsys):
    assert _forecast_cli("pretrained:nope", tmp_path) == 2
    assert "lorenz96" in _error_line(capsys)


def test_truncated_weights_exit_2_naming_the_file(copy, tmp_path, capsys):
    weights = copy / runs.WEIGHTS
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert _forecast_cli(copy, tmp_path) == 2
    line = _error_line(capsys)
    assert str(weights) in line and "truncated or corrupt" in line


def test_corrupt_weights_header_exit_2_naming_the_file(copy, tmp_path, capsys):
    weights = copy / runs.WEIGHTS
    data = bytearray(weights.read_bytes())
    data[8:40] = b"\x00garbage{" * 3 + b"\x00" * 5
    weights.write_bytes(bytes(data))
    assert _forecast_cli(copy, tmp_path) == 2
    assert str(weights) in _error_line(capsys)


def test_truncated_state_exit_2_naming_the_file(copy, tmp_path, capsys):
    state = copy / STATE
    state.write_bytes(state.read_bytes()[:100])
    assert _forecast_cli(copy, tmp_path) == 2
    assert str(state) in _error_line(capsys)


def test_config_not_matching_the_weights_exit_2_naming_the_file(copy, tmp_path, capsys):
    cfg = json.loads((copy / runs.CONFIG).read_text())
    cfg["net"]["width"] = 32
    (copy / runs.CONFIG).write_text(json.dumps(cfg))
    assert _forecast_cli(copy, tmp_path) == 2
    line = _error_line(capsys)
    assert str(copy / runs.WEIGHTS) in line and "do not fit" in line


def test_older_format_folder_exit_2_saying_retrain(copy, tmp_path, capsys):
    cfg = json.loads((copy / runs.CONFIG).read_text())
    (copy / runs.CONFIG).write_text(json.dumps({**cfg, "format": "gendiff-weather-v1"}))
    assert _forecast_cli(copy, tmp_path) == 2
    line = _error_line(capsys)
    assert str(copy / runs.CONFIG) in line and "retrain" in line


def test_load_run_python_error_names_the_file(copy):
    (copy / runs.WEIGHTS).write_bytes(b"")
    with pytest.raises(DataError, match=str(copy / runs.WEIGHTS)):
        load_run(copy)
