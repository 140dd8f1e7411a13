"""Images domain with a learned reverse variance (Improved DDPM, `--learn-sigma`): a tiny run on sklearn's 8x8
digits trained through the CLI, reloaded from its folder, sampled (ancestral on a strided grid, DDIM) and scored
(bits/dim); the U-Net's 2C outputs and the hybrid loss's gradient on the variance head."""
from __future__ import annotations

import argparse
import json
import math

import pytest
import torch

from gendiff.domains import images
from gendiff.domains.images import cli
from gendiff.domains.images.api import build_denoiser, make_step_fn
from gendiff.domains.images.data import load_data, to_model
from gendiff.domains.images.evaluate import bits_per_dim
from gendiff.errors import ConfigError

torch.set_num_threads(1)
TINY = dict(ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), groups=8, dropout=0.0)
TINY_ARGS = ["--ch", "16", "--ch-mult", "1,2", "--num-res-blocks", "1", "--attn", "4", "--groups", "8",
             "--dropout", "0"]


def _cli(verb: str, argv: list[str]) -> int:
    add, run_fn = cli.VERBS[verb]
    parser = argparse.ArgumentParser()
    add(parser)
    return run_fn(parser.parse_args(argv))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("images_ls") / "run"
    assert _cli("train", ["--data", "digits", "--out", str(out), *TINY_ARGS, "--learn-sigma", "--steps", "8",
                          "--batch-size", "32", "--lr", "2e-3", "--quiet"]) == 0
    return out


def test_config_stores_learn_sigma_and_reloads(run):
    meta = json.loads((run / "config.json").read_text())
    assert meta["denoiser"]["learn_sigma"] is True and meta["model"]["out_channels"] == 2 * meta["channels"]
    card = json.loads((run / "card.json").read_text())
    assert card["training"]["steps"] == 8
    denoiser, meta2 = images.load_run(run, device="cpu")
    assert meta2 == meta and denoiser.learn_sigma and not denoiser.training
    x = torch.randn(3, 1, 8, 8)
    t = torch.tensor([0.1, 0.5, 0.9])
    with torch.no_grad():
        raw = denoiser(x, t, cond=torch.tensor([0, 1, 10]), output="raw")
        assert raw.shape == (3, 2, 8, 8)  # 2C channels: the eps prediction, then v
        x0, eps, frac = denoiser.x0_eps_v(x, t, cond=torch.tensor([0, 1, 10]))
    assert eps.shape == x.shape and frac.shape == x.shape
    assert torch.all((frac >= 0) & (frac <= 1)) and torch.isfinite(x0).all()


def test_v_head_starts_at_zero():
    """A fresh learn_sigma U-Net's output conv is zero: v = 0 (frac 1/2, halfway between beta~ and beta)."""
    data = load_data("digits", "train")
    meta = images.api.run_config(data, "digits", model=TINY, schedule=_linear(), prediction="eps",
                                 p_uncond=0.1, seed=0, test_fraction=0.2, learn_sigma=True)
    denoiser, _ = build_denoiser(meta)
    with torch.no_grad():
        _, _, frac = denoiser.x0_eps_v(torch.randn(2, 1, 8, 8), torch.tensor([0.3, 0.8]))
    assert torch.allclose(frac, torch.full_like(frac, 0.5))
    fixed = images.api.run_config(data, "digits", model=TINY, schedule=_linear(), prediction="eps", p_uncond=0.1,
                                  seed=0, test_fraction=0.2)
    assert fixed["denoiser"]["learn_sigma"] is False and fixed["model"]["out_channels"] is None


def _linear():
    from gendiff.schedules import get_schedule

    return get_schedule("linear")


def test_sample_ancestral_strided_and_ddim(run):
    loaded = images.load_run(run, device="cpu")
    anc = images.sample(loaded, n=6, sampler="ancestral", steps=10, labels="balanced", guidance=2.0, seed=0)
    assert anc.shape == (6, 1, 8, 8) and anc.dtype == torch.uint8
    fixed = images.sample(loaded, n=6, sampler="ancestral", steps=10, labels="balanced", guidance=2.0, seed=0,
                          variance="posterior")
    assert not torch.equal(anc, fixed)  # the default for this model is its learned variance, not beta~
    ddim = images.sample(loaded, n=6, sampler="ddim", steps=10, labels="balanced", seed=0)
    assert ddim.shape == (6, 1, 8, 8) and ddim.dtype == torch.uint8


def test_bits_per_dim_uses_learned_variance(run):
    denoiser, meta = images.load_run(run, device="cpu")
    test = load_data(meta["data"], "test", image_size=meta["image_size"], seed=meta["seed"],
                     test_fraction=meta["test_fraction"])
    bpd = bits_per_dim(denoiser, test, 8)
    assert math.isfinite(bpd) and 0 < bpd < 100


def test_hybrid_loss_trains_the_variance_head():
    """On a fixed batch (fixed t and noise), the step function's hybrid loss is finite, its L_vlb part gives the
    v channels of the output conv a gradient, and a few Adam steps lower that L_vlb part."""
    from gendiff.losses import diffusion_loss, hybrid_loss
    from gendiff.spaces import EuclideanSpace

    torch.manual_seed(0)
    data = load_data("digits", "train")
    sched = _linear()
    meta = images.api.run_config(data, "digits", model=TINY, schedule=sched, prediction="eps", p_uncond=0.1,
                                 seed=0, test_fraction=0.2, learn_sigma=True)
    denoiser, sched = build_denoiser(meta)
    x0, labels = to_model(data.images[:32]), data.labels[:32]
    step = make_step_fn(sched, 10, 0.1, learn_sigma=True)
    loss = step(denoiser, (x0, labels), torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
    loss.backward()
    g = denoiser.net.conv_out.weight.grad
    assert g[1:].abs().sum() > 0  # the v channel's weights learn
    with pytest.raises(ConfigError):
        make_step_fn(sched, 10, 0.1, learn_sigma=True)(build_denoiser({**meta, "denoiser": {
            **meta["denoiser"], "learn_sigma": False}, "model": {**meta["model"], "out_channels": None}})[0],
            (x0, labels), torch.Generator().manual_seed(0))

    space = EuclideanSpace()
    gen = torch.Generator().manual_seed(1)
    t = sched.sample_t(32, generator=gen)
    noise = torch.randn(x0.shape, generator=gen)

    def vb_part():
        kw = dict(cond=labels, t=t, noise=noise)
        return (hybrid_loss(denoiser, x0, sched, space, decoder="discretized", **kw)
                - diffusion_loss(denoiser, x0, sched, space, **kw)).mean()

    opt = torch.optim.Adam(denoiser.parameters(), lr=1e-3)
    with torch.no_grad():
        before = float(vb_part())
    for _ in range(10):
        opt.zero_grad()
        kw = dict(cond=labels, t=t, noise=noise)
        hybrid_loss(denoiser, x0, sched, space, decoder="discretized", **kw).mean().backward()
        opt.step()
    with torch.no_grad():
        after = float(vb_part())
    assert math.isfinite(before) and after < before


def test_resume_refuses_other_variance(run, tmp_path):
    with pytest.raises(ConfigError, match="model|denoiser"):
        images.train(data="digits", out=run, model=TINY, max_steps=9, batch_size=32, progress=False, resume=True)
