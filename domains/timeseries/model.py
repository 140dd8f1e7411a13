"""Names kept importable from their former home: the model code now lives in one module per idea, in the order
the data flows through them:

    data.Codec -> climatology (HourlyClimatology) -> base (ARBase) -> windows (window_starts, WindowDataset) -> inputs
    (make_inputs) -> network (build_denoiser: unet1d or gridnet) -> loss (make_step_fn); run (Run, load_run).
"""
from __future__ import annotations

from .base import ARBase
from .climatology import HourlyClimatology
from .inputs import CALENDAR, anchor_of, cond_channels, make_inputs
from .network import OLD_PREFIX, build_denoiser, compile_network, is_old_state
from .run import STATE, Run, load_run, output_check, read_state, save_state
from .windows import WindowDataset, window_starts

__all__ = ["ARBase", "HourlyClimatology", "CALENDAR", "anchor_of", "cond_channels", "make_inputs", "OLD_PREFIX",
           "build_denoiser", "compile_network", "is_old_state", "STATE", "Run", "load_run", "output_check",
           "read_state", "save_state", "WindowDataset", "window_starts"]
