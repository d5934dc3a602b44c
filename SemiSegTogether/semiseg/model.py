"""The model package `NAME.semiseg/`: `weights.safetensors` + `model.json`.

Nothing is unpickled: weights are read with safetensors (or, for a `weights.pt`, with
`torch.load(weights_only=True)`), and the network is rebuilt from the manifest's
architecture name and arguments through the network registry.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from semiseg import __version__
from semiseg.atomic import atomic_dir
from semiseg.errors import ModelError, SemiSegError
from semiseg.nets import build_network
from semiseg.ownership import check_model_target

FORMAT = "semiseg-model"
FORMAT_VERSION = 1
MANIFEST = "model.json"
WEIGHTS = "weights.safetensors"
LEGACY_WEIGHTS = "weights.pt"
REQUIRED = ("architecture", "labels", "preprocessing", "patch_size")


def save_model(path: str | Path, net: nn.Module, manifest: dict[str, Any], overwrite: bool = False) -> Path:
    """Writes the package atomically; refuses to replace an existing one unless `overwrite`."""
    from safetensors.torch import save_file

    path = Path(path)
    check_model_target(path, overwrite)
    arch = getattr(net, "semiseg_arch", None)
    if arch is None:
        raise ModelError("the network was not built through semiseg.nets.build_network, so it cannot be saved")
    full = {"format": FORMAT, "format_version": FORMAT_VERSION, "engine_version": __version__,
            **manifest, "architecture": arch}
    _validate(full, path)
    # Clone to contiguous CPU tensors: safetensors refuses shared or strided storage.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in net.state_dict().items()}
    with atomic_dir(path) as tmp:
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        (tmp / MANIFEST).write_text(json.dumps(full, indent=2) + "\n", encoding="utf-8")
    return path


def read_manifest(path: str | Path) -> dict[str, Any]:
    """model.json of a package, checked; ModelError naming the file and the problem otherwise."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such model package")
    if not path.is_dir():
        raise ModelError(f"{path}: a model package is a folder NAME.semiseg/ holding model.json and weights")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise ModelError(f"{manifest_path}: missing; {path} is not a SemiSeg model package")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{manifest_path}: not valid JSON ({exc})") from exc
    _validate(manifest, manifest_path)
    return manifest


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuilds the network from the manifest and loads its weights without unpickling."""
    path = Path(path)
    manifest = read_manifest(path)
    arch = manifest["architecture"]
    try:
        net = build_network(arch["name"], **arch.get("args", {}))
    except ModelError as exc:  # unknown name or arguments: say which package asked for it
        raise ModelError(f"{path / MANIFEST}: {exc}") from exc
    _check_against_network(manifest, net, path / MANIFEST)
    state = _read_weights(path)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{path}: the weights do not fit architecture {arch['name']!r}: {exc}") from exc
    return net.to(device).eval(), manifest


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    st, pt = path / WEIGHTS, path / LEGACY_WEIGHTS
    if st.is_file():
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return load_file(str(st))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelError(f"{st}: corrupt or not a safetensors file ({exc})") from exc
    if pt.is_file():
        try:
            state = torch.load(pt, map_location="cpu", weights_only=True)
        except Exception as exc:  # UnpicklingError for foreign objects, others for garbage
            raise ModelError(f"{pt}: refused: not a plain tensor state dict ({type(exc).__name__}: {exc})") from exc
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ModelError(f"{pt}: refused: expected a dict of tensors")
        return state
    raise ModelError(f"{path}: no {WEIGHTS} (or {LEGACY_WEIGHTS}) in the package")


def _check_against_network(manifest: dict, net: nn.Module, where: Path) -> None:
    """The card must describe the network it comes with: as many labels as output classes, and prompted
    only if the network takes a task prompt."""
    prompted, takes_prompt = bool(manifest.get("prompted", False)), bool(getattr(net, "prompted", False))
    if prompted != takes_prompt:
        raise ModelError(f"{where}: 'prompted' is {str(prompted).lower()} but architecture "
                         f"{manifest['architecture']['name']!r} {'takes' if takes_prompt else 'takes no'} task prompt")
    n_classes = manifest["architecture"].get("args", {}).get("n_classes")
    if not prompted and n_classes is not None and n_classes != len(manifest["labels"]) + 1:
        raise ModelError(f"{where}: lists {len(manifest['labels'])} label(s) but the network has {n_classes} output "
                         f"classes (background + {n_classes - 1}); the card does not match the weights")


def _validate(manifest: Any, where: Path) -> None:
    if not isinstance(manifest, dict):
        raise ModelError(f"{where}: model.json must hold a JSON object")
    if manifest.get("format") != FORMAT:
        raise ModelError(f"{where}: not a SemiSeg model (format is {manifest.get('format')!r}, expected {FORMAT!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelError(f"{where}: model format version {version!r} is newer than this engine reads "
                         f"({FORMAT_VERSION}); update SemiSeg")
    missing = [k for k in REQUIRED if k not in manifest]
    if missing:
        raise ModelError(f"{where}: model.json lacks {', '.join(missing)}")
    arch = manifest["architecture"]
    if not (isinstance(arch, dict) and isinstance(arch.get("name"), str) and isinstance(arch.get("args", {}), dict)):
        raise ModelError(f"{where}: 'architecture' must be {{'name': ..., 'args': {{...}}}}")
    labels = manifest["labels"]
    if not isinstance(labels, list) or not labels:
        raise ModelError(f"{where}: 'labels' must be a non-empty list")
    for lab in labels:
        if not (isinstance(lab, dict) and isinstance(lab.get("name"), str) and isinstance(lab.get("value"), int)
                and lab["value"] > 0):
            raise ModelError(f"{where}: each label needs a 'name' and a positive integer 'value', got {lab!r}")
    values = [lab["value"] for lab in labels]
    if len(set(values)) != len(values):
        raise ModelError(f"{where}: two labels share a value ({values})")
    patch = manifest["patch_size"]
    if not (isinstance(patch, list) and len(patch) == 3
            and all(isinstance(p, int) and p >= 16 and p % 16 == 0 for p in patch)):
        raise ModelError(f"{where}: 'patch_size' must be three multiples of 16 (the V-Net halves it four "
                         f"times), got {patch!r}")
    from semiseg.transforms import Preprocessing
    try:
        Preprocessing.from_dict(manifest["preprocessing"])
    except SemiSegError as exc:
        raise ModelError(f"{where}: 'preprocessing': {exc}") from None
