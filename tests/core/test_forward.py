"""Property tests of forward noising, the posterior, parametrization round trips and losses."""
import math

import pytest
import torch

from gendiff import forward, losses, schedules, spaces
from gendiff.forward import Denoiser

ALL = schedules.list_schedules()


@pytest.mark.parametrize("name", ALL)
def test_q_sample_moments(name):
    s = schedules.get_schedule(name)
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((200_000, 1), 0.7)
    t = torch.full((200_000,), 0.37)
    x_t = forward.q_sample(x0, t, torch.randn(x0.shape, generator=g), s)
    a, sig = (float(v) for v in s.alpha_sigma(torch.tensor(0.37, dtype=torch.float64)))
    n = x0.shape[0]
    assert abs(x_t.mean() - a * 0.7) < 5 * sig / math.sqrt(n)
    assert abs(x_t.var() / sig**2 - 1) < 5 * math.sqrt(2 / n)


@pytest.mark.parametrize("name", ALL)
def test_alpha_sigma_log_snr_consistent(name):
    s = schedules.get_schedule(name)
    t = torch.linspace(s.t_min, s.t_max, 101, dtype=torch.float64)[1:]
    a, sig = s.alpha_sigma(t)
    assert torch.allclose(s.log_snr(t), torch.log(a**2 / sig**2), atol=1e-8)
    assert (s.log_snr(t)[1:] < s.log_snr(t)[:-1]).all(), "log-SNR must decrease in t"
    grid = s.timesteps(10)
    assert grid.shape == (11,) and grid[0] == pytest.approx(s.t_max) and grid[-1] == pytest.approx(s.t_min)


def test_discrete_schedule_reads_cumprod_at_grid():
    s = schedules.get_schedule("linear")
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    i = torch.tensor([1, 2, 500, 1000])
    a, _ = s.alpha_sigma(i.to(torch.float64) / 1000)
    torch.testing.assert_close(a**2, abar[i - 1], atol=1e-7, rtol=0)
    assert s.alpha_sigma(torch.tensor(0.0, dtype=torch.float64))[1] == 0


def test_posterior_matches_closed_form_ddpm():
    """q(x_{t-1} | x_t, x_0) of Ho et al. eq. 6-7 for consecutive discrete steps."""
    s = schedules.get_schedule("linear")
    betas = s.betas
    abar = s.alphas_cumprod
    g = torch.Generator().manual_seed(0)
    x0, x_t = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    for i in [2, 10, 700, 1000]:
        t, prev = torch.tensor(i / 1000, dtype=torch.float64), torch.tensor((i - 1) / 1000, dtype=torch.float64)
        mean, var = forward.posterior(x0, x_t, t, prev, s)
        b, ab, ab_prev = betas[i - 1], abar[i - 1], abar[i - 2]
        want_mean = ab_prev.sqrt() * b / (1 - ab) * x0 + (1 - b).sqrt() * (1 - ab_prev) / (1 - ab) * x_t
        torch.testing.assert_close(mean, want_mean, atol=1e-10, rtol=1e-8)
        torch.testing.assert_close(var.flatten()[0], (1 - ab_prev) / (1 - ab) * b, atol=1e-12, rtol=1e-8)


def test_posterior_is_the_conditional_of_the_joint():
    """Monte Carlo: x_s ~ q(x_s|x0), x_t ~ q(x_t|x_s); regress x_s on x_t -> posterior mean and variance."""
    s = schedules.get_schedule("vp")
    g = torch.Generator().manual_seed(1)
    n, x0 = 400_000, 0.5
    t, u = 0.6, 0.3
    a_t, s_t = (float(v) for v in s.alpha_sigma(torch.tensor(t, dtype=torch.float64)))
    a_u, s_u = (float(v) for v in s.alpha_sigma(torch.tensor(u, dtype=torch.float64)))
    x_u = a_u * x0 + s_u * torch.randn(n, generator=g, dtype=torch.float64)
    a_tu = a_t / a_u
    x_t = a_tu * x_u + math.sqrt(s_t**2 - a_tu**2 * s_u**2) * torch.randn(n, generator=g, dtype=torch.float64)
    mean, var = forward.posterior(torch.full((n,), x0, dtype=torch.float64), x_t, torch.tensor(t, dtype=torch.float64),
                                  torch.tensor(u, dtype=torch.float64), s)
    resid = x_u - mean
    assert abs(resid.mean()) < 5 * math.sqrt(float(var[0]) / n)
    assert abs(resid.var() / var[0] - 1) < 0.02
    assert abs(torch.corrcoef(torch.stack([resid, x_t]))[0, 1]) < 0.01


@pytest.mark.parametrize("name", ["linear", "vp", "ve", "edm", "subvp"])
def test_parametrization_round_trips(name):
    s = schedules.get_schedule(name)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(64, 4, generator=g, dtype=torch.float64), torch.randn(64, 4, generator=g, dtype=torch.float64)
    t = torch.rand(64, generator=g, dtype=torch.float64) * 0.9 + 0.05
    a, sig = (forward.append_dims(v, 2) for v in s.alpha_sigma(t))
    x_t = forward.q_sample(x0, t, eps, s)
    torch.testing.assert_close(forward.eps_to_x0(x_t, eps, a, sig), x0)
    torch.testing.assert_close(forward.x0_to_eps(x_t, x0, a, sig), eps)
    v = forward.x0_eps_to_v(x0, eps, a, sig)
    x0_b, eps_b = forward.v_to_x0_eps(x_t, v, a, sig)
    torch.testing.assert_close(x0_b, x0)
    torch.testing.assert_close(eps_b, eps)
    torch.testing.assert_close(forward.score_to_eps(forward.eps_to_score(eps, sig), sig), eps)


class _Oracle(torch.nn.Module):
    """Predicts the true target from a stashed (x0, eps): every parametrization must then give the same eps."""

    def __init__(self, prediction, schedule):
        super().__init__()
        self.prediction, self.schedule = prediction, schedule

    def forward(self, x_in, t, *, mask=None, cond=None):
        a, s = (forward.append_dims(v, 2).to(x_in) for v in self.schedule.alpha_sigma(t))
        return {"eps": self.eps, "x0": self.x0, "v": forward.x0_eps_to_v(self.x0, self.eps, a, s)}[self.prediction]


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_denoiser_returns_eps_for_every_parametrization(prediction):
    s = schedules.get_schedule("cosine")
    net = _Oracle(prediction, s)
    g = torch.Generator().manual_seed(0)
    net.x0, net.eps = torch.randn(8, 3, generator=g), torch.randn(8, 3, generator=g)
    t = torch.full((8,), 0.4)
    x_t = forward.q_sample(net.x0, t, net.eps, s)
    d = Denoiser(net, s, prediction=prediction)
    torch.testing.assert_close(d(x_t, t), net.eps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(d.x0(x_t, t), net.x0, atol=1e-5, rtol=1e-5)
    # the loss with the perfect prediction is zero, in any parametrization
    loss = losses.diffusion_loss(d, net.x0, s, spaces.EuclideanSpace(), t=t, noise=net.eps)
    assert loss.shape == (8,) and loss.max() < 1e-9


def test_min_snr_weight_values():
    w = losses.min_snr_weight(5.0)
    log_snr = torch.log(torch.tensor([0.5, 5.0, 50.0]))
    torch.testing.assert_close(w(log_snr, "eps"), torch.tensor([1.0, 1.0, 0.1]))
    torch.testing.assert_close(w(log_snr, "x0"), torch.tensor([0.5, 5.0, 5.0]))
    torch.testing.assert_close(w(log_snr, "v"), torch.tensor([0.5 / 1.5, 5 / 6, 5 / 51]))
