"""The model card (model.json) and the exported model package(s) at the end of a run."""

from __future__ import annotations

import json
import resource
from pathlib import Path

import torch

from semiseg.errors import ConfigError
from semiseg.labels import label_entry
from semiseg.model import save_model
from semiseg.training.data import TrainingData


class ModelCard:
    """Labels, tasks, patch and preprocessing of the model this run trains."""

    def __init__(self, data: TrainingData, label_info: str | None):
        self.data, self.info = data, _read_label_info(label_info)

    def manifest_for(self, net, class_space: bool = False) -> dict:
        """The model card. With class_space, label values are class indices (what validation compares)."""
        space = self.data.space
        prompted = bool(getattr(net, "prompted", False))
        # Tasks are prompts: a model without them has none (validation still scores each case on its task).
        with_tasks = prompted or class_space
        labels = [label_entry(n, (i + 1) if class_space else v, i, self.info.get(n),
                              space.task_of(n) if with_tasks else None)
                  for i, (n, v) in enumerate(zip(space.names, space.values))]
        tasks = [{"name": t, "index": i, "labels": [n for n in space.names if space.task_of(n) == t]}
                 for i, t in enumerate(space.task_names)] if with_tasks else []
        return {"labels": labels, "tasks": tasks, "prompted": prompted, "channels": list(self.data.dataset.channels),
                "patch_size": [int(p) for p in self.data.patch], "preprocessing": self.data.prep.to_dict(),
                "input_profile": self.data.input_profile}


def export_models(cfg, card: dict, net, best_ckpt: Path, last_dice: float | None,
                  has_validation: bool) -> Path | None:
    """Write `cfg.out` (the best validated weights; the last ones without validation) and, with
    `cfg.export_last`, the last weights beside it as NAME-last.semiseg. Returns that last package, if any."""
    last_model = None
    if cfg.export_last or not has_validation:
        last_card = {**card, "metrics": {"validation": {"dice": last_dice, "iteration": cfg.iterations},
                                         "checkpoint": "last"}}
        target = Path(cfg.out) if not has_validation else _suffixed(Path(cfg.out), "-last")
        save_model(target, net, last_card, overwrite=cfg.overwrite)
        last_model = target
    if has_validation:
        saved = torch.load(best_ckpt, map_location="cpu", weights_only=True)
        net.load_state_dict(saved["inference"])
        card["metrics"] = {"validation": {"dice": saved["dice"], "iteration": saved["iteration"]},
                           "last": {"dice": last_dice, "iteration": cfg.iterations}, "checkpoint": "best"}
        save_model(cfg.out, net, card, overwrite=cfg.overwrite)
    return last_model


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _read_label_info(path: str | None) -> dict:
    if not path:
        return {}
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--label-info {path}: cannot read it as JSON ({exc})") from exc


def _suffixed(path: Path, suffix: str) -> Path:
    name = path.name.removesuffix(".semiseg")
    return path.with_name(f"{name}{suffix}.semiseg")
