"""What the molecule benchmarks share: training to a CPU-time budget in resumed sittings, and scoring a run."""
from __future__ import annotations

import json
import math
from pathlib import Path



_EDM = dict(prediction="eps", weighting=None)  # EDM's recipe, explicitly (molecules.train defaults to x0_clamped)
RECIPES = {  # issue 11's levers, one switch at a time from EDM's recipe
    "edm": _EDM,
    "unscaled": dict(_EDM, feature_scaling=False),
    "flow": dict(schedule="flow", prediction="velocity", weighting=None),
    "x0_clamped": dict(prediction="x0", weighting="clamped_snr"),
    "v_min_snr": dict(prediction="v", weighting="min_snr:5"),
    "edm_precond": dict(_EDM, precondition="edm"),
    "formula": dict(_EDM, composition="formula"),
    "flow_formula": dict(schedule="flow", prediction="velocity", weighting=None, composition="formula"),
    "x0_clamped_formula": dict(prediction="x0", weighting="clamped_snr", composition="formula"),
    # issue 31: the fast-converging peers' switches, each on top of the default recipe (x0_clamped)
    "selfcond": dict(prediction="x0", weighting="clamped_snr", self_cond=True),
    "ot_lownoise": dict(prediction="x0", weighting="clamped_snr", pairing="ot", time_sampling="low_noise"),
    "lownoise": dict(prediction="x0", weighting="clamped_snr", time_sampling="low_noise"),  # ot_lownoise's ablation
    "selfcond_ot_lownoise": dict(prediction="x0", weighting="clamped_snr", self_cond=True, pairing="ot",
                                 time_sampling="low_noise"),
    # explicit bonds diffused with the atoms (MiDi, EQGAT-diff, SemlaFlow, FlowMol), on top of x0_clamped; measure
    # reports the generated bonds' stability and validity (*_generated_bonds) beside EDM's distance-inferred ones
    "bonds": dict(prediction="x0", weighting="clamped_snr", bonds="explicit"),
    "bonds_lownoise": dict(prediction="x0", weighting="clamped_snr", bonds="explicit", time_sampling="low_noise"),
    # categorical atom types (D3PM's marginal-prior transitions as MiDi / DiGress; categorical.py) on top of
    # x0_clamped, and with explicit bonds the bond classes too; sampled by ancestral / ddim / euler(_maruyama) only
    "categorical": dict(prediction="x0", weighting="clamped_snr", types="categorical"),
    "bonds_categorical": dict(prediction="x0", weighting="clamped_snr", bonds="explicit", types="categorical"),
}


def cpu_seconds_of(run: Path) -> float:
    """Cumulative training CPU seconds on a run's card (0 before its first sitting)."""
    card = run / "card.json"
    return float(json.loads(card.read_text())["training"]["cpu_seconds"] or 0.0) if card.is_file() else 0.0


def train_for_cpu(run: Path, budget_s: float, *, chunk_steps: int = 250, on_chunk=None, **train_kw) -> dict:
    """Train (molecules.train) until the run's cumulative training CPU time reaches `budget_s`: in sittings of at
    most `chunk_steps` steps (the last one sized from the CPU time per step so far), each resuming the checkpoint;
    the Trainer's own time budget is wall-clock, and wall-clock on shared cores is not a fair budget.
    `on_chunk(run, cpu_seconds, steps)` runs after each sitting (the race scores its checkpoints there)."""
    from gendiff.domains import molecules

    while True:
        done = cpu_seconds_of(run)
        card = json.loads((run / "card.json").read_text()) if (run / "card.json").is_file() else None
        steps = int(card["training"]["steps"]) if card else 0
        if done >= budget_s:
            return {"cpu_seconds": done, "steps": steps}
        per_step = done / steps if steps else None
        todo = min(chunk_steps, 50) if per_step is None else max(1, min(chunk_steps,
                                                                         int((budget_s - done) / per_step + 0.5)))
        if card is None and (run / "checkpoint.pt").exists():
            raise SystemExit(f"{run}: a checkpoint without a card (an interrupted first sitting); delete {run}")
        molecules.train(out=run, max_steps=steps + todo, resume=card is not None, progress=False, log_every=50,
                        ckpt_every=10**7, **train_kw)
        if on_chunk is not None:
            on_chunk(run, cpu_seconds_of(run), steps + todo)
        if cpu_seconds_of(run) <= done:
            raise RuntimeError(f"{run}: a sitting added no CPU time; stopping")


def _samplers(spec: str) -> list[tuple[str, int]]:
    out = []
    for item in spec.split(","):
        name, _, steps = item.partition(":")
        out.append((name, int(steps or 50)))
    if any(st > 100 for _, st in out):
        raise SystemExit(f"--samplers {spec}: at most 100 steps (issue 11)")
    return out


def wilson(k: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion k / n (95% by default)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def add_intervals(m: dict, atoms: int) -> dict:
    """Wilson 95% intervals on atom stability (over `atoms` atoms) and molecule stability (over m["n"] molecules)."""
    m["atoms"] = atoms
    m["atom_stability_ci"] = wilson(m["atom_stability"] * atoms, atoms)
    m["molecule_stability_ci"] = wilson(m["molecule_stability"] * m["n"], m["n"])
    return m


def score(run, n: int, samplers, seed: int = 1, batch_size: int = 250) -> dict:
    """EDM's metrics of n molecules per sampler (molecules.measure), plus validity x uniqueness."""
    from gendiff.domains import molecules

    out = {}
    for name, steps in samplers:
        m, mols = molecules.measure(run, n=n, sampler=name, steps=steps, seed=seed, batch_size=batch_size,
                                    device="cpu")
        m["valid_x_unique"] = m["validity"] * m["uniqueness"]
        add_intervals(m, sum(int(x.num_nodes) for x in mols))
        out[f"{name}-{steps}"] = m
        print(f"  {Path(run).name} {name}-{steps}: atom {m['atom_stability']:.3f} mol {m['molecule_stability']:.3f} "
              f"valid {m['validity']:.3f} VxU {m['valid_x_unique']:.3f}", flush=True)
    return out


def base_train_kw(args) -> dict:
    return dict(data="qm9", model="egnn", hidden=args.hidden, layers=args.layers, batch_size=args.batch_size,
                lr=args.lr, warmup_steps=100, ema_decay=args.ema_decay, seed=0)
