"""`semiseg train --init PARENT.semiseg`: start a run from a model package instead of random weights.

What the package gives the new run, unless the command line says otherwise: its preprocessing (spacing,
intensity), its patch size and its network's width options. Then its weights, which must fit:

- **architecture**: the method's network must be the package's (same name, same arguments but the number of
  classes and the task layout); otherwise a clear error.
- **label map**: structures are matched by name. A structure the package knows but the data does not label is
  an error (fine-tuning would silently forget it). A structure the data adds gets a new output channel,
  initialised from the background channel with its bias lowered by ln 10: at the start it takes a tenth of
  the background's probability, so the parent's predictions are unchanged and the gradient of the new
  labels separates it from the background.

A package holds the inference network only; each method says how its other parts start (`Method.load_parent`
and `spread_parent_weights`): Mean Teacher's teacher is a copy of the student; A&D's D_ψ and D_ξ start as
copies of D_θ and its diffusion stem takes the image stem's weights for the image channel; dual-contrast's two
subnetworks are both in the package; VerSemi's dynamic head is remapped task by task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from semiseg.errors import ConfigError

NEW_CHANNEL_BIAS = -math.log(10.0)
CLASS_OUTPUT = "out_conv."  # parameters whose first axis is the class axis (every plain network's last conv)
SHAPE_ARGS = ("n_classes", "task_classes")  # architecture arguments the label map sets, not the architecture


@dataclass
class Parent:
    """A parent package opened for a run on new data."""

    path: Path
    state: dict[str, torch.Tensor]
    manifest: dict
    classes: list[int | None]  # per class of the new data (background first): the parent's class, None = new
    tasks: list[str]  # the new data's task names, in prompt order

    @property
    def where(self) -> str:
        return str(self.path)

    @property
    def new_structures(self) -> list[int]:
        return [i for i, source in enumerate(self.classes) if source is None]


def open_parent(path: str | Path, names: list[str], tasks: list[str]) -> Parent:
    """Reads the package and matches its structures to the new data's `names` (class order)."""
    state, manifest = read_parent(path)
    mapping = class_map([lab["name"] for lab in manifest["labels"]], names, str(path))
    return Parent(Path(path), state, manifest, mapping, list(tasks))


def read_parent(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The package's weights and manifest, checked (ConfigError naming the package otherwise)."""
    from semiseg.errors import ModelError
    from semiseg.model import _read_weights, read_manifest
    path = Path(path)
    try:
        manifest = read_manifest(path)
        return _read_weights(path), manifest
    except ModelError as exc:
        raise ConfigError(f"--init: {exc}") from exc


def parent_options(manifest: dict, method_defaults: dict, chosen: dict) -> dict:
    """Method options with the package's architecture arguments filled in where the user chose none."""
    args = manifest["architecture"].get("args", {})
    filled = {k: v for k, v in args.items() if k in method_defaults and k not in SHAPE_ARGS}
    return {**filled, **chosen}


def class_map(parent_labels: list[str], names: list[str], where: str) -> list[int | None]:
    """For each class of the new data (background first), the parent's class index, or None for a new one."""
    parent = {n.strip().lower(): i + 1 for i, n in enumerate(parent_labels)}
    ours = {n.strip().lower() for n in names}
    forgotten = [n for n in parent_labels if n.strip().lower() not in ours]
    if forgotten:
        raise ConfigError(f"--init {where}: the model segments {', '.join(forgotten)}, which the data does not label "
                          f"(it labels {', '.join(names) or 'nothing'}); fine-tuning would forget "
                          f"{'them' if len(forgotten) > 1 else 'it'}: add {'them' if len(forgotten) > 1 else 'it'} to "
                          f"the dataset's labels or train from scratch")
    return [0] + [parent.get(n.strip().lower()) for n in names]


def remap_rows(parent: torch.Tensor, mapping: list[int | None], bias: bool) -> torch.Tensor:
    """Rows (first axis) of a class-indexed tensor in the new class order; a new class copies row 0 (background),
    a bias row then lowered by ln 10."""
    rows = []
    for source in mapping:
        row = parent[0 if source is None else source].clone()
        if source is None and bias:
            row += NEW_CHANNEL_BIAS
        rows.append(row)
    return torch.stack(rows)


def check_architecture(target: nn.Module, manifest: dict, where: str) -> None:
    ours = getattr(target, "semiseg_arch", None) or {}
    theirs = manifest["architecture"]
    if ours.get("name") != theirs["name"]:
        trained = manifest.get("method", {}).get("name", "?")
        raise ConfigError(f"--init {where}: the package holds a {theirs['name']!r} network (trained with {trained}); "
                          f"this method trains {ours.get('name')!r}: fine-tune with a method that uses "
                          f"{theirs['name']!r} (e.g. --method {trained})")
    differ = {k: (theirs.get("args", {}).get(k), v) for k, v in ours.get("args", {}).items()
              if k not in SHAPE_ARGS and theirs.get("args", {}).get(k) != v}
    if differ:
        detail = ", ".join(f"{k}: package {a!r}, this run {b!r}" for k, (a, b) in differ.items())
        raise ConfigError(f"--init {where}: the network does not fit the package's ({detail}); leave those options "
                          f"out to take the package's")


def load_remapped(target: nn.Module, state: dict[str, torch.Tensor], mapping: list[int | None], where: str) -> int:
    """Copies `state` into `target`, class-indexed tensors through `mapping`. Returns the tensors copied."""
    own = target.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise ConfigError(f"--init {where}: the weights do not fit the network (missing {missing[:3]}, "
                          f"unexpected {extra[:3]})")
    new = {}
    for key, value in own.items():
        source = state[key]
        if CLASS_OUTPUT in key:
            source = remap_rows(source, mapping, bias=key.endswith("bias"))
        if source.shape != value.shape:
            raise ConfigError(f"--init {where}: {key} has shape {tuple(source.shape)} in the package, "
                              f"{tuple(value.shape)} in this network")
        new[key] = source.to(value.dtype)
    target.load_state_dict(new, strict=True)
    return len(new)


def copy_matching(target: nn.Module, source: nn.Module) -> int:
    """Same-named tensors of `source` into `target`: equal shapes whole, a wider input axis (axis 1) by its
    leading channels; everything else keeps its initialisation. Returns the tensors copied."""
    theirs = source.state_dict()
    n = 0
    with torch.no_grad():
        for key, value in target.state_dict().items():
            src = theirs.get(key)
            if src is None or src.ndim != value.ndim:
                continue
            if src.shape == value.shape:
                value.copy_(src)
            elif src.ndim > 1 and src.shape[0] == value.shape[0] and src.shape[1] < value.shape[1] \
                    and src.shape[2:] == value.shape[2:]:
                value[:, :src.shape[1]].copy_(src)
            else:
                continue
            n += 1
    return n


def parent_card(path: str | Path, manifest: dict, report: dict) -> dict:
    """The model card's `parent` entry."""
    return {"path": str(path), "name": manifest.get("name"), "method": manifest.get("method", {}).get("name"),
            "dataset": manifest.get("data", {}).get("dataset"),
            "labels": [lab["name"] for lab in manifest["labels"]], **report}


def with_parent_settings(cfg, manifest: dict):
    """`cfg` (a TrainConfig) with the package's spacing, intensity, patch and network options wherever the run
    left them unset (None): what the run is given wins."""
    from dataclasses import replace

    from semiseg.methods import method_class
    prep = manifest["preprocessing"]
    return replace(
        cfg,
        spacing=cfg.spacing if cfg.spacing is not None else prep.get("spacing"),
        intensity=cfg.intensity if cfg.intensity is not None else prep.get("intensity", "zscore"),
        patch=cfg.patch if cfg.patch is not None else [int(p) for p in manifest["patch_size"]],
        method_options=parent_options(manifest, method_class(cfg.method).defaults, dict(cfg.method_options)))
