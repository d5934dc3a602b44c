"""What a training run is asked to do (TrainConfig) and what it returns (TrainResult)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from semiseg import distributed
from semiseg.fastpaths import FastPaths
from semiseg.errors import ConfigError, Interrupted

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("poly", "constant", "step")
CHECKPOINTS = ("last", "best")


@dataclass
class TrainConfig:
    data: str
    out: str
    method: str = "mean-teacher"
    method_options: dict[str, Any] = field(default_factory=dict)
    iterations: int = 6000
    batch_labeled: int = 2
    batch_unlabeled: int = 2
    patch: list[int] | None = None  # (d, h, w) in array order; None = from the data, multiples of 16
    spacing: list[float] | None = None  # target (x, y, z) mm; None = native
    intensity: str | None = None  # None = "zscore", or the --init package's
    optimizer: str | None = None  # None = the method's preferred, else SGD
    lr: float | None = None
    weight_decay: float | None = None
    schedule: str | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # False: fp32 whatever fast.precision says (--no-amp)
    fast: FastPaths = field(default_factory=FastPaths)  # CUDA fast paths: precision, channels_last, compile
    val_every: int = 200
    val_cases: int | None = None  # None: none with checkpoint "last", a fifth with "best" (validation_cases)
    val_overlap: float = 0.25
    checkpoint_every: int | None = None  # default: val_every
    fg_ratio: float = 0.33
    augment: str = "standard"
    modality: str | None = None  # for the model card when the dataset does not say (e.g. "MR", "CT")
    workdir: str | None = None
    resume: bool = False
    events: str | None = None
    label_info: str | None = None
    name: str | None = None
    description: str = ""
    overwrite: bool = False
    checkpoint: str = "last"  # what `out` holds: the last weights or the best on the validation cases
    export_other: bool = False  # also write the other checkpoint beside `out` (NAME-best / NAME-last.semiseg)
    progress: bool = True
    init: str | None = None  # a model package to start from (semiseg.finetune): weights, and settings left None
    threads: int | None = None  # CPU threads (torch.set_num_threads); None = PyTorch's default
    event_seconds: float = 1.0  # an iteration event at most this often (and at the first, last, validated ones)
    plan: dict | None = None  # the time plan (semiseg.plan) these settings came from; recorded in model.json
    pool_truth: str | None = None  # labels of the unlabeled cases, for measuring pseudo-labels only (pool_quality)
    # Distributed (torchrun): batch sizes are per rank; the global batch is world_size × these.
    sync_bn: bool = False  # convert BatchNorm to SyncBatchNorm (statistics over the global batch; CUDA only)
    dist_timeout: float = distributed.DEFAULT_TIMEOUT_S  # seconds a collective may wait for another rank

    def workdir_path(self) -> Path:
        return Path(self.workdir) if self.workdir else Path(str(self.out).rstrip("/") + ".work")

    def validation_cases(self) -> int | None:
        """Labeled cases to hold out (None: semiseg.prepare.split_validation's fifth). Shipping the last weights,
        a held-out case selects nothing and only reports a number, at the price of a case not trained on; with
        a handful of labeled cases that price is high (la-dev, 4 labeled: trained on all 4, test Dice 74.6 ±
        3.2 % against 68.1 ± 3.8 with one held out, docs/benchmarks/active-loop-all-labeled). So only
        `checkpoint="best"`, which needs cases to select on, holds out by default."""
        if self.val_cases is not None:
            return self.val_cases
        return None if self.checkpoint == "best" else 0


@dataclass
class TrainResult:
    model: Path  # the exported package (`TrainConfig.out`)
    models: dict[str, Path]  # {"best": ..., "last": ...}: the packages written, `model` among them
    iterations: int
    seconds: float
    best_dice: float | None
    best_iteration: int | None
    last_dice: float | None
    peak_memory_mb: float
    history: list[dict]
    step_seconds: float = 0.0  # time in optimiser steps alone (no validation, no checkpoints)
    pool_history: list[dict] = field(default_factory=list)  # pseudo-label Dice on the pool (--pool-truth)


class Cancelled(Interrupted):
    """Ctrl-C or SIGTERM stopped the run after the current iteration's checkpoint (the CLI exits 130)."""


def validate_config(c: TrainConfig) -> None:
    """Refuse settings no run can use, before anything is read or built."""
    if c.iterations < 1:
        raise ConfigError("--iterations must be at least 1")
    if c.batch_labeled < 1 or c.batch_unlabeled < 0:
        raise ConfigError("--batch-labeled must be ≥ 1 and --batch-unlabeled ≥ 0")
    if c.patch is not None and (len(c.patch) != 3 or any(p < 16 or p % 16 for p in c.patch)):
        raise ConfigError(f"--patch {c.patch}: three sizes, each a multiple of 16 (the V-Net halves it 4×)")
    if c.optimizer is not None and c.optimizer not in OPTIMIZERS:
        raise ConfigError(f"--optimizer {c.optimizer}: expected one of {OPTIMIZERS}")
    if c.schedule is not None and c.schedule not in SCHEDULES:
        raise ConfigError(f"--schedule {c.schedule}: expected one of {SCHEDULES}")
    if c.checkpoint not in CHECKPOINTS:
        raise ConfigError(f"--checkpoint {c.checkpoint}: expected one of {CHECKPOINTS}")
    if c.threads is not None and c.threads < 1:
        raise ConfigError("--threads must be at least 1")
    if c.dist_timeout <= 0:
        raise ConfigError("--dist-timeout must be a positive number of seconds")
