"""gendiff: a domain-general diffusion toolkit."""
__version__ = "0.1.0"

from .errors import GendiffError  # noqa: F401
