"""Train a sequence denoiser on windows of a series' data (context known, horizon generated) with the core Trainer.

The recipe, one module per step: data (prepare.py: open, codec, climatology, values, windows) -> network config
(the arch's: unet1d, or the series-shared gridnet with its static inputs) -> the run's config.json -> the network and
the AR base -> a window dataset -> core Trainer -> the run folder with its card -> the held-out spread calibration."""
from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from gendiff import runs
from gendiff.device import resolve_device
from gendiff.errors import ConfigError, DataError
from gendiff.io import torch_load_safe, write_json_atomic
from gendiff.losses import constant_weight
from gendiff.schedules import get_schedule, schedule_config
from gendiff.training import Trainer

from . import calibrate
from . import peerbase
from .base import ARBase
from .calibrate_fit import fit_calibration, samples_series
from .config import TrainSetup, split_options
from .data import open_static
from .imputation import GridImputeWindowDataset, ImputeWindowDataset
from .inputs import cond_channels
from .loss import VariableBalancedSpace, make_step_fn
from .network import build_denoiser, compile_network, is_old_state
from .prepare import Prepared, prepare
from .run import save_state
from .sharednet import static_inputs
from .timeaxis import calendar_features, step_config
from .windows import GridWindowDataset, WindowDataset


def network_config(setup: TrainSetup, prep: Prepared) -> tuple[dict, np.ndarray | None, dict | None]:
    """(net config, static inputs, locations layout) of the arch: unet1d stacks every feature into channels;
    gridnet shares one temporal U-Net across series / locations, with their static inputs and positions."""
    model, codec = setup.model, prep.codec
    net_cfg = model.net_options()
    static_values = locations = None
    if model.arch == "gridnet":
        fields = None if model.static is None else open_static(model.static, prep.label)
        static_values, locations = static_inputs(codec.template, codec.variables, fields, prep.label)
        net_cfg.update(channels=locations["channels"], static=int(static_values.shape[1]),
                       pos_dims=locations["pos_dims"])
        if prep.covariates is not None:  # each location its own covariates
            net_cfg["covariates"] = len(prep.covariates.names)
        patch = model.patch
        locations["patch"] = None if patch is None or int(patch) >= locations["locations"] else int(patch)
    else:
        n_cov = 0 if prep.cov_values is None else int(prep.cov_values.shape[1])  # every location's covariates
        net_cfg.update(channels=codec.num_features, cond_channels=cond_channels(codec.num_features,
                                                                                model.missing_flag, n_cov),
                       known_in_cond=True)
    net_cfg["mults"] = list(net_cfg["mults"])
    return net_cfg, static_values, locations


def run_config(setup: TrainSetup, prep: Prepared, net_cfg: dict, locations: dict | None, tcfg) -> dict:
    """config.json of the run: everything load_run needs to rebuild the model and the codec, and the options."""
    model, data, idx = setup.model, setup.data, prep.idx
    return {
        "source": prep.label, "task": data.task, "variables": prep.codec.variables, "train_period": prep.period(idx),
        **step_config(prep.step), "context_steps": prep.context, "horizon_steps": prep.horizon,
        "schedule": schedule_config(get_schedule(model.schedule)), "prediction": model.prediction,
        "precondition": bool(model.precondition), "sigma_data": 1.0,
        "arch": model.arch, "missing_flag": bool(model.missing_flag), "loss_balance": "variable",
        "residual": bool(model.residual), "base": model.base, "ar_order": int(model.ar_order),
        "ar_seasons": list(prep.seasons), "hourly_std": data.hourly_std,
        "insolation": prep.climatology.solar is not None,
        "context_noise": float(model.context_noise), "calibration": float(data.calibration),
        "calibration_inits": int(data.calibration_inits), "network_period": prep.period(prep.idx_net),
        "day_of_year": prep.day_of_year,
        "net": net_cfg, "codec": prep.codec.to_config(), **({"locations": locations} if locations else {}),
        "sampler": model.sampler, "sample_steps": int(model.sample_steps), "train": tcfg.to_dict(),
        "windows": int(len(prep.starts)), "options": setup.to_dict(), "defaults": prep.why,
        **({"covariates": prep.covariates.to_config()} if prep.covariates is not None else {}),
    }


def check_out(out: Path, resume, run_cfg: dict) -> dict | None:
    """Refuse to overwrite a trained run unless resuming, and a resume with another network; the previous card."""
    if (out / "checkpoint.pt").exists() and not resume:
        raise ConfigError(f"{out}: already holds a trained run; pass resume=True (--resume) or choose another --out")
    if resume and (out / "checkpoint.pt").is_file():
        ckpt = torch_load_safe(out / "checkpoint.pt")
        if isinstance(ckpt, dict) and is_old_state(ckpt.get("model", {}), run_cfg):
            raise DataError(f"{out / 'checkpoint.pt'}: written by an older gendiff (network keys net.net.*); "
                            "it cannot be resumed: retrain the run")
    if resume and (out / "config.json").exists():
        old = json.loads((out / "config.json").read_text())
        if old.get("net") != json.loads(json.dumps(run_cfg["net"])) or old.get("variables") != run_cfg["variables"]:
            raise ConfigError(f"{out}: --resume with a different network or variables than the saved run")
    check_resume_target(out, resume, run_cfg, BASE_KEYS)  # before the base is fitted: that can take minutes
    if resume and (out / runs.CARD).is_file():
        return json.loads((out / runs.CARD).read_text())
    return None


BASE_KEYS = ("base", "ar_order", "ar_seasons", "residual", "context_steps", "horizon_steps")
PEER_KEYS = ("systems", "seasons", "combination")  # of peer_base: what the statsforecast base forecasts with


def check_resume_target(out: Path, resume, run_cfg: dict, keys) -> None:
    """A resumed run must generate departures from the same base over the same windows: the saved config's `keys`
    (BASE_KEYS before anything is fitted; 'peer_base', its models and weights, once the statsforecast base is)
    must match run_cfg's; else one ConfigError."""
    path = out / runs.CONFIG
    if not resume or not (out / "checkpoint.pt").is_file() or not path.is_file():
        return
    old, new = json.loads(path.read_text()), json.loads(json.dumps(run_cfg))

    def target(cfg: dict, key: str):
        value = cfg.get(key)
        return {k: v for k, v in (value or {}).items() if k in PEER_KEYS} if key == "peer_base" else value

    differ = [k for k in keys if target(old, k) != target(new, k)]
    if differ:
        raise ConfigError(f"{out}: --resume would train the network on another target than its checkpoint's "
                          f"({', '.join(f'{k}: {old.get(k)!r} -> {new.get(k)!r}' for k in differ)[:300]}); "
                          "train a new run (another --out)")


def window_dataset(setup: TrainSetup, prep: Prepared, ar, static_values, locations, seed: int, offsets=None):
    """(dataset, loss groups): the training windows of the task and arch; the loss weighs each variable equally.
    `offsets` (n, H, C): a statsforecast base's forecasts of the windows (peerbase.fit)."""
    model, calendar, groups = setup.model, calendar_features(prep.times, prep.day_of_year), prep.codec.sizes
    impute = setup.data.task == "impute"
    common = dict(residual=bool(model.residual), base=ar, times=prep.times, valid=prep.codec.valid,
                  covariates=prep.cov_values, offsets=offsets)
    if model.arch == "gridnet":
        n_loc, n_patch = locations["locations"], locations["patch"]
        grid = {"static": static_values, "locations": n_loc, "pos_dims": locations["pos_dims"], "patch": n_patch,
                "seed": seed}
        if impute:
            dataset = GridImputeWindowDataset(prep.values, calendar, prep.starts, prep.horizon, **grid)
        else:
            dataset = GridWindowDataset(prep.values, calendar, prep.starts, prep.context, prep.horizon, **common,
                                        **grid)
        if n_patch is not None:  # each variable's features in a patch: its channels x the patch's locations
            groups = [size // n_loc * n_patch for size in prep.codec.sizes]
    elif impute:
        dataset = ImputeWindowDataset(prep.values, calendar, prep.starts, prep.horizon, seed=seed)
    else:
        dataset = WindowDataset(prep.values, calendar, prep.starts, prep.context, prep.horizon, **common,
                                missing_flag=bool(model.missing_flag))
    return dataset, groups


VALIDATION_WINDOWS = 64  # held-out windows whose loss picks the kept EMA weights (TrainConfig.validate_every)


def validation_dataset(setup: TrainSetup, prep: Prepared, ar, static_values, locations, seed: int, peer, tcfg):
    """The windows whose horizon lies in the held-out calibration period (up to VALIDATION_WINDOWS, evenly spaced;
    the network never trains on them): the Trainer's validation set, whose loss picks the EMA weights the run keeps
    (gendiff.validation). None without a hold-out, for imputation, or with validate_every 0."""
    if not tcfg.validate_every or setup.data.task == "impute" or not len(prep.idx_hold):
        return None
    inits = calibrate.calibration_inits(prep.idx_hold, prep.horizon, int(prep.idx[-1]), VALIDATION_WINDOWS)
    starts = inits - prep.context + 1
    inits, starts = inits[starts >= 0], starts[starts >= 0]
    if len(starts) < 2:
        return None
    offsets = None
    if peer is not None:  # the statsforecast base's forecasts from the held-out inits, fitted on the network's part
        offsets = peer.forecasts(prep.values, prep.times, prep.climatology, inits, prep.horizon, fit_idx=prep.idx_net,
                                 label=f"{prep.label} (validation windows)").astype(np.float32)
    held = dataclasses.replace(prep, starts=starts)
    return window_dataset(setup, held, ar, static_values, locations, seed, offsets)[0]


def split_text(prep: Prepared, inits: np.ndarray) -> str:
    """The card's account of which part of the data trained what."""
    t_fmt = lambda i: str(pd.Timestamp(prep.times[i]))[:16]  # noqa: E731
    idx, idx_net = prep.idx, prep.idx_net
    text = (f"training period {t_fmt(idx[0])} to {t_fmt(idx[-1])} ({len(idx)} steps): codec, hourly climatology "
            f"and AR base on all of it; the network on {t_fmt(idx_net[0])} to {t_fmt(idx_net[-1])} "
            f"({len(prep.starts)} windows of {prep.context} + {prep.horizon} steps)")
    if len(inits) >= 2:
        text += (f"; the ensemble calibration on {len(inits)} inits {t_fmt(inits[0])} to {t_fmt(inits[-1])} "
                 "(held out from the network)")
    return text


def train(data, out, *, config: TrainSetup | None = None, **options) -> dict:
    """Fit a forecast (or imputation) model on `data` (path, Dataset or DataArray); writes a run folder `out`; returns a
    summary. The options are those of config.TrainSetup (DataConfig, ModelConfig, RunOptions and the core TrainConfig):
    pass `config=TrainSetup(...)`, or keywords, which config.split_options sorts into it.

    The network generates the horizon as departures from `base`: "linear" (a per-feature AR(`ar_order`) mean
    forecast fitted on the training period, base.ARBase; with `seasons`, one or more season lengths (durations
    such as '7d' or '52W', or numbers of steps), the AR also takes the lags s and s + 1 of each season: the
    value a week or a year back, which the context must then reach), or None (from the last context step when `residual`,
    else the anomalies themselves). `context_noise`: see make_step_fn. `missing_flag`: a conditioning channel per
    feature marking missing context values (inputs.make_inputs). The loss weighs variables equally, not cells
    (loss.VariableBalancedSpace). With arch="unet1d" the cells that have no value in the training period (the
    sea of land-only forcing) are left out of the channels (data.Codec compact) and come back NaN. `normalise`: "variable" (one mean and standard deviation per variable, the
    gridded default) or "location" (per feature: each series of a table, or each cell, on its own scale; the
    default for tables, see gendiff.domains.weather.train). `hourly_std`: divide the anomalies by their
    hour-of-day standard deviation as well (standardised anomalies, climatology.HourlyClimatology), for variables whose
    variability follows the daily cycle: "auto" (the default) for the features that never vary at some hour of the
    day in the training period (solar power, shortwave radiation: 0 every night), True for every feature, False
    for none. `insolation`: on data with latitude and longitude, the hourly mean and deviation of those daylight
    features follow the sun's elevation through the season instead of staying at the training period's
    (insolation.SolarScale); False keeps them fixed.

    `arch`: "unet1d" (every feature a channel of one temporal U-Net; the shipped runs') or "gridnet" (one temporal
    U-Net shared by every location, with neighbourhood attention across locations: gridnet.py; its parameters do
    not depend on the grid, and the run forecasts any part of its grid). For gridnet, `static`: time-free fields on
    the locations (land-sea mask, orography; an xarray Dataset or a file) fed as inputs beside the position
    encoding; `patch`: train on windows of that many neighbouring locations drawn at random (None: the whole grid).
    `calibration`: the fraction of the training
    period, at its end, kept from the network and used to fit the ensemble spread calibration (calibrate.py);
    0 turns it off; `calibration_inits`: how many inits of that part it forecasts from (evenly spaced, at most one
    per step; 48 by default: with 16, CO2's per-lead shrinkage came out noisy enough to lose to persistence at 1
    week). The codec, climatology and AR base use the whole period.

    `sampler` / `sample_steps`: the run's default sampler (None: dpm_solver_pp with 20 steps for forecasts, which
    on ERA5 scores the CRPS of euler_maruyama with 100 at a fifth of the cost; euler_maruyama with 100 for
    task="impute"); the spread calibration is fitted with it.

    `device`: where the network trains and the calibration forecasts run ('auto', 'cpu', 'cuda', 'cuda:N', 'mps');
    the windows are built on the CPU and moved there by the Trainer. `bf16`: bfloat16 autocast in the training
    steps (TrainConfig.bf16); `compile`: torch.compile the network for training (True: inductor, or a backend
    name; model.compile_network). `time_budget` (seconds, TrainConfig.time_budget): stop before a step would
    overrun it (the CLI's --minutes).

    The run folder is the core format (gendiff.runs): config.json, weights.safetensors (EMA), card.json, plus
    state.safetensors (codec template, climatology, AR base) and calibration.json; checkpoint.pt only for resuming.
    `card`: fields for card.json overriding the defaults (`name`, `data`, `split`, `command`, ...).

    `task`: "forecast" (the default) or "impute": windows of `window` steps (a duration or a number of steps) in
    which random observed entries are hidden and generated from the others (imputation.py; CSDI's training), for
    impute(); no AR base, residual or spread calibration then (context, horizon, base, residual and calibration
    are not used). With arch="gridnet" each series (location) is a sequence of the shared U-Net, so the
    network's size does not depend on the number of series."""
    if config is not None and options:
        raise ConfigError("train: pass config= or keyword options, not both")
    setup = (config if config is not None else split_options(options)).resolved()
    resolve_device(setup.run.device)  # a bad --device fails before any work
    tcfg = setup.trainer_config()
    prep = prepare(data, setup.data, setup.model, tcfg.batch_size)
    setup = dataclasses.replace(setup, model=prep.model)  # arch='auto' resolved by the number of series
    net_cfg, static_values, locations = network_config(setup, prep)
    run_cfg = run_config(setup, prep, net_cfg, locations, tcfg)
    out = Path(out)
    previous_card = check_out(out, setup.run.resume, run_cfg)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("codec.nc", "climatology.pt", "ar.pt"):  # the older format's files
        (out / stale).unlink(missing_ok=True)
    torch.manual_seed(tcfg.seed)
    denoiser = build_denoiser(run_cfg)
    ar = offsets = peer = None
    if setup.model.base == "linear":
        ar = ARBase.fit(prep.values, prep.idx, prep.lags, prep.starts, prep.context, prep.horizon, prep.times,
                        prep.codec.sizes)
    elif peerbase.is_peer(setup.model.base):
        ar, peer, offsets, validation, starts = peerbase.fit(setup.model.base, prep)
        run_cfg["peer_base"] = {**peer.to_config(), "validation_mae": validation, "windows": int(len(starts))}
        prep = dataclasses.replace(prep, starts=starts)
    check_resume_target(out, setup.run.resume, run_cfg, ("peer_base",))
    run_cfg["codec_template"] = save_state(out, prep.codec, prep.climatology, ar, static_values)
    write_json_atomic(out / runs.CONFIG, {"format": runs.FORMAT, "domain": "weather", **run_cfg})
    dataset, groups = window_dataset(setup, prep, ar, static_values, locations, int(tcfg.seed), offsets)
    val_dataset = validation_dataset(setup, prep, ar, static_values, locations, int(tcfg.seed), peer, tcfg)
    weighting = constant_weight() if setup.model.precondition else None
    step_fn = make_step_fn(get_schedule(setup.model.schedule), VariableBalancedSpace(groups),
                           float(setup.model.context_noise), weighting)
    resume = setup.run.resume
    trainer = Trainer(denoiser, step_fn, dataset, tcfg, out, resume="auto" if resume == "auto" else bool(resume),
                      val_dataset=val_dataset)
    if setup.run.compile:
        compile_network(trainer.model, setup.run.compile)  # after the Trainer made its EMA copy: that stays eager
    summary = trainer.fit()
    summary.update(parameters=int(sum(p.numel() for p in denoiser.parameters())), windows=int(len(prep.starts)),
                   run=str(out), in_memory=prep.in_memory, workers=int(tcfg.num_workers))
    return finish(setup, prep, out, run_cfg, trainer, summary, tcfg, previous_card)


def finish(setup: TrainSetup, prep: Prepared, out: Path, run_cfg: dict, trainer, summary: dict, tcfg,
           previous_card: dict | None) -> dict:
    """Save the run (EMA weights, config, card) and fit the spread calibration on the held-out inits."""
    (out / calibrate.FILE).unlink(missing_ok=True)
    n_hold, data, locations = len(prep.idx_hold), setup.data, run_cfg.get("locations")
    n_inits, members = int(data.calibration_inits), 16
    if samples_series(locations):
        n_inits, members = min(n_inits, 8), 8  # many series: 8 inits x 64 series drawn from them x 8 members
    inits = (calibrate.calibration_inits(prep.idx_hold, prep.horizon, int(prep.idx[-1]), n_inits)
             if n_hold else np.empty(0, int))
    card_fields = {"data": prep.label, "split": split_text(prep, inits), **({"defaults": prep.why} if prep.why else {}),
                   **(setup.run.card or {})}
    name = card_fields.pop("name", out.name)
    new = runs.new_card(name, "weather", summary=summary, seed=int(tcfg.seed), device=trainer.device,
                        previous=previous_card, **card_fields)
    new.update(parameters=summary["parameters"], windows=int(len(prep.starts)),
               train_config={k: v for k, v in tcfg.to_dict().items() if k not in ("progress",)})
    if "validation" in summary:  # the held-out loss curve and the step whose EMA weights the run keeps
        new["validation"] = summary["validation"]
    runs.save_run(out, "weather", run_cfg, trainer.ema_model, new)
    if len(inits) >= 2:
        summary["calibration"] = fit_calibration(out, prep.values, prep.times, inits, members,
                                                   device=trainer.device, covariates=prep.cov_values)
    elif n_hold:
        warnings.warn(f"{prep.label}: the last {data.calibration:.0%} of the training period holds {len(inits)} "
                      "init time(s) with a full horizon; the ensemble spread is left uncalibrated")
    return summary
