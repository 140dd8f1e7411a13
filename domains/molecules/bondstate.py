"""Explicit bonds diffused with the atoms (`bonds="explicit"`): the packed state, its noise space and the network
wrapper that let gendiff's core samplers and loss carry bonds unchanged.

The state. Each unordered atom pair (i < j) of a molecule has a bond type out of BOND_CLASSES (none, single, double,
triple: kekulized, no aromatic class; bonddata.py says where the training bonds come from), encoded like EDM's atom
types as a one-hot scaled by 1 / BOND_NORM and diffused as a Gaussian with the atoms' schedule. The core samplers
and `diffusion_loss` move ONE tensor x and hand `mask` untouched to the space and the network, so a bonds run packs
its state into one tensor of the atoms' width (model.STATE_DIM):

    rows [0, N)       the atoms, exactly as without bonds: [pos 3 | one-hot types / 4 | charge / 10]
    rows [N, N + P)   one row per unordered pair, in MoleculeGraph order: its bond one-hot / BOND_NORM in the first
                      NUM_BOND_CLASSES columns, zeros in the rest

and `mask` is a MoleculeGraph (the atoms' batch vector, the pairs, the ordered edges and the pair of each edge)
instead of the bare batch vector. BondedSpace is that state's NoiseSpace: ZeroCoM positions and Gaussian features
per atom as before, one standard normal draw per unordered pair and class (only i < j is stored, so the bond matrix
is symmetric by construction), per-row times by graph, and a loss reduction that averages the atoms' and the pairs'
squared errors separately and adds them as atoms + bond_weight x pairs. PackedBonds unpacks for the network
(egnn.EGNN with bond_nf, whose bond head is symmetric in i and j) and packs its outputs again.

Why packing rather than a (node, edge) tuple state: every core sampler step is arithmetic on x (c1 x + c2 x0 +
s noise), per-row times of length x.shape[0] and space.sample/project/sum; a tuple would need every sampler and the
loss rewritten, a packed tensor with a richer mask needs no change to gendiff/ at all, and every core sampler
(ancestral, DDIM, Euler-Maruyama, Heun, DPM-Solver++, ...) works on it. The price is the zero padding of the pair
rows, which the space keeps at zero and leaves out of the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gendiff.errors import ConfigError, DataError
from gendiff.spaces import NoiseSpace

from .egnn import fully_connected_edges

BOND_CLASSES = ("none", "single", "double", "triple")
NUM_BOND_CLASSES = len(BOND_CLASSES)
BOND_NORM = 4.0  # one-hot / 4, as EDM scales the atom types


@dataclass(frozen=True, eq=False)
class MoleculeGraph:
    """The `mask` of a packed bonds state: `batch` (N,) the graph of each atom; `pair_i` < `pair_j` (P,) the
    unordered pairs of atoms of one graph, sorted by pair_i * N + pair_j; `row`, `col` (2P,) the ordered edges
    (egnn.fully_connected_edges) and `edge_pair` the pair of each; `rows` (N + P,) the graph of each packed row."""

    batch: torch.Tensor
    pair_i: torch.Tensor
    pair_j: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor
    edge_pair: torch.Tensor
    rows: torch.Tensor
    num_graphs: int
    width: int
    bond_nf: int = NUM_BOND_CLASSES

    @classmethod
    def from_batch(cls, batch: torch.Tensor, width: int, bond_nf: int = NUM_BOND_CLASSES) -> MoleculeGraph:
        if batch.dtype != torch.long or batch.dim() != 1:
            raise ConfigError("MoleculeGraph needs the LongTensor batch vector (N,) of the atoms")
        if not 0 < bond_nf <= width:
            raise ConfigError(f"bond_nf={bond_nf} must be in 1..{width} (the packed width)")
        n = batch.numel()
        row, col = fully_connected_edges(batch)
        upper = row < col
        keys, order = torch.sort(row[upper] * n + col[upper])
        pair_i, pair_j = row[upper][order], col[upper][order]
        edge_pair = torch.searchsorted(keys, torch.minimum(row, col) * n + torch.maximum(row, col))
        num = int(batch.max()) + 1 if n else 0
        return cls(
            batch, pair_i, pair_j, row, col, edge_pair, torch.cat([batch, batch[pair_i]]), num, int(width), int(bond_nf)
        )

    @property
    def num_nodes(self) -> int:
        return self.batch.numel()

    @property
    def num_pairs(self) -> int:
        return self.pair_i.numel()

    @property
    def num_rows(self) -> int:
        return self.rows.numel()

    def pair_index(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """The position of the unordered pair {i, j} (atom indices, i != j, same graph) among the pairs."""
        n = self.num_nodes
        want = torch.minimum(i, j) * n + torch.maximum(i, j)
        keys = self.pair_i * n + self.pair_j
        idx = torch.searchsorted(keys, want).clamp(max=max(self.num_pairs - 1, 0))
        if want.numel() and (self.num_pairs == 0 or not torch.equal(keys[idx], want)):
            raise DataError("a bond joins an atom to itself or to an atom of another molecule")
        return idx

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(atoms (N, width), bonds (P, bond_nf)) of a packed tensor."""
        if x.dim() != 2 or x.shape != (self.num_rows, self.width):
            raise ConfigError(
                f"packed bonds state of shape {tuple(x.shape)}; expected ({self.num_rows}, "
                f"{self.width}) for {self.num_nodes} atoms and {self.num_pairs} pairs"
            )
        return x[: self.num_nodes], x[self.num_nodes :, : self.bond_nf]

    def pack(self, nodes: torch.Tensor, bonds: torch.Tensor) -> torch.Tensor:
        """The packed (N + P, width) tensor of atoms (N, width) and bonds (P, bond_nf); pair rows zero-padded."""
        pad = bonds.new_zeros(bonds.shape[0], self.width - bonds.shape[1])
        return torch.cat([nodes, torch.cat([bonds.to(nodes.dtype), pad.to(nodes.dtype)], -1)], 0)


def as_graph(mask) -> MoleculeGraph:
    if not isinstance(mask, MoleculeGraph):
        raise ConfigError(f"a bonds state needs mask=MoleculeGraph (bondstate.py), got {type(mask).__name__}")
    return mask


class BondedSpace(NoiseSpace):
    """The noise space of a packed bonds state (module docstring): `node_space` on the atom rows (model's molecule
    space), a standard normal per unordered pair and bond class on the pair rows, padding held at zero. reduce()
    gives per molecule mean(atom errors) + bond_weight x mean(pair errors), each over its own entries (a molecule
    of one atom has no pair term)."""

    graph = True

    def __init__(self, node_space: NoiseSpace, bond_weight: float = 1.0):
        if not float(bond_weight) >= 0:
            raise ConfigError(f"bond_weight={bond_weight} must be >= 0")
        self.node_space, self.bond_weight = node_space, float(bond_weight)

    def sample(self, like, mask=None, generator=None):
        g = as_graph(mask)
        nodes, bonds = g.split(like)
        noise = torch.randn(bonds.shape, generator=generator, device=like.device, dtype=like.dtype)
        return g.pack(self.node_space.sample(nodes, g.batch, generator), noise)

    def project(self, x, mask=None):
        g = as_graph(mask)
        nodes, bonds = g.split(x)
        return g.pack(self.node_space.project(nodes, g.batch), bonds)

    def num_samples(self, x, mask=None):
        return as_graph(mask).num_graphs

    def per_row(self, values, mask=None):
        return values[as_graph(mask).rows]

    def parts(self, err: torch.Tensor, mask) -> tuple[torch.Tensor, ...]:
        """Per graph: (atom error sum, atom entries, pair error sum, pair entries)."""
        g = as_graph(mask)
        nodes, bonds = g.split(err)
        pair_graph = g.rows[g.num_nodes :]
        pair_sum = err.new_zeros(g.num_graphs).index_add_(0, pair_graph, bonds.sum(-1))
        pair_count = err.new_zeros(g.num_graphs).index_add_(0, pair_graph, err.new_ones(g.num_pairs)) * g.bond_nf
        return (
            self.node_space.sum(nodes, g.batch),
            self.node_space.count(nodes, g.batch).to(err.dtype),
            pair_sum,
            pair_count,
        )

    def sum(self, err, mask=None):
        node_sum, _, pair_sum, _ = self.parts(err, mask)
        return node_sum + pair_sum

    def count(self, like, mask=None):
        _, node_count, _, pair_count = self.parts(like, mask)
        return node_count + pair_count

    def reduce(self, err, mask=None):
        node_sum, node_count, pair_sum, pair_count = self.parts(err, mask)
        return node_sum / node_count.clamp(min=1) + self.bond_weight * pair_sum / pair_count.clamp(min=1)

    def dof(self, like, mask=None):
        g = as_graph(mask)
        nodes, _ = g.split(like)
        return self.node_space.dof(nodes, g.batch) + self.parts(like, mask)[3]


class PackedBonds(nn.Module):
    """The network of a bonds run: unpacks (x_t, t) with the MoleculeGraph mask, calls `net` (egnn.EGNN with
    bond_nf) on the atoms with the pairs' bond features, and packs its (atom, bond) outputs again."""

    def __init__(self, net: nn.Module):
        super().__init__()
        if not getattr(net, "bond_nf", 0):
            raise ConfigError("PackedBonds wraps a network built with bond_nf > 0")
        self.net = net

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, *, mask=None, cond=None) -> torch.Tensor:
        g = as_graph(mask)
        nodes, bonds = g.split(x_t)
        t = torch.as_tensor(t, device=x_t.device).reshape(-1)
        t_nodes = t[: g.num_nodes] if t.numel() == g.num_rows else t.expand(g.num_nodes)
        node_out, bond_out = self.net(nodes, t_nodes, mask=g.batch, cond=cond, bonds=bonds, graph=g)
        return g.pack(node_out, bond_out)


def bond_features(batch, g: MoleculeGraph, norm: float = BOND_NORM) -> torch.Tensor:
    """(P, bond_nf) scaled one-hot bond types of a torch-geometric batch whose molecules carry `bond_index` (2, B)
    (atom indices, batched) and `bond_order` (B,) in 1..bond_nf - 1; every other pair is class 0 (no bond)."""
    index, order = getattr(batch, "bond_index", None), getattr(batch, "bond_order", None)
    if index is None or order is None:
        raise DataError(
            "explicit bonds: the molecules carry no bond_index / bond_order (bonddata.with_bonds adds "
            "them to QM9, molecule lists and files)"
        )
    device = g.batch.device
    index, order = index.to(device).long(), order.to(device).long().reshape(-1)
    if order.numel() and (order.min() < 1 or order.max() >= g.bond_nf):
        raise DataError(
            f"bond orders {sorted(set(order.tolist()))}: expected 1..{g.bond_nf - 1} "
            f"({', '.join(BOND_CLASSES[1 : g.bond_nf])}; kekulize aromatic bonds)"
        )
    classes = torch.zeros(g.num_pairs, dtype=torch.long, device=device)
    if order.numel():
        classes[g.pair_index(index[0], index[1])] = order
    return nn.functional.one_hot(classes, g.bond_nf).float() / float(norm)


def decode_bonds(bonds: torch.Tensor, g: MoleculeGraph) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per graph (bond_index (2, B) in the graph's own atom numbering, bond_order (B,)): each pair's bond type by
    argmax over the classes, class 0 (none) left out. Atoms are numbered in the graph's order of appearance in
    the batch, as model.decode numbers them."""
    bonds, batch = bonds.detach().float().cpu(), g.batch.cpu()
    order = torch.argsort(batch, stable=True)
    counts = torch.bincount(batch, minlength=g.num_graphs)
    start = torch.cumsum(counts, 0) - counts
    local = torch.empty_like(batch)
    local[order] = torch.arange(batch.numel()) - start[batch[order]]
    cls = bonds.argmax(-1)
    keep = cls > 0
    i, j, graph_of, kept = g.pair_i.cpu()[keep], g.pair_j.cpu()[keep], g.rows.cpu()[g.num_nodes :][keep], cls[keep]
    out = []
    for k in range(g.num_graphs):
        sel = graph_of == k
        a, b = local[i[sel]], local[j[sel]]
        out.append((torch.stack([torch.minimum(a, b), torch.maximum(a, b)]), kept[sel].clone()))
    return out
