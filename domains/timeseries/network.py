"""The network of a run, built from its config: the temporal U-Net (unet1d) inside the core Denoiser."""
from __future__ import annotations

from gendiff.errors import ConfigError
from gendiff.forward import Denoiser
from gendiff.schedules import schedule_from_config

from .sharednet import GridNet
from .unet1d import UNet1D


def build_denoiser(config: dict) -> Denoiser:
    """The network of config['arch'] ('unet1d', the default: features stacked into channels; 'gridnet': one
    temporal U-Net shared by every location, gridnet.py) -> core Denoiser; with `precondition`, EDM's preconditioning (Karras et al. 2022, table 1, for any
    (alpha, sigma)): x0 = c_skip x_t + c_out F(c_in x_t, t), c_skip = a s_d^2 / (a^2 s_d^2 + s^2),
    c_out = s s_d / sqrt(a^2 s_d^2 + s^2), c_in = 1 / sqrt(a^2 s_d^2 + s^2), s_d = `sigma_data` (1: the targets
    are unit-variance). Trained with losses.constant_weight (loss.make_step_fn), the loss is the plain
    ||x0_hat - x0||^2 the weather domain has always used."""
    arch = config.get("arch", "unet1d")  # runs from before the choice are unet1d's
    if arch == "unet1d":
        net = UNet1D(**config["net"])
    elif arch == "gridnet":
        net = GridNet(**config["net"])
    else:
        raise ConfigError(f"arch={arch!r}: expected 'unet1d' or 'gridnet'")
    schedule = schedule_from_config(config["schedule"])
    if config.get("precondition", False):
        return Denoiser(net, schedule, precondition="edm", sigma_data=float(config.get("sigma_data", 1.0)),
                        noise_input="t")
    return Denoiser(net, schedule, prediction=config["prediction"])


def compile_network(denoiser: Denoiser, backend="inductor") -> Denoiser:
    """torch.compile the U-Net in place (nn.Module.compile: the state_dict keys stay as they are); returns it.

    `backend`: True or 'inductor' (the default), another torch.compile backend name ('aot_eager', ...) or a
    backend callable; False or None leaves the network eager."""
    if backend is False or backend is None:
        return denoiser
    if backend is True:
        backend = "inductor"
    if not (isinstance(backend, str) or callable(backend)):
        raise ConfigError(f"compile={backend!r}: expected True/False, a torch.compile backend name or callable")
    denoiser.net.compile(backend=backend)
    return denoiser


OLD_PREFIX = "net.net."  # runs from before the core's EDM option: the U-Net inside weather's own Preconditioned


def is_old_state(state: dict, config: dict) -> bool:
    """Weights written by the weather domain's own Preconditioned wrapper (before the core's EDM option)."""
    return bool(config.get("precondition", False) and state and all(k.startswith(OLD_PREFIX) for k in state))
