"""The shipped images model `pretrained:mnist`: it loads strictly and computes what it computed when shipped (so a
change to the network code that breaks it fails here), passes its quality floor (100 guided DPM-Solver++ 20 samples
read as their class by the held-out classifier at least 90% of the time), samples through the CLI, and broken
copies of it give one line `gendiff: error:` naming the file, with exit status 2."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from gendiff import runs
from gendiff.cli import main
from gendiff.domains import images
from gendiff.domains.images import api, metrics, training
from gendiff.domains.images.data import to_model
from gendiff.domains.images.evaluate import run_classifier
from gendiff.errors import DataError

torch.set_num_threads(1)
NAME = "pretrained:mnist"
FLOOR = 0.90


@pytest.fixture(scope="module")
def shipped():
    return runs.read_run(NAME, domain="images")


@pytest.fixture(scope="module")
def model():
    return images.load_run(NAME, device="cpu")


@pytest.fixture
def copy(shipped, tmp_path):
    """A writable copy of the shipped folder (its classifier included)."""
    return shutil.copytree(shipped.path, tmp_path / "mnist")


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("gendiff: error: ")
    return err[0]


def test_shipped_as_package_data_in_the_run_format(shipped):
    assert shipped.domain == "images" and shipped.config["format"] == runs.FORMAT
    assert {p.name for p in shipped.path.iterdir()} >= {"config.json", "weights.safetensors", "card.json",
                                                          "classifier.safetensors"}
    assert not (shipped.path / runs.CHECKPOINT).exists()  # nothing pickled ships
    size = sum(p.stat().st_size for p in shipped.path.iterdir())
    assert size < 5e6, size  # all domains together must stay under 30 MB
    training = shipped.card["training"]
    assert training["steps"] > 0 and training["wall_seconds"] > 0 and training["commit"] and training["command"]


def test_loads_strictly_and_computes_what_it_did_when_shipped(shipped, model):
    denoiser, meta = model
    assert not denoiser.training and meta == shipped.config
    from safetensors.torch import load_file

    state = load_file(str(shipped.weights))
    assert set(state) == set(denoiser.state_dict())  # runs.load_weights loaded these strictly
    check = shipped.card["check"]
    got = api.output_check(denoiser, meta)
    for key in ("eps_norm", "eps_mean"):
        assert got[key] == pytest.approx(check[key], rel=1e-4, abs=1e-6), key
    assert got["eps_per_sample_norm"] == pytest.approx(check["eps_per_sample_norm"], rel=1e-4)
    assert got["eps_first"] == pytest.approx(check["eps_first"], rel=1e-3, abs=1e-5)


def test_quality_floor(shipped, model, monkeypatch):
    """100 class-balanced samples, DPM-Solver++ 20 steps, guidance 3: the held-out classifier (shipped beside
    the model, so nothing is trained here) reads at least 90% of them as the class they were drawn for."""
    monkeypatch.setattr(metrics, "train_classifier", lambda *a, **k: pytest.fail("the classifier was retrained"))
    clf, _, test = run_classifier(shipped.path, shipped.config)
    labels = torch.arange(100) % 10
    pixels = images.sample(model, n=100, sampler="dpm_solver_pp", steps=20, guidance=3.0, seed=0, labels=labels)
    _, pred = metrics.classify(clf, to_model(pixels))
    accuracy = float((pred == labels).float().mean())
    assert accuracy >= FLOOR, f"conditional accuracy {accuracy:.2f} < {FLOOR}"
    _, pred_real = metrics.classify(clf, to_model(test.images))
    assert float((pred_real == test.labels).float().mean()) > 0.95  # the classifier itself is sound


def test_card_metrics_carry_the_command_that_measured_them(shipped):
    blocks = shipped.card["metrics"]
    assert blocks, "no measured metrics on the card"
    for key, block in blocks.items():
        assert block["command"].startswith(f"gendiff evaluate images --run {NAME} ") and "--record" in block["command"]
        assert block["conditional_accuracy"] >= FLOOR and block["fd"] >= 0 and block["n"] >= 500, key


def test_cli_sample_from_pretrained(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["sample", "images", "--run", NAME, "--n", "16", "--labels", "0-9", "--out", str(out),
                 "--save-pt", str(tmp_path / "x.pt"), "--quiet"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = torch.load(tmp_path / "x.pt", weights_only=True)
    assert pixels.shape == (16, 1, 28, 28) and pixels.dtype == torch.uint8


def test_list_shows_the_shipped_model(capsys):
    assert main(["list"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("mnist ("))
    assert "images" in line and "conditional_accuracy" in line


def test_truncated_weights_exit_2_naming_the_file(copy, tmp_path, capsys):
    weights = copy / runs.WEIGHTS
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert main(["sample", "images", "--run", str(copy), "--n", "2", "--out", str(tmp_path / "g.png")]) == 2
    line = _error_line(capsys)
    assert str(weights) in line and "truncated or corrupt" in line


def test_corrupt_weights_header_exit_2_naming_the_file(copy, tmp_path, capsys):
    weights = copy / runs.WEIGHTS
    data = bytearray(weights.read_bytes())
    data[8:40] = b"\x00garbage, not a JSON header\xff\xfe\x00\x01"
    weights.write_bytes(bytes(data))
    assert main(["sample", "images", "--run", str(copy), "--n", "2", "--out", str(tmp_path / "g.png")]) == 2
    assert str(weights) in _error_line(capsys)


def test_config_that_does_not_match_the_weights_exit_2(copy, tmp_path, capsys):
    cfg = json.loads((copy / runs.CONFIG).read_text())
    cfg["model"]["ch"] = 8
    (copy / runs.CONFIG).write_text(json.dumps(cfg))
    assert main(["sample", "images", "--run", str(copy), "--n", "2", "--out", str(tmp_path / "g.png")]) == 2
    line = _error_line(capsys)
    assert str(copy / runs.WEIGHTS) in line and "do not fit" in line
    cfg["model"]["wings"] = 2  # a config no U-Net can be built from names config.json
    (copy / runs.CONFIG).write_text(json.dumps(cfg))
    assert main(["sample", "images", "--run", str(copy), "--n", "2", "--out", str(tmp_path / "g.png")]) == 2
    assert str(copy / runs.CONFIG) in _error_line(capsys)


def test_old_format_run_says_retrain(shipped, tmp_path, capsys):
    old = tmp_path / "old"
    old.mkdir()
    legacy = {k: v for k, v in shipped.config.items() if k not in ("format", "domain", "denoiser", "pixels")}
    (old / runs.CONFIG).write_text(json.dumps({**legacy, "format": api.LEGACY_FORMAT, "prediction": "eps"}))
    (old / runs.CHECKPOINT).write_bytes(b"not read")
    with pytest.raises(DataError, match="retrain"):
        images.load_run(old)
    assert main(["sample", "images", "--run", str(old), "--n", "2", "--out", str(tmp_path / "g.png")]) == 2
    line = _error_line(capsys)
    assert str(old / runs.CONFIG) in line and "retrain" in line and "gendiff train images" in line
    assert main(["sample", "images", "--run", "pretrained:nosuch", "--n", "2", "--out", str(tmp_path / "g.png")]) == 2
    assert "mnist" in _error_line(capsys)  # says which are shipped


def test_evaluate_record_writes_the_command_onto_the_card(copy, capsys):
    argv = ["evaluate", "images", "--run", str(copy), "--n", "10", "--sampler", "ddim", "--steps", "2",
            "--guidance", "2", "--unconditional-n", "0", "--quiet", "--record"]
    assert main(argv) == 0
    card = json.loads((copy / runs.CARD).read_text())
    block = card["metrics"]["ddim2_guidance2"]
    assert block["n"] == 10 and 0 <= block["conditional_accuracy"] <= 1 and block["fd"] >= 0
    assert block["settings"]["sampler"] == "ddim" and "fd_real_halves" in block["reference"]
    assert block["command"] == (f"gendiff evaluate images --run {copy} --n 10 --sampler ddim --steps 2 --guidance 2 "
                                "--seed 0 --batch-size 250 --unconditional-n 0 --record")
    assert set(card["metrics"]) >= set(runs.read_run(NAME).card["metrics"])  # the shipped blocks stay


def test_demo_samples_the_shipped_model_without_training(tmp_path, monkeypatch):
    monkeypatch.setattr(training, "train", lambda *a, **k: pytest.fail("the default demo trained"))
    m = images.demo(tmp_path / "demo", n=20, progress=False, device="cpu")
    assert (tmp_path / "demo" / "grid.png").is_file() and (tmp_path / "demo" / "metrics.json").is_file()
    saved = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert saved["run"] == NAME and saved["n"] == 20 and 0 <= saved["conditional_accuracy"] <= 1
    assert saved["card_metrics"] == runs.read_run(NAME).card["metrics"] and m["fd"] == saved["fd"]
