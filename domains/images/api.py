"""The images domain's verbs: train a U-Net on an image source, sample from a run, and load a run back.

A run is a folder in the core's run format (gendiff.runs): config.json (domain 'images', the U-Net, schedule,
Denoiser parametrization, pixel normalisation, classes and data split: all that rebuilds the model),
weights.safetensors (the EMA weights), card.json (how it was trained, what it measured) and, for resuming only,
checkpoint.pt. Wherever a run is taken, `pretrained:NAME` names one shipped in gendiff/domains/images/pretrained/.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import re
import time
from pathlib import Path

import torch

from gendiff import runs
from gendiff.device import make_generator, resolve_device
from gendiff.errors import ConfigError, DataError

from .data import ImageData, ImageDataset, load_data, to_pixels
from .unet import UNet, UNetConfig

DOMAIN = "images"
CONFIG_NAME = runs.CONFIG
FORMAT = runs.FORMAT
LEGACY_FORMAT = "gendiff-images-v1"  # config.json + checkpoint.pt of gendiff before the run format; see convert_run
# the data normalisation every images run uses (data.to_model / to_pixels): x = pixels / 127.5 - 1, in [-1, 1]
PIXELS = {"dtype": "uint8", "scale": 127.5, "shift": -1.0, "range": [-1.0, 1.0]}
DEFAULT_MODEL = {
    32: dict(ch=64, ch_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(16,)),
    16: dict(ch=64, ch_mult=(1, 2), num_res_blocks=2, attn_resolutions=(8,)),
    8: dict(ch=64, ch_mult=(1, 2), num_res_blocks=2, attn_resolutions=(4,)),
}


def compile_options(compile) -> dict | None:
    """torch.compile keyword arguments for a `compile` option: False/None (none), True (torch's defaults: the
    inductor backend), a backend name ('inductor', 'aot_eager', 'cudagraphs', ...) or a dict of torch.compile
    keyword arguments."""
    if compile is None or compile is False:
        return None
    if compile is True:
        return {}
    if isinstance(compile, str):
        return {"backend": compile}
    if isinstance(compile, dict):
        return dict(compile)
    raise ConfigError(f"compile={compile!r}: expected a bool, a torch.compile backend name or a dict of options")


def compile_denoiser(denoiser, compile, **defaults):
    """Compile `denoiser.net` in place (module.compile), so the module and its state_dict keys (and so checkpoints)
    stay those of the plain U-Net; `defaults` (e.g. dynamic=False) give way to options in `compile`. A net that is
    compiled already is left as it is. Returns the denoiser."""
    options = compile_options(compile)
    if options is not None and getattr(denoiser.net, "_compiled_call_impl", None) is None:
        denoiser.net.compile(**{**defaults, **options})
    return denoiser


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's parameters (where the tensors it is fed are created)."""
    return next(model.parameters()).device


def _autocast(device: torch.device, bf16: bool):
    """bf16 autocast on `device` when asked (CUDA, CPU), else nothing (the meta device has no autocast)."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def _model_config(data: ImageData, model: dict | None, learn_sigma: bool = False) -> UNetConfig:
    """The U-Net config of a run: DEFAULT_MODEL for the image size, updated by `model`; with `learn_sigma` the
    U-Net returns 2C channels (the prediction, then Improved DDPM's variance interpolation v per channel; its
    output conv starts at zero, so v starts at 0, halfway between beta~ and beta in log space)."""
    c, h, w = data.shape
    if h != w:
        raise DataError(f"{data.name}: images must be square, got {h}x{w}")
    base = dict(DEFAULT_MODEL.get(h, DEFAULT_MODEL[32]))
    base.update(model or {})
    base.update(in_channels=c, resolution=h, num_classes=data.num_classes if base.pop("conditional", True) else None)
    if learn_sigma:
        base["out_channels"] = 2 * c
    return UNetConfig.from_dict(base)


def _absolute_spec(spec: str) -> str:
    """Folder paths (and the ROOT of 'name:ROOT') made absolute, so a run evaluates from any working directory."""
    name, sep, root = spec.partition(":")
    if sep and root and name.lower() in ("mnist-full", "fashion-mnist", "cifar10"):
        return f"{name}:{Path(root).resolve()}"
    if spec not in ("mnist", "digits") and Path(spec).is_dir():
        return str(Path(spec).resolve())
    return spec


def build_denoiser(meta: dict):
    """Rebuild (Denoiser(UNet), schedule) from a run's config dict: its `model` (UNetConfig), `schedule` and
    `denoiser` (Denoiser.config(): prediction, scale_input, precondition, sigma_data, noise_input, learn_sigma)."""
    from gendiff.forward import Denoiser
    from gendiff.schedules import schedule_from_config

    schedule = schedule_from_config(meta["schedule"])
    net = UNet(UNetConfig.from_dict(meta["model"]))
    options = meta.get("denoiser") or {"prediction": meta.get("prediction", "eps")}
    return Denoiser(net, schedule, **options), schedule


def _split_text(data: str, n_train: int, test_fraction: float, seed: int) -> str:
    name, sep, root = data.partition(":")
    if sep and root and name.lower() in ("mnist-full", "fashion-mnist", "cifar10"):
        return f"the dataset's own train split ({n_train} images); its test split is held out"
    return (f"{n_train} training images: a stratified split fixed by seed {seed} holding out "
            f"{test_fraction:g} of the data for evaluation")


def run_config(train_data: ImageData, data: str, *, model: dict | None, schedule, prediction: str, p_uncond: float,
               seed: int, test_fraction: float, learn_sigma: bool = False) -> dict:
    """config.json of a run (less the format and domain keys save_run adds): all that rebuilds the model and its
    data (the split the held-out metrics use)."""
    from gendiff.forward import Denoiser
    from gendiff.schedules import schedule_config

    unet = _model_config(train_data, model, learn_sigma).to_dict()
    # validates; gives the full options (learn_sigma among them, so load_run rebuilds a learned-variance model)
    denoiser = Denoiser(torch.nn.Identity(), schedule, prediction=prediction, learn_sigma=learn_sigma)
    return {
        "data": str(data), "image_size": train_data.shape[-1], "channels": train_data.shape[0], "seed": seed,
        "test_fraction": test_fraction, "classes": train_data.classes, "model": unet,
        "schedule": schedule_config(schedule), "denoiser": denoiser.config(), "pixels": dict(PIXELS),
        "conditioning": {"num_classes": unet["num_classes"], "null_class": unet["num_classes"],
                         "p_uncond": p_uncond},
    }


def _saved_config(out: Path) -> dict | None:
    """The config.json of a run folder about to be resumed (None when there is none); old formats refused."""
    return runs.saved_config(out, "retrain it with `gendiff train images` into a new folder")


def make_step_fn(schedule, num_classes: int | None, p_uncond: float, learn_sigma: bool = False,
                 hybrid_lambda: float = 0.001):
    """Training step: the core's eps-loss with label dropout to the null class (Ho & Salimans 2022, Algorithm 1).
    With `learn_sigma` the model (a learn_sigma Denoiser) is trained with the core's hybrid_loss instead:
    L_simple + hybrid_lambda * T * L_vlb, the variance learning from L_vlb only, with the discretized decoder of
    8-bit images at the first step (Nichol & Dhariwal 2021, eq. 16)."""
    from gendiff.losses import diffusion_loss, hybrid_loss
    from gendiff.spaces import EuclideanSpace

    space = EuclideanSpace()

    def step_fn(model, batch, generator):
        x0, labels = batch
        cond = None
        if num_classes is not None:
            drop = torch.rand(labels.shape, generator=generator, device=labels.device) < p_uncond
            cond = torch.where(drop | (labels < 0), torch.full_like(labels, num_classes), labels)
        if learn_sigma:
            return hybrid_loss(model, x0, schedule, space, lam=hybrid_lambda, cond=cond, generator=generator,
                               decoder="discretized").mean()
        return diffusion_loss(model, x0, schedule, space, cond=cond, generator=generator).mean()

    return step_fn


def train(data: str = "mnist", out: str | Path = "runs/images", *, image_size: int | None = None,
          channels: int | None = None, model: dict | None = None, schedule: str | dict = "linear",
          prediction: str = "eps", learn_sigma: bool = False, p_uncond: float = 0.1, max_steps: int = 2000,
          time_budget: float | None = None,
          seed: int = 0, test_fraction: float = 0.2, resume: bool | str = False, compile: bool | str | dict = False,
          bf16: bool = False, device: str | torch.device = "auto", channels_last: bool | None = None,
          progress: bool = True, download: bool = False, command: str | None = None, **train_config) -> dict:
    """Train a class-conditional (when labels exist) U-Net on `data` into run folder `out`; returns a summary dict.

    Writes the run format (gendiff.runs): config.json first (so an interrupted run can be resumed), then at the end
    weights.safetensors (the EMA weights) and card.json (data, split, steps, wall and CPU time, hardware, seed,
    commit, `command` (default: this process's command line); cumulative over resumed sittings).
    `time_budget` (seconds of training, the core Trainer's TrainConfig.time_budget) stops before a step would
    overrun it; `max_steps` still caps it.
    `device`: 'auto' (CUDA, else MPS, else CPU), 'cpu', 'cuda', 'cuda:N' or 'mps'; `bf16`: bf16 autocast of the
    training step on that device (the core Trainer's); `compile`: torch.compile the U-Net in place (True, a backend
    name or a dict of torch.compile options, see compile_options).
    `learn_sigma`: the U-Net also outputs Improved DDPM's variance interpolation v (2C channels) and is trained
    with the hybrid loss (make_step_fn); config.json stores it, so load_run rebuilds that model, the ancestral
    sampler uses the learned variance and bits/dim its bound.
    Extra keyword arguments go to gendiff.training.TrainConfig (lr, batch_size, ema_decay, grad_clip, ...).
    `download` lets torchvision fetch MNIST / Fashion-MNIST / CIFAR-10 files that are not under ROOT yet.
    """
    from gendiff.io import write_json_atomic
    from gendiff.schedules import get_schedule
    from gendiff.training import TrainConfig, Trainer

    if not 0.0 <= p_uncond < 1.0:
        raise ConfigError(f"p_uncond must be in [0, 1), got {p_uncond}")
    # bad device names and compile options fail here, before any data is read; the Trainer resolves the device
    # again, with this process's LOCAL_RANK under torchrun
    dev = resolve_device(device)
    compile_options(compile)
    out = Path(out)
    data = _absolute_spec(str(data))
    train_data = load_data(data, "train", image_size=image_size, channels=channels, seed=seed,
                           test_fraction=test_fraction, download=download)
    sched_cfg = {"name": schedule} if isinstance(schedule, str) else dict(schedule)
    meta = run_config(train_data, data, model=model, schedule=get_schedule(**sched_cfg), prediction=prediction,
                      p_uncond=p_uncond, seed=seed, test_fraction=test_fraction, learn_sigma=learn_sigma)
    defaults = dict(lr=2e-4, batch_size=64, warmup_steps=min(500, max_steps // 10), grad_clip=1.0, seed=seed,
                    ckpt_every=max(1, min(1000, max_steps)), log_every=max(1, min(50, max_steps // 10 or 1)),
                    progress=progress, ema_decay=0.995 if time_budget is not None else
                    min(0.9995, max(0.9, 1.0 - 10.0 / max_steps)))
    defaults.update(train_config)
    config = TrainConfig(**{**defaults, "max_steps": max_steps, "bf16": bool(bf16), "device": str(device),
                            "time_budget": None if time_budget is None else float(time_budget)})
    ckpt = out / runs.CHECKPOINT
    if not resume and ckpt.exists():
        raise ConfigError(f"{ckpt} exists; pass resume=True to continue it or use another out")
    previous = None
    if resume is True or (resume == "auto" and ckpt.exists()):
        saved = _saved_config(out)
        if saved is not None:
            for key in ("data", "model", "schedule", "denoiser", "image_size", "pixels"):
                if saved.get(key) != meta[key]:
                    raise ConfigError(f"{out / runs.CONFIG}: run was trained with {key}={saved.get(key)!r}, "
                                      f"now {meta[key]!r}")
        if (out / runs.CARD).is_file():
            previous = json.loads((out / runs.CARD).read_text())
            previous["metrics"] = {}  # measured on the weights before this sitting: no longer these weights'
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / runs.CONFIG, {"format": runs.FORMAT, "domain": DOMAIN, **meta})

    denoiser, sched = build_denoiser(meta)
    if channels_last if channels_last is not None else dev.type == "cuda":
        denoiser = denoiser.to(memory_format=torch.channels_last)
    compile_denoiser(denoiser, compile)  # in place: state_dict keys (and so checkpoints) stay the plain U-Net's
    step_fn = make_step_fn(sched, train_data.num_classes if meta["model"]["num_classes"] is not None else None,
                           p_uncond, learn_sigma=learn_sigma)
    start = time.perf_counter()
    trainer = Trainer(denoiser, step_fn, ImageDataset(train_data), config, out, collate_fn=ImageDataset.collate_fn,
                      resume=resume)
    summary = trainer.fit()
    parameters = sum(p.numel() for p in denoiser.parameters())
    if trainer.ctx.is_main:
        card = runs.new_card(out.name, DOMAIN, data=str(data),
                             split=_split_text(str(data), len(train_data), test_fraction, seed), summary=summary,
                             seed=seed, device=trainer.device, command=command, previous=previous,
                             parameters=parameters, train_config=config.to_dict())
        runs.save_run(out, DOMAIN, meta, trainer.ema_model, card)
    summary.update(run=str(out), parameters=parameters, wall_seconds=time.perf_counter() - start)
    return summary


def _rebuild(run: "runs.Run"):
    """(Denoiser, schedule) for a run read by runs.read_run; a config that cannot rebuild one is a DataError
    naming config.json."""
    path = run.path / runs.CONFIG
    pixels = run.config.get("pixels", PIXELS)
    if pixels != PIXELS:
        raise DataError(f"{path}: pixel normalisation {pixels} is not this gendiff's {PIXELS}")
    try:
        return build_denoiser(run.config)
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise DataError(f"{path}: cannot rebuild the model from it ({type(exc).__name__}: {exc})") from None


def load_run(run: str | Path, device: str | torch.device = "auto", compile: bool | str | dict = False):
    """(EMA denoiser in eval mode on `device`, run config dict) from a run folder written by `train`, or a shipped
    model `pretrained:NAME`. Weights are read with safetensors (never unpickled) and loaded strictly: a truncated or
    corrupt weights file, or weights that do not fit config.json, give one DataError naming the file, and a folder
    of an older format one saying to retrain it.

    `compile` wraps the U-Net in torch.compile (static shapes) for sampling: on CPU and GPU alike it fuses the
    GroupNorm / SiLU / add chains; the first call of each batch shape pays the compilation (one to two minutes).
    True uses torch's default backend (inductor); a backend name or a dict of options also serve (compile_options)."""
    info = runs.read_run(run, domain=DOMAIN)
    device = resolve_device(device)
    denoiser, _ = _rebuild(info)
    runs.load_weights(info, denoiser)
    denoiser = denoiser.to(device).eval()
    compile_denoiser(denoiser, compile, dynamic=False)  # in place, as in train: the module and its keys stay
    return denoiser, info.config


def convert_run(old: str | Path, out: str | Path, *, name: str | None = None, command: str | None = None,
                commit: str | None = None, note: str | None = None, cpu_seconds: float | None = None,
                hardware: str | None = None) -> Path:
    """Convert a run folder of the old images format (config.json 'gendiff-images-v1' + checkpoint.pt, written by
    gendiff before the run format) into the run format at `out`: config.json rebuilt from the old one (the U-Net
    and schedule are unchanged; the Denoiser then had eps/x0/v prediction with scaled input, today's defaults),
    weights.safetensors from the checkpoint's EMA weights (loaded strictly into the rebuilt model first), and
    card.json from its train_summary.json and log.csv: steps and wall time as logged, CPU time where recorded.
    `command`, `commit`, `hardware`: how, at which commit and on what it was trained, `cpu_seconds` its CPU time
    where measured outside it (the old format recorded none of them; a sitting's hardware defaults to this
    machine's)."""
    import csv

    from gendiff.io import torch_load_safe
    from gendiff.schedules import schedule_from_config

    old, out = Path(old), Path(out)
    path = old / runs.CONFIG
    try:
        legacy = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
    if legacy.get("format") != LEGACY_FORMAT:
        raise DataError(f"{path}: format {legacy.get('format')!r} is not the old images format {LEGACY_FORMAT!r}")
    from gendiff.forward import Denoiser

    schedule = schedule_from_config(legacy["schedule"])
    unet = UNetConfig.from_dict(legacy["model"]).to_dict()
    options = Denoiser(torch.nn.Identity(), schedule, prediction=legacy.get("prediction", "eps")).config()
    meta = {
        "data": legacy["data"], "image_size": legacy["image_size"], "channels": legacy["channels"],
        "seed": legacy["seed"], "test_fraction": legacy["test_fraction"], "classes": legacy["classes"],
        "model": unet, "schedule": legacy["schedule"], "denoiser": options, "pixels": dict(PIXELS),
        "conditioning": {"num_classes": unet["num_classes"], "null_class": unet["num_classes"],
                         "p_uncond": legacy.get("p_uncond", 0.1)},
    }
    denoiser, _ = build_denoiser(meta)
    state = torch_load_safe(old / runs.CHECKPOINT)
    if not isinstance(state, dict) or "ema" not in state or "step" not in state:
        raise DataError(f"{old / runs.CHECKPOINT}: not a gendiff trainer checkpoint (no 'ema' weights or 'step')")
    try:
        denoiser.load_state_dict(state["ema"], strict=True)  # the U-Net code must still fit these weights
    except RuntimeError as exc:
        raise DataError(f"{old / runs.CHECKPOINT}: EMA weights do not fit the model its config.json describes "
                        f"({str(exc).splitlines()[0]})") from None
    steps = int(state["step"])  # the checkpoint's, which the weights are (log.csv may run past it)
    summary = json.loads((old / "train_summary.json").read_text()) if (old / "train_summary.json").is_file() else {}
    if summary.get("step", steps) != steps:
        raise DataError(f"{old}: train_summary.json says step {summary['step']}, checkpoint.pt holds step {steps}")
    rows = [r for r in csv.DictReader((old / "log.csv").open()) if int(r["step"]) <= steps] \
        if (old / "log.csv").is_file() else []
    card_summary = {"step": steps, "seconds": summary.get("wall_seconds", summary.get("seconds")),
                    "cpu_seconds": summary.get("cpu_seconds", cpu_seconds),
                    "stopped": "time_budget" if summary.get("time_budget") else summary.get("stopped")}
    n_train = len(load_data(legacy["data"], "train", image_size=legacy["image_size"], channels=legacy["channels"],
                            seed=legacy["seed"], test_fraction=legacy["test_fraction"]))
    card = runs.new_card(name or out.name, DOMAIN, data=legacy["data"],
                         split=_split_text(legacy["data"], n_train, legacy["test_fraction"], legacy["seed"]),
                         summary=card_summary, seed=legacy["seed"], command=command,
                         parameters=sum(p.numel() for p in denoiser.parameters()), train_config=legacy.get("train", {}),
                         final_loss=float(rows[-1]["loss"]) if rows else None,
                         converted={"from": LEGACY_FORMAT, "source": str(old), "note": note or
                                    "trained before the run format; converted by "
                                    "gendiff.domains.images.convert_run"})
    # the sitting's commit and hardware are those of the training, not of this conversion
    sitting = card["training"]["sittings"][-1]
    sitting["commit"] = card["training"]["commit"] = commit
    if hardware is not None:
        sitting["hardware"] = card["training"]["hardware"] = hardware
    if summary.get("time_budget"):
        sitting["time_budget"] = summary["time_budget"]
    mtime = (old / runs.CHECKPOINT).stat().st_mtime
    sitting["date"] = datetime.datetime.fromtimestamp(mtime, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    runs.save_run(out, DOMAIN, meta, denoiser, card)
    return out


@torch.no_grad()
def output_check(denoiser, meta: dict) -> dict:
    """A fingerprint of what a model computes: its eps prediction on fixed inputs (x_t from seed 0, four times,
    labels cycling with the null class last), as a few numbers. Stored on a shipped model's card, it makes a
    change to the network code that still loads the weights but computes something else fail the tests."""
    n, c, size = 4, meta["channels"], meta["image_size"]
    gen = torch.Generator().manual_seed(0)
    x_t = torch.randn(n, c, size, size, generator=gen)
    t = torch.tensor([0.1, 0.4, 0.7, 0.95])
    k = meta["model"]["num_classes"]
    cond = None if k is None else torch.tensor([0, 3 % k, 7 % k, k])
    dev = model_device(denoiser)
    eps = denoiser(x_t.to(dev), t.to(dev), cond=None if cond is None else cond.to(dev)).float().cpu()
    return {"inputs": "x_t = randn(4, C, H, W) from torch.Generator().manual_seed(0), t = 0.1, 0.4, 0.7, 0.95, "
                      "labels 0, 3, 7, null", "eps_norm": float(eps.norm()), "eps_mean": float(eps.mean()),
            "eps_per_sample_norm": [float(v) for v in eps.flatten(1).norm(dim=1)],
            "eps_first": [float(v) for v in eps.flatten()[:8]]}


LABELS_HELP = ("none (unconditional), balanced (every class in turn), or classes to cycle through: "
               "a class index (3), a range (0-9) or a comma list of both (0,2,4-6)")


def parse_labels(text: str | None):
    """None for None / 'none'; 'balanced'; else a list of class indices from '3', '0-9' or '0,2,4-6'."""
    if text is None or text.strip().lower() == "none":
        return None
    text = text.strip().lower()
    if text == "balanced":
        return "balanced"
    values = []
    for part in (p.strip() for p in text.split(",")):
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        if m and int(m[1]) <= int(m[2]):
            values.extend(range(int(m[1]), int(m[2]) + 1))
        elif part.isdigit():
            values.append(int(part))
        else:
            raise ConfigError(f"labels {text!r}: expected {LABELS_HELP}")
    return values


def resolve_labels(labels, n: int, num_classes: int | None) -> torch.Tensor | None:
    """None (unconditional), 'balanced' (0, 1, ..., K-1, 0, ...), an int, a sequence of n class indices, or a
    text of classes to cycle through ('3', '0-9', '0,2,4-6'; see parse_labels)."""
    if labels is None:
        return None
    if isinstance(labels, str):
        labels = parse_labels(labels)
        if labels is None:
            return None
        if labels != "balanced":
            labels = [labels[i % len(labels)] for i in range(n)]
    if num_classes is None:
        raise ConfigError("labels were given but this run is unconditional (trained without class labels)")
    if isinstance(labels, str):
        out = torch.arange(n) % num_classes
    elif isinstance(labels, int):
        out = torch.full((n,), labels, dtype=torch.long)
    else:
        out = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        if len(out) != n:
            raise ConfigError(f"got {len(out)} labels for n={n} samples")
    if out.numel() and (out.min() < 0 or out.max() >= num_classes):
        raise ConfigError(f"labels must be in [0, {num_classes - 1}], got {out.min().item()}..{out.max().item()}")
    return out.long()


def grid_columns(labels, n: int, num_classes: int | None) -> int | None:
    """Columns of a sample grid: one per class when the labels cycle through classes ('balanced' or a text such
    as '0-9'), so each column shows one class; None (a square grid) otherwise."""
    if isinstance(labels, str):
        labels = parse_labels(labels)
        k = num_classes if labels == "balanced" else (len(labels) if labels else None)
        return k if k and 1 < k <= n else None
    return None


def prior_noise(denoiser, shape, generator: torch.Generator | None = None) -> torch.Tensor:
    """x_T of `shape` (B, C, H, W) from the schedule's prior, created on the denoiser's device."""
    from gendiff.samplers import prior_sample
    from gendiff.spaces import EuclideanSpace

    like = torch.empty(tuple(shape), device=model_device(denoiser))
    return prior_sample(denoiser.schedule, EuclideanSpace(), like, generator=generator)


def sample_x0(denoiser, x_T: torch.Tensor, sampler: str = "ddim", steps: int = 50, *, labels=None,
              guidance: float = 1.0, generator: torch.Generator | None = None, bf16: bool = False, clip: bool = True,
              progress: bool = False, **sampler_options) -> torch.Tensor:
    """The tensor part of `sample`: x_T -> x0 with a core sampler, all on x_T's (the denoiser's) device, so it runs
    on CUDA, MPS, CPU and meta alike. `labels`: None (unconditional) or class indices (B,), e.g. from
    resolve_labels; `guidance` != 1 is classifier-free guidance towards them against the null class. `bf16` runs
    the U-Net under bf16 autocast; `clip` clamps each x0 prediction to [-1, 1] (the core's `clip_x0`)."""
    from gendiff.samplers import sample as core_sample
    from gendiff.spaces import EuclideanSpace

    if clip:
        sampler_options.setdefault("clip_x0", (-1.0, 1.0))
    num_classes = getattr(denoiser.net, "num_classes", None)
    if labels is not None and num_classes is None:
        raise ConfigError("labels were given but this run is unconditional (trained without class labels)")
    if guidance != 1.0 and labels is None:
        raise ConfigError("guidance != 1 needs class labels (pass labels='balanced', an int or a list)")
    dev = x_T.device
    cond = None if labels is None else torch.as_tensor(labels).to(device=dev, dtype=torch.long).reshape(-1)
    if cond is not None and cond.shape[0] != x_T.shape[0]:
        raise ConfigError(f"got {cond.shape[0]} labels for a batch of {x_T.shape[0]}")
    null = None if cond is None else torch.full_like(cond, num_classes)
    with _autocast(dev, bf16):
        return core_sample(sampler, denoiser, x_T, denoiser.schedule, EuclideanSpace(), steps, cond=cond,
                           null_cond=null, guidance=guidance, generator=generator, progress=progress,
                           **sampler_options)


def sample(run, n: int = 64, sampler: str = "ddim", steps: int = 50, guidance: float = 1.0, seed: int = 0,
           labels=None, *, batch_size: int = 250, out: str | Path | None = None,
           device: str | torch.device | None = None, progress: bool = False, bf16: bool = False, clip: bool = True,
           compile: bool | str | dict = False, pixels: bool = True, nrow: int | None = None,
           **sampler_options) -> torch.Tensor:
    """n uint8 images (n, C, H, W) on the CPU from a run (folder, `pretrained:NAME` or a (denoiser, meta) pair);
    PNG grid to `out`, `nrow` images a row (default: one column per class for labels that cycle through classes,
    see grid_columns; else square).

    `device`: where to sample ('auto' for a folder when None; a pair stays on its device when None and is moved
    there otherwise). `compile` compiles the U-Net in place (see load_run), `bf16` autocasts it (sample_x0).
    `clip` clamps each x0 prediction to the pixel range [-1, 1] (as in Ho et al. 2020's sampler; the core's
    `clip_x0` option, used by the samplers that step through x0: ancestral, ddim, dpm_solver_pp).
    `pixels=False` returns the float32 samples x0 in model space instead of uint8 pixels.
    Sampling (sample_x0) runs on the device; only the finished pixels move to the CPU."""
    if n < 1 or steps < 1 or batch_size < 1:
        raise ConfigError(f"n, steps and batch_size must be >= 1 (got {n}, {steps}, {batch_size})")
    if isinstance(run, (str, Path)):
        denoiser, meta = load_run(run, "auto" if device is None else device, compile)
    else:
        denoiser, meta = run
        if device is not None:
            denoiser.to(resolve_device(device))
        compile_denoiser(denoiser, compile, dynamic=False)
    y = resolve_labels(labels, n, meta["model"]["num_classes"])
    if guidance != 1.0 and y is None:
        raise ConfigError("guidance != 1 needs class labels (pass labels='balanced', an int or a list)")
    gen = make_generator(model_device(denoiser), seed)
    shape = (meta["channels"], meta["image_size"], meta["image_size"])
    chunks = []
    for i in range(0, n, batch_size):
        b = min(batch_size, n - i)
        x_T = prior_noise(denoiser, (b, *shape), gen)
        x0 = sample_x0(denoiser, x_T, sampler, steps, labels=None if y is None else y[i:i + b], guidance=guidance,
                       generator=gen, bf16=bf16, clip=clip, progress=progress, **sampler_options).float()
        chunks.append((to_pixels(x0.clamp(-1, 1)) if pixels else x0).cpu())  # the last step: off the device
    result = torch.cat(chunks)
    if out is not None:
        from .grid import save_grid

        save_grid(result if pixels else to_pixels(result.clamp(-1, 1)), out,
                  nrow=nrow or grid_columns(labels, n, meta["model"]["num_classes"]),
                  scale=2 if meta["image_size"] <= 32 else 1)
    return result
