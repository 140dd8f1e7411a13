"""EGNN and e3nn denoisers: E(3) equivariance/invariance, permutation equivariance, edges, zero CoM, encode/decode."""
import math

import pytest
import torch

from gendiff.domains.molecules.egnn import fully_connected_edges, remove_mean
from gendiff.domains.molecules.model import (
    STATE_DIM, AtomCountDistribution, build_net, decode, encode, molecule_space,
)
from gendiff.errors import ConfigError

torch.set_num_threads(1)


def small_net(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "egnn":
        return build_net("egnn", hidden_nf=32, n_layers=3)
    return build_net("e3nn", mul_scalars=8, mul_vectors=4, n_layers=2, radial_hidden=16)


def random_orthogonal(gen: torch.Generator, reflect: bool) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if (torch.det(q) < 0) != reflect:
        q[:, 0] = -q[:, 0]
    return q.float()


def molecule_batch(gen: torch.Generator, sizes=(5, 9, 3)):
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    x = torch.randn(batch.numel(), STATE_DIM, generator=gen)
    x[:, :3] = remove_mean(x[:, :3] * 1.5, batch)
    t = torch.rand(len(sizes), generator=gen)[batch]
    return x, t, batch


@pytest.mark.parametrize("kind", ["egnn", "e3nn"])
@pytest.mark.parametrize("reflect", [False, True])
def test_e3_equivariance(kind, reflect):
    gen = torch.Generator().manual_seed(1 + reflect)
    net = small_net(kind).eval()
    x, t, batch = molecule_batch(gen)
    q = random_orthogonal(gen, reflect)
    shift = torch.randn(3, generator=gen) * 3.0
    with torch.no_grad():
        out = net(x, t, mask=batch)
        xr = x.clone()
        xr[:, :3] = x[:, :3] @ q.T + shift
        out_r = net(xr, t, mask=batch)
    assert out.abs().max() > 1e-3, "network output is trivially zero; the test could not fail"
    torch.testing.assert_close(out_r[:, :3], out[:, :3] @ q.T, atol=1e-4, rtol=0)
    torch.testing.assert_close(out_r[:, 3:], out[:, 3:], atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", ["egnn", "e3nn"])
def test_permutation_equivariance(kind):
    gen = torch.Generator().manual_seed(3)
    net = small_net(kind).eval()
    x, t, batch = molecule_batch(gen)
    perm = torch.randperm(x.shape[0], generator=gen)
    with torch.no_grad():
        out = net(x, t, mask=batch)
        out_p = net(x[perm], t[perm], mask=batch[perm])
    torch.testing.assert_close(out_p, out[perm], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["egnn", "e3nn"])
def test_graphs_do_not_interact_and_eps_pos_has_zero_com(kind):
    gen = torch.Generator().manual_seed(4)
    net = small_net(kind).eval()
    x, t, batch = molecule_batch(gen)
    with torch.no_grad():
        out = net(x, t, mask=batch)
        first = batch == 0
        alone = net(x[first], t[first], mask=torch.zeros(int(first.sum()), dtype=torch.long))
    torch.testing.assert_close(alone, out[first], atol=1e-5, rtol=0)
    means = torch.zeros(3, 3).index_add_(0, batch, out[:, :3]) / torch.bincount(batch)[:, None]
    assert means.abs().max() < 1e-5


def test_fully_connected_edges_match_brute_force():
    batch = torch.tensor([2, 0, 2, 1, 0, 2, 2, 3])
    row, col = fully_connected_edges(batch)
    got = sorted(zip(row.tolist(), col.tolist()))
    want = sorted((i, j) for i in range(8) for j in range(8) if i != j and batch[i] == batch[j])
    assert got == want


def test_egnn_matches_edm_config_and_rejects_bad_input():
    net = build_net("egnn")
    assert len(net.blocks) == 9 and net.embedding.out_features == 256
    assert math.isclose(net.blocks[0].update.coords_range, 15.0 / 9)
    with pytest.raises(ConfigError):
        net(torch.zeros(4, 5), torch.zeros(4))
    with pytest.raises(ConfigError, match="model"):
        build_net("schnet")


def test_encode_decode_roundtrip_and_space():
    from torch_geometric.data import Batch

    from gendiff.domains.molecules.data import molecule_to_data

    mols = [molecule_to_data([6, 1, 1, 1, 1], torch.randn(5, 3) + 4.0), molecule_to_data([8, 1, 1], torch.randn(3, 3))]
    x0, batch = encode(Batch.from_data_list(mols))
    assert x0.shape == (8, STATE_DIM)
    assert torch.allclose(x0[:, 3:8].sum(-1), torch.full((8,), 0.25))
    assert torch.allclose(x0[0, 8], torch.tensor(0.6))
    space = molecule_space()
    torch.testing.assert_close(space.project(x0, batch), x0, atol=1e-6, rtol=0)
    assert space.dof(x0, batch).tolist() == [(5 - 1) * 3 + 5 * 6, (3 - 1) * 3 + 3 * 6]
    back = decode(x0 + 0.02, batch)
    assert [m.z.tolist() for m in back] == [[6, 1, 1, 1, 1], [8, 1, 1]]
    assert back[1].charge.flatten().tolist() == [8.0, 1.0, 1.0]


def test_atom_count_distribution():
    dist = AtomCountDistribution({3: 1, 5: 3})
    sizes = dist.sample(4000, torch.Generator().manual_seed(0))
    assert set(sizes.tolist()) == {3, 5}
    assert abs((sizes == 5).float().mean().item() - 0.75) < 0.03
    assert dist.log_prob(torch.tensor([4]))[0] == float("-inf")
    with pytest.raises(ConfigError):
        AtomCountDistribution({})
