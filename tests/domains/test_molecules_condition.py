"""Property-conditioned molecule generation (EDM's conditional QM9 protocol), the plumbing: the conditioned EGNN is
E(3)-equivariant and reads its condition, a tiny conditional QM9 training records its normalisation and samples with
condition={...} or 'dataset', the error cases are one ConfigError (exit 2 from the CLI), EDM's halves, and
unconditional runs (pretrained:qm9) are unchanged."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gendiff.domains import molecules
from gendiff.domains.molecules import conditioning as C
from gendiff.domains.molecules import model as M
from gendiff.domains.molecules import properties as P
from gendiff.domains.molecules.records import molecule_to_data
from gendiff.errors import ConfigError
from tests._molecules import rotation

torch.set_num_threads(1)
TINY = dict(hidden=16, layers=2)


def _conditioned_net(**opts):
    net_cfg = molecules.TrainOptions.build(conditioning=["alpha"], **opts).net_config()
    assert net_cfg["context_nf"] == (M.NUM_TYPES if opts.get("composition") == "formula" else 0) + 1
    return M.build_net("egnn", **{**net_cfg, "hidden_nf": 16, "n_layers": 2}).eval()


def test_conditioned_egnn_is_equivariant_and_reads_the_condition():
    torch.manual_seed(0)
    net = _conditioned_net()
    sizes = (5, 4, 3)
    gen = torch.Generator().manual_seed(1)
    vec = torch.repeat_interleave(torch.arange(3), torch.tensor(sizes))
    x = torch.randn(sum(sizes), M.STATE_DIM, generator=gen)
    x[:, :3] = M.ZeroCoMSpace().project(x[:, :3], vec)
    t = torch.full((x.shape[0],), 0.4)
    cond = torch.tensor([[0.5], [-1.0], [2.0]])
    rot, shift = rotation(), torch.tensor([0.3, -1.2, 2.0])
    moved = x.clone()
    moved[:, :3] = x[:, :3] @ rot.T + shift
    out = net(x, t, mask=vec, cond=cond)
    out_rot = net(moved, t, mask=vec, cond=cond)
    assert torch.allclose(out_rot[:, :3], out[:, :3] @ rot.T, atol=1e-4)
    assert torch.allclose(out_rot[:, 3:], out[:, 3:], atol=1e-4)
    other = net(x, t, mask=vec, cond=cond + 1.0)
    assert (other - out).abs().max() > 1e-4  # the condition reaches the output
    with pytest.raises(ConfigError, match="context_nf"):
        net(x, t, mask=vec)


def test_options_validate_the_conditioning():
    assert molecules.TrainOptions.build(conditioning="alpha,gap").conditioning == ["alpha", "gap"]
    assert _conditioned_net(composition="formula") is not None
    assert "context_nf" not in molecules.TrainOptions.build().net_config()
    with pytest.raises(ConfigError, match="'beta'"):
        molecules.TrainOptions.build(conditioning=["beta"])
    with pytest.raises(ConfigError, match="half"):
        molecules.TrainOptions.build(half="third")
    with pytest.raises(ConfigError, match="needs data='qm9'"):
        mols = [molecule_to_data([6, 1, 1, 1, 1], torch.randn(5, 3)) for _ in range(4)]
        molecules.train(data=mols, out="unused", conditioning=["alpha"], max_steps=1, progress=False)


def test_edm_halves():
    first, second = P.edm_halves(100_000)
    np.random.seed(42)  # EDM's rule: np.random.seed(42); permutation of the train split; first / second n // 2
    perm = np.random.permutation(100_000)
    assert np.array_equal(first, perm[:50_000]) and np.array_equal(second, perm[50_000:])
    assert len(np.intersect1d(first, second)) == 0
    f, s = P.edm_halves(7)
    assert sorted(np.concatenate([f, s]).tolist()) == list(range(7)) and len(f) == 3


@pytest.fixture(scope="module")
def cond_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("cond")
    molecules.train(data="qm9", out=run, conditioning=["alpha"], half="second", limit=200, max_steps=3,
                    batch_size=32, lr=1e-3, progress=False, seed=1, device="cpu", **TINY)
    return run


def test_conditional_training_records_the_normalisation(cond_run):
    cfg = json.loads((cond_run / "config.json").read_text())
    spec = cfg["conditioning"]
    assert spec["properties"] == ["alpha"] and spec["units"] == {"alpha": "Bohr^3"} and spec["half"] == "second"
    values = P.property_values(P.qm9_half("second"), ["alpha"])[:200, 0]
    assert spec["mean"]["alpha"] == pytest.approx(values.mean())
    assert spec["mad"]["alpha"] == pytest.approx(np.abs(values - values.mean()).mean())
    assert cfg["net"]["context_nf"] == 1
    card = json.loads((cond_run / "card.json").read_text())
    assert "second half" in card["training"]["split"]


def test_conditional_run_samples_with_a_condition(cond_run):
    kw = dict(steps=3, progress=False, device="cpu")
    mols = molecules.sample(cond_run, n=4, condition={"alpha": 80.0}, seed=2, **kw)
    assert len(mols) == 4 and all(m.condition == {"alpha": 80.0} for m in mols)
    assert all(torch.isfinite(m.pos).all() for m in mols)
    again = molecules.sample(cond_run, n=4, condition={"alpha": 80.0}, seed=2, **kw)
    other = molecules.sample(cond_run, n=4, condition={"alpha": 40.0}, seed=2, **kw)
    assert all(torch.equal(a.pos, b.pos) for a, b in zip(mols, again, strict=True))
    assert any(not torch.allclose(a.pos, b.pos) for a, b in zip(mols, other, strict=True))  # same noise, new target
    per = molecules.sample(cond_run, n=3, condition={"alpha": [60.0, 70.0, 80.0]}, **kw)
    assert [m.condition["alpha"] for m in per] == [60.0, 70.0, 80.0]
    pairs = molecules.sample(cond_run, n=5, condition="dataset", seed=3, **kw)
    pool = P.qm9_half("second")
    alphas = P.property_values(pool, ["alpha"])[:200, 0]
    for m in pairs:  # each (alpha, N) pair is one molecule's of the conditioning pool
        match = np.isclose(alphas, m.condition["alpha"])
        assert match.any() and m.pos.shape[0] in set(pool.num_atoms[:200][match].tolist())


def test_condition_errors(cond_run, tmp_path):
    kw = dict(n=2, steps=2, progress=False, device="cpu")
    with pytest.raises(ConfigError, match="'gap'"):
        molecules.sample(cond_run, condition={"alpha": 80.0, "gap": 300.0}, **kw)
    with pytest.raises(ConfigError, match="alpha"):
        molecules.sample(cond_run, **kw)
    with pytest.raises(ConfigError, match="'alpha'"):
        molecules.sample(cond_run, condition={"alpha": [1.0, 2.0, 3.0]}, **kw)
    with pytest.raises(ConfigError, match="alpha.*without conditioning"):
        molecules.sample(molecules.DEFAULT_PRETRAINED, condition={"alpha": 80.0}, **kw)
    with pytest.raises(ConfigError, match="PROPERTY=VALUE"):
        C.parse_condition(["alpha:80"])
    assert C.parse_condition(["alpha=80", "gap=3,mu=1"]) == {"alpha": 80.0, "gap": 3.0, "mu": 1.0}


def _cli(capsys, *args):
    from gendiff.cli import main

    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr()


def test_cli_condition(cond_run, tmp_path, capsys):
    out = tmp_path / "c.xyz"
    base = ["sample", "molecules", "--run", cond_run, "--n", "2", "--steps", "2", "--device", "cpu"]
    code, cap = _cli(capsys, *base, "--condition", "alpha=80", "--out", out)
    assert code == 0, cap.err
    assert out.is_file()
    bad = [[*base, "--condition", "gap=300", "--out", out], [*base, "--out", out],
           ["sample", "molecules", "--run", "pretrained:qm9", "--n", "2", "--steps", "2", "--device", "cpu",
            "--condition", "alpha=80", "--out", out],
           ["train", "molecules", "--out", tmp_path / "r", "--condition-on", "beta"]]
    for args in bad:
        code, cap = _cli(capsys, *args)
        lines = [ln for ln in cap.err.splitlines() if ln.strip()]
        assert code == 2 and len(lines) == 1 and lines[0].startswith("gendiff: error:"), (args, cap.err)


def test_unconditional_runs_unchanged():
    cfg = molecules.read_run(molecules.DEFAULT_PRETRAINED).config
    assert "conditioning" not in cfg and "context_nf" not in cfg["net"]
    mols = molecules.sample(molecules.DEFAULT_PRETRAINED, n=2, steps=2, progress=False, device="cpu")
    assert len(mols) == 2 and not hasattr(mols[0], "condition")


def test_property_classifier_tiny():
    from gendiff.domains.molecules import classifier

    clf = classifier.train_classifier("alpha", "first", limit=128, steps=15, batch_size=32, hidden=16, layers=2)
    assert clf["unit"] == "Bohr^3" and clf["mad"] > 0
    pool = P.qm9_half("second")
    mols = [pool[i] for i in range(8)]
    pred = classifier.predict(clf, mols)
    assert pred.shape == (8,) and np.isfinite(pred).all()
    rot = rotation(3)
    moved = [molecule_to_data(m.z, m.pos @ rot.T + 1.5) for m in mols]
    assert np.allclose(classifier.predict(clf, moved), pred, atol=1e-3)  # E(3)-invariant
    err = classifier.real_mae(clf, "second", limit=16)
    mean_only = np.abs(P.property_values(pool, ["alpha"])[:16, 0] - clf["mean"]).mean()
    assert np.isfinite(err) and err < 3 * mean_only  # trained a few steps: sane, not yet good
    for m in mols:
        m.condition = {"alpha": 80.0}
    assert classifier.mae(clf, mols) == pytest.approx(np.abs(pred - 80.0).mean())
