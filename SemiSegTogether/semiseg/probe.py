"""A short timing probe: a few real training steps of a method's network on this machine, and one
sliding-window forward pass, on random data of the planned patch and batch sizes.

The steps are the loop's own (`semiseg.training.step.optimiser_step`): the patch streams with their sampling
and augmentation, the method's training step, backward and optimiser, EMA/teacher updates. Global random
states are restored afterwards, so probing before a run never changes it.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from semiseg.fastpaths import FastPaths
from semiseg.infer import sliding_window_probabilities
from semiseg.methods import MethodContext, build_method
from semiseg.sampling import PatchStream, PreparedCase
from semiseg.training.optimisation import Optimisation
from semiseg.training.step import optimiser_step

# A steady step is timed over at least this long (and at most this many steps): one step of a small patch is a
# tenth of a second and a single one is noisy. On la-dev at 10 minutes, a run planned at 0.17 s a step
# averaged 0.12 s and left a third of its budget unused; another, planned at 0.15 s, averaged 0.18 s and
# was stopped at the budget 16 % short of its planned steps.
STEADY_SECONDS = 1.5
MAX_STEADY_STEPS = 20

@dataclass
class StepTiming:
    """Measured on this machine at one (patch, batch, options) setting."""
    first_seconds: float  # the first step (allocations, autotuning)
    step_seconds: float  # a steady step: sampling + augmentation + forward + backward + optimiser + EMA
    window_seconds: float  # one sliding-window forward pass (eval, batch 1) of the inference network
    peak_mb: float | None  # memory the steps needed above what the process held before (None: unmeasured)
    parameters: int  # trainable parameters
    uses_unlabeled: bool  # whether the method, so configured, draws unlabeled batches


def probe(method: str, context: MethodContext, patch: list[int], batch_labeled: int, batch_unlabeled: int,
          device: torch.device, settings, steps: int = 2) -> StepTiming:
    """Time at least `steps` steady steps (after one warm-up step; with 0, the warm-up step alone) of `method`,
    and more while they add up to less than STEADY_SECONDS; `settings` is the run's TrainConfig (optimiser,
    augmentation, foreground ratio, AMP)."""
    states = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        try:
            return _probe(method, context, patch, batch_labeled, batch_unlabeled, device, settings, steps)
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])


def _probe(method_name, context, patch, batch_labeled, batch_unlabeled, device, settings, steps) -> StepTiming:
    fast = settings.fast if settings.amp else replace(settings.fast, precision="fp32")
    baseline = _memory_now(device)
    method = build_method(method_name, context).to(device)
    optimisation = Optimisation(settings, method, device, fast)
    cases = _random_cases(patch, context, 2, seed=1)
    labeled = PatchStream(cases, patch, batch_labeled, seed=0, fg_ratio=settings.fg_ratio,
                          augment=settings.augment, with_labels=True)
    unlabeled = None
    if method.uses_unlabeled and batch_unlabeled > 0:
        unlabeled = PatchStream(_random_cases(patch, context, 2, seed=2), patch, batch_unlabeled, seed=1,
                                fg_ratio=0.0, augment=settings.augment, with_labels=False)
    times = []
    while _wants_another_step(times, steps):
        start = time.perf_counter()
        optimiser_step(method, optimisation, labeled, unlabeled, device, fast, len(times))
        _sync(device)
        times.append(time.perf_counter() - start)
    peak = _peak_since(device, baseline)
    window = _window_seconds(method.inference_network().eval(), patch, device, fast)
    parameters = sum(p.numel() for p in method.trainable().parameters() if p.requires_grad)
    steady = float(np.mean(times[1:])) if len(times) > 1 else times[0]  # steps=0: the first step only
    return StepTiming(first_seconds=times[0], step_seconds=steady, window_seconds=window,
                      peak_mb=peak, parameters=parameters,
                      uses_unlabeled=unlabeled is not None)


def _wants_another_step(times: list[float], steps: int) -> bool:
    """The warm-up and `steps` steady steps first; then more while the steady ones (times[1:]) add up to less
    than STEADY_SECONDS, up to MAX_STEADY_STEPS. An estimate (steps=0) times the warm-up alone."""
    if len(times) <= steps:
        return True
    return steps > 0 and sum(times[1:]) < STEADY_SECONDS and len(times) <= MAX_STEADY_STEPS


def forward_seconds(method: str, context: MethodContext, patch: list[int], device: torch.device, settings) -> float:
    """One sliding-window forward pass of the method's inference network (eval, batch 1) at `patch`: a cheap
    measure to compare thread counts with."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        net = build_method(method, context).to(device).inference_network().eval()
        fast = settings.fast if settings.amp else replace(settings.fast, precision="fp32")
        return _window_seconds(net, patch, device, fast)


def _window_seconds(net, patch, device: torch.device, fast: FastPaths) -> float:
    image = torch.randn(1, 1, *patch, device=device)
    times = []
    for _ in range(2):
        start = time.perf_counter()
        sliding_window_probabilities(net, image, patch, overlap=0.0, fast=fast,
                                     task=0 if getattr(net, "prompted", False) else None)
        _sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def _random_cases(patch, context: MethodContext, n: int, seed: int) -> list[PreparedCase]:
    """Cases a quarter larger than the patch, each with a block of every class, tasks and domains in turn."""
    rng = np.random.default_rng(seed)
    shape = [int(p * 1.25) for p in patch]
    cases = []
    for i in range(n):
        label = np.zeros(shape, np.int64)
        for c in range(1, context.n_classes):
            corner = [int(rng.integers(0, s // 2)) for s in shape]
            label[tuple(slice(a, a + max(2, s // 4)) for a, s in zip(corner, shape))] = c
        image = (rng.standard_normal(shape) + label).astype(np.float32)[None]
        cases.append(PreparedCase(id=f"probe-{seed}-{i}", image=image, label=label, task=i % context.n_tasks,
                                  domain=i % context.n_domains))
    return cases


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _memory_now(device: torch.device) -> float | None:
    """MB in use now; on CPU also resets the process's peak resident size (Linux /proc/self/clear_refs)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20
    try:
        Path("/proc/self/clear_refs").write_text("5", encoding="utf-8")
        return _status_mb("VmRSS")
    except OSError:
        return None


def _peak_since(device: torch.device, baseline: float | None) -> float | None:
    if baseline is None:
        return None
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20 - baseline
    return max(0.0, _status_mb("VmHWM") - baseline)


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1]) / 1024  # kB
    raise OSError(f"/proc/self/status has no {field}")


def memory_now_mb(device: torch.device) -> float:
    """What the process holds now (CPU resident size, or allocated GPU memory), in MB."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    try:
        return _status_mb("VmRSS")
    except OSError:
        return 0.0
