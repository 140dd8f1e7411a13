"""gendiff: a domain-general diffusion toolkit (schedules, noise spaces, losses, samplers, trainer)."""

__version__ = "0.1.0"

from .errors import ConfigError, DataError, GendiffError, TrainingError  # noqa: F401
from .forward import Denoiser, append_dims, posterior, q_sample  # noqa: F401
from .losses import diffusion_loss, min_snr_weight, nll_bits_per_dim, snr_weight, vlb_terms  # noqa: F401
from .samplers import list_samplers, nfe, prior_sample, sample  # noqa: F401
from .schedules import get_schedule, list_schedules  # noqa: F401
from .spaces import EuclideanSpace, GraphEuclideanSpace, MaskedSpace, ProductSpace, ZeroCoMSpace  # noqa: F401
