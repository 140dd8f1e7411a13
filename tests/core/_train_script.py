"""Tiny training run for the resume and DDP tests: `python _train_script.py OUT_DIR '{"max_steps": 20, ...}'`.

Extra keys in the JSON (not TrainConfig fields): resume (bool), sleep (seconds per step_fn call),
hang_at (the step_fn call that sleeps an hour), noisy (dropout + generator noise: every checkpointed random
stream is used), n_data, record (write [batch length, batch sum] of each step_fn call to OUT_DIR/seen_rank{RANK}.json).
"""
import json
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

from gendiff.training import TrainConfig, Trainer  # noqa: E402


def make_model(noisy: bool) -> torch.nn.Module:
    torch.manual_seed(1234)
    layers = [torch.nn.Linear(4, 16), torch.nn.Tanh()]
    if noisy:
        layers.append(torch.nn.Dropout(0.2))
    layers.append(torch.nn.Linear(16, 2))
    return torch.nn.Sequential(*layers)


def make_data(n: int) -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed(99)
    x = torch.randn(n, 4, generator=g)
    y = torch.stack([x[:, 0] * x[:, 1], x[:, 2].sin() - x[:, 3]], dim=1)
    return torch.utils.data.TensorDataset(x, y)


def make_step_fn(noisy: bool, sleep: float = 0.0, seen: list | None = None, hang_at: int | None = None):
    calls = [0]

    def step_fn(model, batch, generator):
        calls[0] += 1
        if sleep:
            time.sleep(sleep)
        if calls[0] == hang_at:
            time.sleep(3600)  # wait here to be killed, however slowly the test polls
        x, y = batch
        if seen is not None:
            seen.append([len(x), float(x.sum())])
        if noisy:
            x = x + 0.1 * torch.randn(x.shape, generator=generator)
        return torch.nn.functional.mse_loss(model(x), y)

    return step_fn


def main(out_dir: str, spec: dict) -> dict:
    spec = dict(spec)
    resume, sleep = spec.pop("resume", False), spec.pop("sleep", 0.0)
    noisy, n_data, record = spec.pop("noisy", False), spec.pop("n_data", 48), spec.pop("record", False)
    seen, hang_at = ([] if record else None), spec.pop("hang_at", None)
    config = TrainConfig(**{"progress": False, "device": "cpu", **spec})
    step_fn = make_step_fn(noisy, sleep, seen, hang_at)
    trainer = Trainer(make_model(noisy), step_fn, make_data(n_data), config, out_dir, resume=resume)
    summary = trainer.fit()
    if record:  # what this rank's step_fn saw, for the DDP test
        Path(out_dir, f"seen_rank{trainer.ctx.rank}.json").write_text(json.dumps(seen))
    if trainer.ctx.is_main:
        print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]))
