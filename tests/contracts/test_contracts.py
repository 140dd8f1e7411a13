"""One contract run over every space x schedule x sampler (diffusers' SchedulerCommonTest pattern)."""
import pytest
import torch

from gendiff import losses, samplers, schedules, spaces
from gendiff.errors import ConfigError
from gendiff.forward import Denoiser

SAMPLERS = samplers.list_samplers()
SCHEDULES = schedules.list_schedules()


def _setup(kind):
    g = torch.Generator().manual_seed(0)
    if kind == "euclidean":
        return spaces.EuclideanSpace(), torch.zeros(4, 2, 6), None
    if kind == "masked":
        return spaces.MaskedSpace(), torch.zeros(4, 2, 6), torch.rand(4, 2, 6, generator=g) > 0.3
    batch = torch.repeat_interleave(torch.arange(3), torch.tensor([2, 5, 3]))
    if kind == "zero_com":
        return spaces.ZeroCoMSpace(), torch.zeros(10, 3), batch
    return spaces.ProductSpace([(spaces.ZeroCoMSpace(), 3), (spaces.GraphEuclideanSpace(), 2)]), torch.zeros(10, 5), batch


class _Linear(torch.nn.Module):
    """A small deterministic eps model: linear in x with a time- and condition-dependent shift."""

    def __init__(self):
        super().__init__()
        self.calls = 0
        self.rows = 0

    def forward(self, x, t, *, mask=None, cond=None):
        self.calls += 1
        self.rows += x.shape[0]
        shift = 0.0 if cond is None else 0.3 * cond
        return 0.5 * x + 0.1 * t.reshape(-1, *([1] * (x.dim() - 1))) + shift


def _check_space(space, x, mask):
    if isinstance(space, spaces.MaskedSpace):
        assert (x[~mask] == 0).all()
    if space.graph:
        pos = x[:, :3]
        n = int(mask.max()) + 1
        means = torch.zeros(n, 3).index_add_(0, mask, pos) / torch.bincount(mask)[:, None]
        assert means.abs().max() < 1e-6 * (1 + pos.abs().max())


def _zero_alpha(schedule):
    return float(schedule.alpha_sigma(schedule.t_max)[0]) == 0.0


def _run_sampler(name, schedule_name, kind, seed=0, **kw):
    space, like, mask = _setup(kind)
    schedule = schedules.get_schedule(schedule_name)
    model = _Linear()
    if _zero_alpha(schedule):  # flow: eps gives no x0 at t = 1, so the contract model predicts the velocity
        counted = model
        model = Denoiser(counted, schedule, prediction="velocity")
        model.calls = property(lambda self: counted.calls)
        return (*_sample_with(name, model, schedule, space, like, mask, seed, kw)[:1], counted, space, mask, schedule)
    return _sample_with(name, model, schedule, space, like, mask, seed, kw)[0], model, space, mask, schedule


def _sample_with(name, model, schedule, space, like, mask, seed, kw):
    g = torch.Generator().manual_seed(seed)
    x_T = samplers.prior_sample(schedule, space, like, mask, generator=g)
    return (samplers.sample(name, model, x_T, schedule, space, 4, mask=mask, generator=g, **kw),)


@pytest.mark.parametrize("kind", ["euclidean", "masked", "zero_com", "product"])
@pytest.mark.parametrize("schedule_name", SCHEDULES)
@pytest.mark.parametrize("name", SAMPLERS)
class TestSamplerContract:
    _run = staticmethod(lambda *a, **kw: _run_sampler(*a, **kw))

    def test_shape_finite_projected_deterministic(self, name, schedule_name, kind):
        a, model, space, mask, schedule = self._run(name, schedule_name, kind)
        b, *_ = self._run(name, schedule_name, kind)
        assert a.shape == _setup(kind)[1].shape and torch.isfinite(a).all()
        _check_space(space, a, mask)
        assert torch.equal(a, b), "same generator seed must give the same samples"
        assert model.calls == samplers.nfe(name, 4, schedule)


@pytest.mark.parametrize("kind", ["euclidean", "masked"])
@pytest.mark.parametrize("schedule_name", SCHEDULES)
@pytest.mark.parametrize("name", SAMPLERS)
class TestDenseConditioningContract:
    """Known-value conditioning (inpainting) is defined on dense layouts; guidance is layout-independent."""

    _run = staticmethod(lambda *a, **kw: _run_sampler(*a, **kw))

    def test_known_values_are_kept(self, name, schedule_name, kind):
        space, like, mask = _setup(kind)
        values = space.project(torch.randn(like.shape, generator=torch.Generator().manual_seed(9)), mask)
        known_mask = torch.zeros_like(like, dtype=torch.bool)
        known_mask[..., :3] = True
        out, *_ = self._run(name, schedule_name, kind, known=(values, known_mask))
        assert torch.equal(out[known_mask], values[known_mask])

    def test_guidance(self, name, schedule_name, kind):
        cond, null = torch.ones(4, 1, 1), torch.zeros(4, 1, 1)
        plain, *_ = self._run(name, schedule_name, kind, cond=cond, null_cond=null, guidance=1.0)
        guided, model, *_ = self._run(name, schedule_name, kind, cond=cond, null_cond=null, guidance=3.0)
        assert not torch.allclose(plain, guided)
        n = samplers.nfe(name, 4, schedules.get_schedule(schedule_name))
        rows = _setup(kind)[1].shape[0]
        assert model.rows == 2 * n * rows  # conditional and unconditional eps at every evaluation
        # without a mask the two passes are one batched call; masked, or with cfg_batch=False, two calls
        assert model.calls == (n if kind == "euclidean" else 2 * n)
        apart, model2, *_ = self._run(name, schedule_name, kind, cond=cond, null_cond=null, guidance=3.0,
                                      cfg_batch=False)
        assert model2.calls == 2 * n
        torch.testing.assert_close(apart, guided, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("kind", ["euclidean", "masked", "zero_com", "product"])
@pytest.mark.parametrize("schedule_name", SCHEDULES)
def test_loss_contract(kind, schedule_name):
    space, like, mask = _setup(kind)
    schedule = schedules.get_schedule(schedule_name)
    x0 = space.project(torch.randn(like.shape, generator=torch.Generator().manual_seed(1)), mask)
    net = torch.nn.Linear(like.shape[-1], like.shape[-1])
    d = Denoiser(_Wrap(net), schedule, prediction="velocity" if _zero_alpha(schedule) else "eps")
    loss = losses.diffusion_loss(d, x0, schedule, space, mask=mask, generator=torch.Generator().manual_seed(2))
    assert loss.shape == (space.num_samples(x0, mask),) and torch.isfinite(loss).all() and (loss >= 0).all()
    loss.mean().backward()
    assert torch.isfinite(net.weight.grad).all()


class _Wrap(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, t, *, mask=None, cond=None):
        return self.net(x)


@pytest.mark.parametrize("name", SAMPLERS)
def test_eps_only_model_on_zero_alpha_schedule_is_refused(name):
    space, like, mask = _setup("euclidean")
    schedule = schedules.get_schedule("flow")
    with pytest.raises(ConfigError, match="alpha = 0"):
        samplers.sample(name, _Linear(), torch.randn(like.shape), schedule, space, 4)
    with pytest.raises(ConfigError, match="alpha = 0"):
        Denoiser(_Linear(), schedule, prediction="eps")


@pytest.mark.parametrize("name", SAMPLERS)
def test_unknown_option_raises(name):
    space, like, mask = _setup("euclidean")
    schedule = schedules.get_schedule("cosine")
    with pytest.raises(ConfigError, match=f"sampler '{name}' has no option 'etaa'"):
        samplers.sample(name, _Linear(), torch.randn(like.shape), schedule, space, 4, etaa=0.5)


@pytest.mark.parametrize("name", SAMPLERS)
def test_clip_x0_acts_in_every_sampler(name):
    """clip_x0 bounds every x0 the sampler uses, so a tight clip changes every sampler's output."""
    plain, *_ = _run_sampler(name, "cosine", "euclidean")
    clipped, *_ = _run_sampler(name, "cosine", "euclidean", clip_x0=(-0.01, 0.01))
    assert not torch.allclose(plain, clipped)
