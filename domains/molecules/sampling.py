"""Sampling molecules from a run: sizes (or formulas) drawn on the CPU, the run's denoiser on the device, decoded
with the run's feature scaling."""
from __future__ import annotations

from gendiff.device import make_generator
from gendiff.errors import ConfigError

from . import model
from .defaults import DEFAULT_SAMPLER, DEFAULT_SPACING, DEFAULT_STEPS
from .loading import load_run
from .runconfig import recipe


def sample(run, n: int = 100, sampler: str = DEFAULT_SAMPLER, steps: int = DEFAULT_STEPS, seed: int = 0, *,
           batch_size: int = 256, device: str = "auto", progress: bool = True, bf16: bool = False,
           compile: bool | str = False, **sampler_kw) -> list:
    """Sample n molecules (list of Data: pos, z, x, charge) from a run folder or pretrained:NAME; sizes from the
    training histogram.

    Sizes are drawn on the CPU with `seed` (so a seed gives the same sizes on every device), the molecules on
    `device` with seed + 1; `bf16` runs the network under bfloat16 autocast, `compile` compiles it first.
    `sampler_kw` go to the core sampler; its grid is spaced DEFAULT_SPACING unless `spacing` or `timesteps` is
    given."""
    if int(n) < 1:
        raise ConfigError(f"n={n}: number of molecules must be >= 1")
    denoiser, sched, sizes, config = load_run(run, device, compile=compile)
    rec = recipe(config)
    cond = None
    if rec["formulas"] is not None:  # formula-conditioned: draw formulas, N is their sum
        formulas = rec["formulas"].sample(int(n), make_generator("cpu", int(seed)))
        counts, cond = formulas.sum(1), model.composition_context(formulas)
    else:
        counts = sizes.sample(int(n), make_generator("cpu", int(seed)))
    gen = make_generator(next(denoiser.parameters()).device, int(seed) + 1)
    if "timesteps" not in sampler_kw:
        sampler_kw.setdefault("spacing", DEFAULT_SPACING)
    return model.sample_molecules(denoiser, sched, n, counts, sampler=sampler, steps=steps, generator=gen,
                                  batch_size=batch_size, progress=progress, bf16=bf16, cond=cond,
                                  norm_values=rec["norm_values"], **sampler_kw)
