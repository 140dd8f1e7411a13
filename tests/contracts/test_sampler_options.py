"""Every option every registered sampler takes is used or refused (issue 28, item 7): no option is ignored silently.

For each sampler and each option it could be given (the skeleton's COMMON_OPTIONS and the sampler's own OPTIONS),
a run with the option set, in a setting where it applies, must differ from the run without it; an option given
where it would do nothing, or one the sampler does not take, must raise ConfigError. A new option without a case
here fails test_every_option_has_a_case.
"""
import pytest
import torch

from gendiff import samplers, schedules, spaces
from gendiff.errors import ConfigError

SAMPLERS = samplers.list_samplers()
STEPS = 6


class _Counting(torch.nn.Module):
    """A deterministic eps model whose x0 estimates leave [-1, 1] (so clipping bites); counts calls and rows."""

    def __init__(self):
        super().__init__()
        self.calls, self.rows = 0, 0

    def forward(self, x, t, *, mask=None, cond=None):
        self.calls += 1
        self.rows += x.shape[0]
        shift = 0.0 if cond is None else 0.3 * cond
        return 0.5 * x + 0.1 * t.reshape(-1, *([1] * (x.dim() - 1))) + shift


# option -> (value, schedule where it applies, options the comparison run has too)
CASES = {
    "clip_x0": ((-0.05, 0.05), "cosine", {}),
    "spacing": ("karras", "cosine", {}),  # cosine: karras differs from uniform and from 'auto' (log-SNR)
    "rho": (3.0, "cosine", {"spacing": "karras"}),
    "variance": ("beta", "cosine", {}),
    "eta": (0.7, "cosine", {}),
    "snr": (0.3, "cosine", {}),
    "corrector_steps": (2, "cosine", {}),
    "step_scale": (0.5, "cosine", {}),
    "steps_each": (2, "cosine", {}),
    "max_ratio": (1.5, "cosine", {}),
    # a grid ending at sigma = 0 takes its last step to x0 (first order) anyway: vp ends at sigma > 0
    "lower_order_final": (False, "vp", {}),
}
BY_CALLS = {"cfg_batch": False}  # exact by design: the same numbers, but one batched pass or two passes a step


def _options(name):
    return samplers.COMMON_OPTIONS + samplers.OPTIONS[name]


def _run(name, schedule_name, **options):
    schedule = schedules.get_schedule(schedule_name)
    space = spaces.EuclideanSpace()
    model = _Counting()
    g = torch.Generator().manual_seed(0)
    x_T = 3 * samplers.prior_sample(schedule, space, torch.zeros(4, 6), generator=g)
    cond, null = torch.ones(4, 6), torch.zeros(4, 6)
    x = samplers.sample(name, model, x_T, schedule, space, STEPS, cond=cond, null_cond=null, guidance=2.0,
                        generator=g, **options)
    return x, model


def test_every_option_has_a_case():
    every = {opt for name in SAMPLERS for opt in _options(name)}
    assert every == set(CASES) | set(BY_CALLS), "add a case for each new sampler option"


@pytest.mark.parametrize("name,option", [(n, o) for n in SAMPLERS for o in _options(n)])
def test_option_is_used(name, option):
    if option in BY_CALLS:
        plain, model = _run(name, "cosine")
        split, split_model = _run(name, "cosine", **{option: BY_CALLS[option]})
        assert torch.equal(plain, split), "cfg_batch changed the numbers (batching the two passes must be exact)"
        assert (split_model.calls, split_model.rows) != (model.calls, model.rows), f"{name}: {option} was ignored"
        return
    value, schedule_name, context = CASES[option]
    plain, _ = _run(name, schedule_name, **context)
    given, _ = _run(name, schedule_name, **context, **{option: value})
    assert torch.isfinite(given).all()
    assert not torch.equal(plain, given), f"sampler {name!r} ignored {option}={value!r}"


@pytest.mark.parametrize("name", SAMPLERS)
def test_option_without_effect_is_refused(name):
    schedule = schedules.get_schedule("cosine")
    for options in ({"rho": 3.0}, {"rho": 3.0, "spacing": "uniform"}, {"rho": 3.0, "spacing": "log_snr"}):
        with pytest.raises(ConfigError, match="rho shapes only the 'karras' grid"):
            _run(name, "cosine", **options)
        with pytest.raises(ConfigError, match="rho shapes only the 'karras' grid"):
            samplers.nfe(name, STEPS, schedule, **options)
    with pytest.raises(ConfigError, match=f"sampler '{name}' has no option 'bogus'"):
        _run(name, "cosine", bogus=1)
    others = {o for n in SAMPLERS for o in samplers.OPTIONS[n]} - set(samplers.OPTIONS[name])
    for option in sorted(others):  # another sampler's option
        with pytest.raises(ConfigError, match=f"has no option '{option}'"):
            _run(name, "cosine", **{option: CASES[option][0]})
