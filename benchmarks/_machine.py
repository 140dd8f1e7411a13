"""One description of the machine a benchmark ran on (CPU model, cores, threads, torch, GPU), for benchmarks/results/NAME.md."""
from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device | str | None = None) -> str:
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return (f"{cpu_model()}, {os.cpu_count()} visible cores, {torch.get_num_threads()} torch thread(s), "
            f"torch {torch.__version__} (CPU; CUDA available: {torch.cuda.is_available()})")
