"""The toy domain's plugin objects (entry points `toy` and `toyheavy` of the `gendiff.domains` group)."""

from gendiff.domain import Domain


def _verbs():
    from .cli import VERBS  # imported only when a verb needs it

    return VERBS


DOMAIN = Domain(name="toy", description="2-D Gaussian mixture points (a test plugin)", verbs=_verbs,
                extra=None, package="gendiff-toy")

# a domain whose extra is not installed: the CLI shows it unavailable, naming the extra, without importing its CLI
HEAVY = Domain(name="toyheavy", description="needs a module that is never installed", verbs=_verbs,
               extra="heavy", requires=("gendiff_toy_absent_dependency",), package="gendiff-toy")

NOT_A_DOMAIN = object()
