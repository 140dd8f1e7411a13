"""Domains as plugins: a `Domain` describes one, and the `gendiff.domains` entry-point group lists them.

A package adds a domain to `gendiff` (the CLI and `gendiff list`) by declaring an entry point that names its
`Domain` object, for example in its pyproject.toml:

    [project.entry-points."gendiff.domains"]
    toy = "gendiff_toy.plugin:DOMAIN"

and, in gendiff_toy/plugin.py (the CLI table is imported when a verb needs it, not when the plugin is found):

    def _verbs():
        from .cli import VERBS   # {verb: (add_arguments(parser), run(args) -> exit code)}
        return VERBS

    DOMAIN = Domain(name="toy", description="...", verbs=_verbs, demo=None, extra=None)

The built-in domains (images, weather, timeseries, molecules) are found the same way: gendiff's own pyproject.toml
declares them, and nothing in the core names them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import import_module
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from .errors import GendiffError
from .extras import MissingExtraError, install_hint, missing

GROUP = "gendiff.domains"

AddArguments = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], Any]
Verbs = Mapping[str, tuple[AddArguments, Run]]


def deferred(module: str, name: str) -> Callable[..., Any]:
    """A stand-in that imports `module` only when called: with no arguments and a non-callable `name` (a verbs
    table) it returns that object, else it calls `name` with the arguments (a demo)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        target = getattr(import_module(module), name)
        return target(*args, **kwargs) if callable(target) else target

    return call


@dataclass(frozen=True)
class Domain:
    """One domain of gendiff.

    name: what the CLI calls it (`gendiff train NAME`); equal to its entry point's name.
    description: one line.
    verbs: called when the CLI needs the domain: returns {verb: (add_arguments, run)} (importing the domain's CLI
        module then, not before).
    demo: the Python demo (train briefly on embedded data, sample, evaluate), or None; a wrapper that imports the
        domain's demo when called.
    extra: the pip extra that installs what the domain needs (`pip install 'gendiff[extra]'`), or None.
    requires: the modules that extra installs (import names); when any cannot be found the domain is unavailable
        and says which extra to install, before any of its code is imported.
    package: the distribution to install for the extra (a plugin's own, for a domain shipped outside gendiff).
    """

    name: str
    description: str
    verbs: Callable[[], Verbs]
    demo: Callable[..., Any] | None = None
    extra: str | None = None
    requires: tuple[str, ...] = ()
    package: str = "gendiff"

    def load_verbs(self) -> dict[str, tuple[AddArguments, Run]]:
        """The verbs table; MissingExtraError (one line naming the extra) when a required module is not installed."""
        absent = missing(self.requires)
        if absent:
            raise MissingExtraError(self.extra, absent, self.package)
        return dict(self.verbs())


@dataclass(frozen=True)
class Unavailable:
    """A domain whose plugin could not be loaded; `reason` is one line."""

    name: str
    reason: str


def one_line(exc: BaseException) -> str:
    """An exception as one line: its first line and its type (or the message alone for a MissingExtraError)."""
    if isinstance(exc, MissingExtraError):
        return str(exc)
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{text} ({type(exc).__name__})"


def _load(ep: EntryPoint) -> Domain | Unavailable:
    try:
        obj = ep.load()
    except Exception as exc:  # a missing or broken dependency (ImportError, OSError from a shared library, ...)
        reason = one_line(exc)
        top = (getattr(exc, "name", None) or "").split(".")[0]
        if isinstance(exc, ModuleNotFoundError) and top and top != ep.module.split(".")[0]:
            # a third-party module the plugin's package imports is absent: built-in domains' extras bear their names
            dist = getattr(ep.dist, "name", None) or "gendiff"
            extra = ep.name if dist == "gendiff" else None
            reason = f"{top} is not installed: {install_hint(extra, dist)}"
        return Unavailable(ep.name, reason)
    if not isinstance(obj, Domain):
        return Unavailable(ep.name, f"entry point {ep.value} is a {type(obj).__name__}, not a gendiff.domain.Domain")
    if obj.name != ep.name:
        return Unavailable(ep.name, f"entry point {ep.name!r} names a domain called {obj.name!r}")
    return obj


def discover(names: Iterable[str] | None = None) -> dict[str, Domain | Unavailable]:
    """{name: Domain, or Unavailable with the reason} of every domain declared in the `gendiff.domains` group (of
    those called `names` only, when given: the others' plugins are not imported), sorted by name; the first of two
    declarations of one name wins."""
    wanted = None if names is None else set(names)
    found: dict[str, Domain | Unavailable] = {}
    for ep in entry_points(group=GROUP):
        if ep.name not in found and (wanted is None or ep.name in wanted):
            found[ep.name] = _load(ep)
    return dict(sorted(found.items()))


def get(name: str) -> Domain:
    """The domain called `name`; GendiffError (one line) when it is unknown or unavailable."""
    found = discover([name])
    if name not in found:
        found = discover()
        raise GendiffError(f"unknown domain {name!r} (known: {', '.join(found) or 'none'})")
    entry = found[name]
    if isinstance(entry, Unavailable):
        raise GendiffError(f"{name} is unavailable: {entry.reason}")
    return entry
