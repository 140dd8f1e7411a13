"""Molecule diffusion glue: EDM's feature scaling, the positions x features noise space, networks, loss and sampling.

Per node x = [pos (3) | one-hot types / 4 (5) | charge / 10 (1)] (Hoogeboom et al. 2022, EDM, norm_values [1, 4, 10]);
positions live in the zero centre-of-mass subspace, features in R^6 per node; `mask` is the batch vector throughout.
"""
from __future__ import annotations

from typing import Sequence

import torch

from gendiff.device import table_dtype
from gendiff.errors import ConfigError, DataError
from gendiff.spaces import GraphEuclideanSpace, ProductSpace, ZeroCoMSpace

from .data import ATOMIC_NUMBERS, ELEMENTS

NORM_VALUES = (1.0, 4.0, 10.0)  # EDM: positions, one-hot types, charges
NUM_TYPES = len(ELEMENTS)
FEATURE_DIM = NUM_TYPES + 1
STATE_DIM = 3 + FEATURE_DIM
MODELS = ("egnn", "e3nn")

# EDM's QM9 configuration (egnn_dynamics, nf 256, 9 layers, attention, tanh, inv_sublayers 1, norm factor 1).
EGNN_DEFAULTS = dict(hidden_nf=256, n_layers=9, inv_sublayers=1, attention=True, tanh=True, coords_range=15.0,
                     norm_constant=1.0, normalization_factor=1.0)
E3NN_DEFAULTS = dict(mul_scalars=64, mul_vectors=16, n_layers=4, lmax=2, num_basis=16, max_radius=10.0,
                     radial_hidden=64, num_neighbors=17.0)


def molecule_space() -> ProductSpace:
    """Positions with zero centre of mass per graph (3 dof less) x per-node Euclidean features (EDM Sec. 3.1)."""
    return ProductSpace([(ZeroCoMSpace(), 3), (GraphEuclideanSpace(), FEATURE_DIM)])


def encode(batch, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """A torch-geometric Batch -> (x0 (N, 9) scaled and centred, batch vector (N,)), on `device` (default: the
    batch's own). Only the fields used are moved; the caller's batch stays where it was (PyG's `.to` moves in
    place)."""
    for key in ("pos", "x", "charge"):
        if getattr(batch, key, None) is None:
            raise DataError(f"molecule batch has no field {key!r} (expected pos, x, charge; see molecules.data)")
    device = batch.pos.device if device is None else torch.device(device)
    pos, onehot, charge = (getattr(batch, key).to(device) for key in ("pos", "x", "charge"))
    vec = batch.batch.to(device) if getattr(batch, "batch", None) is not None else torch.zeros(
        pos.shape[0], dtype=torch.long, device=device)
    if onehot.shape[-1] != NUM_TYPES:
        raise DataError(f"molecule field 'x' has {onehot.shape[-1]} columns, expected {NUM_TYPES} ({ELEMENTS})")
    pos = ZeroCoMSpace().project(pos.float() / NORM_VALUES[0], vec)
    x0 = torch.cat([pos, onehot.float() / NORM_VALUES[1], charge.float().reshape(-1, 1) / NORM_VALUES[2]], -1)
    return x0, vec


def decode(x: torch.Tensor, batch: torch.Tensor) -> list:
    """Unscale; atom types by argmax of the one-hot block, charges by rounding (EDM); one Data per graph."""
    from torch_geometric.data import Data

    x = x.detach().float().cpu()
    batch = batch.detach().cpu()
    pos = x[:, :3] * NORM_VALUES[0]
    types = x[:, 3 : 3 + NUM_TYPES].argmax(-1)
    charge = torch.round(x[:, 3 + NUM_TYPES :] * NORM_VALUES[2])
    z = torch.tensor(ATOMIC_NUMBERS, dtype=torch.long)[types]
    num = int(batch.max()) + 1 if batch.numel() else 0
    order = torch.argsort(batch, stable=True)
    counts = torch.bincount(batch, minlength=num).tolist()
    mols = []
    for idx in torch.split(order, counts):
        mols.append(Data(pos=pos[idx].contiguous(), z=z[idx], x=torch.nn.functional.one_hot(types[idx], NUM_TYPES)
                         .float(), charge=charge[idx].contiguous(), num_nodes=len(idx)))
    return mols


def build_net(model: str = "egnn", **kwargs) -> torch.nn.Module:
    """The denoiser network by name: 'egnn' (EDM's EGNN) or 'e3nn' (tensor-product network)."""
    if model == "egnn":
        from .egnn import EGNN

        return EGNN(in_node_nf=FEATURE_DIM, **{**EGNN_DEFAULTS, **kwargs})
    if model == "e3nn":
        from .e3nn_net import E3NNDenoiser

        return E3NNDenoiser(in_node_nf=FEATURE_DIM, **{**E3NN_DEFAULTS, **kwargs})
    raise ConfigError(f"--model {model!r}: expected one of {', '.join(MODELS)}")


def build_denoiser(model: str, schedule, prediction: str = "eps", net: dict | None = None,
                   compile: bool | str = False, options: dict | None = None):
    """The molecule Denoiser (inputs scaled to unit variance) around build_net(model, **net); train and load_run
    build it here. `options`: Denoiser.config() of a saved run (prediction, scale_input, precondition, ...),
    overriding `prediction`. `compile`: see compile_net."""
    from gendiff.forward import Denoiser

    kw = {"prediction": prediction, "scale_input": True, **(options or {})}
    denoiser = Denoiser(build_net(model, **(net or {})), schedule, **kw)
    compile_net(denoiser.net, compile)
    return denoiser


def compile_net(net: torch.nn.Module, compile: bool | str = True) -> torch.nn.Module:
    """torch.compile `net` in place (nn.Module.compile: the module and its state_dict keys stay those of the eager
    one, so checkpoints load either way) with dynamic shapes: node and edge counts change from batch to batch, and
    static shapes would recompile for every new mix of molecule sizes. The data-dependent graph structure is built
    outside the compiled region (egnn.graph_structure). `compile`: False (eager), True (inductor) or the name of a
    torch.compile backend ('aot_eager' traces forward and backward like inductor but runs eager kernels)."""
    if compile is False or compile is None:
        return net
    backend = "inductor" if compile is True else str(compile)
    if backend not in torch._dynamo.list_backends(exclude_tags=()):
        raise ConfigError(f"compile={compile!r}: expected True, False or a torch.compile backend "
                          f"({', '.join(torch._dynamo.list_backends())})")
    net.compile(dynamic=True, backend=backend)
    return net


def make_step_fn(schedule, space=None, weighting=None):
    """Trainer step: encode the batch, per-graph times, eps-loss reduced per molecule by the space, mean over graphs."""
    from gendiff.losses import diffusion_loss

    space = space or molecule_space()

    def step_fn(model, batch, generator=None):
        device = next(model.parameters()).device
        x0, vec = encode(batch, device)
        num_graphs = int(vec.max()) + 1
        t = schedule.sample_t(num_graphs, generator=generator, device=device)
        loss = diffusion_loss(model, x0, schedule, space, mask=vec, t_per_sample=t, generator=generator,
                              weighting=weighting)
        return loss.mean()

    return step_fn


class AtomCountDistribution:
    """p(N) from the training set's histogram of atom counts; molecule sizes are drawn from it (EDM Sec. 3.4)."""

    def __init__(self, histogram: dict):
        if not histogram:
            raise ConfigError("atom-count histogram is empty")
        items = sorted((int(k), float(v)) for k, v in histogram.items())
        if any(n < 1 or c < 0 for n, c in items) or sum(c for _, c in items) <= 0:
            raise ConfigError(f"atom-count histogram must map N >= 1 to counts >= 0, got {histogram}")
        self.histogram = {n: c for n, c in items}
        self.sizes = torch.tensor([n for n, _ in items], dtype=torch.long)
        self.probs = torch.tensor([c for _, c in items], dtype=torch.float64)
        self.probs = self.probs / self.probs.sum()

    @classmethod
    def from_molecules(cls, mols: Sequence) -> "AtomCountDistribution":
        return cls.from_sizes([int(m.num_nodes) for m in mols])

    @classmethod
    def from_sizes(cls, sizes) -> "AtomCountDistribution":
        counts = torch.bincount(torch.as_tensor(sizes, dtype=torch.long).reshape(-1))
        return cls({int(n): int(c) for n, c in enumerate(counts.tolist()) if c})

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n atom counts (a CPU LongTensor: host-side sizes that shape the batch), drawn on the generator's device."""
        device = generator.device if generator is not None else torch.device("cpu")
        probs = self.probs.to(device, table_dtype(device))
        idx = torch.multinomial(probs, int(n), replacement=True, generator=generator)
        return self.sizes[idx.cpu()]

    def log_prob(self, sizes: torch.Tensor) -> torch.Tensor:
        """log p(N) per entry of `sizes`, on the device of `sizes` (-inf outside the histogram)."""
        sizes = torch.as_tensor(sizes, dtype=torch.long)
        device = sizes.device
        dtype = table_dtype(device)
        table = torch.full((int(self.sizes.max()) + 1,), float("-inf"), dtype=dtype, device=device)
        table[self.sizes.to(device)] = self.probs.log().to(device, dtype)
        out = torch.full(sizes.shape, float("-inf"), dtype=dtype, device=device)
        ok = (sizes >= 0) & (sizes < table.numel())
        out[ok] = table[sizes[ok]]
        return out


@torch.no_grad()
def sample_molecules(denoiser, schedule, n: int, sizes: AtomCountDistribution | torch.Tensor, *,
                     sampler: str = "ancestral", steps: int = 1000, generator: torch.Generator | None = None,
                     batch_size: int = 256, cond=None, progress: bool = True, bf16: bool = False,
                     **sampler_kw) -> list:
    """Draw N per molecule, then run a core sampler from the prior in the molecule space and decode (EDM Alg. 2).

    Everything runs on the denoiser's device, with `generator`'s draws (make_generator(device, seed)); `bf16`
    runs the network under bfloat16 autocast (matmuls in bf16, the sampler's own arithmetic stays float32)."""
    from tqdm import tqdm

    from gendiff.samplers import prior_sample
    from gendiff.samplers import sample as run_sampler

    if int(n) < 1:
        raise ConfigError(f"n={n}: number of molecules must be >= 1")
    if int(batch_size) < 1:
        raise ConfigError(f"batch_size={batch_size} must be >= 1")
    counts = sizes.sample(int(n), generator) if isinstance(sizes, AtomCountDistribution) else torch.as_tensor(sizes)
    counts = counts.cpu().long()
    if counts.numel() != int(n) or (counts < 1).any():
        raise ConfigError(f"need {n} atom counts >= 1, got {counts.tolist()[:10]}...")
    device = next(denoiser.parameters()).device
    space = molecule_space()
    mols: list = []
    chunks = torch.split(counts, int(batch_size))
    bar = tqdm(chunks, desc=f"sampling ({sampler}, {steps} steps)", disable=not progress, leave=False)
    for chunk in bar:
        total = int(chunk.sum())  # sizes are host-side: the batch vector is built on the device without a sync
        batch = torch.repeat_interleave(torch.arange(len(chunk), device=device), chunk.to(device),
                                        output_size=total)
        like = torch.zeros(total, STATE_DIM, device=device)
        x_T = prior_sample(schedule, space, like, mask=batch, generator=generator)
        with _autocast(device, bf16):
            x0 = run_sampler(sampler, denoiser, x_T, schedule, space, int(steps), mask=batch, cond=cond,
                             generator=generator, **sampler_kw)
        x0 = x0.float()
        if not torch.isfinite(x0).all():
            raise ConfigError(f"sampler {sampler!r} produced non-finite values; try more steps or another sampler")
        mols.extend(decode(x0, batch))
    return mols


def _autocast(device: torch.device, enabled: bool):
    """bfloat16 autocast on `device` when enabled; a no-op context otherwise (autocast rejects some device types,
    such as meta, even when disabled)."""
    import contextlib

    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
