"""The sliding-window batch ("auto"): as many windows per forward pass as half the free GPU memory holds.

On CUDA the memory one window needs is measured with one forward pass of a blank window (the caching
allocator's peak above what was allocated before it); off CUDA the batch is 1, since a CPU gains
nothing from batching windows and memory is not what limits it.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from semiseg.errors import ConfigError

MAX_SW_BATCH = 16  # beyond this a GPU is already busy; more windows only hold more memory
FREE_FRACTION = 0.5  # headroom for the aggregation buffers, cuDNN workspaces and fragmentation

Forward = Callable[[torch.Tensor], torch.Tensor]


def parse_sw_batch_size(value: int | str) -> int | str:
    """'auto' or a positive whole number (from the CLI or a caller)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--sw-batch-size {value!r}: expected 'auto' or a positive whole number") from None
    if number < 1 or str(number) != str(value).strip():
        raise ConfigError(f"--sw-batch-size {value!r}: expected 'auto' or a positive whole number")
    return number


def free_device_memory(device: torch.device) -> int | None:
    """Bytes free on a CUDA device (the driver's view, other processes included); None elsewhere."""
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


def window_memory(forward: Forward, patch: Sequence[int], device: torch.device) -> int:
    """Bytes one window adds at the peak of `forward` on a CUDA device (one pass on a blank window)."""
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    with torch.no_grad():
        forward(torch.zeros((1, 1, *patch), device=device))
    torch.cuda.synchronize(device)
    return max(1, int(torch.cuda.max_memory_allocated(device) - before))


def sw_batch_from_memory(free_bytes: int, per_window_bytes: int, n_windows: int,
                         fraction: float = FREE_FRACTION, cap: int = MAX_SW_BATCH) -> int:
    """floor(fraction × free / per window), between 1 and min(cap, n_windows)."""
    fits = int(fraction * free_bytes) // max(1, int(per_window_bytes))
    return max(1, min(cap, max(1, n_windows), fits))


def choose_sw_batch_size(requested: int | str, forward: Forward, patch: Sequence[int], n_windows: int,
                         device: torch.device,
                         free_memory: Callable[[torch.device], int | None] = free_device_memory,
                         per_window: Callable[[Forward, Sequence[int], torch.device], int] = window_memory) -> int:
    """`requested` when it is a number; for 'auto' the batch that half the free memory holds (1 off CUDA).

    `free_memory` and `per_window` are the measurements; tests pass stand-ins for them.
    """
    requested = parse_sw_batch_size(requested)
    if requested != "auto":
        return int(requested)
    free = free_memory(device)
    if free is None:
        return 1
    return sw_batch_from_memory(free, per_window(forward, patch, device), n_windows)
