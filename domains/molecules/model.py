"""Molecule diffusion glue: EDM's feature scaling, the positions x features noise space, networks, loss and sampling.

Per node x = [pos (3) | one-hot types / 4 (5) | charge / 10 (1)] (Hoogeboom et al. 2022, EDM, norm_values [1, 4, 10]);
positions live in the zero centre-of-mass subspace, features in R^6 per node; `mask` is the batch vector throughout.
An explicit-bond run (`bonds`: runconfig.bonds_config) packs one more row per unordered atom pair after the atoms
and passes a bondstate.MoleculeGraph as `mask` (bondstate.py explains the packing). A categorical-types run
(`types`: runconfig.types_config) keeps this state with discrete types in it (categorical.py, catsampling.py).
"""
from __future__ import annotations

import contextlib

import torch
from tqdm import tqdm

from gendiff import losses
from gendiff.errors import ConfigError, DataError
from gendiff.forward import Denoiser, q_sample
from gendiff.losses import diffusion_loss
from gendiff.samplers import prior_sample
from gendiff.samplers import sample as run_sampler
from gendiff.spaces import GraphEuclideanSpace, ProductSpace, ZeroCoMSpace

from . import catsampling, coupling, selfcond
from .bondstate import BondedSpace, MoleculeGraph, PackedBonds, bond_features, decode_bonds
from .categorical import Categorical, CategoricalHead, capturing, cross_entropy, training_noise
from .distributions import AtomCountDistribution, FormulaDistribution  # noqa: F401 (re-exported)
from .egnn import EGNN
from .records import ATOMIC_NUMBERS, ELEMENTS

NORM_VALUES = (1.0, 4.0, 10.0)  # EDM: positions, one-hot types, charges
UNSCALED = (1.0, 1.0, 1.0)  # EDM's ablation without feature scaling
FORMULA_SCALE = 10.0  # per-element atom counts / 10: the composition context of a formula-conditioned network
WEIGHTINGS = ("snr", "constant", "min_snr", "clamped_snr")
COMPOSITIONS = ("size", "formula")
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


def encode(batch, device=None, norm_values=NORM_VALUES) -> tuple[torch.Tensor, torch.Tensor]:
    """A torch-geometric Batch -> (x0 (N, 9) scaled by `norm_values` and centred, batch vector (N,)), on `device`
    (default: the batch's own). Only the fields used are moved; the caller's batch stays where it was (PyG's `.to`
    moves in place)."""
    for key in ("pos", "x", "charge"):
        if getattr(batch, key, None) is None:
            raise DataError(f"molecule batch has no field {key!r} (expected pos, x, charge; see molecules.data)")
    device = batch.pos.device if device is None else torch.device(device)
    pos, onehot, charge = (getattr(batch, key).to(device) for key in ("pos", "x", "charge"))
    vec = batch.batch.to(device) if getattr(batch, "batch", None) is not None else torch.zeros(
        pos.shape[0], dtype=torch.long, device=device)
    if onehot.shape[-1] != NUM_TYPES:
        raise DataError(f"molecule field 'x' has {onehot.shape[-1]} columns, expected {NUM_TYPES} ({ELEMENTS})")
    nv = _norm_values(norm_values)
    pos = ZeroCoMSpace().project(pos.float() / nv[0], vec)
    x0 = torch.cat([pos, onehot.float() / nv[1], charge.float().reshape(-1, 1) / nv[2]], -1)
    return x0, vec


def _norm_values(norm_values) -> tuple[float, float, float]:
    nv = tuple(float(v) for v in norm_values)
    if len(nv) != 3 or min(nv) <= 0:
        raise ConfigError(f"norm_values {list(norm_values)}: expected 3 positive scales (positions, types, charges)")
    return nv


def decode(x: torch.Tensor, batch: torch.Tensor, norm_values=NORM_VALUES) -> list:
    """Unscale by `norm_values`; atom types by argmax of the one-hot block, charges by rounding (EDM); one Data per
    graph."""
    from torch_geometric.data import Data

    nv = _norm_values(norm_values)
    x = x.detach().float().cpu()
    batch = batch.detach().cpu()
    pos = x[:, :3] * nv[0]
    types = x[:, 3 : 3 + NUM_TYPES].argmax(-1)
    charge = torch.round(x[:, 3 + NUM_TYPES :] * nv[2])
    z = torch.tensor(ATOMIC_NUMBERS, dtype=torch.long)[types]
    num = int(batch.max()) + 1 if batch.numel() else 0
    order = torch.argsort(batch, stable=True)
    counts = torch.bincount(batch, minlength=num).tolist()
    mols = []
    for idx in torch.split(order, counts):
        mols.append(Data(pos=pos[idx].contiguous(), z=z[idx], x=torch.nn.functional.one_hot(types[idx], NUM_TYPES)
                         .float(), charge=charge[idx].contiguous(), num_nodes=len(idx)))
    return mols


def build_net(model: str = "egnn", self_cond: bool = False, **kwargs) -> torch.nn.Module:
    """The denoiser network by name: 'egnn' (EDM's EGNN) or 'e3nn' (tensor-product network); `self_cond` wraps it
    in selfcond.SelfConditioned (built with selfcond.SC_FEATURES more per-node context channels), `categorical`
    (runconfig.categorical_head) in categorical.CategoricalHead."""
    categorical = kwargs.pop("categorical", None)
    if categorical is not None:
        if self_cond:
            raise ConfigError("self-conditioning does not take categorical types (types='categorical')")
        return CategoricalHead(build_net(model, **kwargs), **categorical)
    if self_cond:
        if kwargs.get("bond_nf"):
            raise ConfigError("self-conditioning does not take explicit bonds (bonds='explicit')")
        kwargs["context_nf"] = int(kwargs.get("context_nf", 0)) + selfcond.SC_FEATURES
        return selfcond.SelfConditioned(build_net(model, **kwargs))
    if kwargs.get("bond_nf"):  # explicit bonds: the EGNN's bond path, on the packed state
        if model != "egnn":
            raise ConfigError(f"explicit bonds need the egnn model, not {model!r}")
        return PackedBonds(EGNN(in_node_nf=FEATURE_DIM, **{**EGNN_DEFAULTS, **kwargs}))
    kwargs.pop("bond_nf", None)
    if model == "egnn":
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
    kw = {"prediction": prediction, "scale_input": True, **(options or {})}
    cls = selfcond.SelfCondDenoiser if (net or {}).get("self_cond") else Denoiser
    denoiser = cls(build_net(model, **(net or {})), schedule, **kw)
    compile_net(denoiser.net, compile)
    return denoiser


def compile_net(net: torch.nn.Module, compile: bool | str = True) -> torch.nn.Module:
    """torch.compile `net` in place (nn.Module.compile: the module and its state_dict keys stay those of the eager
    one, so checkpoints load either way) with dynamic shapes: node and edge counts change from batch to batch, and
    static shapes would recompile for every new mix of molecule sizes. The data-dependent graph structure is built
    outside the compiled region (egnn.graph_structure). `compile`: False (eager), True (inductor) or the name of a
    torch.compile backend ('aot_eager' traces forward and backward like inductor but runs eager kernels). A
    CategoricalHead's inner network is compiled, the head (a softmax that keeps its logits for the loss) stays eager."""
    if compile is False or compile is None:
        return net
    backend = "inductor" if compile is True else str(compile)
    if backend not in torch._dynamo.list_backends(exclude_tags=()):
        raise ConfigError(f"compile={compile!r}: expected True, False or a torch.compile backend "
                          f"({', '.join(torch._dynamo.list_backends())})")
    (net.net if isinstance(net, CategoricalHead) else net).compile(dynamic=True, backend=backend)
    return net


def parse_weighting(spec) -> dict | None:
    """A loss weighting spec -> its config ({'name': ..., params}) or None (the parametrization's plain loss).

    Accepts None / 'none', a dict, or a string: 'snr' (L_simple whatever is predicted), 'constant' (the x0 loss),
    'min_snr' or 'min_snr:GAMMA' (Hang et al. 2023; gamma 5), 'clamped_snr' or 'clamped_snr:LOW,HIGH' (x0-loss
    weight clamp(SNR, LOW, HIGH); EQGAT-diff's 0.05, 1.5)."""
    if spec is None or (isinstance(spec, str) and spec.lower() == "none"):
        return None
    if isinstance(spec, dict):
        cfg = dict(spec)
    else:
        name, _, args = str(spec).partition(":")
        cfg = {"name": name}
        try:
            vals = [float(v) for v in args.split(",")] if args else []
        except ValueError:
            raise ConfigError(f"weighting {spec!r}: parameters must be numbers") from None
        if name == "min_snr" and vals:
            if len(vals) != 1:
                raise ConfigError(f"weighting {spec!r}: min_snr takes one parameter (gamma)")
            cfg["gamma"] = vals[0]
        elif name == "clamped_snr" and vals:
            if len(vals) != 2:
                raise ConfigError(f"weighting {spec!r}: clamped_snr takes two parameters (low,high)")
            cfg["low"], cfg["high"] = vals
        elif vals:
            raise ConfigError(f"weighting {spec!r}: {name} takes no parameters")
    name = cfg.get("name")
    if name not in WEIGHTINGS:
        raise ConfigError(f"weighting {name!r}: expected none or one of {', '.join(WEIGHTINGS)}")
    defaults = {"min_snr": {"gamma": 5.0}, "clamped_snr": {"low": 0.05, "high": 1.5}}.get(name, {})
    unknown = set(cfg) - {"name"} - set(defaults)
    if unknown:
        raise ConfigError(f"weighting {name!r}: unknown parameter(s) {', '.join(sorted(unknown))}")
    cfg = {"name": name, **{k: float(cfg.get(k, v)) for k, v in defaults.items()}}
    build_weighting(cfg)  # range checks (gamma > 0, 0 <= low < high) as one ConfigError
    return cfg


def build_weighting(cfg: dict | None):
    """The gendiff.losses Weighting of a parse_weighting config (None: no weighting)."""
    if cfg is None:
        return None
    params = {k: v for k, v in cfg.items() if k != "name"}
    return {"snr": losses.snr_weight, "constant": losses.constant_weight, "min_snr": losses.min_snr_weight,
            "clamped_snr": losses.clamped_snr_weight}[cfg["name"]](**params)


def formula_counts(onehot: torch.Tensor, batch: torch.Tensor, num_graphs: int) -> torch.Tensor:
    """(B, NUM_TYPES) atoms of each element per graph from the (N, NUM_TYPES) one-hot block, on its device."""
    out = torch.zeros(num_graphs, onehot.shape[-1], dtype=torch.float32, device=onehot.device)
    return out.index_add_(0, batch, onehot.float())


def composition_context(counts: torch.Tensor) -> torch.Tensor:
    """The per-graph context of a formula-conditioned network: atom counts per element / FORMULA_SCALE."""
    return counts.float() / FORMULA_SCALE


def bond_space(bonds: dict) -> BondedSpace:
    """The noise space of an explicit-bond run (`bonds`: runconfig.bonds_config): atoms in molecule_space, the
    pairs' loss weighted by bonds['weight']."""
    return BondedSpace(molecule_space(), float(bonds["weight"]))


def bond_graph(vec: torch.Tensor, bonds: dict) -> MoleculeGraph:
    """The MoleculeGraph mask of a packed bonds state over the batch vector `vec`."""
    return MoleculeGraph.from_batch(vec, STATE_DIM, len(bonds["classes"]))


def make_step_fn(schedule, space=None, weighting=None, norm_values=NORM_VALUES, composition: str = "size",
                 pairing: str | None = None, time_sampling: str = "uniform", conditioned: bool = False,
                 bonds: dict | None = None, types: dict | None = None):
    """Trainer step: encode the batch (scaled by `norm_values`), per-graph times, the Denoiser's loss (times
    `weighting`, a gendiff.losses Weighting) reduced per molecule by the space, mean over graphs.
    composition='formula' feeds each graph's formula (composition_context) to the network as its context;
    `time_sampling` and `pairing` ('ot') are coupling.py's; a self-conditioned network (selfcond.py) gets its own
    detached estimate on half the steps; `conditioned`: each molecule's normalised properties (batch.context,
    conditioning.py) follow as more context channels. `bonds` (runconfig.bonds_config): the batch's bonds
    (bond_index / bond_order, bonddata.py) join the state as packed pair rows (bondstate.py), diffused with the
    same schedule, times and weighting, in bond_space. `types` (a categorical run's runconfig.types_config, with its
    marginals): the types (and bond classes) are corrupted categorically at the same times, and the loss adds their
    weighted cross-entropy (categorical.py)."""

    if composition not in COMPOSITIONS:
        raise ConfigError(f"composition {composition!r}: expected one of {', '.join(COMPOSITIONS)}")
    if bonds is not None and pairing is not None:
        raise ConfigError("explicit bonds do not take a noise pairing")
    spec = None if types is None else Categorical.from_config(types, norm_values, bonds)
    if spec is not None and pairing is not None:
        raise ConfigError("categorical types do not take a noise pairing")
    space = space or (molecule_space() if bonds is None else bond_space(bonds))

    def step_fn(model, batch, generator=None):
        device = next(model.parameters()).device
        x0, vec = encode(batch, device, norm_values)
        mask = vec
        if bonds is not None:
            if selfcond.wrapped(model) is not None:
                raise ConfigError("explicit bonds do not take self-conditioning")
            mask = bond_graph(vec, bonds)
            x0 = mask.pack(x0, bond_features(batch, mask, float(bonds["norm"])))
        num_graphs = int(vec.max()) + 1
        cond = None
        if composition == "formula":
            cond = composition_context(formula_counts(batch.x.to(device), vec, num_graphs))
        if conditioned:
            props = batch.context.to(device).float().reshape(num_graphs, -1)
            cond = props if cond is None else torch.cat([cond, props], dim=1)
        t = coupling.sample_times(schedule, num_graphs, time_sampling, generator=generator, device=device)
        if spec is not None:
            if selfcond.wrapped(model) is not None:
                raise ConfigError("categorical types do not take self-conditioning")
            noise, targets = training_noise(x0, mask, t, schedule, space, spec, generator)
            with capturing(model) as head:
                loss = diffusion_loss(model, x0, schedule, space, mask=mask, cond=cond, t_per_sample=t, noise=noise,
                                      generator=generator, weighting=weighting)
                return (loss + cross_entropy(head, targets, mask, spec)).mean()
        noise = None
        if pairing == "ot" or selfcond.wrapped(model) is not None:  # drawn as diffusion_loss would draw it
            noise = space.sample(x0, vec, generator)
        if pairing == "ot":
            noise = coupling.ot_pair_noise(x0, noise, vec)
        if selfcond.wrapped(model) is not None:
            t_rows = space.per_row(t, vec)
            x_t = space.project(q_sample(space.project(x0, vec), t_rows, noise, schedule), vec)
            selfcond.self_condition(model, x_t, t_rows, vec, cond, generator)
        loss = diffusion_loss(model, x0, schedule, space, mask=mask, cond=cond, t_per_sample=t, noise=noise,
                              generator=generator, weighting=weighting)
        if selfcond.wrapped(model) is not None:
            selfcond.wrapped(model).x0_hat = None
        return loss.mean()

    return step_fn


@torch.no_grad()
def sample_molecules(denoiser, schedule, n: int, sizes: AtomCountDistribution | torch.Tensor, *,
                     sampler: str = "ancestral", steps: int = 1000, generator: torch.Generator | None = None,
                     batch_size: int = 256, cond=None, progress: bool = True, bf16: bool = False,
                     norm_values=NORM_VALUES, bonds: dict | None = None, types: dict | None = None,
                     **sampler_kw) -> list:
    """Draw N per molecule, then run a core sampler from the prior in the molecule space and decode (EDM Alg. 2).

    Everything runs on the denoiser's device, with `generator`'s draws (make_generator(device, seed)); `bf16`
    runs the network under bfloat16 autocast (matmuls in bf16, the sampler's own arithmetic stays float32).
    `cond`: per-molecule context (n, C) (a formula-conditioned network's composition_context), split with the
    batches; `norm_values`: the run's feature scaling, undone by decode. `bonds` (an explicit-bond run's
    runconfig.bonds_config): the bonds are sampled with the atoms (bondstate.py) and each molecule carries its
    generated bonds (bond_index, bond_order; decode_state). `types` (a categorical run's runconfig.types_config):
    types (and bond classes) start from the training marginals and take catsampling's hybrid steps (samplers:
    catsampling.SAMPLERS)."""
    spec = None if types is None else Categorical.from_config(types, norm_values, bonds)
    if spec is not None:
        catsampling.check_sampler(sampler)
    if int(n) < 1:
        raise ConfigError(f"n={n}: number of molecules must be >= 1")
    if int(batch_size) < 1:
        raise ConfigError(f"batch_size={batch_size} must be >= 1")
    counts = sizes.sample(int(n), generator) if isinstance(sizes, AtomCountDistribution) else torch.as_tensor(sizes)
    counts = counts.cpu().long()
    if counts.numel() != int(n) or (counts < 1).any():
        raise ConfigError(f"need {n} atom counts >= 1, got {counts.tolist()[:10]}...")
    device = next(denoiser.parameters()).device
    if cond is not None:
        cond = torch.as_tensor(cond)
        if cond.dim() != 2 or cond.shape[0] != int(n):
            raise ConfigError(f"cond has shape {tuple(cond.shape)}; expected one row per molecule ({n}, C)")
        cond_chunks = torch.split(cond.to(device, torch.float32), int(batch_size))
    space = molecule_space() if bonds is None else bond_space(bonds)
    mols: list = []
    chunks = torch.split(counts, int(batch_size))
    bar = tqdm(chunks, desc=f"sampling ({sampler}, {steps} steps)", disable=not progress, leave=False)
    for i, chunk in enumerate(bar):
        total = int(chunk.sum())  # sizes are host-side: the batch vector is built on the device without a sync
        batch = torch.repeat_interleave(torch.arange(len(chunk), device=device), chunk.to(device),
                                        output_size=total)
        mask = batch if bonds is None else bond_graph(batch, bonds)
        like = torch.zeros(total if bonds is None else mask.num_rows, STATE_DIM, device=device)
        x_T = prior_sample(schedule, space, like, mask=mask, generator=generator)
        kw = dict(mask=mask, cond=None if cond is None else cond_chunks[i], generator=generator, **sampler_kw)
        with _autocast(device, bf16), selfcond.carrying(denoiser):
            if spec is None:
                x0 = run_sampler(sampler, denoiser, x_T, schedule, space, int(steps), **kw)
            else:
                x_T = catsampling.prior(x_T, mask, spec, generator)
                x0 = catsampling.sample(spec, sampler, denoiser, x_T, schedule, space, int(steps), **kw)
        x0 = x0.float()
        if not torch.isfinite(x0).all():
            raise ConfigError(f"sampler {sampler!r} produced non-finite values; try more steps or another sampler")
        mols.extend(decode(x0, batch, norm_values) if bonds is None else decode_state(x0, mask, norm_values))
    return mols


def decode_state(x: torch.Tensor, graph: MoleculeGraph, norm_values=NORM_VALUES) -> list:
    """decode() of a packed bonds state's atoms, each molecule carrying its bonds (bondstate.decode_bonds: argmax
    type per pair) as bond_index (2, B) and bond_order (B,)."""
    nodes, pairs = graph.split(x)
    mols = decode(nodes, graph.batch, norm_values)
    for mol, (index, order) in zip(mols, decode_bonds(pairs, graph), strict=True):
        mol.bond_index, mol.bond_order = index, order
    return mols


def _autocast(device: torch.device, enabled: bool):
    """bfloat16 autocast on `device` when enabled; a no-op context otherwise (autocast rejects some device types,
    such as meta, even when disabled)."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
