"""EDM's Table 3 protocol (condeval.py): the atom-count baseline on a hand-built case and on QM9 (where it lands on
EDM's published #Atoms row), the shuffled-label row far above the classifier's own error with the committed alpha
classifier, the conditional run's MAE plumbing on a tiny conditional run, and the markdown table beside EDM's."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gendiff.domains import molecules
from gendiff.domains.molecules import classifier as C
from gendiff.domains.molecules import condeval as E
from gendiff.domains.molecules import properties as P
from gendiff.errors import ConfigError

torch.set_num_threads(1)
CLASSIFIER = Path(__file__).resolve().parents[2] / "benchmarks" / "checkpoints" / "qm9-alpha-classifier"


@pytest.fixture(scope="module")
def clf():
    return C.load_classifier(CLASSIFIER)


def test_atom_count_baseline_hand_built():
    counts = [3, 3, 3, 5, 5, 9]
    values = [1.0, 2.0, 10.0, 4.0, 6.0, 7.0]
    table = E.fit_atom_count_medians(counts, values)
    assert table == {3: 2.0, 5: 5.0, 9: 7.0}  # medians (the mean would give 13/3 for N=3)
    # unseen counts take the nearest seen one; 4 (between 3 and 5) and 7 (between 5 and 9) are ties -> the smaller
    got = E.predict_from_atom_counts(table, [3, 4, 5, 6, 7, 8, 9, 12, 1])
    assert got.tolist() == [2.0, 2.0, 5.0, 5.0, 5.0, 7.0, 7.0, 7.0, 2.0]
    # the median per count is the L1-optimal count-only predictor on the molecules it was fitted on
    fitted = np.abs(E.predict_from_atom_counts(table, counts) - values).mean()
    assert fitted == pytest.approx((1 + 0 + 8 + 1 + 1 + 0) / 6)
    means = {3: 13 / 3, 5: 5.0, 9: 7.0}
    assert fitted < np.abs(E.predict_from_atom_counts(means, counts) - values).mean()


def test_atom_count_baseline_on_qm9_matches_edm():
    for prop, edm in E.EDM_TABLE3["atoms"].items():  # EDM's #Atoms row, within 3% (ours: median per count)
        assert E.atom_count_mae(prop) == pytest.approx(edm, rel=0.03), prop
    ds = P.qm9_half("second")
    values = P.property_values(ds, ["alpha"])[:300, 0]
    global_median = np.abs(values - np.median(P.property_values(P.qm9_half("first"), ["alpha"]))).mean()
    assert E.atom_count_mae("alpha", limit=300) < 0.6 * global_median  # N explains most of alpha
    with pytest.raises(ConfigError, match="'beta'"):
        E.atom_count_mae("beta")


def test_shuffled_labels_score_far_worse_than_the_classifier(clf):
    base = E.classifier_baselines(clf, "second", limit=200, seed=0)
    assert base["n"] == 200
    assert base["lower_bound"] == pytest.approx(C.real_mae(clf, "second", limit=200), rel=1e-9)
    assert base["lower_bound"] < 1.5 and base["naive"] > 4 * base["lower_bound"]  # EDM: 0.10 vs 9.01 Bohr^3
    assert E.shuffled_label_mae(clf, "second", limit=200, seed=0) == pytest.approx(base["naive"], rel=1e-12)
    preds = C.predict(clf, [P.qm9_half("second")[i] for i in range(200)])
    values = P.property_values(P.qm9_half("second"), ["alpha"])[:200, 0]
    other = E._permuted_mae(preds, values, seed=1)
    assert other != base["naive"] and other > 4 * base["lower_bound"]  # another permutation, also far off


@pytest.fixture(scope="module")
def cond_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("condeval")
    molecules.train(data="qm9", out=run, conditioning=["alpha"], half="second", limit=200, max_steps=2,
                    batch_size=16, lr=1e-3, progress=False, seed=1, device="cpu", hidden=16, layers=2)
    return run


def test_conditional_mae_plumbing(cond_run, clf):
    kw = dict(steps=3, device="cpu", batch_size=8)
    res = E.conditional_mae(cond_run, clf, n=6, seed=4, **kw)
    assert res["n"] == 6 and res["property"] == "alpha" and res["unit"] == "Bohr^3" and res["steps"] == 3
    assert res["sample_seconds"] > 0 and 0 <= res["molecule_stability"] <= res["atom_stability"] <= 1
    mols = molecules.sample(cond_run, n=6, seed=4, condition="dataset", progress=False, **kw)  # the same draws
    targets = np.array([m.condition["alpha"] for m in mols])
    assert res["mae"] == pytest.approx(np.abs(C.predict(clf, mols) - targets).mean(), rel=1e-6)
    assert "molecule_stability" not in E.conditional_mae(cond_run, clf, n=2, stable=False, **kw)
    with pytest.raises(ConfigError, match="'gap'"):
        E.conditional_mae(cond_run, {**clf, "property": "gap"}, n=2, **kw)
    with pytest.raises(ConfigError, match="without conditioning"):
        E.conditional_mae(molecules.DEFAULT_PRETRAINED, clf, n=2, **kw)


def test_edm_table_and_markdown():
    assert E.EDM_TABLE3["generator"] == P.EDM_TABLE and E.EDM_TABLE3["lower_bound"] == P.EDM_LOWER_BOUND
    assert all(set(row) == set(P.PROPERTIES) for row in E.EDM_TABLE3.values())
    for prop in P.PROPERTIES:  # EDM's ordering: naive > #Atoms > EDM > lower bound (mu: EDM above #Atoms)
        rows = E.EDM_TABLE3
        assert rows["naive"][prop] > rows["atoms"][prop] and rows["generator"][prop] > rows["lower_bound"][prop]
    text = E.markdown_table({"naive": {"alpha": 9.123}, "atoms": {"alpha": 3.8187}, "lower_bound": {"alpha": 0.84}})
    lines = text.splitlines()
    assert lines[0] == "| row | alpha (Bohr^3) ours | alpha (Bohr^3) EDM |" and len(lines) == 6
    assert lines[2] == "| Naive (upper bound) | 9.12 | 9.01 |"
    assert lines[3] == "| #Atoms | 3.82 | 3.86 |"
    assert lines[4] == "| Conditional generator (EDM's 'EDM') | not run | 2.76 |"
    assert lines[5] == "| QM9 (lower bound) | 0.84 | 0.10 |"
    both = E.markdown_table({"generator": {"gap": 700.4}}, ["gap", "mu"]).splitlines()
    assert "| 700 | 655 | not run | 1.111 |" in both[4]
    with pytest.raises(ConfigError, match="rows"):
        E.markdown_table({"edm": {"alpha": 1.0}})
