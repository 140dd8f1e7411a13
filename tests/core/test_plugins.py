"""Domains are plugins (gendiff.domain): found through the `gendiff.domains` entry points, the built-in ones and a
toy domain installed from tests/plugins/gendiff_toy; a domain whose extra is missing says, in one line, which extra
to install (gendiff.extras)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gendiff import cli, extras
from gendiff.domain import Domain, Unavailable, discover
from gendiff.errors import GendiffError

REPO = Path(__file__).resolve().parents[2]
TOY = REPO / "tests" / "plugins" / "gendiff_toy"
BUILTIN = ("images", "molecules", "timeseries", "weather")


def test_builtin_domains_are_entry_points_and_the_cli_names_none():
    found = discover()
    for name in BUILTIN:
        assert isinstance(found[name], Domain), found[name]
        domain = found[name]
        assert domain.name == name and domain.extra == name and domain.description and callable(domain.demo)
        assert domain.requires and callable(domain.verbs)
    source = (REPO / "gendiff" / "cli.py").read_text()
    assert not any(name in source for name in BUILTIN), "gendiff/cli.py names a domain"


def _install_toy(tmp_path: Path) -> Path:
    """'Install' the toy plugin the cheap way: a dist-info that carries the entry points its pyproject.toml declares
    (what `pip install -e tests/plugins/gendiff_toy` would write), in a folder to put on the path with TOY."""
    declared = (TOY / "pyproject.toml").read_text()
    points = {"toy": "gendiff_toy.plugin:DOMAIN", "toyheavy": "gendiff_toy.plugin:HEAVY"}
    for name, value in points.items():
        assert f'{name} = "{value}"' in declared
    points["toybad"] = "gendiff_toy.plugin:NOT_A_DOMAIN"  # an entry point that names something else
    site = tmp_path / "site"
    info = site / "gendiff_toy-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gendiff-toy\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[gendiff.domains]\n" + "".join(f"{k} = {v}\n" for k, v in points.items()))
    return site


@pytest.fixture
def toy_installed(tmp_path, monkeypatch):
    """The toy plugin on this process's path (and the entry points found through it) for one test."""
    site = _install_toy(tmp_path)
    monkeypatch.syspath_prepend(str(TOY))
    monkeypatch.syspath_prepend(str(site))
    yield site
    for name in [m for m in sys.modules if m == "gendiff_toy" or m.startswith("gendiff_toy.")]:
        del sys.modules[name]


def test_toy_domain_installed_from_tests_runs_through_the_cli(tmp_path, toy_installed, capsys):
    # the console script end to end, in its own process: the plugin found through its entry point, its verb run
    path = os.pathsep.join([str(toy_installed), str(TOY), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    out = subprocess.run([sys.executable, "-m", "gendiff", "train", "toy", "--out", str(tmp_path / "run"), "--steps",
                          "40"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "toy: trained 40 steps" in out.stdout and (tmp_path / "run" / "model.pt").is_file()

    # the same CLI in this process (cheaper): the other verb, a domain whose extra is missing, the listing
    assert cli.main(["sample", "toy", "--run", str(tmp_path / "run"), "--n", "64"]) == 0
    assert "toy: 64 samples" in capsys.readouterr().out

    assert cli.main(["train", "toyheavy", "--out", "x"]) == 2  # its extra is missing: one line naming it
    assert capsys.readouterr().err.strip().splitlines() == [
        "gendiff: error: toyheavy is unavailable: gendiff_toy_absent_dependency is not installed: "
        "pip install 'gendiff-toy[heavy]'"]

    assert cli.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "domain toy: train, sample" in lines
    assert ("domain toyheavy: unavailable: gendiff_toy_absent_dependency is not installed: "
            "pip install 'gendiff-toy[heavy]'") in lines
    assert any(ln.startswith("domain toybad: unavailable: entry point") for ln in lines), lines
    for name in BUILTIN:  # the built-in domains are still there
        assert any(ln.startswith(f"domain {name}: ") for ln in lines), lines


def test_require_names_the_extra_in_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "rdkit", None)  # as if rdkit were not installed
    with pytest.raises(extras.MissingExtraError) as info:
        extras.require("molecules", ["rdkit", "numpy"])
    message = str(info.value)
    assert message == "rdkit is not installed: pip install 'gendiff[molecules]'"
    assert isinstance(info.value, ImportError) and isinstance(info.value, GendiffError)
    extras.require("molecules", ["numpy", "torch"])  # installed: no error


def test_missing_is_asked_of_find_spec_without_importing(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.delitem(sys.modules, "xarray", raising=False)
    monkeypatch.delitem(sys.modules, "netCDF4", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("xarray", "netCDF4") else real(name, *a))
    assert extras.missing(["numpy", "xarray", "netCDF4", "torch"]) == ["xarray", "netCDF4"]
    with pytest.raises(extras.MissingExtraError, match=r"^xarray, netCDF4 are not installed: "
                                                       r"pip install 'gendiff\[weather\]'$"):
        extras.require("weather", ["xarray", "netCDF4"])
    assert "xarray" not in sys.modules  # asked, not imported


def test_domain_without_its_extra_is_unavailable_naming_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "rdkit", None)
    assert cli.main(["train", "molecules", "--out", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["gendiff: error: molecules is unavailable: rdkit is not installed: "
                   "pip install 'gendiff[molecules]'"], err
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "domain molecules: unavailable: rdkit is not installed: pip install 'gendiff[molecules]'" in out
    assert "domain images: train, sample, evaluate, demo" in out  # the others are untouched


def test_a_plugin_that_is_not_a_domain_is_unavailable():
    from importlib.metadata import EntryPoint

    from gendiff.domain import _load

    entry = _load(EntryPoint(name="odd", value="gendiff.errors:GendiffError", group="gendiff.domains"))
    assert isinstance(entry, Unavailable) and "not a gendiff.domain.Domain" in entry.reason
    entry = _load(EntryPoint(name="gone", value="gendiff_no_such_package.plugin:DOMAIN", group="gendiff.domains"))
    assert isinstance(entry, Unavailable) and "gendiff_no_such_package" in entry.reason


CORE_ONLY = '''
import importlib.util, sys
BLOCK = set(sys.argv[1].split(","))
class Blocker:  # the extras' packages are not installed: `pip install gendiff`, the core alone
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCK:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Blocker())
real = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name.split(".")[0] in BLOCK else real(name, *a)
from gendiff import cli
sys.exit(cli.main(sys.argv[2:]))
'''


def test_the_core_alone_works_and_every_domain_names_its_extra(tmp_path):
    """With no extra installed, gendiff imports, lists, and each domain is unavailable naming its extra."""
    blocked = sorted({m for d in discover().values() if isinstance(d, Domain) for m in d.requires})
    assert {"pandas", "xarray", "rdkit", "matplotlib"} <= set(blocked)

    def gendiff(*args):
        return subprocess.run([sys.executable, "-c", CORE_ONLY, ",".join(blocked), *args], capture_output=True,
                              text=True, cwd=tmp_path, timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))

    out = gendiff("list")
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    for name in BUILTIN:
        line = next(ln for ln in out.stdout.splitlines() if ln.startswith(f"domain {name}: "))
        assert line.startswith(f"domain {name}: unavailable: ") and line.endswith(f"pip install 'gendiff[{name}]'")
    out = gendiff("train", "weather", "--out", "x")
    assert out.returncode == 2
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("gendiff: error: weather is unavailable: ") and "gendiff[weather]" in line, line
