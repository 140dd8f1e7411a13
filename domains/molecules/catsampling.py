"""Sampling a categorical-types run (categorical.py): the prior, the hybrid steps and the final types, through
gendiff's core sampler loop (sampler_loop.run_steps) with step functions that live here, not in the core registry.

A hybrid step makes ONE network call at (x_t, t); the core step of the same name (gendiff.sampler_steps: ancestral,
DDIM, Euler, Euler-Maruyama) then moves the positions exactly as it would in a Gaussian run, from that call's x0 and
eps, and the types (and an explicit-bond run's bond classes) are drawn from D3PM's posterior
p(c_s | c_t) = sum_k p_k q(c_s | c_t, c_0 = k) (categorical.posterior) with p the call's type probabilities. The
samplers that call the network more than once per step (heun, dpm_solver_pp, pc, langevin) evaluate it at points
between grid times where a discrete state has no meaning: they are refused with one ConfigError. The final types are
the argmax of the last x0's probabilities (or the types drawn at t = 0 when the grid ends there), the charge column
their atomic number.

Every draw comes from the `generator` given, on the state's device, so a seed reproduces a sample.
"""
from __future__ import annotations

import torch

from gendiff.errors import ConfigError
from gendiff.sampler_loop import run_steps
from gendiff.sampler_steps import SINGLE_CALL_STEPS

from .bondstate import BOND_NORM
from .categorical import NUM_TYPES, Categorical, atom_rows, draw, posterior

CORE_STEPS = SINGLE_CALL_STEPS
SAMPLERS = tuple(CORE_STEPS)
TYPES = slice(3, 3 + NUM_TYPES)  # the type columns of an atom row (the charge column follows)


def check_sampler(name: str) -> None:
    if name not in CORE_STEPS:
        raise ConfigError(f"sampler {name!r} cannot sample categorical atom types (types='categorical'); use one of "
                          f"{', '.join(SAMPLERS)}")


class _Evaluated:
    """The step's Context with the one network call already made: the core step reads x0 and eps from it (any
    other call of the network, at another x or t, is refused); everything else is the Context's."""

    def __init__(self, ctx, x, t, x0, eps):
        self._ctx, self._at, self._pair = ctx, (x, t), (x0, eps)

    def x0_eps(self, x, t):
        if x is not self._at[0] or t != self._at[1]:
            raise ConfigError("a categorical sampler step may call the network once, at its own (x_t, t)")
        return self._pair

    def eps(self, x, t):
        return self.x0_eps(x, t)[1]

    def __getattr__(self, name):
        return getattr(self._ctx, name)


def with_classes(x: torch.Tensor, mask, spec: Categorical, atoms: torch.Tensor, pairs=None) -> torch.Tensor:
    """`x` with its atom type / charge columns (and pair rows' bond columns) set to the given classes."""
    n = atom_rows(x, mask)
    rows = torch.cat([x[:n, :3], spec.atom_columns(atoms, x), x[:n, TYPES.stop + 1 :]], -1)
    if pairs is None:
        return rows if n == x.shape[0] else torch.cat([rows, x[n:]], 0)
    k = len(spec.bond_marginals)
    return torch.cat([rows, torch.cat([spec.bond_columns(pairs, x), x[n:, k:]], -1)], 0)


def classes(x: torch.Tensor, mask, spec: Categorical):
    """(atom classes, pair classes or None) of a state or x0: argmax of the type (bond) columns."""
    n = atom_rows(x, mask)
    atoms = x[:n, TYPES].argmax(-1)
    if n == x.shape[0] or spec.bond_marginals is None:
        return atoms, None
    return atoms, x[n:, : len(spec.bond_marginals)].argmax(-1)


def prior(x_T: torch.Tensor, mask, spec: Categorical, generator=None) -> torch.Tensor:
    """The prior at t = 1: `x_T`'s Gaussian positions, types (and bond classes) drawn from the marginals."""
    n = atom_rows(x_T, mask)
    atoms = draw(spec.prior(x_T).expand(n, -1), generator)
    pairs = None
    if n < x_T.shape[0] and spec.bond_marginals is not None:
        pairs = draw(spec.prior(x_T, "bonds").expand(x_T.shape[0] - n, -1), generator)
    return with_classes(x_T, mask, spec, atoms, pairs)


def finalize(x0: torch.Tensor, mask, spec: Categorical) -> torch.Tensor:
    """The sampler's output with exact one-hot types (argmax), their charges and one-hot bond classes."""
    return with_classes(x0, mask, spec, *classes(x0, mask, spec))


def hybrid_step(name: str, spec: Categorical):
    """The step function of sampler `name` for a categorical run (module docstring); named like the core step, so
    run_steps checks the sampler's own options and walks its own default grid."""
    core = CORE_STEPS[name]

    def step(ctx, x, t, s, state):
        x0, eps = ctx.x0_eps(x, t)
        out = core(_Evaluated(ctx, x, t, x0, eps), x, t, s, state)
        abar_t, abar_s = ctx.alpha_sigma(t)[0] ** 2, ctx.alpha_sigma(s)[0] ** 2
        n = atom_rows(x, ctx.mask)
        atoms_t, pairs_t = classes(x, ctx.mask, spec)
        p = x0[:n, TYPES].float() * spec.type_norm
        atoms = draw(posterior(p, atoms_t, spec.prior(x), abar_t, abar_s), ctx.generator)
        pairs = None
        if pairs_t is not None:
            k = len(spec.bond_marginals)
            q = x0[n:, :k].float() * BOND_NORM
            pairs = draw(posterior(q, pairs_t, spec.prior(x, "bonds"), abar_t, abar_s), ctx.generator)
        return with_classes(out, ctx.mask, spec, atoms, pairs)

    step.__name__ = core.__name__
    step.__doc__ = core.__doc__
    return step


def sample(spec: Categorical, name: str, model, x_T, schedule, space, steps: int, **kwargs) -> torch.Tensor:
    """Run sampler `name`'s hybrid step from the categorical prior state `x_T` (prior()); returns finalize()'s x0."""
    check_sampler(name)
    x0 = run_steps(hybrid_step(name, spec), model, x_T, schedule, space, steps, **kwargs)
    return finalize(x0, kwargs.get("mask"), spec)
