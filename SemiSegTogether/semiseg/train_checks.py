"""What `train` checks before any work: its settings, where it will write, and the dataset by `check`'s rules.

All of it runs before a single image is preprocessed, so a mistake costs seconds, not a training run,
and nothing is written (or replaced) that the user did not ask for.
"""

from __future__ import annotations

import math
from pathlib import Path

from semiseg.errors import ConfigError
from semiseg.ownership import check_model_target, check_new_file, same_file


def check_train_request(cfg) -> None:
    """ConfigError/DataError/ModelError naming the setting or file, for a TrainConfig that cannot run well."""
    check_train_settings(cfg)
    from semiseg.distributed import launch_rank
    if launch_rank() == 0:  # rank 0 owns the outputs: another rank would find the events file it just opened
        check_train_outputs(cfg)
    from semiseg.datasets import validate_dataset
    validate_dataset(cfg.data)


def _number(value, what: str, low: float, low_ok: bool = True, high: float | None = None) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= low if low_ok else value > low) and (high is None or value <= high)
    if not ok:
        bound = f"{'at least' if low_ok else 'more than'} {low:g}" + (f" and at most {high:g}" if high else "")
        raise ConfigError(f"{what} {value!r}: must be a number {bound}")


def check_train_settings(cfg) -> None:
    _number(cfg.iterations, "--iterations", 1)
    _number(cfg.val_every, "--val-every", 1)
    if cfg.checkpoint_every is not None:
        _number(cfg.checkpoint_every, "checkpoint_every", 1)
    if cfg.lr is not None:
        _number(cfg.lr, "--lr", 0, low_ok=False)
    if cfg.weight_decay is not None:
        _number(cfg.weight_decay, "--weight-decay", 0)
    _number(cfg.fg_ratio, "--fg-ratio", 0, high=1)
    if cfg.val_cases is not None:
        _number(cfg.val_cases, "--val-cases", 0)
    _number(cfg.val_overlap, "val_overlap", 0, high=0.99)
    for key, value in (cfg.method_options or {}).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"--option {key}={value}: must be a finite number")


def check_train_outputs(cfg) -> None:
    """The model package, the events file and the checkpoints folder: only what the engine made may be
    replaced, and only when asked; never the dataset."""
    out, data = Path(cfg.out), Path(cfg.data)
    data_root = data.parent if data.is_file() else data
    if same_file(out, data_root) or Path(out).resolve() in Path(data_root).resolve().parents:
        raise ConfigError(f"--out {out}: is the dataset (or holds it); choose another folder")
    check_model_target(out, cfg.overwrite, error=ConfigError)
    if cfg.events and str(cfg.events) != "-" and not cfg.resume:  # a resume appends to its events
        check_new_file(cfg.events, cfg.overwrite, "--events")
    workdir = cfg.workdir_path()
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError(f"--workdir {workdir}: is a file, not a folder")
    if not cfg.resume:
        if (workdir / "last.pt").exists():
            raise ConfigError(f"{workdir}: holds a checkpoint from an earlier run; pass --resume to continue it or "
                              f"choose another --workdir")
        if (workdir / "best.pt").exists() and not cfg.overwrite:
            raise ConfigError(f"{workdir / 'best.pt'}: already exists; choose another --workdir (or pass "
                              f"--overwrite to replace it)")
