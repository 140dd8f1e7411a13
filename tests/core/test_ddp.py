"""DDP: two gloo processes under torchrun, each on half the global batch, match one process on the full batch."""
import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from gendiff.training import TrainConfig, Trainer

SCRIPT = Path(__file__).with_name("_train_script.py")
_spec = importlib.util.spec_from_file_location("gendiff_train_script", SCRIPT)
script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(script)

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs gloo")
# accumulate=2 exercises no_sync on the first micro-batch; 40 = 2.5 global batches of 16, so epochs drop a remainder
SPEC = dict(max_steps=12, batch_size=16, accumulate=2, log_every=3, ckpt_every=5, warmup_steps=3, ema_decay=0.9,
            grad_clip=1.0, lr=1e-2, seed=7, n_data=40, record=True)


def test_two_gloo_ranks_match_one_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           str(SCRIPT), str(tmp_path / "ddp"), json.dumps(SPEC)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = script.main(str(tmp_path / "single"), SPEC)
    finally:
        torch.set_num_threads(threads)

    ddp = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)
    single = torch.load(tmp_path / "single" / "checkpoint.pt", weights_only=True)
    assert ddp["step"] == single["step"] == 12 and ddp["data_position"] == single["data_position"]
    assert ddp["world_size"] == 2 and len(ddp["rng"]) == 2
    assert not torch.equal(ddp["rng"][0]["generator"], ddp["rng"][1]["generator"])  # ranks draw independent noise
    # Each rank averages over 8 samples, DDP then averages the two ranks: the same mean gradient as one
    # process over 16, summed in a different order, so float32 rounding differs by ~1e-7 relative per step.
    # Adam's update m/sqrt(v) is scale-free, so these errors stay at lr * 1e-7-ish per step: 1e-6 is ample,
    # while a wrong shard, a missing all-reduce or a doubled gradient moves parameters by ~1e-3 here.
    for key in ("model", "ema"):
        for name, value in single[key].items():
            torch.testing.assert_close(ddp[key][name], value, atol=1e-6, rtol=1e-5, msg=f"{key}.{name}")
    for pid, st in single["optimizer"]["state"].items():
        torch.testing.assert_close(ddp["optimizer"]["state"][pid]["exp_avg"], st["exp_avg"], atol=1e-6, rtol=1e-5)
    seen = [json.loads((tmp_path / d / f"seen_rank{r}.json").read_text())
            for d, r in (("ddp", 0), ("ddp", 1), ("single", 0))]
    assert len(seen[0]) == len(seen[1]) == len(seen[2]) == 24  # 12 steps x 2 micro-batches
    for r0, r1, full in zip(*seen):  # each rank got its half of the same global micro-batch
        assert r0[0] == r1[0] == 8 and full[0] == 16 and r0[1] + r1[1] == pytest.approx(full[1], abs=1e-4)
        assert r0[1] != pytest.approx(r1[1])
    with open(tmp_path / "ddp" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [3, 6, 9, 12]  # written by rank 0 only
    assert float(rows[-1]["loss"]) == pytest.approx(summary["loss"], rel=1e-4)  # logged loss is the rank mean

    shutil.copytree(tmp_path / "ddp", tmp_path / "resumed")
    with pytest.warns(UserWarning, match="written by 2 process"):  # a 2-rank checkpoint resumes on one process
        fields = {k: v for k, v in SPEC.items() if k not in ("n_data", "record")}
        config = TrainConfig(**{**fields, "max_steps": 14, "progress": False, "device": "cpu"})
        trainer = Trainer(script.make_model(False), script.make_step_fn(False), script.make_data(40), config,
                          tmp_path / "resumed", resume=True)
    assert trainer.fit()["step"] == 14
