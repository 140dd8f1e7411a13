"""What a molecules run's config.json holds: the network, schedule, parametrization, feature layout, atom-count
histogram and the training recipe; written by training, read back by loading and sampling."""
from __future__ import annotations

from gendiff.errors import ConfigError
from gendiff.schedules import schedule_config

from .bondstate import BOND_CLASSES, BOND_NORM
from .categorical import TYPE_MODES, TYPE_WEIGHT
from .model import (COMPOSITIONS, E3NN_DEFAULTS, EGNN_DEFAULTS, NORM_VALUES, UNSCALED, FormulaDistribution,
                    parse_weighting)
from .records import ATOMIC_NUMBERS, ELEMENTS

# What a warm start (init=) must share with the run it starts from.
SAME_FOR_INIT = ("model", "net", "schedule", "denoiser", "features")
PAIRINGS = (None, "ot")
TIME_SAMPLINGS = ("uniform", "low_noise")
BOND_MODES = ("none", "explicit")


def _positive(name: str, value) -> float:
    """A finite number > 0 (a loss weight), else one ConfigError naming `name`."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} {value!r}: expected a number") from None
    if not 0 < value < float("inf"):
        raise ConfigError(f"{name}={value} must be > 0")
    return value


def bonds_config(mode: str = "none", weight: float = 1.0) -> dict | None:
    """config.json's recipe 'bonds' (absent, None, for mode 'none': bonds inferred from distances after sampling):
    'explicit' diffuses a bond type per unordered atom pair with the atoms (bondstate.py): its classes, their
    one-hot scale `norm` and the pairs' loss `weight` relative to the atoms' (bondstate.BondedSpace.reduce)."""
    if mode not in BOND_MODES:
        raise ConfigError(f"bonds {mode!r}: expected one of {', '.join(BOND_MODES)}")
    weight = _positive("bond_weight", weight)
    if mode == "none":
        if weight != 1.0:
            raise ConfigError(f"bond_weight={weight} weights the bonds' loss: give it with bonds='explicit'")
        return None
    return {"mode": "explicit", "classes": list(BOND_CLASSES), "norm": BOND_NORM, "weight": weight}


def check_bonds(bonds) -> dict | None:
    """A stored recipe 'bonds' checked against this gendiff's bond classes and scale (None: no explicit bonds)."""
    if bonds is None:
        return None
    if not isinstance(bonds, dict) or bonds.get("mode") != "explicit":
        raise ConfigError(f"recipe bonds {bonds!r}: expected absent or an 'explicit' bonds config")
    want = bonds_config("explicit", bonds.get("weight", 1.0))
    if bonds != want:
        raise ConfigError(f"recipe bonds {bonds}: this gendiff has {want}")
    return want


def types_config(mode: str = "gaussian", weight: float = TYPE_WEIGHT, marginals=None, bond_marginals=None):
    """config.json's recipe 'types' (absent, None, for 'gaussian': EDM's Gaussian-diffused scaled one-hots):
    'categorical' diffuses the atom types (and an explicit-bond run's bond classes) as categorical variables towards
    the training `marginals` over ELEMENTS (`bond_marginals` over the bond classes), with the types' cross-entropy
    `weight` (categorical.py). The marginals are data, given at training time (None: only the switch)."""
    if mode not in TYPE_MODES:
        raise ConfigError(f"types {mode!r}: expected one of {', '.join(TYPE_MODES)}")
    weight = _positive("type_weight", weight)
    if mode == "gaussian":
        if weight != TYPE_WEIGHT:
            raise ConfigError(f"type_weight={weight} weights the types' cross-entropy: give it with "
                              "types='categorical'")
        return None
    cfg = {"mode": "categorical", "classes": list(ELEMENTS), "weight": weight}
    if marginals is not None:
        cfg["marginals"] = _distribution("marginals", marginals, len(ELEMENTS))
    if bond_marginals is not None:
        cfg["bond_classes"] = list(BOND_CLASSES)
        cfg["bond_marginals"] = _distribution("bond_marginals", bond_marginals, len(BOND_CLASSES))
    return cfg


def _distribution(name: str, values, k: int) -> list:
    try:
        vals = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ConfigError(f"recipe types {name} {values!r}: expected {k} probabilities") from None
    if len(vals) != k or min(vals) < 0 or abs(sum(vals) - 1) > 1e-6:
        raise ConfigError(f"recipe types {name} {vals}: expected {k} probabilities >= 0 summing to 1")
    return vals


def check_types(types, bonds: dict | None = None, priors: bool = True) -> dict | None:
    """A stored recipe 'types' checked (None: Gaussian types); with `priors` the marginals must be there, the bond
    marginals exactly when the run has explicit `bonds`."""
    if types is None:
        return None
    if not isinstance(types, dict) or types.get("mode") != "categorical":
        raise ConfigError(f"recipe types {types!r}: expected absent or a 'categorical' types config")
    want = types_config("categorical", types.get("weight", TYPE_WEIGHT), types.get("marginals"),
                        types.get("bond_marginals"))
    if types != want:
        raise ConfigError(f"recipe types {types}: this gendiff has {want}")
    if priors and (want.get("marginals") is None or ("bond_marginals" in want) != (bonds is not None)):
        raise ConfigError(f"recipe types {types}: needs the training marginals"
                          + (" and bond_marginals (explicit bonds)" if bonds is not None else ""))
    return want


def features_config(feature_scaling: bool = True) -> dict:
    """The node feature layout and scaling of a molecules run (model.encode / decode): EDM's norm_values
    (1, 4, 10) with feature_scaling, (1, 1, 1) without (EDM's ablation)."""
    return {"layout": ["pos:3", f"onehot:{len(ELEMENTS)}", "charge:1"], "elements": list(ELEMENTS),
            "atomic_numbers": list(ATOMIC_NUMBERS), "norm_values": list(NORM_VALUES if feature_scaling else UNSCALED),
            "positions": "zero centre of mass per molecule, angstrom / norm_values[0]"}


def recipe_config(weighting=None, composition: str = "size", formulas=None, ema_decay: float | None = None, *,
                  pairing: str | None = None, time_sampling: str = "uniform", bonds: dict | None = None,
                  types: dict | None = None) -> dict:
    """config.json's 'recipe': the loss weighting (model.parse_weighting), the composition mode ('size': N drawn
    from the atom-count histogram; 'formula': the formula drawn from the training formulas' histogram and fed to
    the network as context) with that histogram, and the EMA decay the weights were averaged with. The training
    couplings (`pairing` 'ot': noise assigned to molecules by optimal transport within a batch; `time_sampling`
    'low_noise': t drawn with density 2 (1 - t)), explicit `bonds` (bonds_config) and categorical `types`
    (types_config) appear only when switched on, so runs without them keep the recipe they always had."""
    if composition not in COMPOSITIONS:
        raise ConfigError(f"composition {composition!r}: expected one of {', '.join(COMPOSITIONS)}")
    if pairing not in PAIRINGS:
        raise ConfigError(f"pairing {pairing!r}: expected none or 'ot'")
    if time_sampling not in TIME_SAMPLINGS:
        raise ConfigError(f"time_sampling {time_sampling!r}: expected one of {', '.join(TIME_SAMPLINGS)}")
    cfg = {"weighting": parse_weighting(weighting), "composition": composition, "ema_decay": ema_decay}
    if pairing is not None:
        cfg["pairing"] = pairing
    if time_sampling != "uniform":
        cfg["time_sampling"] = time_sampling
    bonds, types = check_bonds(bonds), check_types(types, bonds, priors=False)
    if bonds is not None:
        cfg["bonds"] = bonds
    if types is not None:
        cfg["types"] = types
    if composition == "formula" and formulas is not None:  # None: only the switches (resume checks)
        cfg["formulas"] = dict(formulas.histogram)
    return cfg


def auto_weighting(weighting, prediction: str, precondition: str | None = None):
    """`weighting`, with 'auto' resolved: EQGAT-diff's clamped SNR for x0 prediction without preconditioning (the
    default recipe), else None (the parametrization's own loss: EDM's eps MSE, the velocity MSE of flow matching)."""
    if not (isinstance(weighting, str) and weighting.lower() == "auto"):
        return weighting
    return "clamped_snr" if prediction == "x0" and precondition is None else None


def full_net_config(model: str, net_cfg: dict) -> dict:
    """The network's whole config (defaults filled in), so a change of defaults cannot change a saved run."""
    return {**(EGNN_DEFAULTS if model == "egnn" else E3NN_DEFAULTS), **dict(net_cfg)}


def run_config(model: str, net_cfg: dict, sched, denoiser, sizes, data: str, *, feature_scaling: bool = True,
               recipe: dict | None = None) -> dict:
    """config.json of a run (less format and domain, which runs.save_run adds): all that rebuilds the model."""
    return {"model": model, "net": full_net_config(model, net_cfg), "schedule": schedule_config(sched),
            "denoiser": denoiser.config(), "prediction": denoiser.prediction,
            "features": features_config(feature_scaling), "atom_counts": {str(k): v for k, v in sizes.histogram.items()},
            "recipe": recipe if recipe is not None else recipe_config(), "data": data}


TRAINING_ONLY = ("weighting", "time_sampling", "pairing")  # how the loss is sampled and weighted, not the model


def recipe_switches(recipe: dict | None, warm: bool = False) -> dict:
    """The parts of a run's recipe that must match to resume or warm-start it: all but the training formulas and
    categorical types' marginals (data, not switches) and the EMA decay (may change between sittings); a warm start
    (`warm`: new weights' run from an old run's, fresh optimizer) may also change TRAINING_ONLY (fine-tuning with
    another loss weighting or time sampling), never what the network means or how it is sampled."""
    drop = ("formulas", "ema_decay") + (TRAINING_ONLY if warm else ())
    out = {k: v for k, v in (recipe or {}).items() if k not in drop}
    if out.get("types") is not None:
        data = ("marginals", "bond_classes", "bond_marginals")
        out["types"] = {k: v for k, v in out["types"].items() if k not in data}
    return out


def recipe(config: dict) -> dict:
    """A run config's sampling-side recipe: {'norm_values', 'composition', 'formulas' (a FormulaDistribution or
    None), 'weighting', 'bonds' (bonds_config, None without explicit bonds), 'types' (types_config with its
    marginals, None for Gaussian types)}; runs written before the recipe switches get EDM's scaling and the size
    histogram, runs written before explicit bonds no bonds, before categorical types Gaussian ones."""
    rec = dict(config.get("recipe") or {})
    comp = rec.get("composition", "size")
    formulas = FormulaDistribution(rec["formulas"]) if comp == "formula" else None
    norm = tuple(float(v) for v in config.get("features", {}).get("norm_values", NORM_VALUES))
    bonds = check_bonds(rec.get("bonds"))
    bond_nf = int((config.get("net") or {}).get("bond_nf") or 0)
    if bond_nf != (0 if bonds is None else len(bonds["classes"])):
        raise ConfigError(f"net bond_nf={bond_nf} does not match the recipe's bonds {bonds}")
    types = check_types(rec.get("types"), bonds)
    head = (config.get("net") or {}).get("categorical")
    if (head is not None) != (types is not None) or (head is not None and head != categorical_head(norm)):
        raise ConfigError(f"net categorical={head} does not match the recipe's types {types} and norm_values {norm}")
    return {"norm_values": norm, "composition": comp, "formulas": formulas,
            "weighting": parse_weighting(rec.get("weighting")), "bonds": bonds, "types": types}


def categorical_head(norm_values) -> dict:
    """The network config's 'categorical' (model.build_net wraps the net in categorical.CategoricalHead): the
    scales of the one-hot types and charges in the state."""
    return {"type_norm": float(norm_values[1]), "charge_norm": float(norm_values[2])}


def split_text(data, limit, n: int, half: str | None = None) -> str:
    """The card's description of the training split (`half`: EDM's first or second half of QM9's train split)."""
    if isinstance(data, str) and data.lower() == "qm9":
        head = f"the first {n} molecules of " if limit else ""
        if half:
            head += f"EDM's {half} half (numpy seed 42) of "
        return (f"{head}QM9's train split (EDM/Cormorant split, 100,000 of 130,831 molecules; valid and test "
                f"held out), {n} molecules")
    return f"{n} molecules from {data}"
