"""Trainer unit tests: config, warm-up, accumulation, EMA, non-finite losses, atomic checkpoints, logs, weights."""
import csv
import importlib.util
import math
from pathlib import Path

import pytest
import torch

from gendiff import training
from gendiff.errors import ConfigError, DataError, TrainingError
from gendiff.training import (TrainConfig, Trainer, advance, epoch_permutation, load_ema_weights, load_weights,
                              warmup_lr)

_spec = importlib.util.spec_from_file_location("gendiff_train_script", Path(__file__).with_name("_train_script.py"))
script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(script)


def cfg(**kw):
    base = dict(max_steps=10, batch_size=8, log_every=1, ckpt_every=5, lr=1e-2, ema_decay=0.9, grad_clip=None,
                progress=False, device="cpu", seed=3)
    return TrainConfig(**{**base, **kw})


def make(tmp, name="run", step_fn=None, noisy=False, n=48, **kw):
    step_fn = step_fn or script.make_step_fn(noisy)
    return Trainer(script.make_model(noisy), step_fn, script.make_data(n), cfg(**kw), tmp / name)


def params(module):
    return [p.detach().clone() for p in module.parameters()]


def read_log(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_config_validation_and_roundtrip():
    c = cfg(betas=[0.8, 0.99])
    assert c.betas == (0.8, 0.99)
    assert TrainConfig.from_dict(c.to_dict()) == c
    for bad in (dict(lr=0), dict(accumulate=0), dict(ema_decay=1.5), dict(betas=(0.9, 1.0)), dict(max_steps=0)):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            cfg(**bad)
    with pytest.raises(ConfigError, match="unknown field.*bogus"):
        TrainConfig.from_dict({"bogus": 1})


def test_warmup_lr_values(tmp_path):
    c = cfg(lr=0.4, warmup_steps=4, max_steps=6)
    assert [warmup_lr(s, c) for s in range(6)] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4, 0.4])
    assert warmup_lr(0, cfg(lr=0.4, warmup_steps=0)) == 0.4
    trainer = make(tmp_path, lr=0.4, warmup_steps=4, max_steps=6)
    trainer.fit()
    logged = [float(r["lr"]) for r in read_log(tmp_path / "run" / "log.csv")]
    assert logged == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4, 0.4])
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.4)


def test_cosine_decay_by_step_and_across_a_resume(tmp_path):
    """lr_decay='cosine': after the warm-up, lr_final + (1 - lr_final) (1 + cos(pi p)) / 2 of lr, p from 0 at the end
    of the warm-up to 1 at the last step; a run stopped and resumed logs the same learning rates as one that was not."""
    c = cfg(lr=0.4, warmup_steps=2, max_steps=7, lr_decay="cosine", lr_final=0.1)
    want = [0.2, 0.4] + [0.4 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * k / 4))) for k in range(5)]
    got = [warmup_lr(s, c) for s in range(7)]
    assert got == pytest.approx(want) and got[2] == pytest.approx(0.4) and got[-1] == pytest.approx(0.04)
    assert warmup_lr(100, c) == pytest.approx(0.04)  # past max_steps it stays at the floor
    assert [warmup_lr(s, cfg(lr=1.0, max_steps=3, lr_decay="cosine")) for s in range(3)] == pytest.approx([1, .5, 0])
    kw = dict(lr=0.4, warmup_steps=2, max_steps=7, lr_decay="cosine", lr_final=0.1)
    make(tmp_path, "whole", **kw).fit()
    first = make(tmp_path, "split", **kw)
    batches = first._loader()
    for _ in range(3):  # three steps, a checkpoint, then a new process would resume from it
        first.train_step(batches)
    first.save_checkpoint()
    assert first.optimizer.param_groups[0]["lr"] == pytest.approx(got[2])
    resumed = Trainer(script.make_model(False), script.make_step_fn(False), script.make_data(48), cfg(**kw),
                      tmp_path / "split", resume=True)
    resumed.fit()
    whole = [float(r["lr"]) for r in read_log(tmp_path / "whole" / "log.csv")]
    split = [float(r["lr"]) for r in read_log(tmp_path / "split" / "log.csv")]
    assert whole == pytest.approx(got)
    assert split == pytest.approx(got[3:])
    for bad in (dict(lr_decay="linear"), dict(lr_final=1.5)):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            cfg(**bad)


def test_data_order_is_seeded_per_epoch_and_drops_remainder():
    assert torch.equal(epoch_permutation(10, 1, 2), epoch_permutation(10, 1, 2))
    assert not torch.equal(epoch_permutation(10, 1, 2), epoch_permutation(10, 1, 3))
    assert sorted(epoch_permutation(10, 1, 0).tolist()) == list(range(10))
    assert advance((0, 0), 10, 4) == (0, 4) and advance((0, 4), 10, 4) == (1, 0)


def test_grad_accumulation_matches_full_batch(tmp_path):
    full = make(tmp_path, "full", batch_size=8, accumulate=1, grad_clip=1.0)
    full.fit()
    half = make(tmp_path, "half", batch_size=4, accumulate=2, grad_clip=1.0)
    half.fit()
    assert half.position == full.position
    # mean of two half-batch means vs one full-batch mean: equal up to float32 rounding (~1e-7 relative)
    for a, b in zip(params(full.model) + params(full.ema_model), params(half.model) + params(half.ema_model)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert not torch.equal(params(full.model)[0], params(script.make_model(False))[0])


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_math(tmp_path, warmup):
    seen = []

    def step_fn(model, batch, generator):
        seen.append(params(model))
        return script.make_step_fn(False)(model, batch, generator)

    trainer = make(tmp_path, step_fn=step_fn, ema_decay=0.8, ema_warmup=warmup, max_steps=4)
    ema = params(trainer.ema_model)
    assert all(torch.equal(e, p) for e, p in zip(ema, params(trainer.model)))
    assert all(not p.requires_grad for p in trainer.ema_model.parameters())
    trainer.fit()
    for n, theta in enumerate(seen[1:] + [params(trainer.model)], start=1):
        d = min(0.8, (1 + n) / (10 + n)) if warmup else 0.8  # warm-up: 2/11, 3/12, 4/13, 5/14 < 0.8
        ema = [d * e + (1 - d) * t for e, t in zip(ema, theta)]
    for e, got in zip(ema, params(trainer.ema_model)):
        torch.testing.assert_close(got, e, atol=1e-7, rtol=1e-6)
    assert not torch.allclose(ema[0], params(trainer.model)[0])


def nan_at(steps, value=float("nan")):
    calls = {"n": 0}

    def step_fn(model, batch, generator):
        loss = script.make_step_fn(False)(model, batch, generator)
        calls["n"] += 1
        return loss * value if calls["n"] - 1 in steps else loss

    return step_fn


def test_nonfinite_step_is_skipped_and_counted(tmp_path):
    ref = make(tmp_path, "ref", max_steps=3)
    ref.fit()
    run = make(tmp_path, "nan", step_fn=nan_at({3}), max_steps=4)
    summary = run.fit()
    assert summary["nonfinite"] == 1 and summary["step"] == 4
    for a, b in zip(params(ref.model) + params(ref.ema_model), params(run.model) + params(run.ema_model)):
        assert torch.equal(a, b)  # the skipped step changed neither the weights nor the EMA
    assert run.optimizer.state[next(run.model.parameters())]["step"] == 3
    rows = read_log(tmp_path / "nan" / "log.csv")
    assert [int(r["nonfinite"]) for r in rows] == [0, 0, 0, 1] and rows[-1]["loss"] == "nan"


def test_isolated_infs_continue(tmp_path):
    summary = make(tmp_path, step_fn=nan_at({2, 5, 6}, float("inf")), max_steps=10, max_nonfinite=3).fit()
    assert summary["nonfinite"] == 3 and summary["step"] == 10 and math.isfinite(summary["loss"])


def test_consecutive_nonfinite_raise_and_keep_last_good_checkpoint(tmp_path):
    ref = make(tmp_path, "ref", max_steps=10)
    ref.fit()
    run = make(tmp_path, "bad", step_fn=nan_at(set(range(12, 100))), max_steps=30, max_nonfinite=3)
    with pytest.raises(TrainingError, match=r"3 consecutive non-finite losses \(steps 13-15.*left intact"):
        run.fit()
    state = torch.load(tmp_path / "bad" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 10
    for key in ("model", "ema"):
        for name, value in torch.load(tmp_path / "ref" / "checkpoint.pt", weights_only=True)[key].items():
            assert torch.equal(state[key][name], value)
    assert int(read_log(tmp_path / "bad" / "log.csv")[-1]["nonfinite"]) == 3


def test_checkpoint_refuses_nonfinite_weights(tmp_path):
    trainer = make(tmp_path, max_steps=2)
    trainer.fit()
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    with torch.no_grad():
        next(trainer.model.parameters())[0, 0] = float("nan")
    with pytest.raises(TrainingError, match="non-finite"):
        trainer.save_checkpoint()
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before


def test_atomic_checkpoint_leaves_no_partial_file(tmp_path, monkeypatch):
    trainer = make(tmp_path, max_steps=2)
    trainer.fit()
    path = tmp_path / "run" / "checkpoint.pt"
    before = path.read_bytes()
    real_save = torch.save

    def failing_save(obj, f, *a, **kw):
        real_save(obj, f, *a, **kw)
        with open(f, "r+b") as fh:
            fh.truncate(100)  # a torn write ...
        raise OSError("disk full")  # ... then the failure

    monkeypatch.setattr(torch, "save", failing_save)
    trainer.step += 1
    with pytest.raises(OSError, match="disk full"):
        trainer.save_checkpoint()
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkpoint.pt", "log.csv"]


def test_log_csv_and_summary(tmp_path):
    summary = make(tmp_path, max_steps=7, log_every=3).fit()
    rows = read_log(tmp_path / "run" / "log.csv")
    assert list(rows[0]) == ["step", "epoch", "loss", "lr", "samples_per_sec", "nonfinite"]
    assert [int(r["step"]) for r in rows] == [3, 6, 7]
    assert all(float(r["samples_per_sec"]) > 0 and math.isfinite(float(r["loss"])) for r in rows)
    assert summary["step"] == 7 and summary["epoch"] == 1 and summary["resumed_from"] is None
    assert summary["loss"] == pytest.approx(float(rows[-1]["loss"]), rel=1e-5)


def test_load_weights(tmp_path):
    trainer = make(tmp_path, max_steps=3)
    trainer.fit()
    ckpt = tmp_path / "run" / "checkpoint.pt"
    ema, raw = load_ema_weights(ckpt, script.make_model(False)), load_weights(ckpt, script.make_model(False), ema=False)
    assert all(torch.equal(a, b) for a, b in zip(params(ema), params(trainer.ema_model)))
    assert all(torch.equal(a, b) for a, b in zip(params(raw), params(trainer.model)))
    with pytest.raises(DataError, match="'ema' weights do not fit"):
        load_weights(ckpt, torch.nn.Sequential(torch.nn.Linear(4, 3)))
    torch.save({"foo": 1}, tmp_path / "other.pt")
    with pytest.raises(DataError, match="other.pt"):
        load_weights(tmp_path / "other.pt", script.make_model(False))


def test_bad_inputs(tmp_path):
    with pytest.raises(ConfigError, match="fewer than TrainConfig.batch_size"):
        make(tmp_path, n=4)
    bad = make(tmp_path, step_fn=lambda m, b, g: (m(b[0]) - b[1]) ** 2)
    with pytest.raises(TrainingError, match="scalar loss"):
        bad.fit()


def test_bf16_autocast_runs_on_cpu(tmp_path):
    """bf16 is autocast on the training device, CPU included: the loss comes from bf16 matmuls, so it differs from
    float32 by bf16 rounding (8 mantissa bits: relative 2^-8 per product) and no more than a few percent."""
    seen = []

    def step_fn(model, batch, generator):
        out = model(batch[0])
        seen.append(out.dtype)
        return ((out.float() - batch[1]) ** 2).mean()

    t16 = make(tmp_path, "bf16", step_fn=step_fn, bf16=True, max_steps=2)
    t16.fit()
    assert seen and all(d == torch.bfloat16 for d in seen)


def test_collate_fn_and_dict_batches(tmp_path):
    data = script.make_data(16)

    def collate(items):
        return {"x": torch.stack([i[0] for i in items]), "y": torch.stack([i[1] for i in items])}

    def step_fn(model, batch, generator):
        return torch.nn.functional.mse_loss(model(batch["x"]), batch["y"])

    trainer = Trainer(script.make_model(False), step_fn, data, cfg(max_steps=3), tmp_path / "c", collate_fn=collate)
    assert trainer.fit()["step"] == 3


def test_worker_processes_give_the_same_run(tmp_path):
    inline = make(tmp_path, "w0", max_steps=4, noisy=True)
    inline.fit()
    workers = make(tmp_path, "w1", max_steps=4, noisy=True, num_workers=1)
    workers.fit()
    assert all(torch.equal(a, b) for a, b in zip(params(inline.model), params(workers.model)))


class FakeClock:
    """Stands in for the `time` module of gendiff.training: wall-clock time passes only when a step sleeps, so the
    time budget's arithmetic is exact whatever the machine's load (a real clock made the step count flaky)."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def process_time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_time_budget_stops_before_overrunning(tmp_path, monkeypatch):
    """time_budget ends training at the last step that fits, checkpoints it, and says why it stopped."""
    clock = FakeClock()
    monkeypatch.setattr(training, "time", clock)
    base = script.make_step_fn(False)

    def slow(model, batch, generator):
        clock.sleep(0.0625)  # a binary fraction: the clock's sums are exact
        return base(model, batch, generator)

    trainer = make(tmp_path, step_fn=slow, max_steps=10_000, time_budget=0.5)
    summary = trainer.fit()
    # after k steps of 1/16 s, one more (at the mean, 1/16 s) would overrun 0.5 s from k = 8 on
    assert summary["stopped"] == "time_budget" and summary["step"] == 8
    assert summary["loop_seconds"] == summary["seconds"] == 0.5 and summary["longest_step_seconds"] == 0.0625
    assert summary["cpu_seconds"] == 0.5
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    resumed = Trainer(script.make_model(False), slow, script.make_data(48), cfg(max_steps=summary["step"] + 2),
                      tmp_path / "run", resume=True)
    assert resumed.fit()["stopped"] == "max_steps"


def _overfit_case(tmp, **kw):
    """8 training items of a noisy target, held-out items of the same law: a 16-unit MLP at lr 1e-2 memorises the
    eight, so its held-out loss falls, then rises."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(40, 4, generator=g)
    y = torch.stack([x[:, 0] * x[:, 1], x[:, 2].sin() - x[:, 3]], dim=1) + 0.5 * torch.randn(40, 2, generator=g)
    train = torch.utils.data.TensorDataset(x[:8], y[:8])
    held = torch.utils.data.TensorDataset(x[8:], y[8:])
    config = cfg(**{"max_steps": 400, "batch_size": 8, "log_every": 50, "ckpt_every": 1000, "ema_decay": 0.5,
                    "validate_every": 10, **kw})
    return Trainer(script.make_model(False), script.make_step_fn(False), train, config, tmp / "val",
                   val_dataset=held), held


def test_validation_keeps_the_best_ema_weights_and_writes_the_curve(tmp_path):
    from gendiff.validation import validation_loss

    trainer, held = _overfit_case(tmp_path)
    summary = trainer.fit()
    val = summary["validation"]
    assert val["validations"] == 40 and val["kept_best"]
    losses = [v for _, v in val["curve"]]
    assert val["best_step"] < 400 and min(losses) < losses[-1]  # it overfits: the last is not the best
    assert val["best_val_loss"] == pytest.approx(min(losses))
    again = validation_loss(trainer.ema_model, trainer.step_fn, held, training.default_collate, 8, 0, "cpu")
    assert again == pytest.approx(min(losses), rel=1e-5)  # the run's EMA weights are the best ones
    rows = read_log(tmp_path / "val" / "validation.csv")
    assert len(rows) == 40 and int(rows[-1]["best_step"]) == val["best_step"]
    # the checkpoint keeps the latest EMA weights (to resume from), not the best
    latest = script.make_model(False)
    load_ema_weights(trainer.ckpt_path, latest)
    best = trainer.ema_model.state_dict()
    assert any(not torch.equal(v, best[k]) for k, v in latest.state_dict().items())


def test_patience_stops_training_early_and_validation_is_deterministic(tmp_path):
    from gendiff.validation import validation_loss

    trainer, held = _overfit_case(tmp_path, patience=5)
    summary = trainer.fit()
    assert summary["stopped"] == "early_stop" and summary["step"] < 400
    assert summary["step"] == summary["validation"]["best_step"] + 5 * 10
    a = validation_loss(trainer.model, trainer.step_fn, held, training.default_collate, 8, 7, "cpu")
    b = validation_loss(trainer.model, trainer.step_fn, held, training.default_collate, 8, 7, "cpu")
    assert a == b
    with pytest.raises(ConfigError, match="validate_every"):
        cfg(validate_every=-1)
