"""Peak memory of a stretch of work: GPU memory on CUDA, the process's resident memory on a CPU.

On Linux a process can reset its resident-memory high-water mark (VmHWM) by writing 5 to
/proc/self/clear_refs (proc(5)); so the peak of one prediction can be measured inside a longer run,
such as training. Elsewhere the reset is not available and the peak is the process's since it began,
which `PeakMemory.measures` then says.
"""

from __future__ import annotations

import resource
from pathlib import Path

import torch

CLEAR_REFS = Path("/proc/self/clear_refs")
STATUS = Path("/proc/self/status")


class PeakMemory:
    """`with PeakMemory(device) as peak: ...` (or `start()` ... `stop()`); then `peak.mb` and `peak.measures`
    (what the number is)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.mb: float | None = None
        self.measures = ""

    def start(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._reset = True
        else:
            self._reset = _reset_resident_peak()
        return self

    def stop(self) -> "PeakMemory":
        if self.device.type == "cuda":
            self.mb = torch.cuda.max_memory_allocated(self.device) / 2**20
            self.measures = "peak GPU memory allocated by PyTorch during it"
            return self
        self.mb = _resident_peak_mb()
        self.measures = ("peak resident memory of the process during it (all the process holds, not only the "
                         "prediction)" if self._reset else
                         "peak resident memory of the process since it started (the reset is Linux-only)")
        return self

    def __enter__(self) -> "PeakMemory":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _reset_resident_peak() -> bool:
    try:
        CLEAR_REFS.write_text("5", encoding="utf-8")
        return True
    except OSError:
        return False


def _resident_peak_mb() -> float:
    try:
        for line in STATUS.read_text(encoding="utf-8").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
