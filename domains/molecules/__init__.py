"""3D molecule generation with E(3)-equivariant diffusion (Hoogeboom et al. 2022, EDM): train, sample, evaluate, demo.

    from gendiff.domains import molecules
    molecules.train(data="qm9", model="egnn", out="runs/qm9", max_steps=1000)
    mols = molecules.sample(run="runs/qm9", n=100)   # ancestral, 100 steps; or run="pretrained:qm9"
    molecules.evaluate(molecules=mols)   # atom/molecule stability, validity, connected validity, uniqueness (, novelty)

A run is a folder in the core run format (gendiff.runs): config.json (domain 'molecules', network and its config,
schedule, Denoiser parametrization, EDM feature scaling and layout, atom-type vocabulary, atom-count histogram),
weights.safetensors (EMA weights), card.json (data, split, steps, wall and CPU time, hardware, seed, commit, command,
measured metrics with the command that measured them) and, for resuming only, checkpoint.pt. Every function and CLI
verb that takes a run also takes `pretrained:NAME` (shipped in gendiff/domains/molecules/pretrained/NAME/).

Every verb that computes takes device='auto' (CUDA, else MPS, else CPU; gendiff.device.resolve_device); training
and sampling take bf16=True (bfloat16 autocast) and compile=True (torch.compile of the network, dynamic shapes).

The package is this thin surface; each idea has its module: options (TrainOptions, the validated training options),
training (the recipe end to end), runconfig (what config.json holds), loading (run folders read back), sampling,
evaluation (metrics, measure, writing), demo, conditioning (property-conditioned runs: config, training
context, sampling's `condition`); below them properties (QM9's properties in EDM's units, EDM's halves), model
(feature scaling, noise space, loss, sampler glue; distributions: the size and formula priors), the networks (egnn,
e3nn_net), selfcond and coupling (training switches), bondstate, bonddata and bondmetrics (explicit bonds diffused
with the atoms: the packed state and its space, the training bonds, the generated bonds' scores), categorical and
catsampling (categorical atom and bond types: the discrete process, network head and loss; the sampler steps), data
(QM9), io (files), records (vocabulary and Data codec), bonds and metrics.
"""
from __future__ import annotations

from .defaults import (CHECKPOINT, DEFAULT_PREDICTION, DEFAULT_PRETRAINED, DEFAULT_SAMPLER, DEFAULT_SPACING,
                       DEFAULT_STEPS, DOMAIN, RUN_CONFIG)
from .demo import demo
from .evaluation import evaluate, measure, write_molecules
from .loading import convert_run, load_run, read_run
from .options import TrainOptions
from .runconfig import auto_weighting, features_config, full_net_config, recipe, recipe_config, run_config
from .sampling import sample
from .training import train

__all__ = ["CHECKPOINT", "DEFAULT_PREDICTION", "DEFAULT_PRETRAINED", "DEFAULT_SAMPLER", "DEFAULT_SPACING",
           "DEFAULT_STEPS", "DOMAIN", "RUN_CONFIG", "TrainOptions", "auto_weighting", "convert_run", "demo",
           "evaluate", "features_config", "full_net_config", "load_run", "measure", "read_run", "recipe",
           "recipe_config", "run_config", "sample", "train", "write_molecules"]
