"""The bring-your-own-model example of docs/core.md (linked from the README) runs as written; the CLI fails cleanly
on bad input."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

CORE_DOC = Path(__file__).resolve().parents[2] / "docs" / "core.md"


def test_readme_byom_example_runs(tmp_path):
    text = CORE_DOC.read_text()
    block = re.search(r"<!-- byom:start -->\s*```python\n(.*?)```\s*<!-- byom:end -->", text, re.S)
    assert block, "docs/core.md lost its bring-your-own-model example"
    script = tmp_path / "byom.py"
    script.write_text("import torch\ntorch.set_num_threads(1)\n" + block.group(1))
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("sample mean")][-1]
    nums = [float(v) for v in re.findall(r"-?\d+\.\d+(?:e-?\d+)?", line)]
    sample_mean, data_mean = nums[:2], nums[2:]
    assert all(abs(a - b) < 0.25 for a, b in zip(sample_mean, data_mean)), line
    assert (tmp_path / "runs" / "byom" / "checkpoint.pt").is_file()


@pytest.mark.parametrize("args,needle", [
    (["train"], "DOMAIN"),
    (["sample", "nosuchdomain"], "nosuchdomain"),
    (["list", "--bogus"], "--bogus"),
])
def test_cli_bad_arguments_exit_2_one_line(run_cli, args, needle):
    out = run_cli(*args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gendiff: error:") and needle in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_cli_list(run_cli):
    out = run_cli("list")
    assert out.returncode == 0 and "dpm_solver_pp" in out.stdout and "edm" in out.stdout


def test_unavailable_domain_says_why(monkeypatch, capsys):
    """A domain whose module cannot be imported answers every verb with one line naming it and the reason."""
    from gendiff import cli

    monkeypatch.setitem(sys.modules, "gendiff.domains.molecules.cli", None)  # makes its import raise ImportError
    assert cli.main(["sample", "molecules", "--n", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gendiff: error: molecules is unavailable: "), err
    assert cli.main(["list"]) == 0
    assert "domain molecules: unavailable" in capsys.readouterr().out
