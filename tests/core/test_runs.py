"""The one run format: save, read, load; every broken run gives one DataError naming the file."""
import json

import pytest
import torch

from gendiff import runs
from gendiff.errors import DataError


def _model(width=4):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, width), torch.nn.SiLU(), torch.nn.Linear(width, 3))


def _save(tmp_path, width=4):
    model = _model(width)
    card = runs.new_card("toy", "toy", data="synthetic", split="all", summary={"step": 3, "seconds": 1.0,
                                                                              "cpu_seconds": 0.5}, seed=0)
    return runs.save_run(tmp_path / "run", "toy", {"net": {"width": width}}, model, card), model


def test_round_trip(tmp_path):
    path, model = _save(tmp_path)
    run = runs.read_run(path, domain="toy")
    assert run.config["net"] == {"width": 4} and run.card["training"]["steps"] == 3
    fresh = _model()
    for p in fresh.parameters():
        p.data.zero_()
    runs.load_weights(run, fresh)
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)
    assert run.card["training"]["hardware"] and "sittings" in run.card["training"]
    runs.record_metrics(path, "quality", {"accuracy": 0.9}, "cmd --x")
    assert json.loads((path / "card.json").read_text())["metrics"]["quality"]["command"] == "cmd --x"


def test_truncated_and_corrupt_weights_name_the_file(tmp_path):
    path, _ = _save(tmp_path)
    data = (path / "weights.safetensors").read_bytes()
    (path / "weights.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="weights.safetensors: (unreadable weights file|checksum does not match)"):
        runs.load_weights(runs.read_run(path), _model())
    (path / "weights.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(DataError, match="weights.safetensors: (unreadable|checksum)"):
        runs.load_weights(runs.read_run(path), _model())


def test_flipped_bytes_fail_the_checksum(tmp_path):
    path, _ = _save(tmp_path)
    data = bytearray((path / "weights.safetensors").read_bytes())
    data[-3] ^= 0xFF  # inside the tensor data: safetensors itself would load it
    (path / "weights.safetensors").write_bytes(bytes(data))
    with pytest.raises(DataError, match="weights.safetensors: checksum does not match"):
        runs.load_weights(runs.read_run(path), _model())


def test_config_that_does_not_match_the_weights(tmp_path):
    path, _ = _save(tmp_path)
    with pytest.raises(DataError, match="weights.safetensors: weights do not fit the model .*config.json"):
        runs.load_weights(runs.read_run(path), _model(width=8))


def test_not_a_run_old_format_wrong_domain_missing_weights(tmp_path):
    with pytest.raises(DataError, match="not a gendiff run"):
        runs.read_run(tmp_path)
    path, _ = _save(tmp_path)
    with pytest.raises(DataError, match="a 'toy' run, not a 'images' one"):
        runs.read_run(path, domain="images")
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, "format": "gendiff-images-v1"}))
    with pytest.raises(DataError, match="older gendiff.*retrain"):
        runs.read_run(path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(DataError, match="config.json: unreadable run config"):
        runs.read_run(path)
    (path / "config.json").write_text(json.dumps(cfg))
    (path / "weights.safetensors").unlink()
    with pytest.raises(DataError, match="weights.safetensors: missing"):
        runs.read_run(path)


def test_pretrained_names(tmp_path, monkeypatch):
    domains = tmp_path / "domains"
    path, _ = _save(domains / "toy" / "pretrained")
    (domains / "toy" / "pretrained" / "run").rename(domains / "toy" / "pretrained" / "tiny")
    monkeypatch.setattr(runs, "_domains_dir", lambda: domains)
    assert runs.read_run("pretrained:tiny").config["domain"] == "toy"
    rows = runs.list_pretrained()
    assert rows[0]["name"] == "tiny" and rows[0]["bytes"] > 0
    with pytest.raises(DataError, match="pretrained:nope: no such pretrained model .*tiny"):
        runs.read_run("pretrained:nope")


def test_card_headline_picks_named_metrics_or_drops_bookkeeping():
    card = {"metrics": {"a": {"acc": 0.9, "n": 500, "seed": 0, "sample_seconds": 3.0, "kid_std": 0.1, "fd": 4.0},
                        "b": {"acc": 0.1, "crps": 1.5, "sampler": "ddim", "ok": True}}}
    assert runs.card_headline(card) == {"acc": 0.9, "fd": 4.0, "crps": 1.5}
    card["headline"] = ["crps", "acc", "missing"]
    assert list(runs.card_headline(card).items()) == [("crps", 1.5), ("acc", 0.9)]


def test_every_shipped_card_has_a_headline_that_resolves():
    for row in runs.list_pretrained():
        card = runs.read_run(f"pretrained:{row['name']}").card
        assert "error" not in row and card.get("headline")
        assert list(row["metrics"]) == [k for k in card["headline"]], row["name"]


def test_atomic_writes_get_the_permissions_of_a_plain_open(tmp_path):
    import os
    import stat

    from gendiff.io import write_json_atomic

    (tmp_path / "plain.json").write_text("{}")
    write_json_atomic(tmp_path / "atomic.json", {})
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(tmp_path / "atomic.json") == mode(tmp_path / "plain.json")


def test_npz_written_atomically_under_its_own_name(tmp_path):
    """write_npz_atomic: the arrays come back from the path given (savez on a bare temporary name would have
    added .npz), nothing else is left in the folder, and a failed write keeps the old file."""
    import numpy as np

    from gendiff.io import write_npz_atomic

    path = tmp_path / "cache.npz"
    write_npz_atomic(path, a=np.arange(3), b=np.ones((2, 2), np.float32))
    with np.load(path, allow_pickle=False) as f:
        assert f["a"].tolist() == [0, 1, 2] and f["b"].dtype == np.float32
    assert [p.name for p in tmp_path.iterdir()] == ["cache.npz"]
    class Broken:
        def __array__(self, *args, **kwargs):
            raise ValueError("not an array")

    with pytest.raises(ValueError, match="not an array"):
        write_npz_atomic(path, a=np.zeros(2), b=Broken())  # fails half-way through the archive
    with np.load(path, allow_pickle=False) as f:
        assert f["a"].tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["cache.npz"]


def test_card_curve_grows_across_sittings(tmp_path):
    """Each recorded score becomes a curve point (steps, cumulative CPU hours); a resumed run's card keeps the
    earlier sittings' points, and re-measuring the same weights replaces their point instead of adding one."""
    path, model = _save(tmp_path)
    runs.record_metrics(path, "q", {"acc": 0.5, "n": 10, "sampler": "ddim"}, "cmd")
    runs.record_metrics(path, "q", {"acc": 0.6, "n": 10, "sampler": "ddim"}, "cmd")  # same weights, same key
    first = json.loads((path / "card.json").read_text())
    assert [(p["train_steps"], p["acc"]) for p in first["curve"]] == [(3, 0.6)]
    assert first["curve"][0]["cpu_hours"] == pytest.approx(0.5 / 3600, abs=1e-4) and "sampler" not in first["curve"][0]
    card = runs.new_card("toy", "toy", data="synthetic", split="all", seed=0, previous=first,
                         summary={"step": 9, "seconds": 2.0, "cpu_seconds": 3600.0})
    assert card["metrics"] == {} and card["curve"] == first["curve"]
    second = runs.save_run(tmp_path / "run2", "toy", {"net": {"width": 4}}, model, card)
    runs.record_metrics(second, "q", {"acc": 0.8, "steps": 50}, "cmd")  # sampler steps stay apart
    curve = json.loads((second / "card.json").read_text())["curve"]
    assert [(p["train_steps"], p["acc"]) for p in curve] == [(3, 0.6), (9, 0.8)]
    assert curve[1]["cpu_hours"] == pytest.approx((0.5 + 3600) / 3600, abs=1e-4) and curve[1]["steps"] == 50
