"""The property classifier as a resumable run folder (classifier.py, classifier_run.py): a tiny classifier trained a
few steps into a folder, resumed from its checkpoint and from its weights alone, steps and sittings adding up, the
learning curve on held-out molecules, loading it back (same predictions), and the module CLI's one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gendiff.domains.molecules import classifier as C
from gendiff.domains.molecules import properties as P
from gendiff.errors import ConfigError, DataError

torch.set_num_threads(1)
TINY = dict(limit=48, batch_size=16, hidden=16, layers=2, eval_n=8, seed=3, lr_schedule="constant")


def _card(run):
    return json.loads((run / "card.json").read_text())


def test_classifier_run_resumes_saves_and_loads(tmp_path):
    run = tmp_path / "clf"
    first = C.train_classifier("alpha", "first", out=run, steps=3, eval_every=2, **TINY)
    assert first["steps"] == 3 and first["stopped"] == "steps"
    assert {p.name for p in run.iterdir()} >= {"config.json", "weights.safetensors", "card.json", "checkpoint.pt"}
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["kind"] == "property_classifier" and cfg["property"] == "alpha" and cfg["half"] == "first"
    assert cfg["net"]["hidden_nf"] == 16 and cfg["train"]["steps"] == 3 and cfg["train"]["lr"] == 1e-3
    values = P.property_values(P.qm9_half("first"), ["alpha"])[:48, 0]
    assert cfg["normalisation"]["mean"] == pytest.approx(values.mean())
    assert [p["train_steps"] for p in _card(run)["curve"]] == [2, 3]  # every 2 steps and at the end
    with pytest.raises(ConfigError, match="resume"):
        C.train_classifier("alpha", "first", out=run, steps=6, **TINY)
    with pytest.raises(ConfigError, match="net"):
        C.train_classifier("alpha", "first", out=run, steps=6, resume=True, **{**TINY, "hidden": 8})

    with pytest.warns(UserWarning, match="steps 3 -> 6"):
        second = C.train_classifier("alpha", "first", out=run, steps=6, resume=True, eval_every=2, **TINY)
    card = _card(run)
    assert second["steps"] == 6 and card["training"]["steps"] == 6
    assert [s["steps_to"] for s in card["training"]["sittings"]] == [3, 6]
    assert [p["train_steps"] for p in card["curve"]] == [2, 3, 4, 6]
    assert card["metrics"]["real_mae"]["mae"] == card["curve"][-1]["mae"]
    once = C.train_classifier("alpha", "first", out=tmp_path / "once", steps=6, **TINY)
    for (k, a), b in zip(second["model"].state_dict().items(), once["model"].state_dict().values(), strict=True):
        assert torch.equal(a, b), k  # 3 + 3 steps resumed == 6 in one go (optimizer, EMA and data order restored)

    mols = [P.qm9_half("second")[i] for i in range(8)]
    loaded = C.load_classifier(run)
    assert loaded["steps"] == 6 and loaded["property"] == "alpha" and loaded["mean"] == second["mean"]
    assert np.array_equal(C.predict(loaded, mols), C.predict(second, mols))
    assert C.real_mae(loaded, "second", limit=8) == pytest.approx(card["curve"][-1]["mae"], rel=1e-4)

    (run / "checkpoint.pt").unlink()  # a fresh clone: weights.safetensors + config.json + card.json only
    with pytest.warns(UserWarning, match="steps 6 -> 8"):
        third = C.train_classifier("alpha", "first", out=run, steps=8, resume=True, **TINY)
    card = _card(run)
    assert third["steps"] == 8 and [s["steps_to"] for s in card["training"]["sittings"]] == [3, 6, 8]
    assert (run / "checkpoint.pt").is_file() and card["training"]["cpu_seconds"] > 0


def test_classifier_time_budget_and_errors(tmp_path, capsys):
    clf = C.train_classifier("alpha", "first", out=tmp_path / "t", steps=1000, max_minutes=1e-4,
                             lr_schedule="cosine", **{k: v for k, v in TINY.items() if k != "lr_schedule"})
    assert clf["stopped"] == "time" and 1 <= clf["steps"] < 1000
    with pytest.raises(DataError, match="not a property-classifier run"):
        C.load_classifier("pretrained:qm9")
    with pytest.raises(ConfigError, match="lr_schedule"):
        C.train_classifier("alpha", "first", steps=2, lr_schedule="linear")
    for args in (["--property", "beta"], ["--half", "third"], ["--steps", "x"], ["--steps", "0"], []):
        out = [] if not args else ["--out", str(tmp_path / "cli")]
        try:
            code = C.main([*out, *args])
        except SystemExit as exc:
            code = exc.code
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert code == 2 and len(err) == 1 and err[0].startswith("gendiff: error:"), (args, err)
