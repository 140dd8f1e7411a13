"""Exact resume: a run killed with SIGKILL and resumed ends bit-identical to an uninterrupted run."""
import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gendiff.errors import ConfigError, DataError
from gendiff.training import TrainConfig, Trainer

SCRIPT = Path(__file__).with_name("_train_script.py")
_spec = importlib.util.spec_from_file_location("gendiff_train_script", SCRIPT)
script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(script)

SPEC = dict(max_steps=60, batch_size=8, log_every=5, ckpt_every=10, warmup_steps=5, ema_decay=0.9, grad_clip=0.5,
            lr=5e-3, weight_decay=0.01, seed=11, noisy=True, n_data=44)  # 44 = 5 batches + a dropped remainder


def log_steps(path):
    if not path.exists():
        return []
    with open(path) as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r.get("step", "").isdigit()]


def assert_same_tree(a, b, where=""):
    """Bit-identical nested containers of tensors and plain values."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same_tree(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tree(x, y, f"{where}/{i}")
    else:
        assert a == b, where


def run_in_process(out_dir, spec):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # same as the subprocesses, so float reductions run in the same order
    try:
        return script.main(str(out_dir), spec)
    finally:
        torch.set_num_threads(threads)


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = tmp_path / "killed"
    spec = json.dumps({**SPEC, "sleep": 0.03, "hang_at": 45})
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(killed), spec],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        while not any(s >= 25 for s in log_steps(killed / "log.csv")):  # checkpoints at 10 and 20 are written
            # the kill lands anywhere from step 25 on; the run hangs in its 45th step at the latest
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "training subprocess made no progress"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    interrupted_at = torch.load(killed / "checkpoint.pt", weights_only=True)["step"]
    assert 20 <= interrupted_at < SPEC["max_steps"]
    assert max(log_steps(killed / "log.csv")) > interrupted_at  # rows the resume must drop

    assert run_in_process(killed, {**SPEC, "resume": True})["resumed_from"] == interrupted_at
    assert run_in_process(tmp_path / "straight", SPEC)["resumed_from"] is None
    resumed = torch.load(killed / "checkpoint.pt", weights_only=True)
    straight = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    assert resumed["step"] == straight["step"] == SPEC["max_steps"]
    for key in ("model", "ema", "optimizer", "data_position", "rng", "nonfinite_total"):
        assert_same_tree(resumed[key], straight[key], key)
    assert log_steps(killed / "log.csv") == list(range(5, 61, 5))


def test_resume_in_process_and_log_trim(tmp_path):
    spec = {k: v for k, v in SPEC.items() if k not in ("noisy", "n_data")}
    make = lambda out, resume=False, **kw: Trainer(  # noqa: E731
        script.make_model(True), script.make_step_fn(True), script.make_data(44),
        TrainConfig(**{**spec, "progress": False, "device": "cpu", **kw}), out, resume=resume)
    straight = make(tmp_path / "a", max_steps=23)
    straight.fit()
    first = make(tmp_path / "b", max_steps=12)
    first.fit()
    with open(tmp_path / "b" / "log.csv", "a") as f:
        f.write("99,9,1.0,0.1,5,0\n17,3,0.")  # rows of a run that died after its checkpoint, the last one torn
    second = make(tmp_path / "b", resume=True, max_steps=23)
    assert second.step == 12 and second.position == first.position != (0, 0)
    summary = second.fit()
    assert summary["resumed_from"] == 12 and summary["step"] == 23
    for a, b in zip(list(straight.model.parameters()) + list(straight.ema_model.parameters()),
                    list(second.model.parameters()) + list(second.ema_model.parameters())):
        assert torch.equal(a, b)
    assert log_steps(tmp_path / "b" / "log.csv") == [5, 10, 12, 15, 20, 23]
    assert not list((tmp_path / "b").glob(".*.tmp"))


def test_resume_modes(tmp_path):
    make = lambda resume, **kw: Trainer(  # noqa: E731
        script.make_model(False), script.make_step_fn(False), script.make_data(16),
        TrainConfig(max_steps=2, batch_size=4, progress=False, device="cpu", **kw), tmp_path / "r", resume=resume)
    with pytest.raises(DataError, match="checkpoint.pt"):
        make(True)
    assert make("auto").fit()["resumed_from"] is None
    with pytest.raises(ConfigError, match="resume=True"):
        make(False)
    assert make("auto").resumed_from == 2
    with pytest.warns(UserWarning, match="seed"):
        make(True, seed=5)
    with pytest.raises(ConfigError, match="resume="):
        make("yes")


def test_a_sitting_stopped_before_its_card_still_counts(tmp_path):
    """Its time up to its last checkpoint reaches the next card (runs.new_card), once, by sitting id."""
    from gendiff import runs

    spec = {k: v for k, v in SPEC.items() if k not in ("noisy", "n_data")}
    make = lambda resume, steps: Trainer(  # noqa: E731
        script.make_model(True), script.make_step_fn(True), script.make_data(44),
        TrainConfig(**{**spec, "progress": False, "device": "cpu", "max_steps": steps}), tmp_path / "r", resume=resume)
    card = lambda summary, prev=None: runs.new_card("toy", "toy", data="d", split="all", seed=0,  # noqa: E731
                                                    summary=summary, previous=prev)
    first = card(make(False, 10).fit())  # sitting 1 writes its card
    killed = make(True, 20)
    killed.fit()  # sitting 2 checkpoints at step 20 and "dies" before its card
    lost_id = killed.sitting.id
    third = make(True, 30)
    assert [s["id"] for s in third.earlier_sittings][-1] == lost_id and third.earlier_sittings[-1]["step"] == 20
    s3 = third.fit()
    c3 = card(s3, first)
    ids = [s.get("id") for s in c3["training"]["sittings"]]
    assert ids == [first["training"]["sittings"][0]["id"], lost_id, s3["sitting_id"]]
    lost = c3["training"]["sittings"][1]
    assert lost["steps_to"] == 20 and lost["cpu_seconds"] > 0 and lost["stopped"].startswith("interrupted")
    assert c3["training"]["cpu_seconds"] == pytest.approx(sum(s["cpu_seconds"] for s in c3["training"]["sittings"]))
    # the next sitting resumes a checkpoint that remembers all three; the card already has them: nothing twice
    c4 = card(make(True, 40).fit(), c3)
    assert len(c4["training"]["sittings"]) == 4 and len({s["id"] for s in c4["training"]["sittings"]}) == 4
