"""Learned reverse variance (Improved DDPM, Nichol & Dhariwal 2021): parity with diffusers' learned_range step, the
L_vlb term against a direct Gaussian KL, the hybrid loss's stop-gradient, and the bound with a learned variance."""
import math

import pytest
import torch

from gendiff import losses, samplers, schedules, spaces
from gendiff.errors import ConfigError
from gendiff.forward import Denoiser

diffusers = pytest.importorskip("diffusers")
from diffusers import DDPMScheduler  # noqa: E402


class _Fixed(torch.nn.Module):
    """Returns fixed (eps, v) whatever its input: the step formulas alone are compared."""

    def __init__(self, eps, v):
        super().__init__()
        self.eps, self.v = eps, v

    def forward(self, x, t, *, mask=None, cond=None):
        return torch.cat([self.eps, self.v], dim=1)


def _diffusers(beta_schedule, steps):
    ours = schedules.get_schedule({"linear": "linear", "squaredcos_cap_v2": "cosine"}[beta_schedule])
    ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule=beta_schedule, clip_sample=False,
                        variance_type="learned_range")
    ref.betas, ref.alphas = ours.betas.clone(), 1 - ours.betas  # float64 tables (equal to its own to 1e-6)
    ref.alphas_cumprod = ours.alphas_cumprod.clone()
    ref.set_timesteps(steps)
    return ours, ref


@pytest.mark.parametrize("beta_schedule", ["linear", "squaredcos_cap_v2"])
@pytest.mark.parametrize("steps,k", [(1000, 999), (1000, 500), (1000, 37), (1000, 1), (50, 980), (50, 500),
                                     (50, 20), (25, 120)])
def test_ancestral_learned_range_step_matches_diffusers(beta_schedule, steps, k):
    ours, ref = _diffusers(beta_schedule, steps)
    g = torch.Generator().manual_seed(k)
    x, eps = (torch.randn(3, 2, 5, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.rand(3, 2, 5, generator=g, dtype=torch.float64) * 2 - 1
    want = ref.step(torch.cat([eps, v], 1), k, x, generator=torch.Generator().manual_seed(7)).prev_sample
    prev = k - 1000 // steps
    model = Denoiser(_Fixed(eps, v), ours, learn_sigma=True)
    got = samplers.sample("ancestral", model, x, ours, spaces.EuclideanSpace(), 1,
                          timesteps=[(k + 1) / 1000, (prev + 1) / 1000], generator=torch.Generator().manual_seed(7),
                          denoise_final=False)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_vlb_term_is_the_gaussian_kl():
    """L_{t-1} = KL(q(x_{t-1}|x_t,x0) || N(mu_theta, Sigma_theta)) in bits per dim, written out from the paper:
    mu~ = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x0 + sqrt(a_t) (1 - abar_{t-1}) / (1 - abar_t) x_t (Ho et al.
    2020, eq. 7), beta~ = (1 - abar_{t-1}) / (1 - abar_t) beta_t, log Sigma = v log beta_t + (1 - v) log beta~."""
    sched = schedules.get_schedule("linear")
    abar, betas = sched.alphas_cumprod, sched.betas
    g = torch.Generator().manual_seed(0)
    i = torch.tensor([2, 10, 300, 999])
    x0, eps, eps_hat = (torch.randn(4, 3, generator=g, dtype=torch.float64) for _ in range(3))
    frac = torch.rand(4, 3, generator=g, dtype=torch.float64)
    ab_t, ab_s, b_t = abar[i - 1][:, None], abar[i - 2][:, None], betas[i - 1][:, None]
    x_t = ab_t.sqrt() * x0 + (1 - ab_t).sqrt() * eps
    x0_hat = (x_t - (1 - ab_t).sqrt() * eps_hat) / ab_t.sqrt()
    c0, ct = ab_s.sqrt() * b_t / (1 - ab_t), (1 - b_t).sqrt() * (1 - ab_s) / (1 - ab_t)
    post = (1 - ab_s) / (1 - ab_t) * b_t
    logvar = frac * b_t.log() + (1 - frac) * post.log()
    m_q, m_p = c0 * x0 + ct * x_t, c0 * x0_hat + ct * x_t
    kl = 0.5 * (-1 + logvar - post.log() + post / logvar.exp() + (m_q - m_p) ** 2 / logvar.exp())
    direct = kl.mean(1) / math.log(2)
    model = Denoiser(torch.nn.Identity(), sched, learn_sigma=True)
    ours = losses.vlb_step_term(model, x0, x_t, i.double() / 1000, eps_hat, frac, sched, spaces.EuclideanSpace())
    torch.testing.assert_close(ours, direct, atol=1e-6, rtol=0)


class _Net(torch.nn.Module):
    def __init__(self, d=3):
        super().__init__()
        torch.manual_seed(0)
        self.mean = torch.nn.Linear(d + 1, d)
        self.var = torch.nn.Linear(d + 1, d)

    def forward(self, x, t, *, mask=None, cond=None):
        h = torch.cat([x, t.reshape(-1, 1).to(x.dtype)], 1)
        return torch.cat([self.mean(h), torch.tanh(self.var(h))], 1)


def test_hybrid_loss_stops_the_mean_gradient_of_the_vlb_term():
    sched = schedules.get_schedule("cosine")
    model = Denoiser(_Net(), sched, learn_sigma=True)
    x0 = torch.randn(64, 3, generator=torch.Generator().manual_seed(1))
    g = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    simple = losses.diffusion_loss(model, x0, sched, spaces.EuclideanSpace(), generator=g()).mean()
    hybrid = losses.hybrid_loss(model, x0, sched, spaces.EuclideanSpace(), generator=g(), lam=1.0).mean()
    grads = {}
    for name, loss in (("simple", simple), ("hybrid", hybrid)):
        model.zero_grad()
        loss.backward()
        grads[name] = {n: p.grad.clone() for n, p in model.named_parameters()}
    assert torch.allclose(grads["simple"]["net.mean.weight"], grads["hybrid"]["net.mean.weight"], atol=1e-7)
    assert grads["hybrid"]["net.var.weight"].abs().sum() > 0 and grads["simple"]["net.var.weight"].abs().sum() == 0
    with pytest.raises(ConfigError, match="learn_sigma"):
        losses.hybrid_loss(Denoiser(torch.nn.Linear(3, 3), sched), x0, sched, spaces.EuclideanSpace())


def test_learned_bound_equals_fixed_bound_when_v_gives_the_posterior_variance():
    """v = -1 (frac 0) puts the learned variance at beta~: the learned-variance bound must equal the fixed one."""
    sched = schedules.get_schedule("linear")
    base = torch.nn.Linear(4, 3)

    class Posterior(torch.nn.Module):
        def forward(self, x, t, *, mask=None, cond=None):
            h = base(torch.cat([x, t.reshape(-1, 1)], 1))
            return torch.cat([h, -torch.ones_like(h)], 1)

    class Plain(torch.nn.Module):
        def forward(self, x, t, *, mask=None, cond=None):
            return base(torch.cat([x, t.reshape(-1, 1)], 1))

    x0 = torch.randn(16, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64).float()
    kw = dict(n_t=None, num_steps=None)
    learned = losses.vlb_terms(Denoiser(Posterior(), sched, learn_sigma=True), x0, sched, spaces.EuclideanSpace(),
                               generator=torch.Generator().manual_seed(3), **kw)
    fixed = losses.vlb_terms(Denoiser(Plain(), sched), x0, sched, spaces.EuclideanSpace(),
                             generator=torch.Generator().manual_seed(3), **kw)
    torch.testing.assert_close(learned["diffusion"], fixed["diffusion"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(learned["prior"], fixed["prior"])


def test_variance_options_and_errors():
    sched = schedules.get_schedule("linear")
    x = torch.randn(4, 3)
    class Echo(torch.nn.Module):
        def forward(self, x, t, *, mask=None, cond=None):
            return 0.5 * x

    plain = Denoiser(Echo(), sched)
    with pytest.raises(ConfigError, match="variance='learned' needs a model that learns its variance"):
        samplers.sample("ancestral", plain, x, sched, spaces.EuclideanSpace(), 5, variance="learned")
    for kind in ("posterior", "beta"):
        out = samplers.sample("ancestral", plain, x, sched, spaces.EuclideanSpace(), 5, variance=kind,
                              generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(out).all()
    learned = Denoiser(_Net(), sched, learn_sigma=True)
    for name in ("ddim", "dpm_solver_pp", "heun"):  # the deterministic samplers ignore the variance
        assert torch.isfinite(samplers.sample(name, learned, x, sched, spaces.EuclideanSpace(), 4)).all()
    class Four(torch.nn.Module):
        def forward(self, x, t, *, mask=None, cond=None):
            return torch.zeros(x.shape[0], 5)

    with pytest.raises(ConfigError, match="expected 6"):
        Denoiser(Four(), sched, learn_sigma=True).x0_eps_v(x, torch.full((4,), 0.5))
