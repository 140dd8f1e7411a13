import os
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def era5_path():
    path = SHARED_DATA / "era5_uk_t2m_2019-03.nc"
    if not path.is_file():
        pytest.skip(f"ERA5 sample not found at {path}")
    return path


@pytest.fixture
def run_cli(tmp_path):
    """Run `gendiff ...` in a subprocess; returns CompletedProcess."""
    import subprocess

    def run(*args, timeout=600):
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
        return subprocess.run([sys.executable, "-m", "gendiff", *map(str, args)], capture_output=True, text=True,
                              timeout=timeout, env=env, cwd=tmp_path)

    return run
