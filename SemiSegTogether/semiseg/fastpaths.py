"""CUDA fast paths, each switchable: mixed precision, channels_last_3d, cuDNN autotuning, torch.compile.

The same code runs on every device. Mixed precision is used on CUDA only (on a CPU, autocast is slow
for 3D convolutions and changes the numerics), so `FastPaths()` changes nothing on a CPU except what
is asked explicitly (channels_last, compile). The lower-level `autocast(device, dtype)` accepts a CPU
and bf16, which is how the tests check on a CPU that each path keeps the results.

Defaults: bf16 where the GPU supports it (fp16 with a GradScaler otherwise), cuDNN autotuning on (the
patch and window shapes are fixed, so the search is done once), channels_last and torch.compile off
until a measurement on a GPU shows they pay (docs/benchmarks/gpu/README.md says how to measure).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from semiseg.errors import ConfigError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
_DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}


@dataclass(frozen=True)
class FastPaths:
    """What to switch on where it applies (CUDA for precision and cuDNN; any device for the others)."""

    precision: str = "auto"  # auto: bf16 if the GPU supports it, else fp16 | bf16 | fp16 | fp32 (no autocast)
    channels_last: bool = False  # channels_last_3d memory format for the network and its 5D inputs
    cudnn_benchmark: bool = True  # cuDNN times its convolution algorithms once per shape and keeps the fastest
    compile: bool = False  # torch.compile the network in place (state_dict keys unchanged)

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}")

    def amp_dtype(self, device: torch.device) -> torch.dtype | None:
        """The autocast dtype on `device`, or None for full float32 (always None off CUDA)."""
        if device.type != "cuda" or self.precision == "fp32":
            return None
        if self.precision == "fp16":
            return torch.float16
        supported = bf16_supported(device)
        if self.precision == "bf16" and not supported:
            raise ConfigError(f"precision bf16: {torch.cuda.get_device_name(device)} has no bfloat16 support "
                              f"(use fp16 or auto)")
        return torch.bfloat16 if supported else torch.float16

    def autocast(self, device: torch.device):
        return autocast(device, self.amp_dtype(device))

    def grad_scaler(self, device: torch.device) -> torch.amp.GradScaler:
        """A loss scaler for fp16 (its range needs one); disabled (a pass-through) for bf16 and fp32."""
        return torch.amp.GradScaler(device.type, enabled=self.amp_dtype(device) is torch.float16)

    def prepare_network(self, net: nn.Module, device: torch.device, compiled: nn.Module | None = None) -> nn.Module:
        """Sets cuDNN autotuning, converts `net` to channels_last_3d and compiles `compiled` (default: `net`),
        as asked; in place."""
        set_cudnn_benchmark(device, self.cudnn_benchmark)
        if self.channels_last:
            net.to(memory_format=torch.channels_last_3d)
        if self.compile:
            # nn.Module.compile keeps the module object and its state_dict keys (torch.compile(net) would
            # wrap it and prefix every key with "_orig_mod.").
            (compiled if compiled is not None else net).compile()
        return net

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        """A 5D batch (N, C, D, H, W) in the network's memory format."""
        if self.channels_last and x.ndim == 5:
            return x.contiguous(memory_format=torch.channels_last_3d)
        return x

    def describe(self, device: torch.device) -> dict:
        """What is in effect on `device` (for events and the model card)."""
        return {"precision": _DTYPE_NAMES[self.amp_dtype(device)], "channels_last": self.channels_last,
                "cudnn_benchmark": self.cudnn_benchmark and device.type == "cuda", "compile": self.compile}


def autocast(device: torch.device, dtype: torch.dtype | None):
    """torch.autocast on `device` with `dtype`, or a no-op context for None."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def bf16_supported(device: torch.device) -> bool:
    if device.type != "cuda":
        return False
    with torch.cuda.device(device):
        # Native support only (Ampere and later), not the slow emulation on older GPUs.
        return torch.cuda.is_bf16_supported(including_emulation=False)


def set_cudnn_benchmark(device: torch.device, enabled: bool) -> None:
    """cuDNN autotuning is a process-wide switch; it is only touched for CUDA runs."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = bool(enabled)
