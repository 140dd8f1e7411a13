"""Images domain off the CPU, and its bf16 / compile options on it.

Device tests run on `meta` (no data, but any cross-device operation raises, as it would on a GPU) and on CUDA where
present (tests/_devices.py): a training step (the domain's make_step_fn loss, backward, AdamW) and two-step guided
samples through the domain's sample_x0; all of `sample`, pixels included, runs on tests/_device_check.py's virtual
device. Then, on the CPU, one training step through `train(bf16=..., compile=...)` and one sample through
`sample(bf16=..., compile=...)`, each against float32 eager.
"""
from __future__ import annotations

import argparse
import copy
import shutil

import pytest
import torch

from gendiff.device import make_generator
from gendiff.domains.images import api, cli
from gendiff.domains.images.unet import UNetConfig
from gendiff.errors import ConfigError
from gendiff.schedules import get_schedule, schedule_config
from tests._devices import DEVICES, generator_for, materialize

torch.set_num_threads(1)
K, RES = 10, 8  # class-conditional (10 classes + the null class), 8x8 grey images: sklearn's digits
TINY = dict(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), groups=4, dropout=0.0)
META = {"model": UNetConfig(in_channels=1, resolution=RES, num_classes=K, **TINY).to_dict(),
        "schedule": schedule_config(get_schedule("linear")), "prediction": "eps", "channels": 1, "image_size": RES}


def _denoiser(device="cpu", seed=0):
    """The domain's Denoiser(UNet) for META with every weight perturbed: a fresh U-Net's zero-initialised output
    layers would make its output 0 and its gradients vanish everywhere but the last layer."""
    torch.manual_seed(seed)
    denoiser, _ = api.build_denoiser(META)
    with torch.no_grad():
        for p in denoiser.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return denoiser.to(device)


def _rel(a, b) -> float:
    """Norm-wise relative difference |a - b| / |b| over a tensor or a list of tensors."""
    a, b = (torch.cat([t.reshape(-1) for t in v]) if isinstance(v, (list, tuple)) else v for v in (a, b))
    return float((a.double() - b.double()).norm() / b.double().norm())


# ---- devices: meta (and CUDA where present) -----------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
def test_training_step_on_device(device):
    denoiser = _denoiser(device).train()
    step_fn = api.make_step_fn(denoiser.schedule, K, p_uncond=0.5)
    x0 = torch.randn(4, 1, RES, RES, device=device, generator=generator_for(device))
    labels = torch.tensor([0, 3, -1, 9], device=device)  # -1: an unlabelled image, trained as the null class
    opt = torch.optim.AdamW(denoiser.parameters(), lr=1e-3)
    loss = step_fn(denoiser, (x0, labels), make_generator(device, 0))
    loss.backward()
    opt.step()
    assert loss.shape == () and loss.device.type == torch.device(device).type
    grads = [p.grad for p in denoiser.parameters()]
    assert all(g is not None and g.device.type == torch.device(device).type for g in grads)
    if materialize(loss) is not None:
        assert torch.isfinite(materialize(loss)) and all(torch.isfinite(materialize(g)).all() for g in grads)
        assert sum(float(materialize(g).abs().sum()) for g in grads) > 0


@pytest.mark.parametrize("sampler", ["ddim", "dpm_solver_pp", "ancestral"])
@pytest.mark.parametrize("device", DEVICES)
def test_guided_sample_on_device(device, sampler):
    denoiser = _denoiser(device).eval()
    gen = make_generator(device, 0)
    x_T = api.prior_noise(denoiser, (4, 1, RES, RES), gen)
    labels = api.resolve_labels("balanced", 4, K)  # made on the CPU; sample_x0 moves them to x_T's device
    x0 = api.sample_x0(denoiser, x_T, sampler, 2, labels=labels, guidance=3.0, generator=gen)
    assert x0.shape == (4, 1, RES, RES) and x0.device.type == torch.device(device).type
    if materialize(x0) is not None:
        assert torch.isfinite(materialize(x0)).all()
        assert materialize(x0).abs().max() <= 1.0  # clip=True clamps every x0 prediction to the pixel range


@pytest.mark.parametrize("device", [d for d in DEVICES if torch.device(d).type != "meta"])
def test_sample_pixels_come_back_to_the_cpu(device):
    pixels = api.sample((_denoiser(device).eval(), META), n=4, steps=2, guidance=2.0, labels="balanced")
    assert pixels.shape == (4, 1, RES, RES) and pixels.dtype == torch.uint8 and pixels.device.type == "cpu"


@pytest.mark.parametrize("sampler", ["ddim", "ancestral"])
def test_whole_sample_on_a_virtual_device(sampler):
    """All of `sample` (prior noise, labels, guidance, pixels, the copy back) with real data on a device where any
    cross-device op raises (tests/_device_check.py); its ops run on the CPU, so the pixels equal a CPU run's."""
    from tests._device_check import VirtualDevice

    kw = dict(n=4, sampler=sampler, steps=2, guidance=2.0, labels="balanced", seed=3)
    ref = api.sample((_denoiser().eval(), META), **kw)
    with VirtualDevice() as dev:
        denoiser = _denoiser().eval()
        pixels = api.sample((denoiser, META), device=dev.device, **kw)  # a pair is moved to `device`
        assert all(dev.is_on_device(p) for p in denoiser.parameters())
        assert not dev.is_on_device(pixels) and dev.ops_seen > 0
    assert pixels.dtype == torch.uint8 and torch.equal(pixels, ref)


def test_every_computing_verb_takes_device(tmp_path):
    for name, (add, _) in cli.VERBS.items():
        parser = argparse.ArgumentParser()
        add(parser)
        assert "--device" in parser._option_string_actions, name
    with pytest.raises(ConfigError, match="device='tpu'"):
        api.train("digits", tmp_path / "run", device="tpu", progress=False)
    with pytest.raises(ConfigError, match="compile"):
        api.train("digits", tmp_path / "run", compile=3, progress=False)
    assert not (tmp_path / "run").exists()  # both refused before anything was read or written


# ---- bf16 and torch.compile, through the domain's own options, against float32 eager on the CPU -------------------
# Tolerances. bf16 keeps 8 significant bits: every autocast op (conv, linear, attention matmul) rounds its inputs to
# a relative 2^-8 ~ 0.4%. The tiny U-Net's longest chain has ~36 of them (conv_in, 2 convs per ResBlock, 4 per
# attention block, down / up sampling, conv_out; fewer through the residual paths), and independent roundings grow
# like a random walk: sqrt(36) * 2^-8 ~ 2.3% of the network output expected (1.2% measured). Quantities linear in
# that output get a 5% bound, norm-wise: the gradients, and a 4-step DDIM sample without clipping (same seed and
# x_T; clamping x0 is not smooth, so one rounding could move a value across its edge). The loss mean((pred-eps)^2)
# moves by at most 2 |d pred| / |pred - eps| relative, and here |pred| ~ 0.16 |pred - eps| (perturbed weights), so
# 2 * 2.3% * 0.16 ~ 0.7%: bound 1%. bf16 must also *differ* from float32, else the autocast never ran.
# torch.compile in float32 only reorders and fuses operations: a few ulp (1.2e-7) per op, accumulated over the
# forward, backward and 4 sampler steps, stays well under 1e-5 relative. With inductor, compiling the tiny U-Net
# here costs ~80 s (sampling) + ~110 s (training) of C++ kernel builds with a cold cache (2 shared cores), far over
# this file's budget; so these tests use the `aot_eager` backend: the same dynamo graph capture and AOTAutograd
# forward / backward graphs (in-place ops functionalised), run with eager kernels (~20 s for both). A counting
# wrapper proves that graphs were captured, i.e. that the compiled module really ran.
BF16_LOSS, BF16_OUT, COMPILE_REL = 1e-2, 5e-2, 1e-5


def _counting_backend(name="aot_eager"):
    inner, graphs = torch._dynamo.lookup_backend(name), []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return inner(gm, example_inputs)

    return backend, graphs


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture(scope="module")
def warm_run(tmp_path_factory):
    """A one-step digits run whose checkpoint weights are then perturbed (see _denoiser): the step these tests
    take from it has non-vanishing gradients in every layer. beta1 = 0 makes AdamW's exp_avg the last gradient."""
    root = tmp_path_factory.mktemp("images_device")
    kw = dict(data="digits", model=TINY, batch_size=16, lr=1e-3, betas=(0.0, 0.999), grad_clip=None, warmup_steps=0,
              log_every=1, progress=False, device="cpu", seed=0)
    api.train(out=root / "warm", max_steps=1, **kw)
    path = root / "warm" / "checkpoint.pt"
    state = torch.load(path, weights_only=False)
    gen = torch.Generator().manual_seed(1)
    for v in state["model"].values():
        if v.is_floating_point():
            v.add_(0.05 * torch.randn(v.shape, generator=gen))
    torch.save(state, path)
    return root, kw


def _second_step(warm_run, name, **options):
    """(loss, gradients) of step 2 of a copy of the warm run, trained by api.train with `options`."""
    root, kw = warm_run
    shutil.copytree(root / "warm", root / name)
    summary = api.train(out=root / name, max_steps=2, resume=True, **kw, **options)
    assert summary["step"] == 2 and summary["resumed_from"] == 1
    state = torch.load(root / name / "checkpoint.pt", weights_only=False)["optimizer"]["state"]
    return summary["loss"], [state[i]["exp_avg"] for i in sorted(state)]


@pytest.fixture(scope="module")
def eager_step(warm_run):
    return _second_step(warm_run, "eager")


def test_train_bf16_step_matches_float32(warm_run, eager_step):
    loss, grads = _second_step(warm_run, "bf16", bf16=True)
    ref_loss, ref_grads = eager_step
    assert 0 < abs(loss - ref_loss) <= BF16_LOSS * ref_loss
    assert 0 < _rel(grads, ref_grads) <= BF16_OUT


def test_train_compile_step_matches_eager(warm_run, eager_step, fresh_dynamo):
    backend, graphs = _counting_backend()
    loss, grads = _second_step(warm_run, "compiled", compile={"backend": backend})
    assert graphs, "train(compile=...) captured no graph: the U-Net ran eagerly"
    ref_loss, ref_grads = eager_step
    assert abs(loss - ref_loss) <= COMPILE_REL * ref_loss
    assert _rel(grads, ref_grads) <= COMPILE_REL


SAMPLE = dict(n=8, sampler="ddim", steps=4, guidance=2.0, seed=0, labels="balanced", pixels=False)


def test_sample_bf16_matches_float32():
    denoiser = _denoiser().eval()
    ref = api.sample((denoiser, META), clip=False, **SAMPLE)
    out = api.sample((denoiser, META), clip=False, bf16=True, **SAMPLE)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert 0 < _rel(out, ref) <= BF16_OUT
    clipped = api.sample((denoiser, META), bf16=True, **SAMPLE)  # the default path: x0 clamped to [-1, 1]
    assert torch.isfinite(clipped).all() and clipped.abs().max() <= 1.0


def test_sample_compile_matches_eager(fresh_dynamo):
    denoiser = _denoiser().eval()
    ref = api.sample((copy.deepcopy(denoiser), META), **SAMPLE)
    backend, graphs = _counting_backend()
    out = api.sample((denoiser, META), compile={"backend": backend}, **SAMPLE)
    assert graphs, "sample(compile=...) captured no graph: the U-Net ran eagerly"
    assert _rel(out, ref) <= COMPILE_REL
    n = len(graphs)
    api.sample((denoiser, META), compile={"backend": backend}, **SAMPLE)  # compiled once, in place: no recompile
    assert len(graphs) == n
