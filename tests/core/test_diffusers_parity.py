"""Parity with diffusers' DDPMScheduler / DDIMScheduler (a test-only dependency).

Tables (betas, alphas_cumprod) and add_noise are compared in float32 as diffusers stores them. The step formulas are
compared in float64 (diffusers' scheduler given float64 tables and inputs): in float32, at k = 999 the x0 prediction
is amplified by 1 / sqrt(alpha_bar) ~ 150, so float32 rounding alone moves outputs by ~1e-4 and would hide the formula.
"""
import pytest
import torch

diffusers = pytest.importorskip("diffusers")
from diffusers import DDIMScheduler, DDPMScheduler  # noqa: E402

from gendiff.diffusers_compat import DiffusersView  # noqa: E402
from gendiff.schedules import get_schedule  # noqa: E402

NAMES = {"linear": "linear", "scaled_linear": "scaled_linear", "squaredcos_cap_v2": "cosine"}


def _float64(scheduler, beta_schedule):
    """Give diffusers our float64 tables (equal to its own to 1e-6, tested above), so the step formulas are compared
    without rounding noise (at k = 999 on the cosine schedule 1 / sqrt(alpha_bar) ~ 6e3 amplifies float32 rounding)."""
    ours = get_schedule(NAMES[beta_schedule])
    scheduler.betas = ours.betas.clone()
    scheduler.alphas = 1 - ours.betas
    scheduler.alphas_cumprod = ours.alphas_cumprod.clone()
    if hasattr(scheduler, "final_alpha_cumprod"):
        scheduler.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    return scheduler


@pytest.mark.parametrize("beta_schedule", list(NAMES))
def test_betas_and_alphas_cumprod(beta_schedule):
    ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule=beta_schedule)
    ours = DiffusersView(get_schedule(NAMES[beta_schedule]))
    torch.testing.assert_close(ours.betas, ref.betas, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours.alphas_cumprod, ref.alphas_cumprod, atol=1e-6, rtol=0)


@pytest.mark.parametrize("beta_schedule", list(NAMES))
def test_add_noise(beta_schedule):
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(8, 3, 4, 4, generator=g), torch.randn(8, 3, 4, 4, generator=g)
    k = torch.tensor([0, 1, 10, 100, 499, 500, 998, 999])
    ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule=beta_schedule).add_noise(x0, noise, k)
    ours = DiffusersView(get_schedule(NAMES[beta_schedule])).add_noise(x0, noise, k)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("beta_schedule", list(NAMES))
@pytest.mark.parametrize("k", [999, 500, 37, 1, 0])
def test_ddpm_step(beta_schedule, k):
    g = torch.Generator().manual_seed(k)
    x, eps = (torch.randn(4, 2, 5, generator=g, dtype=torch.float64) for _ in range(2))
    z = torch.randn(4, 2, 5, generator=torch.Generator().manual_seed(123), dtype=torch.float64)
    ref = _float64(DDPMScheduler(num_train_timesteps=1000, beta_schedule=beta_schedule, clip_sample=False), beta_schedule)
    ref.set_timesteps(1000)
    want = ref.step(eps, k, x, generator=torch.Generator().manual_seed(123)).prev_sample
    got = DiffusersView(get_schedule(NAMES[beta_schedule])).step(eps, k, x, noise=z)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("beta_schedule", list(NAMES))
@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("k", [980, 500, 20, 0])
def test_ddim_step(beta_schedule, eta, k):
    g = torch.Generator().manual_seed(k)
    x, eps, z = (torch.randn(4, 2, 5, generator=g, dtype=torch.float64) for _ in range(3))
    ref = DDIMScheduler(num_train_timesteps=1000, beta_schedule=beta_schedule, clip_sample=False, set_alpha_to_one=True)
    ref = _float64(ref, beta_schedule)
    ref.set_timesteps(50)
    want = ref.step(eps, k, x, eta=eta, variance_noise=z).prev_sample
    got = DiffusersView(get_schedule(NAMES[beta_schedule])).step_ddim(eps, k, x, prev_timestep=k - 20, eta=eta, noise=z)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
