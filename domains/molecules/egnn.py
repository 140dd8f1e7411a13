"""E(n)-equivariant graph network as EDM uses it (Satorras et al. 2021, Eq. 3-6; Hoogeboom et al. 2022, App. B).

Sparse form: fully connected edges inside each molecule are built from the batch vector with tensor ops and
messages are aggregated with `index_add_`; no padding to the largest molecule and no Python loop over graphs.

Factored first layers (the default, `factored=True`): the edge MLP and the coordinate MLP start with a Linear on
[h_i, h_j, d_ij] (d_ij = [radial, radial0]). With its weight split as [W_a | W_b | W_d], that layer equals
h_i W_a^T + h_j W_b^T + d_ij W_d^T + b, so the two (N, F) x (F, F) projections run once per node and each edge only
gathers and adds them (plus the (E, 2) x (2, F) distance term): the (E, 2F + 2) x (2F + 2, F) product, about two
thirds of each MLP's per-edge matmul work (forward and backward), is gone, and so is the (E, 2F + 2) concatenated
input. Same function, same parameters and state_dict keys (checkpoints load in either form); `factored=False`
computes the concatenation as EDM's code does (benchmarks/molecules.py speed measures both).

The graph structure (edges, number of graphs) has data-dependent sizes: `graph_structure` builds it once per
forward, outside torch.compile, so a compiled network is one graph from the embedding to the output.

Explicit bonds (`bond_nf` > 0, bondstate.py): each unordered atom pair carries `bond_nf` noisy bond-type features.
They join the invariant edge attributes [radial, radial0] of every message and coordinate weight (both directions
of a pair see the same values), and a bond head predicts them per unordered pair from [h_i + h_j, h_i * h_j, the
pair's squared distance at the input and at the updated positions, its input features]: a symmetric function of
(i, j) of invariants, so the bond output is E(3)-invariant, symmetric and permutation-equivariant by construction.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gendiff.errors import ConfigError


def fully_connected_edges(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All ordered pairs (i, j), i != j, of nodes in the same graph; `batch` need not be sorted."""
    n = batch.numel()
    device = batch.device
    if n == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty
    order = torch.argsort(batch, stable=True)
    b = batch[order]
    counts = torch.bincount(b)
    node_ptr = torch.cumsum(counts, 0) - counts
    deg = counts[b] - 1
    row_s = torch.repeat_interleave(torch.arange(n, device=device), deg)
    edge_start = torch.cumsum(deg, 0) - deg
    k = torch.arange(row_s.numel(), device=device) - edge_start[row_s]
    local_i = row_s - node_ptr[b[row_s]]
    col_s = node_ptr[b[row_s]] + k + (k >= local_i).long()
    return order[row_s], order[col_s]


def num_graphs(batch: torch.Tensor) -> int:
    return int(batch.max()) + 1 if batch.numel() else 0


@torch.compiler.disable
def graph_structure(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(row, col, number of graphs) of the fully connected graphs in `batch`; run eagerly under torch.compile
    (their sizes depend on the data), once per forward."""
    row, col = fully_connected_edges(batch)
    return row, col, num_graphs(batch)


def remove_mean(x: torch.Tensor, batch: torch.Tensor, num: int | None = None) -> torch.Tensor:
    """Subtract each graph's mean (the zero centre-of-mass projection of Satorras et al. 2021 / EDM Sec. 3).

    `num` (the number of graphs) saves a device sync when known; counts come from index_add_, not bincount, so the
    op has static output sizes (traceable by torch.compile)."""
    num = num_graphs(batch) if num is None else int(num)
    sums = x.new_zeros(num, x.shape[1]).index_add_(0, batch, x)
    counts = x.new_zeros(num).index_add_(0, batch, x.new_ones(batch.shape[0])).clamp_min(1)
    return x - (sums / counts[:, None])[batch]


def coord2diff(pos: torch.Tensor, row: torch.Tensor, col: torch.Tensor, norm_constant: float):
    """Squared distance and normalised relative position (x_i - x_j) / (|x_i - x_j| + C), EDM's coord2diff."""
    diff = pos[row] - pos[col]
    radial = (diff**2).sum(-1, keepdim=True)
    norm = torch.sqrt(radial + 1e-8)
    return radial, diff / (norm + norm_constant)


def pair_linear(lin: nn.Linear, h: torch.Tensor, row: torch.Tensor, col: torch.Tensor,
                edge_attr: torch.Tensor) -> torch.Tensor:
    """lin(cat([h[row], h[col], edge_attr], -1)) computed from per-node projections: with lin.weight = [W_a | W_b |
    W_d], (h W_a^T + b)[row] + (h W_b^T)[col] + edge_attr W_d^T. The bias is added per node, so per edge the layer is
    two gathers, an add and a rank-2 update."""
    f = h.shape[-1]
    w = lin.weight
    src = F.linear(h, w[:, :f], lin.bias)
    dst = F.linear(h, w[:, f : 2 * f])
    pair = src.index_select(0, row).add_(dst.index_select(0, col))
    return torch.addmm(pair, edge_attr, w[:, 2 * f :].t())


class GCL(nn.Module):
    """Invariant message passing layer: m_ij = phi_e(h_i, h_j, d_ij), gated by phi_inf (EGNN Eq. 3, 5, 8)."""

    def __init__(self, hidden_nf: int, edge_nf: int, normalization_factor: float, attention: bool,
                 factored: bool = True):
        super().__init__()
        self.normalization_factor = normalization_factor
        self.factored = factored
        self.edge_mlp = nn.Sequential(
            nn.Linear(2 * hidden_nf + edge_nf, hidden_nf), nn.SiLU(), nn.Linear(hidden_nf, hidden_nf), nn.SiLU()
        )
        self.node_mlp = nn.Sequential(nn.Linear(2 * hidden_nf, hidden_nf), nn.SiLU(), nn.Linear(hidden_nf, hidden_nf))
        self.att_mlp = nn.Sequential(nn.Linear(hidden_nf, 1), nn.Sigmoid()) if attention else None

    def message(self, h_i: torch.Tensor, h_j: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
        """m_ij from gathered (or, in the dense reference, broadcast) endpoint features: EDM's concatenated form."""
        return self.gate(self.edge_mlp(torch.cat([h_i, h_j, edge_attr], dim=-1)))

    def message_factored(self, h, row, col, edge_attr) -> torch.Tensor:
        """The same m_ij as message(h[row], h[col], edge_attr), with the first Linear factored (pair_linear)."""
        mlp = self.edge_mlp
        return self.gate(mlp[3](mlp[2](mlp[1](pair_linear(mlp[0], h, row, col, edge_attr)))))

    def gate(self, m: torch.Tensor) -> torch.Tensor:
        return m * self.att_mlp(m) if self.att_mlp is not None else m

    def update(self, h: torch.Tensor, agg: torch.Tensor) -> torch.Tensor:
        return h + self.node_mlp(torch.cat([h, agg / self.normalization_factor], dim=-1))

    def forward(self, h, row, col, edge_attr):
        if self.factored:
            m = self.message_factored(h, row, col, edge_attr)
        else:
            m = self.message(h[row], h[col], edge_attr)
        return self.update(h, torch.zeros_like(h).index_add_(0, row, m))


class EquivariantUpdate(nn.Module):
    """Coordinate update x_i += sum_j (x_i - x_j)/(d_ij + C) * tanh(phi_x(m_ij)) * range (EGNN Eq. 4, EDM)."""

    def __init__(self, hidden_nf: int, edge_nf: int, normalization_factor: float, tanh: bool, coords_range: float,
                 factored: bool = True):
        super().__init__()
        self.factored = factored
        last = nn.Linear(hidden_nf, 1, bias=False)
        nn.init.xavier_uniform_(last.weight, gain=0.001)
        self.coord_mlp = nn.Sequential(
            nn.Linear(2 * hidden_nf + edge_nf, hidden_nf), nn.SiLU(), nn.Linear(hidden_nf, hidden_nf), nn.SiLU(), last
        )
        self.tanh = tanh
        self.coords_range = coords_range
        self.normalization_factor = normalization_factor

    def weight(self, h_i: torch.Tensor, h_j: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
        """phi_x per edge from gathered (or broadcast) endpoint features: EDM's concatenated form."""
        return self.squash(self.coord_mlp(torch.cat([h_i, h_j, edge_attr], dim=-1)))

    def weight_factored(self, h, row, col, edge_attr) -> torch.Tensor:
        """The same phi_x as weight(h[row], h[col], edge_attr), with the first Linear factored (pair_linear)."""
        mlp = self.coord_mlp
        return self.squash(mlp[4](mlp[3](mlp[2](mlp[1](pair_linear(mlp[0], h, row, col, edge_attr))))))

    def squash(self, w: torch.Tensor) -> torch.Tensor:
        return torch.tanh(w) * self.coords_range if self.tanh else w

    def forward(self, h, pos, row, col, coord_diff, edge_attr):
        if self.factored:
            trans = coord_diff * self.weight_factored(h, row, col, edge_attr)
        else:
            trans = coord_diff * self.weight(h[row], h[col], edge_attr)
        return pos + torch.zeros_like(pos).index_add_(0, row, trans) / self.normalization_factor


class EquivariantBlock(nn.Module):
    """`inv_sublayers` GCLs followed by one equivariant coordinate update (EDM's EquivariantBlock)."""

    def __init__(self, hidden_nf, inv_sublayers, attention, tanh, coords_range, norm_constant, normalization_factor,
                 factored: bool = True, bond_nf: int = 0):
        super().__init__()
        self.norm_constant = norm_constant
        self.gcls = nn.ModuleList(
            GCL(hidden_nf, 2 + bond_nf, normalization_factor, attention, factored) for _ in range(inv_sublayers)
        )
        self.update = EquivariantUpdate(hidden_nf, 2 + bond_nf, normalization_factor, tanh, coords_range, factored)

    def forward(self, h, pos, row, col, radial0, edge_bonds=None):
        """`edge_bonds` (E, bond_nf): the bond features of each ordered edge's pair, appended to the edge attributes."""
        radial, coord_diff = coord2diff(pos, row, col, self.norm_constant)
        edge_attr = torch.cat([radial, radial0] + ([] if edge_bonds is None else [edge_bonds]), dim=-1)
        for gcl in self.gcls:
            h = gcl(h, row, col, edge_attr)
        return h, self.update(h, pos, row, col, coord_diff, edge_attr)


class EGNN(nn.Module):
    """EDM's EGNN_dynamics: eps_x = x_out - x_in projected to zero CoM, eps_h from the invariant head (EDM Sec. 3.3).

    Input `x_t` is (N, 3 + in_node_nf) = [pos | features]; `t` is (N,) in [0, 1]; `mask` is the batch vector;
    `cond` (optional) is per-node (N, context_nf) or per-graph (B, context_nf) context. `factored` picks how the
    first layer of the edge and coordinate MLPs is computed (see the module docstring); it changes no parameter and
    no output beyond float rounding, and `set_factored` switches a built network. `bond_nf` > 0 builds the explicit
    bond path (module docstring): forward then takes `bonds` (P, bond_nf) per unordered pair and `graph` (a
    bondstate.MoleculeGraph: row, col, edge_pair, pair_i, pair_j, num_graphs) and returns (node output, bond output
    (P, bond_nf)).
    """

    def __init__(
        self,
        in_node_nf: int = 6,
        hidden_nf: int = 256,
        n_layers: int = 9,
        inv_sublayers: int = 1,
        attention: bool = True,
        tanh: bool = True,
        coords_range: float = 15.0,
        norm_constant: float = 1.0,
        normalization_factor: float = 1.0,
        context_nf: int = 0,
        condition_time: bool = True,
        factored: bool = True,
        bond_nf: int = 0,
    ):
        super().__init__()
        if in_node_nf < 0 or hidden_nf < 1 or n_layers < 1 or inv_sublayers < 1 or bond_nf < 0:
            raise ConfigError(
                f"EGNN: in_node_nf={in_node_nf}, hidden_nf={hidden_nf}, n_layers={n_layers}, "
                f"inv_sublayers={inv_sublayers} must be positive (bond_nf={bond_nf} >= 0)"
            )
        self.in_node_nf, self.context_nf, self.condition_time = in_node_nf, context_nf, condition_time
        self.n_dims = 3
        self.embedding = nn.Linear(in_node_nf + context_nf + int(condition_time), hidden_nf)
        self.embedding_out = nn.Linear(hidden_nf, in_node_nf)
        self.blocks = nn.ModuleList(
            EquivariantBlock(
                hidden_nf, inv_sublayers, attention, tanh, coords_range / n_layers, norm_constant, normalization_factor,
                factored, bond_nf,
            )
            for _ in range(n_layers)
        )
        self.factored = bool(factored)
        self.bond_nf = int(bond_nf)
        if self.bond_nf:
            self.bond_out = nn.Sequential(
                nn.Linear(2 * hidden_nf + 2 + bond_nf, hidden_nf), nn.SiLU(), nn.Linear(hidden_nf, hidden_nf),
                nn.SiLU(), nn.Linear(hidden_nf, bond_nf),
            )

    def set_factored(self, factored: bool = True) -> "EGNN":
        """Compute the first edge/coordinate layers factored (True) or on the concatenated input (False), in place."""
        self.factored = bool(factored)
        for m in self.modules():
            if isinstance(m, (GCL, EquivariantUpdate)):
                m.factored = self.factored
        return self

    def node_inputs(self, h: torch.Tensor, t: torch.Tensor, batch: torch.Tensor, cond) -> torch.Tensor:
        parts = [h]
        if self.condition_time:
            parts.append(t.reshape(-1, 1).to(h.dtype).expand(h.shape[0], 1))
        if self.context_nf:
            if cond is None:
                raise ConfigError(f"EGNN was built with context_nf={self.context_nf} but cond=None")
            parts.append(cond[batch] if cond.shape[0] != h.shape[0] else cond)
        return torch.cat(parts, dim=-1)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, *, mask=None, cond=None, bonds=None, graph=None):
        if x_t.dim() != 2 or x_t.shape[1] != self.n_dims + self.in_node_nf:
            raise ConfigError(f"EGNN expects x_t of shape (N, {self.n_dims + self.in_node_nf}), got {tuple(x_t.shape)}")
        if bool(self.bond_nf) != (bonds is not None and graph is not None):
            raise ConfigError(f"EGNN built with bond_nf={self.bond_nf}: give bonds and graph exactly when bond_nf > 0")
        batch = mask if mask is not None else x_t.new_zeros(x_t.shape[0], dtype=torch.long)
        pos, h = x_t[:, : self.n_dims], x_t[:, self.n_dims :]
        if graph is not None:
            row, col, num = graph.row, graph.col, graph.num_graphs
            edge_bonds = bonds.index_select(0, graph.edge_pair)
        else:
            row, col, num = graph_structure(batch)
            edge_bonds = None
        radial0, _ = coord2diff(pos, row, col, 1.0)
        h = self.embedding(self.node_inputs(h, t, batch, cond))
        p = pos
        for block in self.blocks:
            h, p = block(h, p, row, col, radial0, edge_bonds)
        eps_pos = remove_mean(p - pos, batch, num)
        out = torch.cat([eps_pos, self.embedding_out(h)], dim=-1)
        if graph is None:
            return out
        return out, self.bond_head(h, pos, p, bonds, graph.pair_i, graph.pair_j)

    def bond_head(self, h, pos, p, bonds, i, j) -> torch.Tensor:
        """Bond output per unordered pair (i, j): symmetric in i and j, from invariants only."""
        h_i, h_j = h.index_select(0, i), h.index_select(0, j)
        d_in = ((pos.index_select(0, i) - pos.index_select(0, j)) ** 2).sum(-1, keepdim=True)
        d_out = ((p.index_select(0, i) - p.index_select(0, j)) ** 2).sum(-1, keepdim=True)
        return self.bond_out(torch.cat([h_i + h_j, h_i * h_j, d_in, d_out, bonds], dim=-1))
