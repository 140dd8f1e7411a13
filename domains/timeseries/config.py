"""The options of a time-series training run, in three dataclasses validated once where they are built (as the
core's TrainConfig): what data and windows (DataConfig), what model (ModelConfig), how to run (RunOptions). The
optimiser's options are the core TrainConfig's. `split_options` sorts the keywords users pass to train() into
them, so `train(data, out, context="48h", width=...)` and `train(data, out, config=TrainSetup(...))` are one
path. Each is written into the run's config.json (`options`)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from gendiff.errors import ConfigError
from gendiff.training import TrainConfig

from .climatology import check_hourly_std
from .peerbase import check_base

TASKS = ("forecast", "impute")
ARCHS = ("unet1d", "gridnet", "auto")
AUTO_SERIES = 64  # arch="auto": a shared network above this many features (series x variables)
AUTO_PATCH = 16  # ... trained on windows of this many series drawn at random, mixed in groups of as many
NET_DEFAULTS = {"width": 64, "mults": (1, 2, 2), "blocks_per_level": 1, "heads": 4, "dropout": 0.1,
                "learned_skip": True}
GRID_DEFAULTS = {"width": 32, "mults": (1, 2, 2), "blocks_per_level": 1, "heads": 4, "dropout": 0.0,
                 "neighbours": 16, "mix_levels": 1, "learned_skip": True, "checkpoint": True, "mix_group": 16}
TRAIN_DEFAULTS = {"max_steps": 500, "batch_size": 32, "lr": 5e-4, "warmup_steps": 100, "weight_decay": 0.0,
                  "grad_clip": 1.0, "log_every": 50, "ckpt_every": 500, "seed": 0,
                  "validate_every": 100}  # the held-out windows' loss keeps the best EMA weights (training.py)


def _whole(value, least: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= least


@dataclass(frozen=True)
class DataConfig:
    """The data and its windows: `variables`, `train_period` (START, END), `context` / `horizon` (durations or
    steps; None: from the frequency, frequency.py), `seasons` of the AR base ('auto': the frequency's candidates
    that the training data show; None or 'none': no season; durations or steps), `normalise` ('variable' or 'location'), `hourly_std`, `insolation`, `task`
    ('forecast' or 'impute', with `window`), lazy reading (`chunks`, `workers`, `in_memory`) and the held-out
    spread calibration (`calibration`: the fraction of the training period at its end, `calibration_inits`);
    `covariates`: the future-known columns the network reads (None: the data's own, a long table's extra columns;
    [] for none; covariates.py)."""

    variables: object = None
    train_period: object = None
    context: object = None
    horizon: object = None
    seasons: object = "auto"
    normalise: str = "variable"
    hourly_std: object = "auto"
    insolation: bool = True
    task: str = "forecast"
    window: object = 64
    chunks: object = None
    workers: int = 0
    in_memory: bool | None = None
    calibration: float = 0.15
    calibration_inits: int = 48
    covariates: object = None

    def __post_init__(self):
        if self.task not in TASKS:
            raise ConfigError(f"task={self.task!r}: expected 'forecast' or 'impute'")
        if self.covariates is not None and not isinstance(self.covariates, (str, list, tuple)):
            raise ConfigError(f"covariates={self.covariates!r}: expected a list of column names")
        if not 0.0 <= self.calibration < 0.5:
            raise ConfigError(f"calibration={self.calibration!r} must be in [0, 0.5)")
        if not _whole(self.calibration_inits, 2):
            raise ConfigError(f"calibration_inits={self.calibration_inits!r} must be a whole number >= 2")
        check_hourly_std(self.hourly_std)
        if not isinstance(self.insolation, bool):
            raise ConfigError(f"insolation={self.insolation!r}: expected True or False")
        if not _whole(self.workers, 0):
            raise ConfigError(f"workers={self.workers!r} must be a whole number >= 0 (DataLoader worker processes)")


@dataclass(frozen=True)
class ModelConfig:
    """The model: `arch` ('unet1d': every feature a channel; 'gridnet': one temporal U-Net shared by every series
    or location, sharednet.py, with `static` inputs and training `patch`es; 'auto', the tables' default: unet1d up
    to AUTO_SERIES features, gridnet on patches of AUTO_PATCH series above, resolve_arch), `net` options over the arch's
    defaults, the diffusion `schedule` / `prediction` / `precondition`, the `base` the network departs from
    ('linear': the AR base of order `ar_order`; 'statsforecast' or one of its models: peerbase.py; None), `residual`, `missing_flag`, `context_noise`, and the
    run's default `sampler` / `sample_steps`."""

    arch: str = "unet1d"
    net: dict | None = None
    schedule: str = "cosine"
    prediction: str = "x0"
    precondition: bool = True
    residual: bool = True
    base: str | None = "linear"
    ar_order: int = 2
    missing_flag: bool = True
    context_noise: float = 0.0
    sampler: str | None = None
    sample_steps: int | None = None
    static: object = None
    patch: int | None = None

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ConfigError(f"arch={self.arch!r}: expected 'unet1d', 'gridnet' or 'auto'")
        if not self.context_noise >= 0:
            raise ConfigError(f"context_noise={self.context_noise!r} must be >= 0")
        check_base(self.base)
        if self.arch == "auto":  # checked again once resolved (resolve_arch)
            unknown = sorted(set(self.net or {}) - set(GRID_DEFAULTS) - set(NET_DEFAULTS))
            if unknown:
                raise ConfigError(f"net: unknown option(s) {', '.join(unknown)}")
        elif self.arch == "gridnet":
            unknown = sorted(set(self.net or {}) - set(GRID_DEFAULTS))
            if unknown:
                raise ConfigError(f"net: unknown gridnet option(s) {', '.join(unknown)} "
                                  f"(options: {', '.join(GRID_DEFAULTS)})")
            if not self.missing_flag:
                raise ConfigError("arch='gridnet' always takes the missing-data flags: missing_flag must be True")
            if self.patch is not None and int(self.patch) < 1:
                raise ConfigError(f"patch={self.patch!r} must be a positive number of locations")
        elif self.arch == "unet1d" and (self.static is not None or self.patch is not None):
            raise ConfigError("static= and patch= are options of arch='gridnet'")

    def resolve_arch(self, features: int) -> tuple["ModelConfig", str | None]:
        """arch='auto' made concrete for `features` channels (series x variables), with the reason; others as
        they are. Many series share one temporal U-Net (gridnet) trained on patches of AUTO_PATCH series: its
        size and cost per window do not grow with the table, where unet1d would stack every series into channels."""
        if self.arch != "auto":
            return self, None
        if int(features) <= AUTO_SERIES:
            if self.patch is not None or self.static is not None:
                raise ConfigError(f"patch= and static= go with arch='gridnet' ({features} features: arch 'auto' "
                                  "chose unet1d); pass arch='gridnet'")
            return dataclasses.replace(self, arch="unet1d"), f"unet1d: {features} features <= {AUTO_SERIES}"
        patch = AUTO_PATCH if self.patch is None else self.patch
        return (dataclasses.replace(self, arch="gridnet", patch=patch),
                f"gridnet: {features} features > {AUTO_SERIES}, one temporal U-Net shared by the series, trained "
                f"on patches of {patch}")

    def net_options(self) -> dict:
        return {**(GRID_DEFAULTS if self.arch == "gridnet" else NET_DEFAULTS), **(self.net or {})}


@dataclass(frozen=True)
class RunOptions:
    """How the run is carried out: `resume` from out/checkpoint.pt, `progress` bars, `device`, `bf16` autocast,
    `compile` (True, a torch.compile backend name or callable) and `card` fields overriding the defaults."""

    resume: object = False
    progress: bool = True
    device: object = "auto"
    bf16: bool = False
    compile: object = False
    card: dict | None = None

    def __post_init__(self):
        if not (isinstance(self.compile, (bool, str)) or callable(self.compile)):
            raise ConfigError(f"compile={self.compile!r}: expected True/False, a torch.compile backend name or "
                              "callable")


@dataclass(frozen=True)
class TrainSetup:
    """Everything train() needs: data, model, run options and the optimiser's options (core TrainConfig fields,
    over TRAIN_DEFAULTS)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    run: RunOptions = field(default_factory=RunOptions)
    optim: dict = field(default_factory=dict)

    def __post_init__(self):
        unknown = sorted(set(self.optim) - set(TRAIN_DEFAULTS) - set(TrainConfig.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"train: unknown option(s) {', '.join(unknown)}")
        if "num_workers" in self.optim and int(self.optim["num_workers"]) != int(self.data.workers) \
                and self.data.workers:
            raise ConfigError("pass workers= or num_workers=, not both")
        if self.data.task == "impute" and not self.model.missing_flag:
            raise ConfigError("task='impute' takes the per-entry known flags: missing_flag must be True")

    def resolved(self) -> "TrainSetup":
        """The setup with the task's implications applied: imputation has no AR base, residual or calibration;
        the default sampler is dpm_solver_pp with 20 steps for forecasts (on ERA5 the CRPS of 100 Euler-Maruyama
        steps at a fifth of the cost), euler_maruyama with 100 for imputation."""
        impute = self.data.task == "impute"
        model = dataclasses.replace(
            self.model, sampler=self.model.sampler or ("euler_maruyama" if impute else "dpm_solver_pp"),
            sample_steps=self.model.sample_steps if self.model.sample_steps is not None else (100 if impute else 20),
            **({"base": None, "residual": False} if impute else {}))
        data = dataclasses.replace(self.data, calibration=0.0) if impute else self.data
        return dataclasses.replace(self, data=data, model=model)

    def trainer_config(self) -> TrainConfig:
        """The core TrainConfig: TRAIN_DEFAULTS, an EMA time constant of about a tenth of the run, the options."""
        optim = {"num_workers": int(self.data.workers), **self.optim}
        steps = int(optim.get("max_steps", TRAIN_DEFAULTS["max_steps"]))
        ema = min(0.999, max(0.9, 1.0 - 10.0 / steps))  # no EMA warm-up in the core
        return TrainConfig(**{**TRAIN_DEFAULTS, "ema_decay": ema, "progress": self.run.progress, **optim,
                              "device": str(self.run.device), "bf16": bool(self.run.bf16)})

    def to_dict(self) -> dict:
        """JSON-ready options (static fields and callables by their text) for config.json."""
        def plain(value):
            if isinstance(value, (str, int, float, bool, type(None), list, dict, tuple)):
                return value
            return f"<{type(value).__name__}>" if hasattr(value, "dims") else str(value)  # xarray static fields

        return {part: {f.name: plain(getattr(getattr(self, part), f.name))
                       for f in dataclasses.fields(getattr(self, part))} for part in ("data", "model", "run")}


def split_options(keywords: dict) -> TrainSetup:
    """train()'s keyword arguments sorted into a TrainSetup by field name (the rest: the core TrainConfig's)."""
    parts = {cls: {} for cls in (DataConfig, ModelConfig, RunOptions)}
    optim = {}
    for key, value in keywords.items():
        owner = next((cls for cls in parts if key in cls.__dataclass_fields__), None)
        (parts[owner] if owner else optim)[key] = value
    return TrainSetup(DataConfig(**parts[DataConfig]), ModelConfig(**parts[ModelConfig]),
                      RunOptions(**parts[RunOptions]), optim)
