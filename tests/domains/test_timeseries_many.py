"""Issue 29: tables of many series train one network shared by the series (arch 'auto' -> gridnet on patches), mixed
in groups so that forecasting 10,000 series costs O(N), and the spread calibration fitted on a sample of them."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from gendiff.domains import timeseries
from gendiff.domains.timeseries.config import AUTO_PATCH, AUTO_SERIES, ModelConfig
from gendiff.domains.timeseries.sharednet import GridNet
from gendiff.errors import ConfigError

torch.set_num_threads(1)


def _net(group, seed=0):
    torch.manual_seed(seed)
    net = GridNet(1, 0, 0, width=8, mults=(1, 2), heads=2, mix_levels=1, mix_group=group).eval()
    for p in net.parameters():  # the mixing layers start at zero: give them weights so that mixing shows
        torch.nn.init.normal_(p, std=0.2)
    return net


def _inputs(n, length=8, batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n, length, generator=g)
    cond = {"seq": torch.randn(batch, 2 * n + 5, length, generator=g), "static": torch.zeros(1, n, 0)}
    return x, torch.rand(batch, generator=g), cond


def test_group_attention_equals_the_all_to_all_loop_when_one_group_holds_every_series():
    x, t, cond = _inputs(6)
    old, new = _net(None), _net(16)
    new.load_state_dict(old.state_dict())
    with torch.no_grad():
        assert torch.allclose(old(x, t, cond=cond), new(x, t, cond=cond), atol=1e-5)


def test_groups_mix_only_within_themselves_and_the_short_last_group_is_padded_out():
    n, group = 10, 4  # groups {0..3}, {4..7}, {8, 9}
    net = _net(group)
    x, t, cond = _inputs(n)
    with torch.no_grad():
        full = net(x, t, cond=cond)
        x2 = x.clone()
        x2[:, 5] += 3.0  # a series of the second group
        moved = net(x2, t, cond={**cond})
        assert torch.allclose(full[:, :4], moved[:, :4], atol=1e-6)  # the first group does not see it
        assert torch.allclose(full[:, 8:], moved[:, 8:], atol=1e-6)
        assert not torch.allclose(full[:, 4:8], moved[:, 4:8], atol=1e-4)  # its own group does
        alone = net(x[:, 8:], t, cond={"seq": torch.cat([cond["seq"][:, 8:10], cond["seq"][:, 10:15],
                                                        cond["seq"][:, 15 + 8:]], 1),
                                       "static": torch.zeros(1, 2, 0)})
        assert torch.allclose(full[:, 8:], alone, atol=1e-5)  # the padded last group is the pair on its own


def test_auto_arch_follows_the_number_of_series():
    auto = ModelConfig(arch="auto")
    small, why = auto.resolve_arch(AUTO_SERIES)
    assert small.arch == "unet1d" and "unet1d" in why
    big, why = auto.resolve_arch(AUTO_SERIES + 1)
    assert big.arch == "gridnet" and big.patch == AUTO_PATCH and "gridnet" in why
    with pytest.raises(ConfigError, match="arch='gridnet'"):
        ModelConfig(arch="auto", patch=8).resolve_arch(3)
    assert ModelConfig().resolve_arch(1000)[0].arch == "unet1d"  # gridded data keep the named arch


def many_series(n=70, length=160, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ds = pd.date_range("2022-01-01", periods=length, freq="h")
    rows = [pd.DataFrame({"unique_id": f"id{k:03d}", "ds": ds[k % 5:],
                          "y": k + np.sin(2 * np.pi * np.arange(k % 5, length) / 24) + rng.normal(0, .2, length - k % 5)})
            for k in range(n)]
    return pd.concat(rows, ignore_index=True)


def test_a_table_of_many_series_trains_one_shared_network_and_forecasts_every_series(tmp_path):
    df = many_series()
    out = tmp_path / "run"
    timeseries.train(df, out, max_steps=2, batch_size=4, net={"width": 8, "mults": [1]}, sample_steps=2,
                     progress=False, horizon=6, calibration=0.2, calibration_inits=40)
    config = json.loads((out / "config.json").read_text())
    assert config["arch"] == "gridnet" and config["locations"]["patch"] == AUTO_PATCH
    assert config["locations"]["pos_kind"] == "none" and config["net"]["mix_group"] == AUTO_PATCH
    assert config["defaults"]["arch"].startswith("gridnet: 70 features")
    calibration = json.loads((out / "calibration.json").read_text())
    assert len(calibration["inits"]) == 8 and calibration["members"] == 8  # many series: 8 inits x 64 series
    fc = timeseries.forecast(out, df, h=6, members=4, steps=2, progress=False)
    assert fc["unique_id"].nunique() == 70 and len(fc) == 70 * 6
    assert np.isfinite(fc["gendiff"]).all()


def test_a_table_of_few_series_trains_for_the_default_time_unless_told(tmp_path, monkeypatch):
    from gendiff.domains.timeseries import verbs
    seen = []
    monkeypatch.setattr(verbs, "_train", lambda ds, out, **config: seen.append(config) or {})
    df = many_series(n=3)
    timeseries.train(df, tmp_path / "a")
    assert seen[-1]["time_budget"] == verbs.TABLE_SECONDS and "max_steps" not in seen[-1]
    timeseries.train(df, tmp_path / "b", max_steps=7)
    assert seen[-1].get("time_budget") is None and seen[-1]["max_steps"] == 7
    timeseries.train(many_series(n=AUTO_SERIES + 1), tmp_path / "c")  # many series: the default steps
    assert seen[-1].get("time_budget") is None


def test_series_in_groups_go_through_the_network_in_chunks_with_the_same_result(monkeypatch):
    from gendiff.domains.timeseries import sharednet
    net = _net(4)
    x, t, cond = _inputs(22, batch=3)
    with torch.no_grad():
        whole = net(x, t, cond=cond)
        monkeypatch.setattr(sharednet, "CHUNK_SEQUENCES", 24)  # 3 windows x 8 series (two groups) per call
        chunked = net(x, t, cond=cond)
    assert torch.allclose(whole, chunked, atol=1e-5)
