"""Conversion of public benchmark data into SemiSeg's dataset layout.

`convert_la_h5` turns the UA-MT copy of the 2018 Left Atrium challenge
(`train.list`, `test.list`, `2018LA_Seg_Training Set/<id>/mri_norm2.h5`) into
imagesTr/labelsTr/imagesUn/imagesTs/labelsTs NIfTI files and a dataset.json.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from semiseg.datasets import prepare_dataset_folder
from semiseg.errors import ConfigError, DataError
from semiseg.io import write_volume
from semiseg.volume import Volume

LA_SPACING = (0.625, 0.625, 0.625)  # mm, isotropic after UA-MT's preprocessing
LA_H5_NAME = "mri_norm2.h5"
LA_CASES_FOLDER = "2018LA_Seg_Training Set"


def convert_la_h5(src: str | os.PathLike, dst: str | os.PathLike, n_labeled: int = 8, overwrite: bool = False,
                  progress: bool = True) -> Path:
    """Convert UA-MT's LA h5 files; the first `n_labeled` of train.list keep their labels.

    A progress bar over the cases goes to stderr unless `progress` is False (a case takes a few seconds:
    reading the h5 and compressing two NIfTI files).

    Returns the path of the dataset.json written in `dst`.
    """
    root = _find_la_root(Path(src))
    train_ids = _read_id_list(root / "train.list")
    test_ids = _read_id_list(root / "test.list")
    if not 1 <= n_labeled <= len(train_ids):
        raise ConfigError(f"n_labeled={n_labeled}: must be between 1 and {len(train_ids)} (the cases in train.list)")
    sources = {case_id: _find_h5(root, case_id) for case_id in [*train_ids, *test_ids]}
    dst = Path(dst)
    folder = prepare_dataset_folder(dst, overwrite)

    layout = [(i, "imagesTr", "labelsTr") for i in train_ids[:n_labeled]]
    layout += [(i, "imagesUn", None) for i in train_ids[n_labeled:]]
    layout += [(i, "imagesTs", "labelsTs") for i in test_ids]
    entries = {"training": [], "unlabeled": [], "test": []}
    split_of = {"imagesTr": "training", "imagesUn": "unlabeled", "imagesTs": "test"}
    for case_id, image_dir, label_dir in tqdm(layout, desc="convert la-h5", unit="case", disable=not progress,
                                              file=sys.stderr, dynamic_ncols=True):
        entry = _convert_case(sources[case_id], folder, f"la_{case_id}", image_dir, label_dir)
        entries[split_of[image_dir]].append(entry)
    folder.add("dataset.json")
    return _write_dataset_json(dst, entries)


def _find_la_root(src: Path) -> Path:
    """The folder holding train.list: `src` itself or its `data` subfolder (UA-MT's repo layout)."""
    for root in (src, src / "data"):
        if (root / "train.list").is_file():
            return root
    raise DataError(f"{src}: no train.list here or in {src / 'data'} (expected UA-MT's LA data folder)")


def _read_id_list(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    # UA-MT's lists sometimes hold a path ("../data/.../<id>/mri_norm2.h5") rather than a bare id.
    ids = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            ids.append(Path(line).parent.name if line.endswith(".h5") else line)
    if not ids:
        raise DataError(f"{path}: lists no case")
    return ids


def _find_h5(root: Path, case_id: str) -> Path:
    candidates = [root / LA_CASES_FOLDER / case_id / LA_H5_NAME, root / case_id / LA_H5_NAME]
    for path in candidates:
        if path.is_file():
            return path
    raise DataError(f"{candidates[0]}: file not found (case {case_id}; also looked for {candidates[1]})")


def _read_h5(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import h5py  # only this converter needs it

    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("image", "label") if k not in f]
            if missing:
                raise DataError(f"{path}: no {' or '.join(repr(k) for k in missing)} dataset in this h5 file")
            image, label = f["image"][()], f["label"][()]
    except OSError as e:
        raise DataError(f"{path}: cannot read this h5 file ({e})") from None
    if image.ndim != 3 or image.shape != label.shape:
        raise DataError(f"{path}: expected 3D 'image' and 'label' of one shape, got {image.shape} and {label.shape}")
    return image, label


def _convert_case(h5_path: Path, folder, case_id: str, image_dir: str, label_dir: str | None) -> dict:
    image, label = _read_h5(h5_path)
    # h5 axes are (x, y, z); a Volume's array is (z, y, x).
    volume = Volume(np.ascontiguousarray(image.astype(np.float32).transpose(2, 1, 0)), spacing=LA_SPACING)
    entry = {"image": f"{image_dir}/{case_id}.nii.gz"}
    write_volume(volume, folder.add(entry["image"]), overwrite=True)
    if label_dir is not None:
        entry["label"] = f"{label_dir}/{case_id}.nii.gz"
        labels = volume.with_array(np.ascontiguousarray(label.astype(np.uint8).transpose(2, 1, 0)))
        write_volume(labels, folder.add(entry["label"]), overwrite=True)
    return entry


def _write_dataset_json(dst: Path, entries: dict[str, list[dict]]) -> Path:
    spec = {
        "name": "LA2018",
        "description": (
            "Left atrium, late gadolinium-enhanced MRI (2018 Atrial Segmentation Challenge), as preprocessed "
            "by the UA-MT benchmark: cropped around the atrium, intensity-normalised, 0.625 mm isotropic."
        ),
        "modality": "MR",
        "labels": {"background": 0, "left atrium": 1},
        **entries,
    }
    path = dst / "dataset.json"
    fd, tmp = tempfile.mkstemp(prefix=".dataset.", suffix=".json", dir=dst)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(spec, f, indent=1)
    os.replace(tmp, path)
    return path
