"""`--resume` continues the run the checkpoint came from, or refuses: same settings, a readable checkpoint.

The checkpoint records the settings that shape the weights (the method and its options, the grid the
images were resampled to, the patch, the schedule's length, batch sizes, optimiser, augmentation...).
A resume with any of them changed would train, and describe in the model card, something the weights
were not trained with, so it is refused, naming each difference.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from semiseg.errors import ConfigError

# TrainConfig fields a resume must keep (device, events, progress, workdir... may change freely).
RESUME_FIXED = ("method", "method_options", "iterations", "batch_labeled", "batch_unlabeled", "spacing",
                "intensity", "optimizer", "lr", "weight_decay", "schedule", "seed", "val_cases", "fg_ratio",
                "augment")


def run_settings(cfg, patch, preprocessing: dict) -> dict[str, Any]:
    """The settings of this run as stored in its checkpoint (JSON-plain values); `patch` and `preprocessing`
    as resolved from the data (an automatic patch, a recorded spacing)."""
    settings = {key: getattr(cfg, key) for key in RESUME_FIXED}
    # The cases held out as resolved (a default that depends on --checkpoint must not change what trains).
    settings.update(patch=[int(p) for p in patch], preprocessing=preprocessing, val_cases=cfg.validation_cases())
    return json.loads(json.dumps(settings))


def load_checkpoint(path: Path, device) -> dict:
    """torch.load(weights_only=True) of a checkpoint, or a ConfigError saying the file is not one."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # UnpicklingError, EOFError, RuntimeError (zip), ...: all say "not readable"
        raise ConfigError(f"--resume: {path} is not a readable SemiSeg checkpoint ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else 'empty'}); it may be cut short or another "
                          f"file — remove it to start again, or choose another --workdir") from None
    if not isinstance(state, dict) or "iteration" not in state or "method" not in state:
        raise ConfigError(f"--resume: {path} is not a SemiSeg training checkpoint (no iteration and method state)")
    return state


def check_resume_settings(state: dict, settings: dict, path: Path) -> None:
    """ConfigError naming every setting that differs from the checkpoint's run."""
    saved = state.get("settings")
    if saved is None:
        return  # written before settings were recorded: nothing to compare with
    changed = [f"{key} {_show(saved.get(key))} → {_show(value)}" for key, value in settings.items()
               if saved.get(key) != value]
    if changed:
        raise ConfigError(f"--resume: {path} was trained with other settings; this run changes "
                          f"{'; '.join(changed)}. Resume with the checkpoint's settings, or start a new run "
                          f"(another --workdir)")


def _show(value) -> str:
    return json.dumps(value) if not isinstance(value, str) else value
