"""The device tests again with every tensor on CUDA (skipped where there is no GPU): the same test files, run in a
subprocess with GENDIFF_TEST_DEVICES=cuda, so a GPU run exercises the real device and the CPU run stays fast."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
ROOT = Path(__file__).resolve().parents[1]


def test_device_tests_pass_on_cuda():
    files = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("tests/**/test_*device*.py"))
    env = dict(os.environ, GENDIFF_TEST_DEVICES="cuda")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", *files], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
