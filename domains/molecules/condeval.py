"""EDM's Table 3 (Hoogeboom et al. 2022, Sec. 5.3 and App. E): how well a property-conditioned run hits its targets,
read against three references that need no generator, all scored by the property classifier (classifier.py, trained
on EDM's first half) on EDM's second half of QM9's train split:

- 'Naive (upper bound)': the classifier's predictions on real molecules scored against the same molecules' property
  values randomly permuted (what a generator that ignores its condition would score with a perfect classifier);
- '#Atoms': the property predicted from the molecule's atom count alone (a generator that only uses N);
- 'EDM' (here: the run): n molecules sampled with (property, atom count) pairs drawn from the conditioning molecules
  (condition='dataset'), the classifier's MAE against their targets;
- 'QM9 (lower bound)': the classifier's MAE on the real molecules (classifier.real_mae).

A run beats 'Naive' when it uses its condition at all, '#Atoms' when it uses it beyond the number of atoms. EDM's own
numbers are EDM_TABLE3; markdown_table puts a run's beside them."""
from __future__ import annotations

import time

import numpy as np

from gendiff.errors import ConfigError, DataError

from .bonds import stability
from .classifier import mae, real_predictions
from .defaults import DEFAULT_SAMPLER, DEFAULT_STEPS
from .io import as_atoms
from .loading import read_run
from .properties import PROPERTIES, check_properties, property_values, qm9_half
from .sampling import sample

# EDM Table 3 (units: alpha Bohr^3, gap / homo / lumo meV, mu D, Cv cal/mol K); rows keyed as ROWS.
EDM_TABLE3 = {
    "naive": {"alpha": 9.01, "gap": 1470.0, "homo": 645.0, "lumo": 1457.0, "mu": 1.616, "Cv": 6.857},
    "atoms": {"alpha": 3.86, "gap": 866.0, "homo": 426.0, "lumo": 813.0, "mu": 1.053, "Cv": 1.971},
    "generator": {"alpha": 2.76, "gap": 655.0, "homo": 356.0, "lumo": 584.0, "mu": 1.111, "Cv": 1.101},
    "lower_bound": {"alpha": 0.10, "gap": 64.0, "homo": 39.0, "lumo": 36.0, "mu": 0.043, "Cv": 0.040},
}
# row key -> label, in the paper's order (worst to best); EDM's 'EDM' row is the conditional generator's
ROWS = {"naive": "Naive (upper bound)", "atoms": "#Atoms", "generator": "Conditional generator (EDM's 'EDM')",
        "lower_bound": "QM9 (lower bound)"}
DIGITS = {"alpha": 2, "gap": 0, "homo": 0, "lumo": 0, "mu": 3, "Cv": 3}  # EDM's precision per property


def _real_predictions(clf: dict, half: str | None, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """classifier.real_predictions over the first `limit` molecules of EDM's `half` (all with None), at least 2."""
    if limit and int(limit) < 2:
        raise ConfigError(f"limit {limit}: the baselines need at least 2 molecules")
    return real_predictions(clf, half, limit)


def _permuted_mae(preds: np.ndarray, values: np.ndarray, seed: int) -> float:
    """MAE of `preds` against `values` in a random order (numpy default_rng(seed) permutation)."""
    perm = np.random.default_rng(int(seed)).permutation(len(values))
    return float(np.abs(np.asarray(preds) - np.asarray(values)[perm]).mean())


def shuffled_label_mae(clf: dict, half: str | None = "second", limit: int | None = None, seed: int = 0) -> float:
    """EDM's 'Naive (upper bound)': the classifier's predictions on the real molecules of `half` (its first `limit`)
    scored against the same molecules' property values randomly permuted (seed `seed`). The property's unit."""
    preds, values = _real_predictions(clf, half, limit)
    return _permuted_mae(preds, values, seed)


def classifier_baselines(clf: dict, half: str | None = "second", limit: int | None = None, seed: int = 0) -> dict:
    """Both classifier rows from one pass of the classifier over the real molecules of `half` (its first `limit`):
    {'lower_bound' (= classifier.real_mae), 'naive' (= shuffled_label_mae with `seed`), 'n', 'seconds'}."""
    t0 = time.perf_counter()
    preds, values = _real_predictions(clf, half, limit)
    return {"lower_bound": float(np.abs(preds - values).mean()), "naive": _permuted_mae(preds, values, seed),
            "n": len(values), "seconds": round(time.perf_counter() - t0, 2)}


def fit_atom_count_medians(counts, values) -> dict[int, float]:
    """{atom count: median of `values` over the molecules with that count}: per count the constant with the least
    mean absolute error (the median is L1-optimal), so '#Atoms' is the best any count-only predictor does in MAE on
    the molecules it was fitted on."""
    counts = np.asarray(counts, dtype=np.int64).reshape(-1)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if counts.size != values.size or counts.size == 0:
        raise DataError(f"{counts.size} atom counts but {values.size} values (need as many, at least one)")
    return {int(k): float(np.median(values[counts == k])) for k in np.unique(counts)}


def predict_from_atom_counts(table: dict[int, float], counts) -> np.ndarray:
    """The table's value for each count; a count the table lacks takes the nearest count's (a tie: the smaller)."""
    if not table:
        raise DataError("empty atom-count table")
    keys = np.array(sorted(table), dtype=np.int64)
    vals = np.array([table[int(k)] for k in keys], dtype=np.float64)
    counts = np.asarray(counts, dtype=np.int64).reshape(-1)
    right = np.clip(np.searchsorted(keys, counts), 0, len(keys) - 1)
    left = np.clip(right - 1, 0, len(keys) - 1)
    nearest = np.where(np.abs(counts - keys[left]) <= np.abs(keys[right] - counts), left, right)
    return vals[nearest]


def atom_count_mae(prop: str, fit_half: str | None = "first", eval_half: str | None = "second",
                   limit: int | None = None) -> float:
    """EDM's '#Atoms' baseline: `prop` predicted from the atom count alone, as the median of the property over the
    `fit_half` molecules with that count (the L1-optimal constant per count; fit_atom_count_medians), a count unseen
    in the fit taking the nearest seen count's; its MAE over the first `limit` molecules of `eval_half` (all with
    None). EDM fitted its count-only predictor on the classifier's half too; EDM does not say which statistic."""
    (name,) = check_properties([prop])
    fit = qm9_half(fit_half)
    table = fit_atom_count_medians(fit.num_atoms, property_values(fit, [name])[:, 0])
    ev = qm9_half(eval_half)
    n = min(int(limit), len(ev)) if limit else len(ev)
    values = property_values(ev, [name])[:n, 0]
    return float(np.abs(predict_from_atom_counts(table, ev.num_atoms[:n]) - values).mean())


def _check_conditioned_on(run, prop: str) -> None:
    """One ConfigError unless `run` is a conditional run trained on `prop`."""
    spec = read_run(run).config.get("conditioning")
    if spec is None:
        raise ConfigError(f"run {run}: trained without conditioning; the classifier scores a conditional run")
    if prop not in spec["properties"]:
        raise ConfigError(f"run {run} is conditioned on {', '.join(spec['properties'])}, the classifier predicts "
                          f"{prop!r}")


def conditional_mae(run, clf: dict, n: int = 10_000, seed: int = 0, sampler: str = DEFAULT_SAMPLER,
                    steps: int = DEFAULT_STEPS, *, batch_size: int = 256, device: str = "auto",
                    progress: bool = False, stable: bool = True, **sampler_kw) -> dict:
    """EDM's row for a conditional run: n molecules sampled with condition='dataset' ((property, atom count) pairs
    drawn with `seed` from the molecules the run was conditioned on) -> {'property', 'unit', 'mae' (the classifier's
    MAE against each molecule's target), 'n', 'sample_seconds', 'sampler', 'steps', 'seed'}; with `stable` also
    EDM's 'atom_stability' and 'molecule_stability' of the samples (bond-length tables, cheap). `sampler_kw`
    (spacing, timesteps, ...), `batch_size`, `device` and `progress` go to sample()."""
    prop = clf["property"]
    _check_conditioned_on(run, prop)
    t0 = time.perf_counter()
    mols = sample(run, n=int(n), sampler=sampler, steps=int(steps), seed=int(seed), batch_size=int(batch_size),
                  device=device, progress=progress, condition="dataset", **sampler_kw)
    seconds = time.perf_counter() - t0
    out = {"property": prop, "unit": clf["unit"], "mae": mae(clf, mols), "n": len(mols),
           "sample_seconds": round(seconds, 2), "sampler": sampler, "steps": int(steps), "seed": int(seed)}
    if stable:
        st = stability([as_atoms(m) for m in mols])
        out.update(atom_stability=st["atom_stability"], molecule_stability=st["molecule_stability"])
    return out


def _cell(value, prop: str) -> str:
    return "not run" if value is None else f"{float(value):,.{DIGITS[prop]}f}"


def markdown_table(ours: dict, properties=None) -> str:
    """EDM's Table 3 with our rows beside EDM's: `ours` {row key of ROWS: {property: MAE}} (a row or a property
    missing there reads 'not run'); one column pair (ours, EDM's) per property of `properties` (default: those in
    `ours`, else all six), in the properties' units."""
    unknown = [k for k in ours if k not in ROWS]
    if unknown:
        raise ConfigError(f"rows {unknown}: expected keys of {', '.join(ROWS)}")
    if properties is None:
        seen = {p for row in ours.values() for p in (row or {})}
        properties = [p for p in PROPERTIES if p in seen] or list(PROPERTIES)
    props = check_properties(list(properties))
    head = ["row"] + [f"{p} ({PROPERTIES[p][2]}) {who}" for p in props for who in ("ours", "EDM")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, label in ROWS.items():
        row = ours.get(key) or {}
        cells = [label]
        for p in props:
            cells += [_cell(row.get(p), p), _cell(EDM_TABLE3[key][p], p)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
