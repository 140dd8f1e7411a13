"""Validation during time-series training: the windows of the held-out calibration period score the EMA network
every validate_every steps, and the run keeps the weights of the best one (gendiff.validation)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch

from gendiff.domains import timeseries

torch.set_num_threads(1)


def _series(n: int = 600) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    t = pd.date_range("2001-01-01", periods=n, freq="D")
    y = 10 + np.sin(2 * np.pi * np.arange(n) / 7) + np.cumsum(rng.normal(0, 0.2, n))
    return pd.DataFrame({"y": y}, index=pd.DatetimeIndex(t, name="time"))


def test_training_validates_on_the_held_out_windows_and_keeps_the_best(tmp_path):
    df = _series()
    out = tmp_path / "run"
    summary = timeseries.train(df, out, context=28, horizon=7, max_steps=60, validate_every=20, batch_size=8,
                               net={"width": 8, "mults": [1]}, sample_steps=2, progress=False, calibration=0.25,
                               calibration_inits=4)
    val = summary["validation"]
    assert val["validations"] == 3 and val["best_step"] in (20, 40, 60)
    card = json.loads((out / "card.json").read_text())
    assert card["validation"]["curve"] == val["curve"] and card["train_config"]["validate_every"] == 20
    assert (out / "validation.csv").is_file()
    losses = [v for _, v in val["curve"]]
    assert all(np.isfinite(losses)) and abs(val["best_val_loss"] - min(losses)) < 1e-5


def test_validation_off_trains_as_before(tmp_path):
    summary = timeseries.train(_series(), tmp_path / "run", context=28, horizon=7, max_steps=20, validate_every=0,
                               batch_size=8, net={"width": 8, "mults": [1]}, sample_steps=2, progress=False,
                               calibration=0.25, calibration_inits=4)
    assert "validation" not in summary and not (tmp_path / "run" / "validation.csv").exists()


def test_resume_refuses_another_base(tmp_path):
    """Resuming with other seasons (another AR base) would train the checkpoint's network on another target."""
    import pytest

    from gendiff.errors import ConfigError

    df, out = _series(), tmp_path / "run"
    kw = dict(context=28, horizon=7, batch_size=8, net={"width": 8, "mults": [1]}, sample_steps=2, progress=False,
              calibration=0.25, calibration_inits=4, validate_every=0)
    timeseries.train(df, out, max_steps=4, seasons="none", **kw)
    with pytest.raises(ConfigError, match="another target.*ar_seasons"):
        timeseries.train(df, out, max_steps=8, seasons=[7], resume=True, **kw)
    summary = timeseries.train(df, out, max_steps=8, seasons="none", resume=True, **kw)  # the same base: resumes
    assert summary["step"] == 8
