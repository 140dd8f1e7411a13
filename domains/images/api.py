"""The images domain's verbs, gathered: train a U-Net on an image source, sample from a run, load a run back,
convert an old one. Each idea has its module (training, sampling, labels, run, model, convert); every name users
imported from here before the split still is.

A run is a folder in the core's run format (gendiff.runs): config.json (domain 'images', the U-Net, schedule,
Denoiser parametrization, pixel normalisation, classes and data split: all that rebuilds the model),
weights.safetensors (the EMA weights), card.json (how it was trained, what it measured) and, for resuming only,
checkpoint.pt. Wherever a run is taken, `pretrained:NAME` names one shipped in gendiff/domains/images/pretrained/.
"""
from __future__ import annotations

from .convert import LEGACY_FORMAT, convert_run
from .labels import LABELS_HELP, grid_columns, parse_labels, resolve_labels
from .model import DEFAULT_MODEL, build_denoiser, compile_denoiser, compile_options, model_device, output_check
from .run import CONFIG_NAME, DOMAIN, FORMAT, PIXELS, load_run, run_config
from .sampling import prior_noise, sample, sample_x0
from .training import ImageTrainConfig, make_step_fn, train

__all__ = ["DOMAIN", "CONFIG_NAME", "FORMAT", "LEGACY_FORMAT", "PIXELS", "DEFAULT_MODEL", "LABELS_HELP",
           "ImageTrainConfig", "train", "make_step_fn", "run_config", "build_denoiser", "compile_options",
           "compile_denoiser", "model_device", "load_run", "convert_run", "output_check", "parse_labels",
           "resolve_labels", "grid_columns", "prior_noise", "sample_x0", "sample"]
