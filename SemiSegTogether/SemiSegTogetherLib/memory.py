"""Memory check before a run: estimate what inference needs and offer a lighter setting.

The estimate starts from the model card's measured peak (inference.peak_memory_mb,
measured at sliding-window batch 1) when there is one, otherwise from the
architecture and patch size; it adds what the whole volume costs (the input and
one probability map per class). Free memory is read without importing torch:
`nvidia-smi` for the GPU, psutil or /proc/meminfo for RAM.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Optional, Sequence

CUDA_CONTEXT_MB = 600.0       # CUDA context + cuDNN workspace, measured typical
ACTIVATION_FACTOR = 24.0      # float32 activations kept per voxel per base filter (encoder + decoder + grads off)
SAFETY = 0.85                 # use at most this share of what is free


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


def estimateInferenceMemoryMb(manifest: dict, volumeShape: Sequence[int], swBatchSize: int = 1,
                              device: str = "cuda") -> float:
    """Estimated peak memory in MB on `device` ('cuda' or 'cpu') for one volume of `volumeShape` voxels."""
    arch = (manifest.get("architecture") or {}).get("args") or {}
    nClasses = int(arch.get("n_classes") or (len(manifest.get("labels") or []) + 1))
    nFilters = int(arch.get("n_filters") or 16)
    patch = manifest.get("patch_size") or [96, 96, 96]
    patchMb = _prod(patch) * nFilters * ACTIVATION_FACTOR * 4 / 2**20
    volumeMb = _prod(volumeShape) * 4 * (1 + nClasses) / 2**20  # input + accumulated probabilities
    measured = (manifest.get("inference") or {}).get("peak_memory_mb")
    if isinstance(measured, (int, float)) and measured > 0:
        base = float(measured) + patchMb * (max(1, swBatchSize) - 1)
    else:
        base = patchMb * max(1, swBatchSize) + 50.0  # + weights
    estimate = base + volumeMb
    if device.startswith("cuda"):
        estimate += CUDA_CONTEXT_MB
    return estimate


@dataclass
class MemoryCheck:
    """Result of the check: whether the requested setting fits, and a lighter one to offer if not."""
    fits: bool
    device: str
    swBatchSize: int
    estimateMb: float
    availableMb: Optional[float]
    message: str = ""
    suggestions: list = field(default_factory=list)  # [(device, swBatchSize, estimateMb)] lighter first-choice first

    @property
    def suggestion(self):
        return self.suggestions[0] if self.suggestions else None


def checkInferenceMemory(manifest: dict, volumeShape: Sequence[int], device: str, swBatchSize: int,
                         gpuFreeMb: Optional[float], ramAvailableMb: Optional[float]) -> MemoryCheck:
    """Does the run fit? `device` is 'cuda' or 'cpu' (resolve 'auto' first). Unknown free memory counts as fitting."""
    device = "cuda" if device.startswith("cuda") else "cpu"
    available = gpuFreeMb if device == "cuda" else ramAvailableMb
    estimate = estimateInferenceMemoryMb(manifest, volumeShape, swBatchSize, device)
    if available is None or estimate <= available * SAFETY:
        return MemoryCheck(True, device, swBatchSize, estimate, available,
                           "" if available is not None else "free memory unknown; not checked")
    suggestions = []
    if device == "cuda" and swBatchSize > 1:
        light = estimateInferenceMemoryMb(manifest, volumeShape, 1, "cuda")
        if light <= available * SAFETY:
            suggestions.append(("cuda", 1, light))
    cpuEstimate = estimateInferenceMemoryMb(manifest, volumeShape, 1, "cpu")
    if device == "cuda" and (ramAvailableMb is None or cpuEstimate <= ramAvailableMb * SAFETY):
        suggestions.append(("cpu", 1, cpuEstimate))
    if device == "cpu" and swBatchSize > 1 and cpuEstimate <= available * SAFETY:
        suggestions.append(("cpu", 1, cpuEstimate))
    where = "GPU" if device == "cuda" else "RAM"
    message = (f"This run needs about {estimate / 1024:.1f} GB of {where} memory, "
               f"but only {available / 1024:.1f} GB is free.")
    if suggestions:
        dev, batch, est = suggestions[0]
        message += (f" A lighter setting ({'CPU' if dev == 'cpu' else 'GPU'}, sliding-window batch {batch}) "
                    f"needs about {est / 1024:.1f} GB.")
    else:
        message += " Close other applications, or crop or resample the volume first."
    return MemoryCheck(False, device, swBatchSize, estimate, available, message, suggestions)


def queryGpuMemoryMb(timeout: float = 5.0) -> Optional[tuple]:
    """(total, free) MB of the first GPU from nvidia-smi, or None when there is no usable NVIDIA GPU."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", "") == "-1":
        return None
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=memory.total,memory.free", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=timeout, check=True).stdout
        return parseNvidiaSmi(out)
    except (OSError, subprocess.SubprocessError):
        return None


def parseNvidiaSmi(output: str) -> Optional[tuple]:
    for line in output.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 2:
            try:
                return float(parts[0]), float(parts[1])
            except ValueError:
                continue
    return None


def queryRamAvailableMb() -> Optional[float]:
    """Available system memory in MB (psutil when present, else /proc/meminfo), or None."""
    try:
        import psutil  # noqa: PLC0415
        return psutil.virtual_memory().available / 2**20
    except ImportError:
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) / 1024
    except OSError:
        pass
    return None
