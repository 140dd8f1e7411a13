"""The molecules domain on any device, and its bf16 and torch.compile paths.

Device bugs without a GPU: the graph code reads values (number of graphs = int(batch.max()) + 1, edge lists from the
batch vector, bincount), which the meta device cannot run. These tests run it on tests._device_check.VirtualDevice
instead: the data stay real, on the CPU, tensors on the (virtual) 'meta' device are tracked, and any op that mixes
them with CPU tensors of dim > 0 raises as a real cross-device op does. Because the data are real, results on the
virtual device must equal the CPU's bit for bit (same kernels, same draws: make_generator gives meta a CPU
generator). Where CUDA is present the same tests run the plain real-device path on it (tests._devices.DEVICES;
GENDIFF_TEST_DEVICES=cuda, as tests/test_cuda.py sets it, runs only those and skips the CPU-only checks).

bf16 and compile: one training step and one short sample of the default denoiser (EGNN), CPU, against float32
eager, through the domain's own paths (Trainer with bf16=True, build_denoiser/load_run/sample with compile=...).
"""
import argparse
import contextlib
import copy
import inspect
import time

import pytest
import torch

from gendiff.device import make_generator, resolve_device
from gendiff.domains import molecules
from gendiff.domains.molecules import egnn
from gendiff.domains.molecules.cli import VERBS
from gendiff.domains.molecules.data import QM9Dataset, molecule_to_data
from gendiff.domains.molecules.model import (
    STATE_DIM, AtomCountDistribution, build_denoiser, make_step_fn, sample_molecules,
)
from gendiff.schedules import get_schedule
from gendiff.training import TrainConfig, Trainer
from tests._device_check import CrossDeviceError, VirtualDevice
from tests._devices import DEVICES

torch.set_num_threads(1)

KINDS = ["egnn", "e3nn"]
CASES = ["virtual" if torch.device(d).type == "meta" else d for d in DEVICES]  # meta -> the virtual device
CPU_CHECKS = pytest.mark.skipif("meta" not in DEVICES, reason="GENDIFF_TEST_DEVICES leaves out the CPU-side checks")
TINY = {"egnn": dict(hidden_nf=16, n_layers=2),
        "e3nn": dict(mul_scalars=4, mul_vectors=2, n_layers=1, radial_hidden=8)}
METHANE = ([6, 1, 1, 1, 1], [[0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63], [-0.63, 0.63, -0.63],
                             [0.63, -0.63, -0.63]])
WATER = ([8, 1, 1], [[0, 0, 0.12], [0, 0.76, -0.47], [0, -0.76, -0.47]])
U = 2.0**-8  # bfloat16 unit roundoff: 8 significant bits (7 stored), so each rounding is off by <= 2^-8 relatively


def toy_molecules(n=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    mols = []
    for k in range(n):
        z, pos = METHANE if k % 2 == 0 else WATER
        pos = torch.tensor(pos) + 0.05 * torch.randn(len(z), 3, generator=gen) + torch.randn(3, generator=gen)
        mols.append(molecule_to_data(z, pos))
    return mols


@contextlib.contextmanager
def on_device(case):
    """(device, check): the virtual device and its checker, or a real device and None."""
    if case == "virtual":
        with VirtualDevice("meta") as check:
            yield check.device, check
    else:
        yield resolve_device(case), None


def net(kind):
    torch.manual_seed(0)
    return build_denoiser(kind, get_schedule("polynomial"), net=TINY[kind])


def rel_err(a, b) -> float:
    """||a - b|| / ||b|| over all entries (lists of tensors are concatenated)."""
    if isinstance(a, (list, tuple)):
        a, b = torch.cat([x.flatten() for x in a]), torch.cat([x.flatten() for x in b])
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.fixture(scope="module")
def egnn_run(tmp_path_factory):
    """A tiny EGNN run trained for two steps on the CPU (the public load_run / sample paths need one)."""
    run = tmp_path_factory.mktemp("egnn_run")
    molecules.train(data=toy_molecules(8), model="egnn", out=run, max_steps=2, batch_size=8, lr=1e-3,
                    progress=False, device="cpu", hidden=16, layers=1)
    return run


# ---- the domain on a device ------------------------------------------------------------------------------------
def _train_step(denoiser, batch, device):
    model = copy.deepcopy(denoiser).to(device)
    loss = make_step_fn(model.schedule)(model, batch, make_generator(device, 0))
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    torch.optim.AdamW(model.parameters(), lr=1e-3).step()
    return model, loss, grads


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("kind", KINDS)
def test_training_step_on_device(kind, case):
    """make_step_fn's loss on a batch, backward and an AdamW step, all on the device."""
    denoiser = net(kind)
    batch = QM9Dataset.collate_fn(toy_molecules(6))
    with on_device(case) as (device, check):
        model, loss, grads = _train_step(denoiser, batch, device)
        assert loss.device == device and loss.dim() == 0 and torch.isfinite(loss)
        assert all(g.device == device for g in grads) and all(p.device == device for p in model.parameters())
        loss_value, grads = float(loss.detach()), [g.cpu() for g in grads]
    assert batch.pos.device.type == "cpu" and batch.batch.device.type == "cpu", "step_fn moved the caller's batch"
    if check is not None:
        assert check.ops_seen > 300, "the check saw too few ops to have looked at the step"
        _, loss_cpu, grads_cpu = _train_step(denoiser, batch, torch.device("cpu"))
        assert loss_value == float(loss_cpu.detach()) and all(torch.equal(a, b) for a, b in zip(grads, grads_cpu))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("sampler", ["ancestral", "heun"])
@pytest.mark.parametrize("kind", KINDS)
def test_two_step_sample_on_device(kind, sampler, case):
    """sample_molecules on the device: atom counts drawn from the CPU histogram with the device's generator,
    batch vector, prior, sampler and decode."""
    denoiser = net(kind).eval()
    sizes = AtomCountDistribution({3: 2, 5: 1})

    def draw(device):
        model = copy.deepcopy(denoiser).to(device)
        return sample_molecules(model, model.schedule, 4, sizes, sampler=sampler, steps=2, batch_size=3,
                                generator=make_generator(device, 0), progress=False)

    with on_device(case) as (device, check):
        mols = draw(device)
    assert len(mols) == 4 and {m.num_nodes for m in mols} <= {3, 5}
    for m in mols:
        assert m.pos.device.type == "cpu" and torch.isfinite(m.pos).all()
        assert m.pos.mean(0).abs().max() < 1e-3 * max(1.0, float(m.pos.abs().max()))
    if check is not None:
        cpu = draw(torch.device("cpu"))
        assert all(torch.equal(a.pos, b.pos) and torch.equal(a.z, b.z) for a, b in zip(mols, cpu))


@pytest.mark.parametrize("kind", KINDS)
@CPU_CHECKS
def test_train_api_on_the_virtual_device(kind, tmp_path):
    """molecules.train(device='meta') end to end under the check (resolve_device, the Trainer's data, optimizer,
    EMA and checkpoint): the EMA weights it writes equal a CPU run's, bit for bit."""
    small = {"egnn": dict(hidden=16, layers=1), "e3nn": dict(hidden=4, layers=1, mul_vectors=2, radial_hidden=8)}
    kw = dict(data=toy_molecules(8), model=kind, max_steps=2, batch_size=4, progress=False, **small[kind])
    with VirtualDevice("meta") as check:
        molecules.train(out=tmp_path / "virtual", device="meta", **kw)
        assert check.ops_seen > 1000
    molecules.train(out=tmp_path / "cpu", device="cpu", **kw)
    virtual, cpu = (torch.load(tmp_path / d / "checkpoint.pt", weights_only=True)["ema"] for d in ("virtual", "cpu"))
    assert virtual.keys() == cpu.keys() and all(torch.equal(virtual[k], cpu[k]) for k in cpu)


@CPU_CHECKS
def test_public_api_runs_on_the_virtual_device_and_defaults_to_auto(egnn_run):
    """load_run / sample with device='meta' under the check (resolve_device, make_generator, the whole path), the
    same molecules as on the CPU, and 'auto' as every default."""
    with VirtualDevice("meta") as check:
        denoiser, *_ = molecules.load_run(egnn_run, device="meta")
        assert all(check.is_on_device(p) for p in denoiser.parameters())
        mols = molecules.sample(egnn_run, n=3, steps=2, seed=3, device="meta", progress=False)
    cpu = molecules.sample(egnn_run, n=3, steps=2, seed=3, device="cpu", progress=False)
    assert all(torch.equal(a.pos, b.pos) for a, b in zip(mols, cpu))
    denoiser, *_ = molecules.load_run(egnn_run)
    assert next(denoiser.parameters()).device == resolve_device("auto")
    for fn in (molecules.train, molecules.load_run, molecules.sample, molecules.demo):
        assert inspect.signature(fn).parameters["device"].default == "auto", fn.__name__
    required = {"train": ["--out", "r"], "sample": ["--run", "r", "--out", "m.sdf"], "demo": ["--out", "d"]}
    for verb, argv in required.items():  # every verb that computes on tensors (evaluate is NumPy / RDKit)
        parser = argparse.ArgumentParser()
        VERBS[verb][0](parser)
        assert parser.parse_args(argv).device == "auto", verb
        assert parser.parse_args(argv + ["--device", "cuda:1"]).device == "cuda:1"
    for verb in ("train", "sample"):
        parser = argparse.ArgumentParser()
        VERBS[verb][0](parser)
        args = parser.parse_args(required[verb] + ["--bf16", "--compile"])
        assert args.bf16 and args.compile


@CPU_CHECKS
def test_atom_counts_follow_the_generator_and_log_prob_the_sizes():
    """Sizes come back on the CPU whatever the generator; log_prob answers on the device of its argument."""
    dist = AtomCountDistribution({3: 1, 5: 3})
    assert dist.sample(5, make_generator("cpu", 0)).device.type == "cpu"
    with VirtualDevice() as check:
        sizes = torch.tensor([3, 4, 5, 40, -1], device=check.device)
        lp = dist.log_prob(sizes)
        assert check.is_on_device(lp)
    assert lp[1] == lp[3] == lp[4] == float("-inf") and torch.isclose(lp[2].exp(), torch.tensor(0.75, dtype=lp.dtype))


# ---- the check itself can fail ---------------------------------------------------------------------------------
class _UnregisteredTable(torch.nn.Module):
    def __init__(self, register: bool):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)
        with torch.no_grad():  # fixed weights: results are compared across devices
            self.lin.weight.copy_(torch.eye(3) + 0.5)
            self.lin.bias.fill_(0.25)
        if register:
            self.register_buffer("scale", torch.linspace(1, 2, 3))
        else:
            self.scale = torch.linspace(1, 2, 3)  # a plain attribute: module.to(device) leaves it on the CPU

    def forward(self, x):
        return self.lin(x) * self.scale


def _old_log_prob(dist, sizes):  # AtomCountDistribution.log_prob before this change: CPU tables, device sizes
    table = torch.full((int(dist.sizes.max()) + 1,), float("-inf"), dtype=torch.float64)
    table[dist.sizes] = dist.probs.log()
    out = torch.full(sizes.shape, float("-inf"), dtype=torch.float64)
    ok = sizes < table.numel()
    out[ok] = table[sizes[ok]]
    return out


BUGS = {
    "cpu table indexed with device data": lambda x: torch.linspace(0, 1, 10)[x.long().clamp(0, 9)],
    "zeros without device= added to device data": lambda x: x + torch.zeros(x.shape),
    "batch vector left on the cpu": lambda x: egnn.remove_mean(x, torch.repeat_interleave(torch.arange(2),
                                                                                            torch.tensor([2, 2]))),
    "tensor attribute not registered as a buffer": lambda x: _UnregisteredTable(False).to(x.device)(x),
    "old AtomCountDistribution.log_prob": lambda x: _old_log_prob(AtomCountDistribution({1: 1, 2: 1}),
                                                                  x[:, 0].long().abs()),
    "numpy() of a device tensor": lambda x: x.numpy(),
}
FIXED = {
    "table on the data's device": lambda x: torch.linspace(0, 1, 10, device=x.device)[x.long().clamp(0, 9)],
    "zeros on the data's device, CPU scalars": lambda x: x + torch.zeros(x.shape, device=x.device) * torch.tensor(2.),
    "batch vector moved": lambda x: egnn.remove_mean(x, torch.repeat_interleave(torch.arange(2), torch.tensor([2, 2]))
                                                     .to(x.device)),
    "registered buffer": lambda x: _UnregisteredTable(True).to(x.device)(x),
    "new AtomCountDistribution.log_prob": lambda x: AtomCountDistribution({1: 1, 2: 1}).log_prob(x[:, 0].long().abs()),
    "host copies": lambda x: (x.cpu().numpy(), x.sum().item(), x.tolist(), int(x.argmax())),
}


@CPU_CHECKS
@pytest.mark.parametrize("name", list(BUGS))
def test_check_catches_cross_device_bugs(name):
    x = torch.randn(4, 3)
    BUGS[name](x)  # each bug is harmless on the CPU alone ...
    with VirtualDevice() as check, pytest.raises((CrossDeviceError, TypeError), match="device"):
        BUGS[name](x.to(check.device))  # ... and raises on the (virtual) device, as it would on CUDA


@CPU_CHECKS
@pytest.mark.parametrize("name", list(FIXED))
def test_check_passes_correct_code(name):
    x = torch.randn(4, 3)
    with VirtualDevice() as check:
        out = FIXED[name](x.to(check.device))
        if isinstance(out, torch.Tensor):
            assert out.device == check.device and check.is_on_device(out)
            assert torch.equal(out.cpu(), FIXED[name](x)), "the check must not change values"


@CPU_CHECKS
@pytest.mark.parametrize("kind", KINDS)
def test_check_catches_a_device_bug_inside_the_networks(kind, monkeypatch):
    """Reintroduce a bug in the domain's edge builder (an index range made without device=) and the network's
    forward raises under the check; the unpatched network passes test_training_step_on_device."""
    def edges_with_bug(batch):
        row, col = fully_connected(batch)
        return row + torch.zeros(row.shape, dtype=torch.long), col  # torch.zeros(n) without device=

    fully_connected = egnn.fully_connected_edges
    monkeypatch.setattr(egnn, "fully_connected_edges", edges_with_bug)
    model = net(kind).eval()
    x = torch.randn(8, STATE_DIM)
    batch = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1])
    model(x, torch.full((8,), 0.5), mask=batch)  # fine on the CPU
    with VirtualDevice() as check, pytest.raises(CrossDeviceError):
        model.to(check.device)(x.to(check.device), torch.full((8,), 0.5, device=check.device),
                               mask=batch.to(check.device))


@CPU_CHECKS
def test_virtual_device_semantics():
    """Transfers copy, tags follow data through ops, modules, deepcopy, Parameter and .grad, and nothing leaks."""
    new = torch.nn.Parameter.__dict__["__new__"]
    x = torch.randn(3, 2)
    with VirtualDevice() as check:
        d = x.to(check.device)
        assert d is not x and not check.is_on_device(x) and check.is_on_device(d) and d.device == check.device
        assert d.to(check.device) is d and not check.is_on_device(d.cpu()) and d.cpu() is not d
        assert check.is_on_device(torch.arange(3, device=check.device)) and not check.is_on_device(torch.ones(2))
        assert check.is_on_device(torch.as_tensor(x, device=check.device)) and not check.is_on_device(x)
        assert check.is_on_device((d * 2).sum(0)) and all(check.is_on_device(c) for c in d.split(1))
        lin = torch.nn.Linear(2, 2).to(check.device)
        assert all(check.is_on_device(p) for p in lin.parameters())
        twin = copy.deepcopy(lin)
        assert all(check.is_on_device(p) for p in twin.parameters())
        assert check.is_on_device(torch.nn.Parameter(d))
        lin(d).sum().backward()
        assert check.is_on_device(lin.weight.grad) and lin.weight.grad.device == check.device
        with pytest.raises(CrossDeviceError):
            lin(x)
        assert not any(check.is_on_device(p) for p in lin.cpu().parameters())
    assert torch.nn.Parameter.__dict__["__new__"] is new and d.device.type == "cpu"


# ---- bf16 and torch.compile are live paths ---------------------------------------------------------------------
NET = dict(hidden_nf=16, n_layers=2)


def _trainer_step(denoiser, tmp_path, bf16=False, mols=None):
    """One gendiff.training.Trainer step (the domain's _fit path) on the CPU: (loss, gradients)."""
    mols = mols or toy_molecules(8)
    cfg = TrainConfig(device="cpu", bf16=bf16, batch_size=len(mols), grad_clip=None, lr=1e-3, seed=0,
                      progress=False)
    trainer = Trainer(denoiser, make_step_fn(denoiser.schedule), mols, cfg, tmp_path, QM9Dataset.collate_fn)
    loss = trainer.train_step(iter([QM9Dataset.collate_fn(mols)]))
    return loss, [p.grad.clone() for p in trainer.model.parameters()]


@CPU_CHECKS
def test_bf16_training_step_matches_float32(tmp_path):
    """Tolerances: each bf16 rounding is off by <= U = 2^-8 relatively; autocast rounds every Linear's inputs and
    output (float32 accumulation), a handful of chained roundings on any path through this 2-block net, with
    independent errors. The loss (a mean over many squared errors, dominated by the drawn noise) is allowed U;
    the gradients, as one vector, 4 U = 2^-6 in relative norm (measured: loss 0.05 U, gradients 0.7 U)."""
    torch.manual_seed(0)
    ref = build_denoiser("egnn", get_schedule("polynomial"), net=NET)
    loss32, grads32 = _trainer_step(copy.deepcopy(ref), tmp_path / "f32")
    dtypes = []
    bf = copy.deepcopy(ref)
    bf.net.embedding.register_forward_hook(lambda mod, inp, out: dtypes.append(out.dtype))
    loss16, grads16 = _trainer_step(bf, tmp_path / "bf16", bf16=True)
    assert dtypes == [torch.bfloat16], "the Trainer's bf16 step did not run the network in bfloat16"
    assert loss16 != loss32 and not all(torch.equal(a, b) for a, b in zip(grads16, grads32))
    assert all(g.dtype == torch.float32 for g in grads16)
    assert abs(loss16 - loss32) <= U * abs(loss32)
    assert rel_err(grads16, grads32) <= 4 * U


@CPU_CHECKS
def test_compile_training_step_matches_eager(tmp_path):
    """build_denoiser(compile=...) (what train(compile=...) uses) through the Trainer, on two batches of different
    sizes: same loss and gradients as eager, and no recompilation for the second batch (dynamic shapes).
    Backend aot_eager: it captures forward and backward as inductor does (dynamo, AOTAutograd, dynamic node and
    edge counts, the graph structure left outside the graph) but runs eager kernels; inductor's C++ build of the
    ~30 forward+backward kernels takes ~70 s cold on a 2-core CPU, so inductor itself is checked by the sampling
    test. Tolerance: float32 compiled vs eager kernels differ by fusion and reordered reductions, ~1e-7 relative
    per op (float32 eps 1.2e-7); 1e-5 relative leaves room for that (inductor, other CPUs) and still catches any
    wrong capture. Measured with aot_eager: bit-identical."""
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    ref = build_denoiser("egnn", get_schedule("polynomial"), net=NET)
    small = toy_molecules(6, seed=4)
    compiled = build_denoiser("egnn", get_schedule("polynomial"), net=NET, compile="aot_eager")

    def step(model, out, mols=None):  # each step from the reference weights (in-place compile: same state_dict keys)
        model.load_state_dict(ref.state_dict())
        return _trainer_step(model, tmp_path / out, mols=mols)

    graphs = counters["stats"]["unique_graphs"]
    t0 = time.perf_counter()
    loss_c, grads_c = step(compiled, "c1")
    compile_s = time.perf_counter() - t0
    assert counters["stats"]["unique_graphs"] > graphs, "nothing was compiled"
    graphs = counters["stats"]["unique_graphs"]
    loss_c2, grads_c2 = step(compiled, "c2", small)
    assert counters["stats"]["unique_graphs"] == graphs, "a new batch size recompiled (dynamic shapes are off)"
    eager = copy.deepcopy(ref)
    loss_e, grads_e = step(eager, "e1")
    loss_e2, grads_e2 = step(eager, "e2", small)
    assert abs(loss_c - loss_e) <= 1e-5 * abs(loss_e) and abs(loss_c2 - loss_e2) <= 1e-5 * abs(loss_e2)
    assert rel_err(grads_c, grads_e) <= 1e-5 and rel_err(grads_c2, grads_e2) <= 1e-5
    print(f"aot_eager compile of the training step: {compile_s:.1f} s")


def _positions(mols):
    return torch.cat([m.pos for m in mols])


@CPU_CHECKS
def test_bf16_sample_matches_float32(egnn_run):
    """molecules.sample(bf16=True): same seed, so the same sizes, x_T and noise draws; 4 ancestral steps.
    Only the network's eps carries bf16 error (a few U relatively, as in training); each sampler step is linear in
    (x_t, eps) with float64 coefficients, so the positions' relative error stays a few U: allowed 4 U = 2^-6
    (measured 0.14 U: the barely trained net's eps is small next to x_t)."""
    kw = dict(n=4, sampler="ancestral", steps=4, seed=0, batch_size=2, device="cpu", progress=False)
    f32 = _positions(molecules.sample(egnn_run, **kw))
    bf16 = _positions(molecules.sample(egnn_run, bf16=True, **kw))
    assert not torch.equal(bf16, f32), "bf16 sampling gave float32's bits: autocast did not run"
    assert bf16.dtype == torch.float32 and rel_err(bf16, f32) <= 4 * U


@CPU_CHECKS
def test_compile_sample_matches_eager(egnn_run):
    """molecules.sample(compile=True): load_run compiles the network in place with inductor (dynamic shapes, two
    chunks of molecules). Same seed, so the same draws; float32 kernels that differ only in fusion and reduction
    order, ~1e-7 relative per op: allowed 1e-5 (measured 1.0e-7)."""
    from torch._dynamo.utils import counters

    kw = dict(n=4, sampler="ancestral", steps=4, seed=0, batch_size=2, device="cpu", progress=False)
    eager = _positions(molecules.sample(egnn_run, **kw))
    graphs = counters["stats"]["unique_graphs"]
    t0 = time.perf_counter()
    compiled = _positions(molecules.sample(egnn_run, compile=True, **kw))
    compile_s = time.perf_counter() - t0
    assert counters["stats"]["unique_graphs"] > graphs, "nothing was compiled"
    assert rel_err(compiled, eager) <= 1e-5
    print(f"inductor compile + 4-step sample: {compile_s:.1f} s")
