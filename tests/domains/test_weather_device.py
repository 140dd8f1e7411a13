"""Weather on any device: a training step and a two-step forecast with every tensor on `meta` (any cross-device
operation raises, as on a GPU) and on CUDA where present; the core EDM preconditioning reproduces the domain's old
Preconditioned module; bf16 autocast and torch.compile agree with float32 eager on the CPU."""
import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from gendiff.device import make_generator
from gendiff.errors import DataError
from gendiff.forward import Denoiser, append_dims
from gendiff.losses import constant_weight, diffusion_loss
from gendiff.schedules import get_schedule, schedule_config
from gendiff.spaces import MaskedSpace
from gendiff.training import TrainConfig, Trainer
from gendiff.domains import weather
from gendiff.domains.timeseries.data import calendar_features
from gendiff.domains.timeseries.training import make_step_fn
from gendiff.domains.timeseries.forecasting import base_trajectory, rollout_tensor
from gendiff.domains.timeseries.model import (ARBase, HourlyClimatology, Run, WindowDataset, build_denoiser,
                                           compile_network, cond_channels, load_run, window_starts)
from gendiff.domains.timeseries.stream import fit_codec
from tests._device_check import VirtualDevice
from tests._devices import DEVICES, generator_for, materialize

torch.set_num_threads(1)
CTX, HOR = 4, 4  # steps of context and generated horizon (hourly data)
NET = {"width": 8, "mults": [1, 2], "blocks_per_level": 1, "heads": 2, "dropout": 0.0, "learned_skip": True}


def tiny_dataset(days=4, seed=0):
    rng = np.random.default_rng(seed)
    times = pd.date_range("2021-06-01", periods=24 * days, freq="1h")
    hour = np.asarray(times.hour)
    t2m = (15 + 5 * np.sin(2 * np.pi * (hour - 9) / 24)[:, None, None]
           + rng.normal(0, 0.5, (len(times), 2, 3))).astype(np.float32)
    t2m[:, 0, 0] = np.nan  # a never-valid point
    return xr.Dataset({"t2m": (("time", "latitude", "longitude"), t2m, {"units": "degC"})},
                      coords={"time": times, "latitude": [51.0, 50.0], "longitude": [0.0, 1.0, 2.0]})


def setup(sigma_data=None):
    """What weather.train builds, in memory: codec, climatology, AR base (with time-of-day factors), windows and the
    run config; the network's zero-initialised layers perturbed so that its output is not trivially zero."""
    ds = tiny_dataset()
    codec = fit_codec(ds)
    times = ds["time"].values
    idx = np.arange(len(times) - 24)
    values = codec.encode(ds)
    clim = HourlyClimatology.fit(values, times, idx)
    values = values - clim.at(times)
    starts = window_starts(len(times), idx, CTX + HOR, values, CTX)
    ar = ARBase.fit(values, idx, 2, starts, CTX, HOR, times, codec.sizes)
    sched = get_schedule("cosine")
    c = codec.num_features
    cfg = {"domain": "weather", "context_steps": CTX, "horizon_steps": HOR, "schedule": schedule_config(sched),
           "prediction": "x0", "precondition": True, "residual": True, "base": "linear", "day_of_year": False,
           "net": {**NET, "channels": c, "cond_channels": cond_channels(c), "known_in_cond": True},
           "codec": codec.to_config(), "sampler": "euler_maruyama", "sample_steps": 2, "source": "tiny",
           "train_period": ["a", "b"], "time_step_seconds": 3600.0}
    if sigma_data is not None:
        cfg["sigma_data"] = sigma_data
    torch.manual_seed(0)
    den = build_denoiser(cfg)
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        for p in den.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    dataset = WindowDataset(values, calendar_features(times, False), starts, CTX, HOR, base=ar, times=times)
    batch = torch.utils.data.default_collate([dataset[i] for i in range(8)])
    return {"ds": ds, "codec": codec, "clim": clim, "values": values, "times": times, "ar": ar, "cfg": cfg,
            "denoiser": den, "dataset": dataset, "batch": batch, "sched": sched}


def make_run(s, device="cpu", denoiser=None) -> Run:
    ar = ARBase.from_state(s["ar"].state())  # a copy: Run.to moves its AR base
    run = Run(Path("."), s["cfg"], s["codec"], copy.deepcopy(denoiser or s["denoiser"]), MaskedSpace(), s["clim"], ar)
    run.denoiser.eval().requires_grad_(False)
    return run.to(device)


INITS = np.array([30, 41])  # init indices (hours), each with CTX steps of context before it


# ---- 1. the core's EDM preconditioning is the old weather module ----------------------------------------------------

class OldPreconditioned(torch.nn.Module):
    """domains/weather/model.py's Preconditioned before the core had EDM preconditioning (re-derived here)."""

    def __init__(self, net, schedule, sigma_data=1.0):
        super().__init__()
        self.net, self.schedule, self.sigma_data = net, schedule, float(sigma_data)

    def forward(self, x_t, t, *, mask=None, cond=None):
        alpha, sigma = self.schedule.alpha_sigma(t)
        alpha, sigma = append_dims(alpha.to(x_t), x_t.dim()), append_dims(sigma.to(x_t), x_t.dim())
        sd2 = self.sigma_data ** 2
        norm = torch.sqrt(alpha ** 2 * sd2 + sigma ** 2)
        c_skip, c_out = alpha * sd2 / norm ** 2, sigma * self.sigma_data / norm
        return c_skip * x_t + c_out * self.net(x_t / norm, t, mask=mask, cond=cond)


def old_denoiser(new: Denoiser, sigma_data=1.0) -> Denoiser:
    return Denoiser(OldPreconditioned(copy.deepcopy(new.net), new.schedule, sigma_data), new.schedule,
                    prediction="x0", scale_input=False)


@pytest.mark.parametrize("sigma_data", [None, 0.5])
def test_core_preconditioning_is_the_old_module(sigma_data):
    s = setup(sigma_data)
    new, batch = s["denoiser"].eval(), s["batch"]
    old = old_denoiser(new, 1.0 if sigma_data is None else sigma_data).eval()
    assert new.precondition == "edm" and new.sigma_data == (sigma_data or 1.0)
    assert set(old.state_dict()) == {"net." + k for k in new.state_dict()}  # the old keys: net.net.*
    x0, mask, cond = batch["x0"], batch["mask"], batch["cond"]
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for t in (1e-3, 0.05, 0.3, 0.7, 0.99):
            tt = torch.full((x0.shape[0],), t)
            x_t = s["sched"].alpha_sigma(tt)[0][:, None, None] * x0 + s["sched"].alpha_sigma(tt)[1][:, None, None] \
                * torch.randn(x0.shape, generator=g)
            a, b = new.x0_eps(x_t, tt, mask=mask, cond=cond), old.x0_eps(x_t, tt, mask=mask, cond=cond)
            # same function of the same weights; float32 rounding of c_in x_t vs x_t / norm only
            torch.testing.assert_close(a[0], b[0], rtol=1e-6, atol=1e-6)
            assert not torch.allclose(a[0], torch.zeros_like(a[0]))
    # the training objective is still the plain x0 loss ||x0_hat - x0||^2 (the old Denoiser(prediction="x0") loss)
    kw = dict(mask=mask, cond=cond, t=torch.linspace(0.02, 0.98, x0.shape[0]),
              noise=torch.randn(x0.shape, generator=g))
    loss_new = diffusion_loss(new, x0, s["sched"], MaskedSpace(), weighting=constant_weight(), **kw)
    loss_old = diffusion_loss(old, x0, s["sched"], MaskedSpace(), **kw)
    # (x0 - c_skip x_t) / c_out, weighted by c_out^2: rounding in float32 amplified by 1/c_out at small t
    torch.testing.assert_close(loss_new, loss_old, rtol=1e-5, atol=1e-6)


def test_old_format_run_folders_give_one_line_retrain_error_and_resume_refuses_them(tmp_path):
    """Run folders of the weather format before the core one (codec.nc, climatology.pt, ar.pt, checkpoint.pt and a
    config.json without format 'gendiff-run-v1') are not unpickled: load_run says to retrain; resuming a checkpoint
    of the older network keys (net.net.*) is refused likewise."""
    s = setup()
    old = old_denoiser(s["denoiser"])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({**s["cfg"], "format": "gendiff-weather-v1"}))
    s["codec"].save(run_dir / "codec.nc")
    torch.save({"ema": old.state_dict(), "model": old.state_dict()}, run_dir / "checkpoint.pt")
    torch.save(s["clim"].state(), run_dir / "climatology.pt")
    torch.save(s["ar"].state(), run_dir / "ar.pt")
    with pytest.raises(DataError, match="gendiff-weather-v1.*older gendiff.*retrain") as err:
        load_run(run_dir)
    assert "\n" not in str(err.value) and str(run_dir / "config.json") in str(err.value)
    with pytest.raises(DataError, match="older gendiff.*retrain"):
        weather.train(s["ds"], run_dir, context="4h", horizon="4h", net=NET, max_steps=1, batch_size=4,
                      resume=True, progress=False, calibration=0.0)


# ---- 2-3. every tensor on the device --------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_training_step_on_device(device):
    s = setup()
    den = s["denoiser"].train().to(device)
    batch = {k: v.to(device) for k, v in s["batch"].items()}
    step_fn = make_step_fn(s["sched"], MaskedSpace(), context_noise=0.1, weighting=constant_weight())
    loss = step_fn(den, batch, generator_for(device))
    assert loss.shape == () and loss.device.type == torch.device(device).type
    loss.backward()
    torch.optim.AdamW(den.parameters(), lr=1e-3).step()
    grads = [p.grad for p in den.parameters()]
    assert all(g is not None and g.device.type == torch.device(device).type for g in grads)
    if materialize(loss) is not None:
        assert torch.isfinite(materialize(loss))
        assert all(torch.isfinite(materialize(g)).all() for g in grads)


@pytest.mark.parametrize("device", DEVICES)
def test_two_step_forecast_on_device(device):
    s = setup()
    run = make_run(s, device)
    assert run.device.type == torch.device(device).type and run.ar.phi.device.type == run.device.type
    n_lead = HOR + 2  # two chunks: the second conditions on generated context
    out = rollout_tensor(run, s["values"], s["times"], INITS, n_lead, 2, sampler="euler_maruyama", steps=2,
                         progress=False)
    assert out.shape == (len(INITS), 2, n_lead, s["codec"].num_features)
    assert out.device.type == torch.device(device).type
    vals = materialize(out)
    if vals is None:  # meta: shapes only, and the xarray conversion has no data to convert
        return
    valid = torch.from_numpy(s["codec"].valid)
    assert torch.isfinite(vals[..., valid]).all() and torch.isnan(vals[..., ~valid]).all()
    fc = weather.forecast(run, s["ds"], init_times=s["times"][INITS], members=2, lead=f"{n_lead}h", steps=2,
                          progress=False, calibrated=False, device=device)
    assert dict(fc.sizes) == {"init_time": 2, "member": 2, "lead_time": n_lead, "latitude": 2, "longitude": 3}
    assert fc.attrs["device"].startswith(torch.device(device).type) and fc["t2m"].isel(
        latitude=slice(1, None)).notnull().all()


def test_training_step_and_forecast_on_a_virtual_device():
    """The same two paths on tests._device_check.VirtualDevice: real values on the CPU, but any op mixing device
    tensors with CPU tensors raises (stricter than meta: also CPU indices into device tensors), so the results'
    values can be checked too."""
    s = setup()
    with VirtualDevice("meta") as check:
        den = copy.deepcopy(s["denoiser"]).train().to(check.device)
        batch = {k: v.to(check.device) for k, v in s["batch"].items()}
        step_fn = make_step_fn(s["sched"], MaskedSpace(), context_noise=0.1, weighting=constant_weight())
        loss = step_fn(den, batch, make_generator(check.device, 0))
        loss.backward()
        torch.optim.AdamW(den.parameters(), lr=1e-3).step()
        assert check.is_on_device(loss) and torch.isfinite(loss.cpu())
        run = make_run(s, check.device)
        out = rollout_tensor(run, s["values"], s["times"], INITS, HOR + 2, 2, sampler="euler_maruyama", steps=2,
                             progress=False)
        assert check.is_on_device(out) and out.shape == (len(INITS), 2, HOR + 2, s["codec"].num_features)
        vals = out.cpu()
    valid = torch.from_numpy(s["codec"].valid)
    assert torch.isfinite(vals[..., valid]).all() and torch.isnan(vals[..., ~valid]).all()


# ---- 4. bf16 autocast and torch.compile against float32 eager on the CPU --------------------------------------------
# Tolerances. bf16 keeps 8 significant bits: each autocast op (the U-Net's convolutions, linears and attention
# matmuls) rounds its inputs to a relative 2^-8 = 0.4 %; the longest chain through this tiny U-Net has ~20 of them,
# and independent roundings add up like a random walk: sqrt(20) * 2^-8 ~ 1.7 % of the network output F.
# - Forecast: the generated departures from the AR base are c_out F + (float32 terms), so at most ~1.7 %: bound 5 %
#   (measured 0.3 %; same seed, same draws).
# - Gradients (one vector, relative norm): the backward runs its own ~20 bf16 convolutions after the forward's,
#   sqrt(40) * 2^-8 ~ 2.5 %: bound 10 % (measured 2.9 %).
# - Loss mean((x0_hat - x0)^2): it moves by ~2 |c_out dF| / |x0_hat - x0| relative, well under 1.7 % since the
#   residual is much larger than c_out dF: bound 1 % (measured 0.014 %).
# bf16 must also differ from float32, and the probe must see bf16 activations (else the autocast never ran).
# torch.compile in float32 only fuses and reorders: a few ulp (float32 eps 1.2e-7) per op, accumulated over the
# forward, the backward and two sampler steps, stays far below 1e-5 relative (the bound; measured: aot_eager
# bit-identical, inductor 1e-7).
# Backends: the training step compiles with `aot_eager` (dynamo's capture and AOTAutograd's forward and backward
# graphs, as inductor gets them, run with eager kernels), because inductor's C++ builds of the forward and backward
# kernels cost ~2 minutes cold on two shared cores; the forecast compiles with inductor itself (the inference graph,
# ~18 kernels: ~40-80 s cold on two shared cores, ~5 s from inductor's on-disk cache).
BF16_LOSS, BF16_GRAD, BF16_OUT, COMPILE_REL = 1e-2, 1e-1, 5e-2, 1e-5


def _relative(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


def _counting(name):
    inner, graphs = torch._dynamo.lookup_backend(name), []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return inner(gm, example_inputs)

    return backend, graphs


def _bf16_probe(denoiser, seen):
    denoiser.net.inp.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    return denoiser


def _train_step(s, tmp_path, name, bf16=False, compile=False, probe=None):
    """One Trainer step (its autocast and backward) with the weather step_fn; returns (loss, flat gradient)."""
    cfg = TrainConfig(max_steps=1, batch_size=8, lr=1e-3, grad_clip=None, device="cpu", bf16=bf16, progress=False)
    den = copy.deepcopy(s["denoiser"]).train()
    if probe is not None:
        _bf16_probe(den, probe)
    trainer = Trainer(den, make_step_fn(s["sched"], MaskedSpace(), 0.1, constant_weight()), s["dataset"], cfg,
                      tmp_path / name)
    if compile:
        compile_network(trainer.model, compile)  # what weather.train(compile=...) does, after the Trainer is built
    loss = trainer.train_step(iter([s["batch"]]))
    return loss, torch.cat([p.grad.flatten() for p in trainer.model.parameters()])


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_bf16_and_compile_training_step_match_float32(tmp_path, fresh_dynamo):
    s = setup()
    loss32, grad32 = _train_step(s, tmp_path, "fp32")
    seen = []
    loss16, grad16 = _train_step(s, tmp_path, "bf16", bf16=True, probe=seen)
    backend, graphs = _counting("aot_eager")
    loss_c, grad_c = _train_step(s, tmp_path, "compiled", compile=backend)
    assert np.isfinite(loss32) and grad32.norm() > 0
    assert seen == [torch.bfloat16] and loss16 != loss32 and grad16.dtype == torch.float32
    assert abs(loss16 - loss32) / loss32 < BF16_LOSS and _relative(grad16, grad32) < BF16_GRAD
    assert graphs, "the compiled network never ran"
    assert abs(loss_c - loss32) / loss32 < COMPILE_REL and _relative(grad_c, grad32) < COMPILE_REL


def test_bf16_and_compile_forecast_match_float32(fresh_dynamo):
    s = setup()
    kw = dict(sampler="euler_maruyama", steps=2, progress=False, seed=3)
    args = (s["values"], s["times"], INITS, HOR, 2)
    run = make_run(s)
    ref = rollout_tensor(run, *args, **kw)
    seen = []
    _bf16_probe(run.denoiser, seen)
    low = rollout_tensor(run, *args, bf16=True, **kw)  # what weather.forecast(bf16=True) runs
    assert seen and set(seen) == {torch.bfloat16}
    backend, graphs = _counting("inductor")
    compiled = make_run(s)
    compile_network(compiled.denoiser, backend)  # what weather.forecast(compile=...) does
    comp = rollout_tensor(compiled, *args, **kw)
    assert graphs, "the compiled network never ran"
    valid = torch.from_numpy(s["codec"].valid)
    base = torch.from_numpy(base_trajectory(run, s["values"], INITS, HOR))[:, None][..., valid]
    ref, low, comp = ref[..., valid] - base, low[..., valid] - base, comp[..., valid] - base  # generated departures
    assert torch.isfinite(ref).all() and not torch.equal(low, ref)
    assert _relative(low, ref) < BF16_OUT
    assert _relative(comp, ref) < COMPILE_REL


def test_train_and_forecast_options(tmp_path, fresh_dynamo):
    """device / bf16 / compile through weather.train and weather.forecast (aot_eager: see the note above)."""
    from gendiff.errors import ConfigError

    ds = tiny_dataset()
    kw = dict(context="4h", horizon="4h", net=NET, max_steps=2, batch_size=4, sample_steps=2, progress=False)
    with pytest.raises(ConfigError, match="tpu"):
        weather.train(ds, tmp_path / "bad", device="tpu", **kw)
    with pytest.raises(ConfigError, match="compile"):
        weather.train(ds, tmp_path / "bad", compile=3, **kw)
    assert not (tmp_path / "bad").exists()
    summary = weather.train(ds, tmp_path / "run", device="cpu", bf16=True, compile="aot_eager", calibration=0.25,
                            **kw)
    assert summary["step"] == 2 and np.isfinite(summary["loss"]) and "calibration" in summary
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["train"]["bf16"] is True and cfg["train"]["device"] == "cpu"
    assert set(torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["ema"]) == set(
        build_denoiser(cfg).state_dict())  # compiled in place: the keys of an eager network
    fc = weather.forecast(tmp_path / "run", ds, init_times=ds["time"].values[[40, 60]], members=2, lead="6h",
                          device="cpu", bf16=True, compile="aot_eager", progress=False, allow_in_sample=True)
    assert fc.attrs["device"] == "cpu" and fc.attrs["bf16"] == 1 and fc.attrs["compiled"] == 1
    assert fc["t2m"].isel(latitude=slice(1, None)).notnull().all()
