"""Categorical (discrete) diffusion of atom types, and of bond types in an explicit-bond run (`types="categorical"`):
D3PM's marginal-prior transitions (Austin et al. 2021, "Structured Denoising Diffusion Models in Discrete
State-Spaces"; the marginal prior of DiGress and MiDi, Vignac et al. 2023) beside the Gaussian positions, carried by
gendiff's core loss and sampler loop unchanged.

The process. Each atom's type c (one of ELEMENTS) is kept with probability abar_t and otherwise replaced by a draw
from m, the training set's marginal type distribution:

    q(c_t | c_0) = Cat(abar_t onehot(c_0) + (1 - abar_t) m)
    Q_{t|s} = (abar_t / abar_s) I + (1 - abar_t / abar_s) 1 m^T     (the transition from time s to t > s)

with abar_t = alpha(t)^2 of the run's own schedule, so one time per molecule drives positions and types (abar is ~1
at t = 0 and ~0 at t = 1, where c_1 ~ m is the prior). In an explicit-bond run each unordered pair's bond class
(bondstate.BOND_CLASSES) is diffused the same way towards the training pairs' marginal (mostly 'none'); one draw
per stored pair i < j keeps the bond matrix symmetric.

The state stays model.py's tensor: the type columns hold onehot(c_t) / 4 and the charge column Z(c_t) / 10 (the
run's norm_values), the pair rows onehot(bond class) / BOND_NORM. Training hands core `diffusion_loss` a noise whose
type and charge columns are (x_t - alpha x0) / sigma for the discrete x_t drawn here (training_noise), so its
q_sample makes exactly that x_t; where sigma is below SIGMA_FLOOR (alpha ~ 1, abar ~ 1) the clean type is kept and
that noise is 0.

The network (CategoricalHead around the run's net): its type outputs are logits; the head returns the softmax
probabilities p / 4 in the type columns and sum_k p_k Z_k / 10 in the charge column, so with prediction='x0' (which
categorical runs require) the Denoiser's x0 is exactly those probabilities. The loss is the core's weighted squared
error of x0 as for any run (positions; for the types that is the Brier score of p, a proper scoring rule, and the
squared error of the mean charge, both times the run's weighting) plus `weight` x the cross-entropy of the type
logits against the clean types, mean over each molecule's atoms (and weight x bond_weight x the pairs' mean
cross-entropy), unweighted in t, as MiDi and D3PM's auxiliary loss add it. The Brier term alone is small (types / 4
squared, times clamped SNR down to 0.05 at high noise) and would leave the types all but untrained at high noise;
the cross-entropy does not fade with t. TYPE_WEIGHT (0.05) follows MiDi's QM9 ratio of types CE to position MSE
(0.4 : 3) with the positions entering this loss as 3 of 9 columns of a per-entry mean (0.4 / 3 x 3 / 9 ~ 0.044).

Sampling (catsampling.py): the prior draws types from m; each step takes the core step on the positions and draws
the types from the exact posterior p(c_s | c_t) = sum_k p_k q(c_s | c_t, c_0 = k) (posterior()).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from gendiff.errors import ConfigError, DataError

from .bondstate import BOND_NORM, NUM_BOND_CLASSES, MoleculeGraph
from .records import ATOMIC_NUMBERS, ELEMENTS

TYPE_MODES = ("gaussian", "categorical")
TYPE_WEIGHT = 0.05  # the types' cross-entropy weight (module docstring)
SIGMA_FLOOR = 1e-6  # below it a training time keeps the clean types (the noise trick divides by sigma)
NUM_TYPES = len(ELEMENTS)


@dataclass(frozen=True)
class Categorical:
    """What the categorical parts of a run need: the priors (`marginals` over ELEMENTS, `bond_marginals` over the
    bond classes or None without explicit bonds), the one-hot and charge scales of the state, the cross-entropy
    weights."""

    marginals: tuple
    bond_marginals: tuple | None = None
    type_norm: float = 4.0
    charge_norm: float = 10.0
    weight: float = TYPE_WEIGHT
    bond_weight: float = 1.0

    @classmethod
    def from_config(cls, types: dict, norm_values, bonds: dict | None = None) -> Categorical:
        """From config.json's recipe 'types' (runconfig.types_config), the run's norm_values and bonds config."""
        marg = types.get("bond_marginals")
        if (marg is None) != (bonds is None):
            raise ConfigError("recipe types: bond_marginals must be given exactly for an explicit-bond run")
        return cls(tuple(float(v) for v in types["marginals"]), None if marg is None else tuple(map(float, marg)),
                   float(norm_values[1]), float(norm_values[2]), float(types.get("weight", TYPE_WEIGHT)),
                   1.0 if bonds is None else float(bonds["weight"]))

    def prior(self, like: torch.Tensor, which: str = "atoms") -> torch.Tensor:
        """m (or the bonds' marginal) as a tensor on `like`'s device, float32."""
        vals = self.marginals if which == "atoms" else self.bond_marginals
        return torch.tensor(vals, dtype=torch.float32, device=like.device)

    def atom_columns(self, classes: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """(N, NUM_TYPES + 1) state columns of types `classes`: onehot / type_norm, Z / charge_norm."""
        z = torch.tensor(ATOMIC_NUMBERS, dtype=like.dtype, device=like.device)
        onehot = nn.functional.one_hot(classes, NUM_TYPES).to(like.dtype)
        return torch.cat([onehot / self.type_norm, (z[classes] / self.charge_norm).unsqueeze(-1)], -1)

    def bond_columns(self, classes: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(classes, len(self.bond_marginals)).to(like.dtype) / BOND_NORM


def marginals_from_formulas(formulas) -> list:
    """m over ELEMENTS from a distributions.FormulaDistribution of the training molecules (its counts weigh each
    formula: the share of all training atoms that are of each element)."""
    atoms = (formulas.probs[:, None] * formulas.formulas.to(torch.float64)).sum(0)
    return (atoms / atoms.sum()).tolist()


def bond_marginals(dataset, sizes) -> list:
    """The bond classes' share among all unordered atom pairs of the training molecules: pairs from the atom-count
    histogram `sizes` (sum N (N - 1) / 2), bonds of each order from the molecules' bond_order (a bonddata
    BondedDataset reads its table, anything else is iterated)."""
    table, index = getattr(dataset, "table", None), getattr(dataset, "molecules", None)
    counts = torch.zeros(NUM_BOND_CLASSES, dtype=torch.float64)
    if table is not None and index is not None:
        offsets, orders = table["offsets"], torch.as_tensor(table["orders"])
        for k in index[: len(dataset)].tolist():
            counts += torch.bincount(orders[int(offsets[k]) : int(offsets[k + 1])], minlength=NUM_BOND_CLASSES)
    else:
        for data in dataset:
            counts += torch.bincount(data.bond_order.reshape(-1).long(), minlength=NUM_BOND_CLASSES).double()
    pairs = sum(float(c) * n * (n - 1) / 2 for n, c in sizes.histogram.items())
    if pairs <= 0:
        raise DataError("categorical bonds: the training molecules have no atom pairs")
    counts[0] = pairs - counts[1:].sum()
    return (counts / pairs).tolist()


def draw(probs: torch.Tensor, generator=None) -> torch.Tensor:
    """One class per row of (R, K) non-negative weights (rows need not sum to 1), by the inverse CDF of one uniform
    per row from `generator`, on the weights' device."""
    cdf = probs.float().cumsum(-1)
    u = torch.rand(probs.shape[0], 1, generator=generator, device=probs.device) * cdf[:, -1:]
    return (cdf <= u).sum(-1).clamp(max=probs.shape[-1] - 1)


def corrupt(classes: torch.Tensor, abar: torch.Tensor, prior: torch.Tensor, generator=None) -> torch.Tensor:
    """c_t ~ Cat(abar onehot(c_0) + (1 - abar) m) per row (`abar` (R,), `prior` m (K,))."""
    keep = abar.float().reshape(-1, 1)
    onehot = nn.functional.one_hot(classes, prior.numel()).float()
    return draw(keep * onehot + (1 - keep) * prior.float(), generator)


def posterior(p: torch.Tensor, c_t: torch.Tensor, prior: torch.Tensor, abar_t: float, abar_s: float) -> torch.Tensor:
    """p(c_s | c_t) = sum_k p_k q(c_s | c_t, c_0 = k) (R, K) for the network's (R, K) probabilities p of the clean
    class, s < t (D3PM, Austin et al. 2021, eq. 4 with the x0-parametrization of its sec. 3.3).

    q(c_s | c_t, k) = q(c_t | c_s) q(c_s | k) / q(c_t | k) with q(c_t | c_s) = a [c_s = c_t] + (1 - a) m_{c_t}
    (a = abar_t / abar_s), q(c_s | k) = abar_s [c_s = k] + (1 - abar_s) m_{c_s}, q(c_t | k) likewise with abar_t.
    A clean class k that cannot have become c_t (q(c_t | k) = 0: m_{c_t} = 0 and k != c_t) gets no weight and p is
    renormalised over the others; with none left (a network sure of an impossible k) c_t itself is taken as c_0."""
    prior = prior.float().reshape(1, -1)
    onehot = nn.functional.one_hot(c_t, prior.shape[1]).float()
    m_t = prior[0, c_t].unsqueeze(-1)
    a = abar_t / abar_s if abar_s > 0 else 0.0
    from_s = a * onehot + (1 - a) * m_t  # q(c_t | c_s) over c_s
    from_0 = abar_t * onehot + (1 - abar_t) * m_t  # q(c_t | c_0 = k) over k
    w = torch.where(from_0 > 0, p.float().clamp(min=0), 0.0)
    total = w.sum(-1, keepdim=True)
    w = torch.where(total > 0, w / total.clamp(min=1e-30), onehot)
    r = w / from_0.clamp(min=1e-30)  # zero wherever w is
    post = from_s * (abar_s * r + (1 - abar_s) * prior * r.sum(-1, keepdim=True))
    return post / post.sum(-1, keepdim=True).clamp(min=1e-30)


def atom_rows(x: torch.Tensor, mask) -> int:
    """How many of x's rows are atoms: all of them, or a packed bonds state's first mask.num_nodes."""
    return mask.num_nodes if isinstance(mask, MoleculeGraph) else x.shape[0]


def training_noise(x0: torch.Tensor, mask, t: torch.Tensor, schedule, space, spec: Categorical, generator=None):
    """(noise, (atom classes, pair classes or None)) for core diffusion_loss at per-graph times `t`: the space's
    noise on the positions; on the type / charge columns (and the pairs' bond columns) the noise that makes
    q_sample's alpha x0 + sigma noise the discrete x_t of a c_t drawn from q(c_t | c_0) (module docstring)."""
    noise = space.sample(x0, mask, generator)
    t_rows = space.per_row(t, mask)
    alpha, sigma = schedule.alpha_sigma(t_rows)
    abar = alpha.double() ** 2
    alpha, sigma = alpha.to(x0.dtype).unsqueeze(-1), sigma.to(x0.dtype).unsqueeze(-1)
    ok = sigma > SIGMA_FLOOR
    n = atom_rows(x0, mask)
    atoms = x0[:n, 3 : 3 + NUM_TYPES].argmax(-1)
    c_t = torch.where(ok[:n, 0], corrupt(atoms, abar[:n], spec.prior(x0), generator), atoms)
    cols = slice(3, 3 + NUM_TYPES + 1)
    want = spec.atom_columns(c_t, x0)
    node_noise = torch.where(ok[:n], (want - alpha[:n] * x0[:n, cols]) / sigma[:n].clamp(min=SIGMA_FLOOR), 0.0)
    node_rows = torch.cat([noise[:n, :3], node_noise, noise[:n, cols.stop :]], -1)
    if n == x0.shape[0]:
        return node_rows, (atoms, None)
    k = len(spec.bond_marginals)
    pairs = x0[n:, :k].argmax(-1)
    b_t = torch.where(ok[n:, 0], corrupt(pairs, abar[n:], spec.prior(x0, "bonds"), generator), pairs)
    pair_noise = torch.where(ok[n:], (spec.bond_columns(b_t, x0) - alpha[n:] * x0[n:, :k])
                             / sigma[n:].clamp(min=SIGMA_FLOOR), 0.0)
    return torch.cat([node_rows, torch.cat([pair_noise, noise[n:, k:]], -1)], 0), (atoms, pairs)


class CategoricalHead(nn.Module):
    """The network of a categorical run: `net`'s type outputs (and an explicit-bond run's pair outputs) taken as
    logits and returned as probabilities in the state's units (module docstring), positions untouched. While
    `capture` is on, the logits of the last call are kept in `self.logits` (atoms, pairs or None) for the loss."""

    def __init__(self, net: nn.Module, type_norm: float = 4.0, charge_norm: float = 10.0):
        super().__init__()
        self.net, self.type_norm, self.charge_norm = net, float(type_norm), float(charge_norm)
        self.register_buffer("atomic_numbers", torch.tensor(ATOMIC_NUMBERS, dtype=torch.float32), persistent=False)
        self.capture, self.logits = False, None

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, *, mask=None, cond=None) -> torch.Tensor:
        out = self.net(x_t, t, mask=mask, cond=cond)
        n = atom_rows(out, mask)
        logits = out[:n, 3 : 3 + NUM_TYPES]
        p = torch.softmax(logits.float(), -1)
        charge = (p @ self.atomic_numbers.to(p.device)).unsqueeze(-1) / self.charge_norm
        nodes = torch.cat([out[:n, :3], (p / self.type_norm).to(out.dtype), charge.to(out.dtype),
                           out[:n, 4 + NUM_TYPES :]], -1)
        pair_logits = None
        if n < out.shape[0]:
            k = mask.bond_nf
            pair_logits = out[n:, :k]
            pairs = (torch.softmax(pair_logits.float(), -1) / BOND_NORM).to(out.dtype)
            nodes = torch.cat([nodes, torch.cat([pairs, out[n:, k:]], -1)], 0)
        if self.capture:
            self.logits = (logits, pair_logits)
        return nodes


def head(denoiser) -> CategoricalHead | None:
    """The CategoricalHead inside a (possibly DDP-wrapped) denoiser, else None."""
    net = getattr(getattr(denoiser, "module", denoiser), "net", None)
    return net if isinstance(net, CategoricalHead) else None


@contextlib.contextmanager
def capturing(denoiser):
    """Keep the head's logits of the calls inside (the training step's cross-entropy); cleared on the way out."""
    net = head(denoiser)
    if net is None:
        raise ConfigError("types='categorical' needs the network built with its categorical head (model.build_net)")
    net.capture, net.logits = True, None
    try:
        yield net
    finally:
        net.capture, net.logits = False, None


def _mean_per_graph(values: torch.Tensor, graph: torch.Tensor, num: int) -> torch.Tensor:
    sums = values.new_zeros(num).index_add_(0, graph, values)
    counts = values.new_zeros(num).index_add_(0, graph, torch.ones_like(values))
    return sums / counts.clamp(min=1)


def cross_entropy(net: CategoricalHead, targets, mask, spec: Categorical) -> torch.Tensor:
    """(B,) per molecule: weight x (mean CE of its atoms' type logits + bond_weight x mean CE of its pairs')."""
    (logits, pair_logits), (atoms, pairs) = net.logits, targets
    if logits is None:
        raise ConfigError("categorical loss: the network was not called while capturing")
    batch = mask.batch if isinstance(mask, MoleculeGraph) else mask
    num = mask.num_graphs if isinstance(mask, MoleculeGraph) else int(batch.max()) + 1
    ce = nn.functional.cross_entropy(logits.float(), atoms, reduction="none")
    loss = _mean_per_graph(ce, batch, num)
    if pair_logits is not None and pairs is not None:
        ce_pairs = nn.functional.cross_entropy(pair_logits.float(), pairs, reduction="none")
        loss = loss + spec.bond_weight * _mean_per_graph(ce_pairs, mask.rows[mask.num_nodes :], num)
    return spec.weight * loss
