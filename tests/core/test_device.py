"""Device bugs caught without a GPU: every schedule x (loss, each sampler, the bound) with all tensors on `meta`,
where any cross-device operation raises as it would on CUDA (tests/_devices.py adds CUDA where present)."""
import pytest
import torch

from gendiff import losses, samplers, schedules, spaces
from gendiff.device import make_generator, resolve_device
from gendiff.errors import ConfigError
from gendiff.forward import Denoiser
from tests._devices import DEVICES, generator_for

SCHEDULES = schedules.list_schedules()
SAMPLERS = samplers.list_samplers()


class _Net(torch.nn.Module):
    """A small network with parameters and a time input, so a training step has gradients to take."""

    def __init__(self, d=6):
        super().__init__()
        self.lin = torch.nn.Linear(d + 1, d)

    def forward(self, x, t, *, mask=None, cond=None):
        h = torch.cat([x, t.reshape(-1, 1).expand(x.shape[0], 1).to(x.dtype)], dim=1)
        out = self.lin(h)
        return out if cond is None else out + cond


def _denoiser(schedule, device):
    prediction = "velocity" if float(schedule.alpha_sigma(schedule.t_max)[0]) == 0 else "eps"
    return Denoiser(_Net(), schedule, prediction=prediction).to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("schedule_name", SCHEDULES)
def test_loss_and_training_step_on_device(schedule_name, device):
    schedule = schedules.get_schedule(schedule_name)
    model = _denoiser(schedule, device)
    x0 = torch.randn(8, 6, device=device)
    g = generator_for(device)
    for weighting in (None, losses.min_snr_weight(5.0)):
        loss = losses.diffusion_loss(model, x0, schedule, spaces.EuclideanSpace(), generator=g, weighting=weighting)
        assert loss.device.type == torch.device(device).type and loss.shape == (8,)
        loss.mean().backward()
    torch.optim.AdamW(model.parameters()).step()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("schedule_name", SCHEDULES)
def test_bound_on_device(schedule_name, device):
    schedule = schedules.get_schedule(schedule_name)
    model = _denoiser(schedule, device)
    x0 = torch.randn(4, 6, device=device)
    g = generator_for(device)
    terms = losses.vlb_terms(model, x0, schedule, spaces.EuclideanSpace(), n_t=3, num_steps=50, generator=g)
    assert all(v.device.type == torch.device(device).type for v in terms.values())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", SAMPLERS)
@pytest.mark.parametrize("schedule_name", SCHEDULES)
def test_sampler_on_device(name, schedule_name, device):
    schedule = schedules.get_schedule(schedule_name)
    model = _denoiser(schedule, device).eval()
    space = spaces.MaskedSpace()
    like = torch.zeros(4, 6, device=device)
    mask = torch.ones(4, 6, dtype=torch.bool, device=device)
    g = generator_for(device)
    x_T = samplers.prior_sample(schedule, space, like, mask, generator=g)
    known = (torch.zeros_like(like), torch.zeros_like(mask).index_fill_(1, torch.tensor([0], device=device), True))
    cond, null = torch.ones(4, 6, device=device), torch.zeros(4, 6, device=device)
    out = samplers.sample(name, model, x_T, schedule, space, 3, mask=mask, generator=g, known=known, cond=cond,
                          null_cond=null, guidance=2.0, clip_x0=(-3.0, 3.0))
    assert out.device.type == torch.device(device).type and out.shape == like.shape


def test_meta_catches_a_table_left_on_the_cpu(monkeypatch):
    """The check can fail: a tabulated schedule whose table stays on the CPU (the old bug) raises on meta."""
    schedule = schedules.get_schedule("linear")
    cpu_tables = schedule.tables("cpu")
    monkeypatch.setattr(schedule, "tables", lambda device: cpu_tables)
    with pytest.raises(RuntimeError, match="device"):
        schedule.alpha_sigma(torch.full((4,), 0.5, device="meta"))


def test_tables_are_cached_per_device():
    schedule = schedules.get_schedule("cosine")
    a = schedule.tables("meta")
    assert a[0].device.type == "meta" and schedule.tables("meta")[0] is a[0]
    assert schedule.tables("cpu")[0].device.type == "cpu"


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    assert resolve_device(torch.device("meta")).type == "meta"
    with pytest.raises(ConfigError, match="tpu"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda:1")
    assert make_generator("meta", 3).device.type == "cpu"
    assert torch.equal(torch.randn(3, generator=make_generator("cpu", 3)),
                       torch.randn(3, generator=make_generator("cpu", 3)))
