"""Moving a corrected case from the unlabeled pool into the labeled set ("Add as labeled").

The label is checked against its image (same grid), written to `labelsTr/` under the image's file name, and
the dataset's `dataset.json` lists the case first among the labeled ones: validation holds out the *last*
labeled cases, so the cases that select checkpoints stay the same from one round to the next. A folder-layout
dataset (imagesTr/, labelsTr/, imagesUn/ without dataset.json) gets a dataset.json describing it; its images
stay where they are.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from semiseg.atomic import atomic_path
from semiseg.datasets import Case, Dataset, load_dataset
from semiseg.errors import ConfigError
from semiseg.io import read_label, read_volume, write_volume
from semiseg.volume import Volume


def dataset_json(ds: Dataset) -> Path:
    return Path(ds.root) / "dataset.json"


def _relative(path: Path, root: Path) -> str:
    return os.path.relpath(path, root)


def _entry(case: Case, root: Path) -> dict:
    entry = {"image": _relative(case.image, root)}
    if case.label is not None:
        entry["label"] = _relative(case.label, root)
    for key in ("task", "domain"):
        if getattr(case, key) is not None:
            entry[key] = getattr(case, key)
    return entry


def _spec(ds: Dataset) -> dict:
    """dataset.json as it is on disk, or one describing a folder-layout dataset."""
    path = dataset_json(ds)
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    root = Path(ds.root)
    return {"name": ds.name, "modality": ds.modality, "labels": {"background": 0, **ds.foreground_labels},
            "training": [_entry(c, root) for c in ds.training], "unlabeled": [_entry(c, root) for c in ds.unlabeled],
            "test": [_entry(c, root) for c in ds.test]}


def add_labeled(data: str | Path, case_id: str, label: str | Path | Volume, overwrite: bool = False) -> Case:
    """Moves unlabeled case `case_id` of `data` into the labeled set with `label` (a file or a Volume on the
    image's grid). Returns the case as it is now listed."""
    ds = load_dataset(Path(data))
    found = [c for c in ds.unlabeled if c.id == case_id]
    if not found:
        raise ConfigError(f"{data}: no unlabeled case {case_id!r} (unlabeled: "
                          f"{', '.join(c.id for c in ds.unlabeled) or 'none'})")
    case = found[0]
    image = read_volume(case.image)
    if isinstance(label, Volume):
        from semiseg.io import check_same_grid
        check_same_grid(label, image)
        volume = label
    else:
        volume = read_label(Path(label), reference=image)
    unknown = sorted(set(int(v) for v in _values(volume)) - {0, *ds.foreground_labels.values()})
    if unknown:
        raise ConfigError(f"{label if not isinstance(label, Volume) else 'the label'}: values {unknown} are not in "
                          f"{data}'s labels {ds.foreground_labels}")
    root = Path(ds.root)
    target = root / "labelsTr" / case.image.name
    write_volume(volume, target, overwrite=overwrite)
    spec = _spec(ds)
    entries = spec.get("unlabeled", [])
    keep, moved = [], None
    for entry in entries:
        image_path = entry if isinstance(entry, str) else entry.get("image")
        if moved is None and Path(os.path.abspath(root / image_path)) == case.image:
            moved = {"image": entry} if isinstance(entry, str) else dict(entry)
        else:
            keep.append(entry)
    if moved is None:  # listed by the folder layout only
        moved = _entry(case, root)
    moved["label"] = _relative(target, root)
    spec["unlabeled"] = keep
    spec["training"] = [moved, *spec.get("training", [])]
    for key, split in (("numTraining", "training"), ("numUnlabeled", "unlabeled")):
        if key in spec:
            spec[key] = len(spec[split])
    with atomic_path(dataset_json(ds), ".json") as tmp:
        tmp.write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    return next(c for c in load_dataset(root).training if c.id == case_id)


def _values(volume: Volume):
    import numpy as np
    return np.unique(volume.array)
