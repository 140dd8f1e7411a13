"""Optional dependencies: `pip install gendiff` is the core (torch, numpy, safetensors, tqdm); each domain's
packages come with its extra (`pip install "gendiff[molecules]"`, `gendiff[all]`; the table is in pyproject.toml).

A domain checks its packages where it needs them, so a missing one fails with one line naming the extra:

    from gendiff.extras import require
    require("molecules", ["rdkit", "torch_geometric", "e3nn"])   # MissingExtraError when any is not installed

The check imports nothing: it asks the import system whether each module could be found (importlib.util.find_spec).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterable

from .errors import GendiffError


def install_hint(extra: str | None, package: str = "gendiff") -> str:
    """`pip install 'gendiff[molecules]'` (or the package alone when there is no extra)."""
    return f"pip install '{package}[{extra}]'" if extra else f"pip install {package}"


def missing_message(extra: str | None, missing: Iterable[str], package: str = "gendiff") -> str:
    """One line: which modules are missing and which extra brings them."""
    names = list(missing)
    verb = "is" if len(names) == 1 else "are"
    return f"{', '.join(names)} {verb} not installed: {install_hint(extra, package)}"


class MissingExtraError(GendiffError, ImportError):
    """Modules that an extra installs are missing; the message is one line naming the extra. It is an ImportError
    too, so code that falls back on ImportError keeps working."""

    def __init__(self, extra: str | None, missing: Iterable[str], package: str = "gendiff"):
        self.extra = extra
        self.missing = tuple(missing)
        self.package = package
        super().__init__(missing_message(extra, self.missing, package))


def installed(module: str) -> bool:
    """Whether `module` (a top-level or dotted import name) can be imported, without importing it."""
    if module in sys.modules:
        return sys.modules[module] is not None  # None: the import was blocked (as Python's own import treats it)
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package is missing or broken
        return False


def missing(modules: Iterable[str]) -> list[str]:
    """The modules of `modules` that cannot be imported, in the order given."""
    return [m for m in modules if not installed(m)]


def require(extra: str | None, modules: Iterable[str], package: str = "gendiff") -> None:
    """Raise MissingExtraError (one line: the missing modules and `pip install 'gendiff[extra]'`) unless every
    module of `modules` can be imported."""
    absent = missing(modules)
    if absent:
        raise MissingExtraError(extra, absent, package)
