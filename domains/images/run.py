"""An images run folder in the core's run format (gendiff.runs): config.json (domain 'images', the U-Net, schedule,
Denoiser parametrization, pixel normalisation, classes and data split: all that rebuilds the model),
weights.safetensors (the EMA weights), card.json and, for resuming only, checkpoint.pt; what config.json holds,
and loading a run (a folder or `pretrained:NAME`) back."""
from __future__ import annotations

from pathlib import Path

import torch

from gendiff import runs
from gendiff.device import resolve_device
from gendiff.errors import ConfigError, DataError
from gendiff.forward import Denoiser
from gendiff.schedules import schedule_config

from .data import ImageData
from .model import build_denoiser, compile_denoiser, model_config

DOMAIN = "images"
CONFIG_NAME = runs.CONFIG
FORMAT = runs.FORMAT
# the data normalisation every images run uses (data.to_model / to_pixels): x = pixels / 127.5 - 1, in [-1, 1]
PIXELS = {"dtype": "uint8", "scale": 127.5, "shift": -1.0, "range": [-1.0, 1.0]}


def absolute_spec(spec: str) -> str:
    """Folder paths (and the ROOT of 'name:ROOT') made absolute, so a run evaluates from any working directory."""
    name, sep, root = spec.partition(":")
    if sep and root and name.lower() in ("mnist-full", "fashion-mnist", "cifar10"):
        return f"{name}:{Path(root).resolve()}"
    if spec not in ("mnist", "digits") and Path(spec).is_dir():
        return str(Path(spec).resolve())
    return spec


def split_text(data: str, n_train: int, test_fraction: float, seed: int) -> str:
    name, sep, root = data.partition(":")
    if sep and root and name.lower() in ("mnist-full", "fashion-mnist", "cifar10"):
        return f"the dataset's own train split ({n_train} images); its test split is held out"
    return (f"{n_train} training images: a stratified split fixed by seed {seed} holding out "
            f"{test_fraction:g} of the data for evaluation")


def run_config(train_data: ImageData, data: str, *, model: dict | None, schedule, prediction: str, p_uncond: float,
               seed: int, test_fraction: float, learn_sigma: bool = False) -> dict:
    """config.json of a run (less the format and domain keys save_run adds): all that rebuilds the model and its
    data (the split the held-out metrics use)."""
    unet = model_config(train_data, model, learn_sigma).to_dict()
    # validates; gives the full options (learn_sigma among them, so load_run rebuilds a learned-variance model)
    denoiser = Denoiser(torch.nn.Identity(), schedule, prediction=prediction, learn_sigma=learn_sigma)
    return {
        "data": str(data), "image_size": train_data.shape[-1], "channels": train_data.shape[0], "seed": seed,
        "test_fraction": test_fraction, "classes": train_data.classes, "model": unet,
        "schedule": schedule_config(schedule), "denoiser": denoiser.config(), "pixels": dict(PIXELS),
        "conditioning": {"num_classes": unet["num_classes"], "null_class": unet["num_classes"],
                         "p_uncond": p_uncond},
    }


def saved_config(out: Path) -> dict | None:
    """The config.json of a run folder about to be resumed (None when there is none); old formats refused."""
    return runs.saved_config(out, "retrain it with `gendiff train images` into a new folder")


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
