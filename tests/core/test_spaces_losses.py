"""Noise spaces (zero-CoM projection, masks) and the loss / likelihood built on them."""
import math

import pytest
import torch

from gendiff import forward, losses, schedules, spaces
from gendiff.errors import ConfigError


def _graph_batch(sizes, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return torch.randn(int(sum(sizes)), d, generator=g), batch


def _scatter_mean(x, batch):
    n = int(batch.max()) + 1
    return torch.zeros(n, x.shape[1]).index_add_(0, batch, x) / torch.bincount(batch, minlength=n)[:, None]


def test_zero_com_projection_zero_mean_idempotent_equivariant():
    space = spaces.ZeroCoMSpace()
    x, batch = _graph_batch([3, 7, 1, 12])
    p = space.project(x, batch)
    assert _scatter_mean(p, batch).abs().max() < 1e-6
    torch.testing.assert_close(space.project(p, batch), p)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(3)))
    shift = torch.tensor([1.0, -2.0, 0.5])
    torch.testing.assert_close(space.project(x @ q.T + shift, batch), p @ q.T, atol=1e-5, rtol=1e-5)
    noise = space.sample(x, batch, torch.Generator().manual_seed(1))
    assert _scatter_mean(noise, batch).abs().max() < 1e-6


def test_zero_com_dof_and_reduce_per_graph():
    space = spaces.ZeroCoMSpace()
    x, batch = _graph_batch([3, 5])
    torch.testing.assert_close(space.dof(x, batch), torch.tensor([6.0, 12.0]))
    err = torch.ones_like(x)
    err[3:] = 2.0
    torch.testing.assert_close(space.reduce(err, batch), torch.tensor([1.0, 2.0]))
    assert space.num_samples(x, batch) == 2
    with pytest.raises(ConfigError):
        space.project(x, None)


def test_product_space_splits_last_dim():
    space = spaces.ProductSpace([(spaces.ZeroCoMSpace(), 3), (spaces.GraphEuclideanSpace(), 2)])
    x, batch = _graph_batch([4, 6], d=5)
    p = space.project(x, batch)
    assert _scatter_mean(p[:, :3], batch).abs().max() < 1e-6
    torch.testing.assert_close(p[:, 3:], x[:, 3:])
    torch.testing.assert_close(space.dof(x, batch), torch.tensor([3 * 3 + 4 * 2, 5 * 3 + 6 * 2], dtype=torch.float32))


def test_masked_space_noise_and_projection_only_on_valid():
    space = spaces.MaskedSpace()
    x = torch.randn(2, 3, 8)
    mask = torch.rand(2, 3, 8, generator=torch.Generator().manual_seed(0)) > 0.3
    noise = space.sample(x, mask, torch.Generator().manual_seed(1))
    assert (noise[~mask] == 0).all() and (noise[mask] != 0).all()
    torch.testing.assert_close(space.count(x, mask), mask.reshape(2, -1).sum(1).float())
    with pytest.raises(ConfigError):
        space.project(x, mask.float())


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Conv1d(3, 3, 1)

    def forward(self, x, t, *, mask=None, cond=None):
        return self.lin(x) + t[:, None, None]


def test_masked_entries_never_change_the_loss():
    s = schedules.get_schedule("linear")
    d = forward.Denoiser(_Net(), s)
    space = spaces.MaskedSpace()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 3, 16, generator=g)
    mask = torch.rand(4, 3, 16, generator=g) > 0.4
    t = s.sample_t(4, generator=g)
    noise = space.sample(x0, mask, torch.Generator().manual_seed(5))
    base = losses.diffusion_loss(d, x0, s, space, mask=mask, t=t, noise=noise)
    x0_garbage = torch.where(mask, x0, torch.full_like(x0, 1e6))
    noise_garbage = torch.where(mask, noise, torch.full_like(noise, -1e6))
    other = losses.diffusion_loss(d, x0_garbage, s, space, mask=mask, t=t, noise=noise_garbage)
    torch.testing.assert_close(base, other)
    base.sum().backward()
    assert torch.isfinite(d.net.lin.weight.grad).all()


def test_graph_loss_expands_t_per_graph():
    s = schedules.get_schedule("polynomial")
    space = spaces.ProductSpace([(spaces.ZeroCoMSpace(), 3), (spaces.GraphEuclideanSpace(), 2)])
    seen = {}

    class Net(torch.nn.Module):
        def forward(self, x, t, *, mask=None, cond=None):
            seen["t"] = t
            return torch.zeros_like(x)

    x, batch = _graph_batch([3, 5, 2], d=5)
    loss = losses.diffusion_loss(forward.Denoiser(Net(), s), x, s, space, mask=batch,
                                 generator=torch.Generator().manual_seed(0))
    assert loss.shape == (3,)
    t = seen["t"]
    assert t.shape == (10,) and all(t[batch == i].unique().numel() == 1 for i in range(3))


def test_nll_bound_on_gaussian_data_with_exact_denoiser():
    """Data N(0, I) and the exact E[x0 | x_t] = alpha x_t / (alpha^2 + sigma^2): per dimension the discrete bound is
    sum_i 0.5 (SNR_{i-1} - SNR_i) mmse_i + recon + prior with mmse_i = 1 / (1 + SNR_i), known in closed form; the
    Monte Carlo estimate must match it, and it must lie above the true entropy 0.5 log(2 pi e)."""
    s = schedules.get_schedule("linear")

    class Exact(torch.nn.Module):
        def forward(self, x_in, t, *, mask=None, cond=None):
            a, sig = (forward.append_dims(v, x_in.dim()).to(x_in) for v in s.alpha_sigma(t))
            return a * x_in  # x_in = x_t since alpha^2 + sigma^2 = 1; this is the x0 prediction
    d = forward.Denoiser(Exact(), s, prediction="x0")
    x0 = torch.randn(4000, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    bpd = losses.nll_bits_per_dim(d, x0, s, spaces.EuclideanSpace(), n_t=32, generator=torch.Generator().manual_seed(1))

    snr = s.log_snr(torch.arange(1, 1001, dtype=torch.float64) / 1000).exp()
    mmse = 1 / (1 + snr)
    diffusion = (0.5 * (snr[:-1] - snr[1:]) * mmse[1:]).sum()
    a1, s1 = (float(v) for v in s.alpha_sigma(torch.tensor(1e-3, dtype=torch.float64)))
    std2 = (s1 / a1) ** 2
    recon = 0.5 * mmse[0] / std2 + 0.5 * math.log(2 * math.pi * std2)
    aT, sT = (float(v) for v in s.alpha_sigma(torch.tensor(1.0, dtype=torch.float64)))
    prior = 0.5 * (math.log(1 / sT**2) + sT**2 - 1) + 0.5 * aT**2
    expected = float(diffusion + recon + prior) / math.log(2)
    se = float(bpd.std()) / math.sqrt(bpd.numel())
    assert abs(float(bpd.mean()) - expected) < 5 * se, (float(bpd.mean()), expected, se)
    assert expected > 0.5 * math.log2(2 * math.pi * math.e)


def test_checks_raise_on_broken_invariants():
    from gendiff import checks

    x, batch = _graph_batch([3, 4])
    checks.assert_zero_com(spaces.ZeroCoMSpace().project(x, batch), batch)
    with pytest.raises(checks.InvariantError):
        checks.assert_zero_com(x + 1.0, batch)
    with pytest.raises(checks.InvariantError):
        checks.assert_finite(torch.tensor([1.0, float("nan")]), "loss")
    mask = torch.tensor([True, False])
    checks.assert_masked(torch.tensor([5.0, 0.0]), mask)
    with pytest.raises(checks.InvariantError):
        checks.assert_masked(torch.tensor([5.0, 1.0]), mask)
