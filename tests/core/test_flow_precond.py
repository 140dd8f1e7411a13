"""Flow matching and EDM preconditioning in the core, each against a direct implementation of the paper's formula."""
import math

import pytest
import torch

from gendiff import losses, schedules, spaces
from gendiff.forward import Denoiser, edm_coefficients


class _Net(torch.nn.Module):
    def __init__(self, d=5):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(d + 1, d).double()

    def forward(self, x, t, *, mask=None, cond=None):
        return self.lin(torch.cat([x, t.reshape(-1, 1).to(x.dtype)], 1))


def _data(n=64, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, d, generator=g, dtype=torch.float64),
            torch.rand(n, generator=g, dtype=torch.float64))


def test_flow_schedule_is_the_linear_path():
    s = schedules.get_schedule("flow")
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    a, sig = s.alpha_sigma(t)
    torch.testing.assert_close(a, 1 - t, rtol=0, atol=1e-12)
    torch.testing.assert_close(sig, t, rtol=0, atol=1e-12)
    da, ds = s.alpha_sigma_dot(t)
    assert (da == -1).all() and (ds == 1).all()


def test_flow_loss_equals_conditional_flow_matching():
    """L_CFM = E || u_theta(x_t, t) - (x1 - x0) ||^2, x_t = (1 - t) x0 + t x1 (Lipman et al. 2023, eq. 23 with
    sigma_min = 0; Liu et al. 2023, eq. 1), written out directly, against the core's loss to 1e-6."""
    x0, noise, t = _data()
    schedule = schedules.get_schedule("flow")
    net = _Net()
    model = Denoiser(net, schedule, prediction="velocity", scale_input=False)
    ours = losses.diffusion_loss(model, x0, schedule, spaces.EuclideanSpace(), t=t, noise=noise)
    x_t = (1 - t[:, None]) * x0 + t[:, None] * noise
    direct = ((net(x_t, t) - (noise - x0)) ** 2).mean(1)
    torch.testing.assert_close(ours, direct, rtol=0, atol=1e-6)


def test_generic_velocity_matches_finite_differences():
    """On a non-linear schedule the velocity target is d x_t / dt of the noising path (autograd derivative)."""
    x0, noise, t = _data(8)
    t = 0.05 + 0.9 * t
    schedule = schedules.get_schedule("vp")
    model = Denoiser(_Net(), schedule, prediction="velocity")
    a, s = schedule.alpha_sigma(t)
    h = 1e-6
    a2, s2 = schedule.alpha_sigma(t + h)
    a1, s1 = schedule.alpha_sigma(t - h)
    fd = ((a2 - a1) / (2 * h))[:, None] * x0 + ((s2 - s1) / (2 * h))[:, None] * noise
    target = model.target(x0, noise, a[:, None], s[:, None], t)
    torch.testing.assert_close(target, fd, rtol=1e-6, atol=1e-6)
    # and x0_eps inverts it exactly
    x_t = a[:, None] * x0 + s[:, None] * noise
    x0_hat, eps_hat = __import__("gendiff.forward", fromlist=["velocity_to_x0_eps"]).velocity_to_x0_eps(
        x_t, target, a[:, None], s[:, None], *model._rates(x_t, t))
    torch.testing.assert_close(x0_hat, x0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(eps_hat, noise, rtol=1e-9, atol=1e-9)


def test_edm_coefficients_match_karras_table_1():
    """On the EDM (VE) schedule alpha = 1: c_skip = sd^2/(s^2+sd^2), c_out = s sd/sqrt(s^2+sd^2), c_in = 1/sqrt(...)."""
    sigma = torch.tensor([0.002, 0.1, 1.0, 80.0], dtype=torch.float64)
    sd = 0.5
    c_skip, c_out, c_in = edm_coefficients(torch.ones_like(sigma), sigma, sd)
    torch.testing.assert_close(c_skip, sd**2 / (sigma**2 + sd**2))
    torch.testing.assert_close(c_out, sigma * sd / (sigma**2 + sd**2).sqrt())
    torch.testing.assert_close(c_in, 1 / (sigma**2 + sd**2).sqrt())


@pytest.mark.parametrize("schedule_name", ["edm", "cosine", "flow"])
def test_edm_preconditioned_denoiser_and_loss_match_karras(schedule_name):
    """D(x; sigma) = c_skip x + c_out F(c_in x, c_noise) and EDM's loss lambda ||D - y||^2 with lambda = 1/c_out^2
    (Karras et al. 2022, eq. 7-8, table 1), written in EDM's variables x / alpha and sigma / alpha, to 1e-6."""
    x0, noise, t = _data()
    t = 0.02 + 0.96 * t
    schedule = schedules.get_schedule(schedule_name)
    sd = 0.7
    net = _Net()
    model = Denoiser(net, schedule, precondition="edm", sigma_data=sd, noise_input="c_noise")
    a, s = (v[:, None] for v in schedule.alpha_sigma(t))
    x_t = a * x0 + s * noise
    sig, x_ve = s / a, x_t / a  # EDM's sigma and noisy input
    c_skip, c_out = sd**2 / (sig**2 + sd**2), sig * sd / (sig**2 + sd**2).sqrt()
    c_in, c_noise = 1 / (sig**2 + sd**2).sqrt(), sig.log() / 4
    D = c_skip * x_ve + c_out * net(c_in * x_ve, c_noise[:, 0])
    torch.testing.assert_close(model.x0(x_t, t), D, rtol=1e-6, atol=1e-6)
    lam = (sig**2 + sd**2) / (sig * sd) ** 2
    edm_loss = (lam * (D - x0) ** 2).mean(1)
    ours = losses.diffusion_loss(model, x0, schedule, spaces.EuclideanSpace(), t=t, noise=noise)
    torch.testing.assert_close(ours, edm_loss, rtol=1e-6, atol=1e-6)
    # the constant weighting turns it into the plain x0 loss
    plain = losses.diffusion_loss(model, x0, schedule, spaces.EuclideanSpace(), t=t, noise=noise,
                                  weighting=losses.constant_weight())
    torch.testing.assert_close(plain, ((D - x0) ** 2).mean(1), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v", "velocity"])
def test_weightings_are_x0_weights_in_every_parametrization(prediction):
    """min-SNR on any parametrization equals min(SNR, 5) ||x0_hat - x0||^2 for the same network output."""
    x0, noise, t = _data(16)
    t = 0.05 + 0.9 * t
    schedule = schedules.get_schedule("cosine")
    model = Denoiser(_Net(), schedule, prediction=prediction)
    ours = losses.diffusion_loss(model, x0, schedule, spaces.EuclideanSpace(), t=t, noise=noise,
                                 weighting=losses.min_snr_weight(5.0))
    a, s = (v[:, None] for v in schedule.alpha_sigma(t))
    x0_hat = model.x0(a * x0 + s * noise, t)
    direct = (schedule.log_snr(t).exp().clamp(max=5.0)[:, None] * (x0_hat - x0) ** 2).mean(1)
    torch.testing.assert_close(ours, direct, rtol=1e-6, atol=1e-8)
    snr = losses.diffusion_loss(model, x0, schedule, spaces.EuclideanSpace(), t=t, noise=noise,
                                weighting=losses.snr_weight())
    direct_snr = (schedule.log_snr(t).exp()[:, None] * (x0_hat - x0) ** 2).mean(1)
    torch.testing.assert_close(snr, direct_snr, rtol=1e-6, atol=1e-8)


def test_min_snr_vp_table():
    w = losses.min_snr_weight(5.0)
    log_snr = torch.log(torch.tensor([0.5, 5.0, 50.0]))
    torch.testing.assert_close(w(log_snr, "eps"), torch.tensor([1.0, 1.0, 0.1]))
    assert math.isclose(float(losses.snr_weight()(log_snr, "eps")[2]), 1.0, rel_tol=1e-6)
