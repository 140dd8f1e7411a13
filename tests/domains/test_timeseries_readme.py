"""The README's pandas time-series example runs as written (a smoke-sized run on the shipped weekly CO2)."""
import ast
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_timeseries_example_runs(tmp_path):
    pytest.importorskip("statsmodels")
    text = README.read_text()
    block = re.search(r"<!-- timeseries:start -->\s*```python\n(.*?)```\s*<!-- timeseries:end -->", text, re.S)
    assert block, "README lost its time-series example"
    script = tmp_path / "timeseries_example.py"
    script.write_text("import torch\ntorch.set_num_threads(1)\n" + block.group(1))
    out = subprocess.run([sys.executable, "-W", "ignore", str(script)], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "['init_time', 'lead_time', 'series', 'member', 'value'] 5408"  # 13 inits x 52 leads x 8 members
    crps = ast.literal_eval(lines[-1])
    assert set(crps) == {"model", "persistence", "climatology", "linear"} and all(v >= 0 for v in crps.values())
    bands = pd.read_csv(tmp_path / "co2_bands.csv")
    assert list(bands.columns) == ["init_time", "lead_time", "series", "quantile", "value"]
    assert len(bands) == 13 * 52 * 3 and (tmp_path / "runs" / "co2" / "config.json").is_file()
    wide = bands.pivot_table(index=["init_time", "lead_time"], columns="quantile", values="value")
    assert (wide[0.1] <= wide[0.5]).all() and (wide[0.5] <= wide[0.9]).all()
