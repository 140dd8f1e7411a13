"""The U-Net model of an images run: its default sizes, its config from the data, the (Denoiser, schedule) a run's
config rebuilds, torch.compile options, and a fingerprint of what a model computes."""
from __future__ import annotations

import torch

from gendiff.errors import ConfigError, DataError
from gendiff.forward import Denoiser
from gendiff.schedules import schedule_from_config

from .data import ImageData
from .unet import UNet, UNetConfig

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


def model_config(data: ImageData, model: dict | None, learn_sigma: bool = False) -> UNetConfig:
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


def build_denoiser(meta: dict):
    """Rebuild (Denoiser(UNet), schedule) from a run's config dict: its `model` (UNetConfig), `schedule` and
    `denoiser` (Denoiser.config(): prediction, scale_input, precondition, sigma_data, noise_input, learn_sigma)."""
    schedule = schedule_from_config(meta["schedule"])
    net = UNet(UNetConfig.from_dict(meta["model"]))
    options = meta.get("denoiser") or {"prediction": meta.get("prediction", "eps")}
    return Denoiser(net, schedule, **options), schedule


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
