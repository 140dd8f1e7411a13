"""The options of one molecules training, as one dataclass validated where it is built: the recipe (schedule,
parametrization, weighting, feature scaling, composition, self-conditioning, noise pairing, time sampling, explicit
bonds, categorical types), the
network's options and the core Trainer's. `molecules.train(data, model, out, config=..., **overrides)` builds it;
what rebuilds the model goes into the run's config.json (runconfig.run_config), the Trainer's options onto the card."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from gendiff.errors import ConfigError

from .categorical import TYPE_WEIGHT
from .defaults import DEFAULT_PREDICTION, EMA_DEFAULT, TRAIN_KEYS
from .model import E3NN_DEFAULTS, EGNN_DEFAULTS, MODELS, NORM_VALUES, NUM_TYPES, UNSCALED, parse_weighting
from .properties import HALVES, check_properties
from .runconfig import (auto_weighting, bonds_config, categorical_head, features_config, recipe_config,
                        recipe_switches, types_config)


@dataclass(frozen=True)
class TrainOptions:
    """One training's options (see molecules.train for each); `net` holds the network's options (hidden and layers
    given loose are mapped to the network's names), `trainer` the core TrainConfig fields (max_steps, batch_size,
    lr, ema_decay, max_minutes, ...)."""

    model: str = "egnn"
    schedule: str = "polynomial"
    prediction: str = DEFAULT_PREDICTION
    weighting: object = "auto"
    precondition: str | None = None
    sigma_data: float = 1.0
    feature_scaling: bool = True
    composition: str = "size"
    self_cond: bool = False
    pairing: str | None = None
    time_sampling: str = "uniform"
    bonds: str = "none"
    bond_weight: float = 1.0
    types: str = "gaussian"
    type_weight: float = TYPE_WEIGHT
    seed: int = 0
    limit: int | None = None
    conditioning: list | None = None
    half: str | None = None
    net: dict = field(default_factory=dict)
    trainer: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.model not in MODELS:
            raise ConfigError(f"model {self.model!r}: expected one of {', '.join(MODELS)}")
        recipe_config(self.weighting_config, self.composition, pairing=self.pairing,
                      time_sampling=self.time_sampling)  # composition, pairing, time sampling: one ConfigError each
        if self.bonds_config is not None:  # mode and weight checked by bonds_config; what explicit bonds exclude:
            clash = [name for name, on in (("model " + self.model, self.model != "egnn"),
                                           ("self_cond", self.self_cond), ("pairing", self.pairing is not None)) if on]
            if clash:
                raise ConfigError(f"bonds='explicit' does not take {', '.join(clash)} (it needs the egnn model, "
                                  "without self-conditioning or noise pairing)")
        if self.types_config is not None:  # mode and weight checked by types_config; what categorical types need:
            clash = [name for name, on in (("prediction " + self.prediction, self.prediction != "x0"),
                                           ("precondition " + str(self.precondition), self.precondition is not None),
                                           ("self_cond", self.self_cond), ("pairing", self.pairing is not None)) if on]
            if clash:
                raise ConfigError(f"types='categorical' does not take {', '.join(clash)} (it needs prediction 'x0' "
                                  "without preconditioning, self-conditioning or noise pairing)")
        if float(self.sigma_data) <= 0:
            raise ConfigError(f"sigma_data={self.sigma_data} must be > 0")
        minutes = self.trainer.get("max_minutes")
        if minutes is not None and float(minutes) <= 0:
            raise ConfigError(f"max_minutes={minutes} must be > 0")
        if self.conditioning is not None:  # a list, or 'alpha,gap': stored as the list of names
            object.__setattr__(self, "conditioning", check_properties(self.conditioning))
        if self.half is not None and self.half not in HALVES:
            raise ConfigError(f"half {self.half!r}: expected one of {', '.join(HALVES)} (EDM's halves of QM9 train)")
        unknown = set(self.trainer) - set(TRAIN_KEYS)
        if unknown:
            raise ConfigError(f"unknown molecules training option(s): {', '.join(sorted(unknown))}")

    @classmethod
    def build(cls, config=None, **overrides) -> "TrainOptions":
        """From `config` (a TrainOptions, a dict of its fields or of loose options, or None) with `overrides` (loose
        keyword options as molecules.train takes them) on top; unknown options are one ConfigError."""
        base = dataclasses.asdict(config) if isinstance(config, TrainOptions) else dict(config or {})
        net, trainer = dict(base.pop("net", None) or {}), dict(base.pop("trainer", None) or {})
        loose = {**base, **{k: v for k, v in overrides.items() if k not in ("net", "trainer")}}
        net.update(overrides.get("net") or {})
        trainer.update(overrides.get("trainer") or {})
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: loose.pop(k) for k in list(loose) if k in names}
        model = kw.get("model", "egnn")
        if model not in MODELS:
            raise ConfigError(f"model {model!r}: expected one of {', '.join(MODELS)}")
        if "hidden" in loose:
            net["hidden_nf" if model == "egnn" else "mul_scalars"] = int(loose.pop("hidden"))
        if "layers" in loose:
            net["n_layers"] = int(loose.pop("layers"))
        net_keys = EGNN_DEFAULTS if model == "egnn" else E3NN_DEFAULTS
        for k in list(loose):
            if k in net_keys:
                net[k] = loose.pop(k)
            elif k in TRAIN_KEYS:
                trainer[k] = loose.pop(k)
        if loose:
            raise ConfigError(f"unknown molecules training option(s): {', '.join(sorted(loose))}")
        return cls(**kw, net=net, trainer=trainer)

    @property
    def weighting_config(self) -> dict | None:
        """The loss weighting with 'auto' resolved (model.parse_weighting's config; None: the plain loss)."""
        return parse_weighting(auto_weighting(self.weighting, self.prediction, self.precondition))

    @property
    def bonds_config(self) -> dict | None:
        """runconfig.bonds_config of `bonds` and `bond_weight` (None without explicit bonds)."""
        return bonds_config(self.bonds, self.bond_weight)

    @property
    def types_config(self) -> dict | None:
        """runconfig.types_config of `types` and `type_weight`, without the marginals (None for Gaussian types)."""
        return types_config(self.types, self.type_weight)

    @property
    def ema_decay(self) -> float:
        return float(self.trainer.get("ema_decay", EMA_DEFAULT))

    @property
    def norm_values(self) -> tuple:
        return NORM_VALUES if self.feature_scaling else UNSCALED

    def net_config(self) -> dict:
        """The network's options as built: formula and property context and self-conditioning when switched on."""
        net = dict(self.net)
        context = (NUM_TYPES if self.composition == "formula" else 0) + len(self.conditioning or ())
        if context:  # the formula's channels, then one per conditioning property (conditioning.py)
            net["context_nf"] = context
        if self.self_cond:
            net["self_cond"] = True
        if self.bonds_config is not None:
            net["bond_nf"] = len(self.bonds_config["classes"])
        if self.types_config is not None:
            net["categorical"] = categorical_head(self.norm_values)
        return net

    def recipe(self, formulas=None, priors: dict | None = None) -> dict:
        """config.json's 'recipe' (runconfig.recipe_config); `formulas` None: only the switches; `priors` a
        categorical run's training marginals ({'marginals': ..., 'bond_marginals': ...})."""
        types = None if self.types_config is None else types_config(self.types, self.type_weight, **(priors or {}))
        return recipe_config(self.weighting_config, self.composition, formulas, self.ema_decay,
                             pairing=self.pairing, time_sampling=self.time_sampling, bonds=self.bonds_config,
                             types=types)

    def denoiser_options(self) -> dict | None:
        """Denoiser options beyond the prediction: EDM preconditioning with sigma_data, when asked for."""
        if self.precondition is None:
            return None
        return {"precondition": self.precondition, "sigma_data": float(self.sigma_data)}

    def resume_key(self, schedule_cfg: dict) -> tuple:
        """What must match to resume a run: schedule, prediction, precondition, norm_values, recipe switches."""
        return (schedule_cfg, "x0" if self.precondition else self.prediction, self.precondition,
                features_config(self.feature_scaling)["norm_values"], recipe_switches(self.recipe()))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
