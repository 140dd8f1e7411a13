"""The molecules domain's names and defaults, in one place for the package surface, the verbs and the CLI."""
from __future__ import annotations

from gendiff import runs

DOMAIN = "molecules"
RUN_CONFIG = runs.CONFIG
CHECKPOINT = runs.CHECKPOINT
DEFAULT_PRETRAINED = "pretrained:qm9"
# The default sampler of `sample`, `measure`, `demo` and the CLI verbs: DDPM ancestral sampling in 100 steps spaced
# uniformly in log-SNR (Lu et al. 2022) rather than in t. On pretrained:qm9 (1,000 molecules, seed 1) it beat uniform
# spacing, DPM-Solver++ in 50 and 100 steps, Heun in 50 and Euler-Maruyama in 100 on molecule stability
# (benchmarks/RESULTS.md, "molecules: the default sampler"). The spacing applies to any sampler given without one.
DEFAULT_SAMPLER, DEFAULT_STEPS, DEFAULT_SPACING = "ancestral", 100, "log_snr"
# The default training recipe: x0 prediction with EQGAT-diff's clamped-SNR weight (weighting 'auto'). Against EDM's
# eps recipe at the same training CPU time it won at 3.5 and at 30 CPU minutes (benchmarks/RESULTS.md, "molecules
# recipes"); `prediction="eps", weighting=None` (`--prediction eps --weighting none`) trains EDM's.
DEFAULT_PREDICTION = "x0"
EMA_DEFAULT = 0.999
# The core Trainer's options (TrainConfig fields) that molecules.train passes through.
TRAIN_KEYS = ("max_steps", "batch_size", "lr", "weight_decay", "warmup_steps", "lr_decay", "lr_final", "grad_clip",
              "ema_decay", "accumulate", "log_every", "ckpt_every", "max_nonfinite", "num_workers", "max_minutes",
              "time_budget", "bf16")
# What the trainer defaults to when a run does not say (EDM's batch and learning rate; gradients clipped at 1).
TRAINER_DEFAULTS = {"lr": 1e-4, "batch_size": 64, "max_steps": 100_000, "ema_decay": EMA_DEFAULT, "grad_clip": 1.0}
