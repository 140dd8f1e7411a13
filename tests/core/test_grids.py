"""Sampling grids: uniform in t, uniform in log-SNR, EDM's rho spacing; valid on every schedule."""
import math

import pytest
import torch

from gendiff import samplers, schedules
from gendiff.errors import ConfigError

SCHEDULES = schedules.list_schedules()


@pytest.mark.parametrize("spacing", ["uniform", "log_snr", "karras"])
@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("n", [1, 2, 10, 50])
def test_grid_is_strictly_decreasing_from_t_max_to_t_min(name, spacing, n):
    s = schedules.get_schedule(name)
    grid = s.timesteps(n, spacing)
    assert grid.shape == (n + 1,) and grid.dtype == torch.float64
    assert float(grid[0]) == pytest.approx(s.t_max) and float(grid[-1]) == pytest.approx(s.t_min, abs=1e-7)
    assert (grid[1:] < grid[:-1]).all()
    if s.num_train_steps is not None:  # discrete schedules stay on their training steps
        k = grid.double() * s.num_train_steps
        assert torch.allclose(k, k.round(), atol=1e-3)


def test_log_snr_grid_is_uniform_in_log_snr():
    s = schedules.get_schedule("vp")  # continuous, sigma(t_min) > 0: every point is spaced
    lam = s.log_snr(s.timesteps(12, "log_snr").double())
    steps = lam[1:] - lam[:-1]
    assert torch.allclose(steps, steps.mean().expand_as(steps), rtol=1e-3)


def test_karras_grid_on_the_edm_schedule_is_edm_itself():
    """EDM's schedule is rho-spaced in t already, so its karras grid is uniform in t (Karras et al. 2022, eq. 5)."""
    s = schedules.get_schedule("edm")
    torch.testing.assert_close(s.timesteps(18, "karras"), s.timesteps(18, "uniform"), atol=1e-5, rtol=0)
    sig = s.sigma_ratio(s.timesteps(18, "karras").double())
    ref = (80 ** (1 / 7) + torch.linspace(0, 1, 19, dtype=torch.float64) * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    torch.testing.assert_close(sig, ref, rtol=1e-4, atol=0)


def test_flow_grids_end_at_pure_noise_and_clean_data():
    s = schedules.get_schedule("flow")
    for spacing in ("log_snr", "karras"):
        g = s.timesteps(10, spacing)
        assert float(g[0]) == 1.0 and float(g[-1]) == 0.0
        assert math.isclose(float(s.sigma_ratio(g[-2].double())), 2e-3, rel_tol=1e-3)


def test_crowded_discrete_grid_stays_valid_and_too_many_steps_raise():
    s = schedules.get_schedule("polynomial")  # log-SNR changes fastest in its last training steps
    g = s.timesteps(1000, "log_snr")
    assert (g[1:] < g[:-1]).all() and g.numel() == 1001
    with pytest.raises(ConfigError, match="exceed the 1000 steps"):
        s.timesteps(1001, "karras")
    with pytest.raises(ConfigError, match="spacing"):
        s.timesteps(10, "cubic")


def test_sampler_spacing_option_and_default():
    s = schedules.get_schedule("cosine")
    for name in samplers.list_samplers():
        default = samplers.sampling_grid(name, s, 10)
        spacing = samplers.DEFAULT_SPACING[name]
        spacing = samplers.auto_spacing(s) if spacing == "auto" else spacing
        assert torch.equal(default, s.timesteps(10, spacing))
    assert samplers.auto_spacing(schedules.get_schedule("polynomial")) == "log_snr"
    assert samplers.auto_spacing(schedules.get_schedule("cosine")) == "log_snr"
    assert samplers.sampling_grid("dpm_solver_pp", schedules.get_schedule("polynomial"), 10).tolist() == \
        schedules.get_schedule("polynomial").timesteps(10, "log_snr").tolist()
    for uniform in ("linear", "vp", "flow", "edm"):
        assert samplers.auto_spacing(schedules.get_schedule(uniform)) == "uniform"
    assert samplers.nfe("heun", 10, s, spacing="karras") >= 10
    with pytest.raises(ConfigError, match="either timesteps or spacing"):
        samplers.sample("ddim", lambda x, t, **k: x, torch.zeros(2, 2), s, __import__("gendiff").EuclideanSpace(),
                        4, timesteps=[1.0, 0.5, 0.0], spacing="karras")
