"""E(3)-equivariant tensor-product denoiser (Thomas et al. 2018, Tensor Field Networks; Geiger & Smidt 2022, e3nn).

Each layer: message = TP(h_j, Y(r_ij); w(|r_ij|)), a channel-wise tensor product with spherical harmonics Y whose
weights come from an MLP of a radial basis, summed over neighbours, mixed by an equivariant linear map, plus a
self-connection, then a gated non-linearity (Weiler et al. 2018).
Scalars (0e) of the last layer predict the feature noise, one l=1 odd vector (1o) predicts the coordinate noise.
"""
from __future__ import annotations

import torch
from e3nn import o3
from e3nn.math import soft_one_hot_linspace
from e3nn.nn import FullyConnectedNet, Gate
from torch import nn

from gendiff.errors import ConfigError

from .egnn import graph_structure, remove_mean


def _path_exists(irreps_in1: o3.Irreps, irreps_in2: o3.Irreps, ir_out) -> bool:
    ir_out = o3.Irrep(ir_out)
    return any(ir_out in ir1 * ir2 for _, ir1 in irreps_in1 for _, ir2 in irreps_in2)


def channelwise_tp(irreps_in: o3.Irreps, irreps_sh: o3.Irreps, targets: o3.Irreps):
    """Depthwise ('uvu') tensor product onto the irreps in `targets`, weights supplied per edge (NequIP's recipe)."""
    wanted = {ir for _, ir in targets}
    mid, instructions = [], []
    for i, (mul, ir_in) in enumerate(irreps_in):
        for j, (_, ir_sh) in enumerate(irreps_sh):
            for ir_out in ir_in * ir_sh:
                if ir_out in wanted:
                    instructions.append((i, j, len(mid), "uvu", True))
                    mid.append((mul, ir_out))
    mid, perm, _ = o3.Irreps(mid).sort()
    instructions = [(i, j, perm[k], mode, train) for i, j, k, mode, train in instructions]
    return o3.TensorProduct(irreps_in, irreps_sh, mid, instructions, shared_weights=False, internal_weights=False)


class TPConvolution(nn.Module):
    """Point convolution: sum_j Linear(TP(h_j, Y(r_ij); w(|r_ij|))) + self-connection, then a gate."""

    def __init__(self, irreps_in, irreps_out, irreps_sh, num_basis: int, radial_hidden: int, num_neighbors: float,
                 gate: bool = True):
        super().__init__()
        irreps_in, irreps_out = o3.Irreps(irreps_in), o3.Irreps(irreps_out)
        if gate:
            act = {1: torch.nn.functional.silu, -1: torch.tanh}
            act_gates = {1: torch.sigmoid, -1: torch.tanh}
            scalars = o3.Irreps(
                [(m, ir) for m, ir in irreps_out if ir.l == 0 and _path_exists(irreps_in, irreps_sh, ir)]
            )
            gated = o3.Irreps([(m, ir) for m, ir in irreps_out if ir.l > 0 and _path_exists(irreps_in, irreps_sh, ir)])
            gate_ir = "0e" if _path_exists(irreps_in, irreps_sh, "0e") else "0o"
            gates = o3.Irreps([(m, gate_ir) for m, _ in gated])
            self.gate = Gate(
                scalars, [act[ir.p] for _, ir in scalars], gates, [act_gates[ir.p] for _, ir in gates], gated
            )
            target = self.gate.irreps_in
        else:
            self.gate, target = None, irreps_out
        self.tp = channelwise_tp(irreps_in, irreps_sh, target)
        self.radial = FullyConnectedNet([num_basis, radial_hidden, self.tp.weight_numel], torch.nn.functional.silu)
        self.linear = o3.Linear(self.tp.irreps_out.simplify(), target)
        self.self_connection = o3.Linear(irreps_in, target)
        self.num_neighbors = num_neighbors
        self.irreps_out = self.gate.irreps_out if gate else target

    def forward(self, h, row, col, edge_sh, edge_basis):
        messages = self.tp(h[col], edge_sh, self.radial(edge_basis))
        agg = torch.zeros(h.shape[0], messages.shape[1], dtype=h.dtype, device=h.device).index_add_(0, row, messages)
        out = self.self_connection(h) + self.linear(agg / self.num_neighbors**0.5)
        return self.gate(out) if self.gate is not None else out


class E3NNDenoiser(nn.Module):
    """Tensor-product network with signature net(x_t, t, *, mask=batch, cond=None) -> [eps_pos | eps_features]."""

    def __init__(
        self,
        in_node_nf: int = 6,
        mul_scalars: int = 32,
        mul_vectors: int = 8,
        n_layers: int = 3,
        lmax: int = 2,
        num_basis: int = 16,
        max_radius: float = 10.0,
        radial_hidden: int = 64,
        num_neighbors: float = 17.0,
        context_nf: int = 0,
    ):
        super().__init__()
        if min(mul_scalars, mul_vectors, n_layers, lmax, num_basis) < 1 or max_radius <= 0:
            raise ConfigError(
                f"E3NNDenoiser: mul_scalars={mul_scalars}, mul_vectors={mul_vectors}, n_layers={n_layers}, "
                f"lmax={lmax}, num_basis={num_basis}, max_radius={max_radius} must be positive"
            )
        self.in_node_nf, self.context_nf, self.n_dims = in_node_nf, context_nf, 3
        self.num_basis, self.max_radius = num_basis, max_radius
        self.irreps_sh = o3.Irreps.spherical_harmonics(lmax)
        irreps_hidden = o3.Irreps(
            f"{mul_scalars}x0e + {mul_scalars}x0o + {mul_vectors}x1o + {mul_vectors}x1e"
            + "".join(f" + {mul_vectors}x{l}e + {mul_vectors}x{l}o" for l in range(2, lmax + 1))
        )
        self.embedding = nn.Linear(in_node_nf + 1 + context_nf, mul_scalars)
        irreps = o3.Irreps(f"{mul_scalars}x0e")
        self.layers = nn.ModuleList()
        for _ in range(n_layers):
            conv = TPConvolution(irreps, irreps_hidden, self.irreps_sh, num_basis, radial_hidden, num_neighbors)
            self.layers.append(conv)
            irreps = conv.irreps_out
        self.irreps_out = o3.Irreps(f"{in_node_nf}x0e + 1x1o")
        self.out_conv = TPConvolution(irreps, self.irreps_out, self.irreps_sh, num_basis, radial_hidden,
                                      num_neighbors, gate=False)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, *, mask=None, cond=None) -> torch.Tensor:
        if x_t.dim() != 2 or x_t.shape[1] != self.n_dims + self.in_node_nf:
            raise ConfigError(
                f"E3NNDenoiser expects x_t of shape (N, {self.n_dims + self.in_node_nf}), got {tuple(x_t.shape)}"
            )
        batch = mask if mask is not None else x_t.new_zeros(x_t.shape[0], dtype=torch.long)
        pos, h = x_t[:, :3], x_t[:, 3:]
        parts = [h, t.reshape(-1, 1).to(h.dtype).expand(h.shape[0], 1)]
        if self.context_nf:
            if cond is None:
                raise ConfigError(f"E3NNDenoiser was built with context_nf={self.context_nf} but cond=None")
            parts.append(cond[batch] if cond.shape[0] != h.shape[0] else cond)
        row, col, num = graph_structure(batch)
        vec = pos[col] - pos[row]
        edge_sh = o3.spherical_harmonics(self.irreps_sh, vec, normalize=True, normalization="component")
        length = vec.norm(dim=-1)
        edge_basis = soft_one_hot_linspace(
            length, 0.0, self.max_radius, self.num_basis, basis="gaussian", cutoff=False
        ) * self.num_basis**0.5
        x = self.embedding(torch.cat(parts, dim=-1))
        for layer in self.layers:
            x = layer(x, row, col, edge_sh, edge_basis)
        out = self.out_conv(x, row, col, edge_sh, edge_basis)
        eps_h, eps_pos = out[:, : self.in_node_nf], out[:, self.in_node_nf :]
        return torch.cat([remove_mean(eps_pos, batch, num), eps_h], dim=-1)
