"""Every sampler, fed the exact eps of a 2-D Gaussian mixture, reproduces the mixture.

Checks per sampler on 20,000 samples: mean and covariance within 5 standard errors, and sliced Wasserstein distance
to an exact sample under BOUND_FACTOR times the null level, i.e. the distance between two independent exact samples
of the same size (about 0.018 here: the estimator's own noise floor). A factor of 2.5 admits the small
discretisation bias of a 20-step solver but rejects a sampler whose eps is off by 10% (checked below).
"""
import pytest
import torch

from gendiff import samplers, schedules, spaces, toy

N = 20_000
BOUND_FACTOR = 2.5
CASES = [  # sampler, schedule, steps, options
    ("ancestral", "linear", 1000, {}),
    ("ddim", "cosine", 100, {}),
    ("euler_maruyama", "vp", 1000, {}),
    ("pc", "vp", 500, {}),
    ("heun", "edm", 35, {}),
    ("dpm_solver_pp", "cosine", 20, {"spacing": "uniform"}),
    # the default grid where alpha(t_max) is tiny: log-SNR spacing (samplers.auto_spacing)
    ("dpm_solver_pp", "polynomial", 25, {}),
    ("heun", "polynomial", 50, {}),
    ("langevin", "ve", 200, {"steps_each": 5, "step_scale": 0.2}),
    ("euler", "cosine", 100, {}),
    # rectified flow (alpha_t = 1 - t, sigma_t = t): the exact (x0, eps) pair, since eps alone gives no x0 at t = 1
    ("euler", "flow", 200, {}),
    ("heun", "flow", 35, {}),
    ("dpm_solver_pp", "flow", 20, {}),
    ("ddim", "flow", 200, {}),
    ("ancestral", "flow", 500, {}),
    ("euler_maruyama", "flow", 1000, {}),
]


@pytest.fixture(scope="module")
def mixture():
    gm = toy.GaussianMixture.default_2d()
    g = torch.Generator().manual_seed(0)
    ref, ref2 = gm.sample(N, g), gm.sample(N, g)
    return gm, ref, toy.sliced_wasserstein(ref, ref2)


def _draw(gm, name, schedule_name, steps, options, scale=1.0):
    schedule = schedules.get_schedule(schedule_name)
    space = spaces.EuclideanSpace()
    if schedule.alpha_sigma(schedule.t_max)[0] == 0:
        model = gm.x0_eps_model(schedule)
        model.scale = scale
    else:
        exact = gm.eps_model(schedule)
        model = exact if scale == 1.0 else (lambda x, t, **kw: scale * exact(x, t, **kw))
    g = torch.Generator().manual_seed(1)
    x_T = samplers.prior_sample(schedule, space, torch.zeros(N, 2), generator=g)
    return samplers.sample(name, model, x_T, schedule, space, steps, generator=g, **options)


def test_cases_cover_every_sampler():
    assert sorted({c[0] for c in CASES}) == samplers.list_samplers()


@pytest.mark.parametrize("name,schedule_name,steps,options", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_sampler_reproduces_mixture(mixture, name, schedule_name, steps, options):
    gm, ref, null_sw = mixture
    x = _draw(gm, name, schedule_name, steps, options)
    z_mean, z_cov = toy.moment_zscores(x, gm)
    assert z_mean.max() < 5, f"mean off by {z_mean.max():.1f} standard errors"
    assert z_cov.max() < 5, f"covariance off by {z_cov.max():.1f} standard errors"
    sw = toy.sliced_wasserstein(x, ref)
    assert sw < BOUND_FACTOR * null_sw, f"sliced Wasserstein {sw:.4f} >= {BOUND_FACTOR} x null {null_sw:.4f}"


@pytest.mark.parametrize("name,schedule_name,steps", [("ddim", "cosine", 100), ("euler", "flow", 200)])
def test_wrong_eps_is_caught(mixture, name, schedule_name, steps):
    """Negative control: eps 10% too large must fail the same checks."""
    gm, ref, null_sw = mixture
    x = _draw(gm, name, schedule_name, steps, {}, scale=1.1)
    z_mean, z_cov = toy.moment_zscores(x, gm)
    assert z_cov.max() > 5 or toy.sliced_wasserstein(x, ref) > BOUND_FACTOR * null_sw
