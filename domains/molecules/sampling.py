"""Sampling molecules from a run: sizes (or formulas) drawn on the CPU, the run's denoiser on the device, decoded
with the run's feature scaling."""
from __future__ import annotations

import torch

from gendiff.device import make_generator
from gendiff.errors import ConfigError

from . import model
from .conditioning import sampling_condition
from .defaults import DEFAULT_SAMPLER, DEFAULT_SPACING, DEFAULT_STEPS
from .loading import load_run
from .runconfig import recipe


def sample(run, n: int = 100, sampler: str = DEFAULT_SAMPLER, steps: int = DEFAULT_STEPS, seed: int = 0, *,
           batch_size: int = 256, device: str = "auto", progress: bool = True, bf16: bool = False,
           compile: bool | str = False, condition=None, **sampler_kw) -> list:
    """Sample n molecules (list of Data: pos, z, x, charge) from a run folder or pretrained:NAME; sizes from the
    training histogram. A run trained with explicit bonds samples them with the atoms: each molecule then also
    carries its generated bonds (bond_index (2, B), bond_order (B,): 1 single, 2 double, 3 triple), which
    write_molecules writes to SDF and evaluate scores. A categorical-types run (types='categorical') samples its
    types as categorical variables (catsampling.py; samplers ancestral, ddim, euler, euler_maruyama).

    Sizes are drawn on the CPU with `seed` (so a seed gives the same sizes on every device), the molecules on
    `device` with seed + 1; `bf16` runs the network under bfloat16 autocast, `compile` compiles it first.
    `sampler_kw` go to the core sampler; its grid is spaced DEFAULT_SPACING unless `spacing` or `timesteps` is
    given.

    `condition` (a property-conditioned run only, conditioning.py): {property: value} (one value for every molecule,
    or a sequence of n), e.g. {"alpha": 80.0}, sizes then drawn from the histogram; or 'dataset': (properties, atom
    count) pairs drawn jointly, with `seed`, from the molecules the run was conditioned on (EDM's protocol). Each
    molecule then carries its targets as `condition` ({property: value}). A condition on an unconditional run, none
    on a conditional one, or a property the run was not trained on is one ConfigError."""
    if int(n) < 1:
        raise ConfigError(f"n={n}: number of molecules must be >= 1")
    denoiser, sched, sizes, config = load_run(run, device, compile=compile)
    rec = recipe(config)
    targets, props, counts = sampling_condition(config, condition, int(n), int(seed))
    cond = None
    if rec["formulas"] is not None:  # formula-conditioned: draw formulas, N is their sum
        if counts is not None:
            raise ConfigError("condition='dataset' with a formula-composition run: give property values instead")
        formulas = rec["formulas"].sample(int(n), make_generator("cpu", int(seed)))
        counts, cond = formulas.sum(1), model.composition_context(formulas)
    elif counts is None:
        counts = sizes.sample(int(n), make_generator("cpu", int(seed)))
    if props is not None:
        cond = props if cond is None else torch.cat([cond, props], dim=1)
    gen = make_generator(next(denoiser.parameters()).device, int(seed) + 1)
    if "timesteps" not in sampler_kw:
        sampler_kw.setdefault("spacing", DEFAULT_SPACING)
    mols = model.sample_molecules(denoiser, sched, n, counts, sampler=sampler, steps=steps, generator=gen,
                                  batch_size=batch_size, progress=progress, bf16=bf16, cond=cond,
                                  norm_values=rec["norm_values"], bonds=rec["bonds"], types=rec["types"],
                                  **sampler_kw)
    if targets is not None:
        names = config["conditioning"]["properties"]
        for mol, row in zip(mols, targets):
            mol.condition = {k: float(v) for k, v in zip(names, row)}
    return mols
