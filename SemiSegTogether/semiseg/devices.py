"""Device choice: CUDA when present, CPU otherwise, same code; `--device` overrides."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

from semiseg.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' | 'mps' → a usable torch.device, or a clear error."""
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: CUDA is not available on this machine (use --device cpu or auto)")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
        return dev
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError("--device mps: Apple MPS is not available on this machine")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"--device {name}: expected auto, cpu, cuda, cuda:N or mps")


def cpu_model() -> str:
    """The CPU's model name ('Intel(R) Xeon(R) Processor'), not just its architecture: timings differ by model."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_name(device: torch.device) -> str:
    """What a measurement ran on, for reports: the GPU's name, or the CPU's model and PyTorch's thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {cpu_model()}, {torch.get_num_threads()} threads"
