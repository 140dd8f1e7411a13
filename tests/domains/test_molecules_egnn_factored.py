"""The factored EGNN (first edge/coordinate layer as per-node projections gathered per edge) computes the same function
as the concatenated form EDM's code uses: same parameters and state_dict, same outputs and gradients (float32 and
float64), E(3) and permutation equivariance, molecules without edges, bf16 autocast, and the shipped checkpoint."""
import pytest
import torch

from gendiff.domains.molecules.egnn import EGNN, pair_linear, remove_mean
from gendiff.domains.molecules.model import FEATURE_DIM, STATE_DIM, build_net

torch.set_num_threads(1)

# (net options, float32 tolerance): attention and tanh on and off, two inv sublayers, context, a wider net
CASES = [
    dict(hidden_nf=32, n_layers=3),
    dict(hidden_nf=24, n_layers=2, inv_sublayers=2, attention=False, tanh=False, normalization_factor=3.0),
    dict(hidden_nf=16, n_layers=2, context_nf=2, norm_constant=0.5),
    dict(hidden_nf=64, n_layers=4),
]


def pair_of_nets(dtype=torch.float32, **kw):
    """A factored and a concatenated EGNN holding the same weights (copied through the state_dict)."""
    torch.manual_seed(0)
    fac = EGNN(in_node_nf=FEATURE_DIM, factored=True, **kw).to(dtype)
    cat = EGNN(in_node_nf=FEATURE_DIM, factored=False, **kw).to(dtype)
    cat.load_state_dict(fac.state_dict(), strict=True)
    with torch.no_grad():  # the last coordinate layer starts near zero (gain 0.001): make positions move visibly
        for block in fac.blocks:
            block.update.coord_mlp[-1].weight.mul_(30.0)
        cat.load_state_dict(fac.state_dict(), strict=True)
    return fac.eval(), cat.eval()


def molecules(gen, sizes=(5, 9, 3, 1, 12), dtype=torch.float32, context_nf=0):
    """Random molecules (a single atom among them: no edges) in an unsorted order, zero CoM, per-node times."""
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    batch = batch[torch.randperm(batch.numel(), generator=gen)]
    x = torch.randn(batch.numel(), STATE_DIM, generator=gen, dtype=torch.float64)
    x[:, :3] = remove_mean(x[:, :3] * 1.5, batch)
    t = torch.rand(len(sizes), generator=gen, dtype=torch.float64)[batch]
    cond = torch.randn(len(sizes), context_nf, generator=gen, dtype=torch.float64) if context_nf else None
    return x.to(dtype), t.to(dtype), batch, None if cond is None else cond.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_factored_equals_concatenated_outputs_and_gradients(case, dtype):
    kw = CASES[case]
    fac, cat = pair_of_nets(dtype, **kw)
    assert fac.state_dict().keys() == cat.state_dict().keys()
    gen = torch.Generator().manual_seed(10 + case)
    x, t, batch, cond = molecules(gen, dtype=dtype, context_nf=kw.get("context_nf", 0))
    target = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(dtype)
    out_f = fac(x, t, mask=batch, cond=cond)
    out_c = cat(x, t, mask=batch, cond=cond)
    assert out_c[:, :3].abs().max() > 1e-2 and out_c[:, 3:].abs().max() > 1e-2, "trivial outputs: could not fail"
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(out_f, out_c, atol=tol, rtol=0)
    ((out_f - target) ** 2).mean().backward()
    ((out_c - target) ** 2).mean().backward()
    grads_c = dict(cat.named_parameters())
    for name, p in fac.named_parameters():
        assert p.grad is not None, name
        scale = max(1.0, float(grads_c[name].grad.abs().max()))
        torch.testing.assert_close(p.grad, grads_c[name].grad, atol=tol * scale, rtol=0, msg=name)


def test_pair_linear_is_the_linear_of_the_concatenation_and_not_symmetric():
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    lin = torch.nn.Linear(2 * 8 + 2, 8).double()
    h = torch.randn(6, 8, generator=gen, dtype=torch.float64)
    row = torch.tensor([0, 0, 1, 2, 5, 4, 3])
    col = torch.tensor([1, 2, 0, 5, 2, 3, 4])
    d = torch.randn(7, 2, generator=gen, dtype=torch.float64)
    want = lin(torch.cat([h[row], h[col], d], -1))
    torch.testing.assert_close(pair_linear(lin, h, row, col, d), want, atol=1e-12, rtol=0)
    swapped = pair_linear(lin, h, col, row, d)  # h_i and h_j have different weights: the order matters
    assert (swapped - want).abs().max() > 1e-3
    empty = torch.zeros(0, dtype=torch.long)
    assert pair_linear(lin, h, empty, empty, d[:0]).shape == (0, 8)


def random_orthogonal(gen, reflect: bool) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if (torch.det(q) < 0) != reflect:
        q[:, 0] = -q[:, 0]
    return q.float()


@pytest.mark.parametrize("reflect", [False, True])
def test_factored_is_e3_equivariant(reflect):
    fac, _ = pair_of_nets(hidden_nf=32, n_layers=3)
    gen = torch.Generator().manual_seed(20 + reflect)
    x, t, batch, _ = molecules(gen)
    q = random_orthogonal(gen, reflect)
    shift = torch.randn(3, generator=gen) * 3.0
    with torch.no_grad():
        out = fac(x, t, mask=batch)
        xr = x.clone()
        xr[:, :3] = x[:, :3] @ q.T + shift
        out_r = fac(xr, t, mask=batch)
    assert out[:, :3].abs().max() > 1e-2, "trivial position output: the test could not fail"
    torch.testing.assert_close(out_r[:, :3], out[:, :3] @ q.T, atol=1e-4, rtol=0)
    torch.testing.assert_close(out_r[:, 3:], out[:, 3:], atol=1e-4, rtol=0)


def test_factored_is_permutation_equivariant():
    fac, _ = pair_of_nets(hidden_nf=32, n_layers=3)
    gen = torch.Generator().manual_seed(30)
    x, t, batch, _ = molecules(gen)
    perm = torch.randperm(x.shape[0], generator=gen)
    relabel = torch.randperm(int(batch.max()) + 1, generator=gen)  # graph ids renamed too
    with torch.no_grad():
        out = fac(x, t, mask=batch)
        out_p = fac(x[perm], t[perm], mask=relabel[batch[perm]])
    torch.testing.assert_close(out_p, out[perm], atol=1e-5, rtol=0)


def test_default_is_factored_and_set_factored_switches_every_layer():
    net = build_net("egnn", hidden_nf=16, n_layers=2, inv_sublayers=2)
    layers = [m for m in net.modules() if hasattr(m, "factored") and m is not net]
    assert net.factored and len(layers) == 2 * 3 and all(m.factored for m in layers)
    net.set_factored(False)
    assert not net.factored and not any(m.factored for m in layers)
    assert not build_net("egnn", hidden_nf=16, n_layers=2, factored=False).blocks[0].update.factored


def test_bf16_autocast_runs_factored_close_to_float32():
    fac, _ = pair_of_nets(hidden_nf=32, n_layers=2)
    x, t, batch, _ = molecules(torch.Generator().manual_seed(40))
    with torch.no_grad():
        ref = fac(x, t, mask=batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = fac(x, t, mask=batch).float()
    assert torch.isfinite(low).all()
    assert (low - ref).abs().max() < 0.05 * ref.abs().max()


def test_shipped_checkpoint_gives_the_same_outputs_in_both_forms():
    from gendiff.domains import molecules as mol

    denoiser, *_ = mol.load_run("pretrained:qm9", device="cpu")
    net = denoiser.net
    assert isinstance(net, EGNN) and net.factored
    gen = torch.Generator().manual_seed(0)
    x, t, batch, _ = molecules(gen, sizes=(5, 9, 17))
    with torch.no_grad():
        out_f = denoiser(x, t, mask=batch)
        net.set_factored(False)
        out_c = denoiser(x, t, mask=batch)
    assert out_c.abs().max() > 0.1
    torch.testing.assert_close(out_f, out_c, atol=1e-5, rtol=0)
