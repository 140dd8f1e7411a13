"""Images domain end to end: a tiny train -> sample -> evaluate run on sklearn's 8x8 digits, through Python and CLI."""
from __future__ import annotations

import argparse
import json
import math
import shutil

import pytest
import torch

from gendiff import runs, training
from gendiff.domains import images
from gendiff.domains.images import cli
from gendiff.errors import ConfigError, DataError

torch.set_num_threads(1)
TINY = dict(ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), groups=8, dropout=0.0)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("images") / "run"
    summary = images.train(data="digits", out=out, model=TINY, max_steps=40, batch_size=32, lr=2e-3,
                           progress=False, log_every=10)
    assert summary["step"] == 40 and math.isfinite(summary["loss"])
    return out


def test_run_folder_contents(run):
    """The run format: config.json rebuilds the model, weights.safetensors holds the EMA weights, card.json how it
    was trained; checkpoint.pt (resume only) beside them."""
    meta = json.loads((run / "config.json").read_text())
    assert meta["format"] == runs.FORMAT and meta["domain"] == "images"
    assert meta["image_size"] == 8 and meta["model"]["num_classes"] == 10 and meta["data"] == "digits"
    assert meta["denoiser"]["prediction"] == "eps" and meta["pixels"]["scale"] == 127.5
    for name in ("weights.safetensors", "card.json", "checkpoint.pt", "log.csv"):
        assert (run / name).is_file(), name
    card = json.loads((run / "card.json").read_text())
    assert card["domain"] == "images" and card["training"]["steps"] == 40 and card["training"]["seed"] == 0
    assert card["training"]["wall_seconds"] > 0 and card["training"]["cpu_seconds"] > 0
    assert "1437" in card["training"]["split"] or "1438" in card["training"]["split"]
    denoiser, meta2 = images.load_run(run)
    assert meta2 == meta and not denoiser.training
    from gendiff.training import load_ema_weights

    ema, _ = images.api.build_denoiser(meta)
    load_ema_weights(run / "checkpoint.pt", ema)  # weights.safetensors are the checkpoint's EMA weights
    assert all(torch.equal(a, b) for a, b in zip(ema.state_dict().values(), denoiser.state_dict().values()))


class FakeClock:
    """Stands in for the `time` module of gendiff.training: each optimizer step takes exactly `step` seconds, so the
    time budget's arithmetic is exact whatever the machine's load."""

    def __init__(self, step: float):
        self.now, self.step = 0.0, step

    def perf_counter(self) -> float:
        return self.now

    def process_time(self) -> float:
        return self.now


def test_time_budget_and_cumulative_card(tmp_path, monkeypatch):
    clock = FakeClock(0.25)
    monkeypatch.setattr(training, "time", clock)
    real_step = training.Trainer.train_step

    def timed_step(self, batches):
        clock.now += clock.step
        return real_step(self, batches)

    monkeypatch.setattr(training.Trainer, "train_step", timed_step)
    out = tmp_path / "budget"
    kw = dict(data="digits", out=out, model=TINY, batch_size=32, progress=False, ema_decay=0.995, warmup_steps=0)
    s1 = images.train(max_steps=10**6, time_budget=1.5, **kw)
    # after k steps of 0.25 s one more would overrun 1.5 s from k = 6 on; the final checkpoint takes no clock time
    assert s1["stopped"] == "time_budget" and s1["step"] == 6
    assert s1["loop_seconds"] == s1["seconds"] == 1.5 and s1["longest_step_seconds"] == 0.25
    s2 = images.train(max_steps=s1["step"] + 3, resume=True, **kw)
    assert s2["step"] == s1["step"] + 3 and s2["stopped"] == "max_steps"
    card = json.loads((out / "card.json").read_text())
    sittings = card["training"]["sittings"]
    assert [s["steps_to"] for s in sittings] == [s1["step"], s2["step"]] and card["training"]["steps"] == s2["step"]
    assert card["training"]["wall_seconds"] == pytest.approx(sum(s["wall_seconds"] for s in sittings))


def test_convert_run_from_the_old_format(run, tmp_path):
    """An old-format folder (config.json 'gendiff-images-v1' + checkpoint.pt) converts to the run format, with the
    same EMA weights, and is refused (with what to do) until then."""
    meta = json.loads((run / "config.json").read_text())
    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(run / "checkpoint.pt", old / "checkpoint.pt")
    shutil.copy(run / "log.csv", old / "log.csv")
    legacy = {k: v for k, v in meta.items() if k not in ("format", "domain", "denoiser", "pixels", "conditioning")}
    (old / "config.json").write_text(json.dumps({**legacy, "format": "gendiff-images-v1", "prediction": "eps",
                                                 "p_uncond": 0.1, "train": {"lr": 2e-3}}))
    with pytest.raises(DataError, match="retrain"):
        images.load_run(old)
    with pytest.raises(DataError, match="retrain"):
        images.train(data="digits", out=old, model=TINY, max_steps=50, progress=False, resume=True)
    images.convert_run(old, tmp_path / "new", command="test", commit="abc")
    new, meta_new = images.load_run(tmp_path / "new")
    ref, _ = images.load_run(run)
    assert meta_new == meta
    assert all(torch.equal(a, b) for a, b in zip(new.state_dict().values(), ref.state_dict().values()))
    card = json.loads((tmp_path / "new" / "card.json").read_text())
    assert card["training"]["steps"] == 40 and card["training"]["commit"] == "abc"
    assert card["converted"]["from"] == "gendiff-images-v1"


def test_sample_is_seeded_and_conditional(run, tmp_path):
    a = images.sample(run=run, n=6, sampler="ddim", steps=4, guidance=2.0, seed=3, labels="balanced",
                      out=tmp_path / "grid.png")
    b = images.sample(run=run, n=6, sampler="ddim", steps=4, guidance=2.0, seed=3, labels=[0, 1, 2, 3, 4, 5])
    c = images.sample(run=run, n=6, sampler="ddim", steps=4, guidance=2.0, seed=4, labels="balanced")
    assert a.shape == (6, 1, 8, 8) and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert (tmp_path / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("ancestral", "dpm_solver_pp", "heun"):
        assert images.sample(run=run, n=2, sampler=name, steps=3, seed=0).shape == (2, 1, 8, 8)
    with pytest.raises(ConfigError, match="labels"):
        images.sample(run=run, n=2, steps=2, guidance=3.0)
    with pytest.raises(ConfigError, match=r"\[0, 9\]"):
        images.sample(run=run, n=2, steps=2, labels=[0, 12])


def test_cached_sample_resumes_batch_by_batch(run, tmp_path):
    from gendiff.domains.images.evaluate import cached_sample

    kw = dict(sampler="ddim", steps=3, guidance=2.0, seed=5, batch_size=4, labels=torch.arange(10) % 10)
    a = cached_sample(run, 10, tmp_path / "c", **kw)
    files = sorted((tmp_path / "c").iterdir())
    assert a.shape == (10, 1, 8, 8) and a.dtype == torch.uint8 and len(files) == 3
    files[1].unlink()  # as if stopped during batch 1: only it is drawn again, from its own seed
    stamps = [f.stat().st_mtime_ns for f in (files[0], files[2])]
    assert torch.equal(cached_sample(run, 10, tmp_path / "c", **kw), a)
    assert [f.stat().st_mtime_ns for f in (files[0], files[2])] == stamps
    batch1 = images.sample(run=run, n=4, sampler="ddim", steps=3, guidance=2.0, seed=5 * 100003 + 1,
                           labels=list(range(4, 8)))
    assert torch.equal(a[4:8], batch1)
    m = images.evaluate(run=run, n=10, steps=3, guidance=2.0, seed=5, batch_size=4, unconditional_n=0,
                        reference=False, classifier_epochs=2, cache=tmp_path / "c")
    assert m["batch_seeds"] and len(list((tmp_path / "c").iterdir())) == 3  # evaluate reused the cached batches


def test_evaluate_metrics(run):
    m = images.evaluate(run=run, n=40, sampler="ddim", steps=4, guidance=2.0, unconditional_n=20, nll_n=4,
                        classifier_epochs=2)
    for key in ("fd", "kid", "conditional_accuracy", "class_entropy", "fd_real_halves", "nll_bits_per_dim"):
        assert key in m and math.isfinite(m[key]), key
    assert 0.0 <= m["conditional_accuracy"] <= 1.0 and m["fd"] >= 0 and 0 <= m["class_entropy"] <= math.log(10) + 1e-9
    assert m["nll_bits_per_dim"] > 0
    assert (run / "classifier.safetensors").is_file()
    with pytest.raises(DataError, match="not found"):
        images.evaluate(run=run, n=8, steps=2, inception=str(run / "missing.pth"), reference=False,
                        classifier_epochs=2)


def test_resume_continues_the_same_run(run):
    summary = images.train(data="digits", out=run, model=TINY, max_steps=45, batch_size=32, lr=2e-3,
                           progress=False, resume=True)
    assert summary["step"] == 45 and summary["resumed_from"] == 40
    with pytest.raises(ConfigError, match="model"):
        images.train(data="digits", out=run, model={**TINY, "ch": 8}, max_steps=50, progress=False, resume=True)


def _cli(verb: str, argv: list[str]) -> int:
    add, run_fn = cli.VERBS[verb]
    parser = argparse.ArgumentParser()
    add(parser)
    return run_fn(parser.parse_args(argv))


def test_cli_sample_and_evaluate(run, tmp_path, capsys):
    assert _cli("sample", ["--run", str(run), "--n", "4", "--steps", "3", "--guidance", "2", "--out",
                           str(tmp_path / "g.png"), "--quiet"]) == 0
    assert (tmp_path / "g.png").is_file()
    assert _cli("evaluate", ["--run", str(run), "--n", "20", "--steps", "3", "--unconditional-n", "10", "--json",
                             "--quiet", "--out", str(tmp_path / "m.json")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["n"] == 20 and json.loads((tmp_path / "m.json").read_text())["fd"] == printed["fd"]
    assert set(cli.VERBS) == {"train", "sample", "evaluate", "demo"}
    assert _cli("sample", ["--run", str(run), "--n", "12", "--steps", "2", "--labels", "0-3,7", "--out",
                           str(tmp_path / "h.png"), "--save-pt", str(tmp_path / "h.pt"), "--quiet"]) == 0
    assert torch.load(tmp_path / "h.pt", weights_only=True).shape == (12, 1, 8, 8)
