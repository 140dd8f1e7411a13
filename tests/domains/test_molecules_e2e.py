"""Tiny end-to-end runs: train -> sample -> evaluate for both networks, files and CLI error handling."""
import json
import subprocess
import sys

import pytest
import torch

from gendiff.domains import molecules
from gendiff.domains.molecules.data import molecule_to_data
from gendiff.errors import ConfigError, DataError

torch.set_num_threads(1)

METHANE = ([6, 1, 1, 1, 1], [[0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63], [-0.63, 0.63, -0.63],
                             [0.63, -0.63, -0.63]])
WATER = ([8, 1, 1], [[0, 0, 0.12], [0, 0.76, -0.47], [0, -0.76, -0.47]])
TINY = {"egnn": dict(hidden=16, layers=2), "e3nn": dict(hidden=4, layers=1, mul_vectors=2, radial_hidden=8)}


def toy_molecules(n=24, seed=0):
    gen = torch.Generator().manual_seed(seed)
    mols = []
    for k in range(n):
        z, pos = METHANE if k % 2 == 0 else WATER
        pos = torch.tensor(pos) + 0.02 * torch.randn(len(z), 3, generator=gen) + torch.randn(3, generator=gen)
        mols.append(molecule_to_data(z, pos))
    return mols


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = {}
    for kind in ("egnn", "e3nn"):
        run = tmp_path_factory.mktemp(kind)
        molecules.train(data=toy_molecules(), model=kind, out=run, max_steps=6, batch_size=8, lr=1e-3,
                        progress=False, **TINY[kind])
        out[kind] = run
    return out


@pytest.mark.parametrize("kind", ["egnn", "e3nn"])
def test_train_sample_evaluate(runs, kind, tmp_path):
    run = runs[kind]
    assert (run / "checkpoint.pt").is_file() and (run / "log.csv").is_file()
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"] == kind and cfg["atom_counts"] == {"3": 12, "5": 12}
    mols = molecules.sample(run=run, n=6, sampler="ancestral", steps=20, seed=0, progress=False)
    assert len(mols) == 6 and {m.num_nodes for m in mols} <= {3, 5}
    for m in mols:
        assert torch.isfinite(m.pos).all()
        assert m.pos.mean(0).abs().max() < 1e-4, "generated positions must have zero centre of mass"
        assert set(m.z.tolist()) <= {1, 6, 7, 8, 9}
    again = molecules.sample(run=run, n=6, sampler="ancestral", steps=20, seed=0, progress=False)
    assert all(torch.equal(a.pos, b.pos) for a, b in zip(mols, again)), "same seed must give the same molecules"
    metrics = molecules.evaluate(molecules=mols)
    assert metrics["n"] == 6
    for key in ("atom_stability", "molecule_stability", "validity", "uniqueness"):
        assert 0.0 <= metrics[key] <= 1.0
    png = molecules.write_molecules(tmp_path / "mols.sdf", mols)
    assert png.is_file() and png.stat().st_size > 0
    assert molecules.evaluate(input=tmp_path / "mols.sdf")["n"] == 6


def test_fast_samplers_and_errors(runs, tmp_path):
    for sampler in ("heun", "dpm_solver_pp"):
        mols = molecules.sample(run=runs["egnn"], n=3, sampler=sampler, steps=5, seed=1, progress=False)
        assert len(mols) == 3 and all(m.pos.mean(0).abs().max() < 1e-4 for m in mols)
    kw = dict(run=runs["egnn"], n=3, sampler="ancestral", steps=5, seed=1, progress=False)
    pos = [torch.cat([m.pos for m in molecules.sample(**kw, **extra)]) for extra in ({}, {"spacing": "log_snr"},
                                                                                      {"spacing": "uniform"})]
    assert torch.equal(pos[0], pos[1]) and not torch.equal(pos[0], pos[2]), "default grid: log-SNR spacing"
    with pytest.raises(ConfigError):
        molecules.train(data=toy_molecules(), model="schnet", out=tmp_path / "x")
    with pytest.raises(ConfigError, match="exists"):
        molecules.train(data=toy_molecules(), model="egnn", out=runs["egnn"], max_steps=1, batch_size=8, **TINY["egnn"])
    with pytest.raises(ConfigError, match="unknown"):
        molecules.train(data=toy_molecules(), model="egnn", out=tmp_path / "y", bogus=1)
    with pytest.raises(DataError, match="config.json"):
        molecules.sample(run=tmp_path / "missing", n=2)


def _cli(capsys, *args):
    """gendiff.cli.main in-process: (exit code, stdout, stderr)."""
    from gendiff.cli import main

    try:
        code = main(list(args))
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli(runs, tmp_path, capsys):
    out = tmp_path / "cli.sdf"
    code, _, err = _cli(capsys, "sample", "molecules", "--run", str(runs["egnn"]), "--n", "4", "--sampler", "heun",
                        "--steps", "4", "--out", str(out))
    assert code == 0, err
    assert out.is_file() and out.with_suffix(".png").is_file()
    code, stdout, err = _cli(capsys, "evaluate", "molecules", "--input", str(out), "--json")
    assert code == 0, err
    assert json.loads(stdout.strip().splitlines()[-1])["n"] == 4
    for bad in (["train", "molecules", "--model", "schnet", "--out", str(tmp_path / "r")],
                ["sample", "molecules", "--run", str(tmp_path / "nope"), "--out", str(tmp_path / "m.sdf")],
                ["evaluate", "molecules", "--input", str(tmp_path / "nope.xyz")]):
        code, _, err = _cli(capsys, *bad)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 2 and len(lines) == 1 and lines[0].startswith("gendiff: error:"), (bad, err)


def test_cli_entry_point_exit_code(tmp_path):
    r = subprocess.run([sys.executable, "-m", "gendiff.cli", "train", "molecules", "--model", "schnet", "--out",
                        str(tmp_path / "r")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["gendiff: error: --model 'schnet': expected one of egnn, e3nn"]
