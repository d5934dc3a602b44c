"""A dataset in UA-MT's LA h5 layout, the inverse of `convert_la_h5`: to run the authors' code on our images.

UA-MT (github yulequan/UA-MT) reads `<root>/../train.list` and `<root>/<id>/mri_norm2.h5` with an
'image' (float32) and a 'label' (uint8) in (x, y, z) order, and its training script takes the first 16
ids of train.list as labeled and the next 64 as unlabeled. With fewer cases, ids repeat in the list (the
script only opens files by id), which keeps its batch composition: 2 labeled + 2 unlabeled patches.
Unlabeled cases get an all-zero label, which the script reads but never trains on.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from semiseg.atomic import atomic_path
from semiseg.convert import LA_CASES_FOLDER, LA_H5_NAME
from semiseg.datasets import Case, load_dataset
from semiseg.errors import DataError
from semiseg.io import read_label, read_volume

UAMT_LABELED_SLOTS = 16  # train.list entries the script treats as labeled
UAMT_TRAIN_SLOTS = 80  # entries it indexes in all (16 labeled + 64 unlabeled)


def export_la_h5(data: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Write `dst/train.list`, `dst/test.list` and `dst/2018LA_Seg_Training Set/<id>/mri_norm2.h5`.

    Returns the folder to pass as UA-MT's `--root_path` (`dst/2018LA_Seg_Training Set`).
    """
    ds = load_dataset(Path(data))
    labeled, unlabeled = ds.training, ds.unlabeled or ds.training
    if not labeled:
        raise DataError(f"{data}: no labeled case to export")
    root = Path(dst) / LA_CASES_FOLDER
    for case in [*labeled, *ds.unlabeled, *ds.test]:
        _write_case(case, root / case.id / LA_H5_NAME)
    train = [labeled[i % len(labeled)].id for i in range(UAMT_LABELED_SLOTS)]
    train += [unlabeled[i % len(unlabeled)].id for i in range(UAMT_TRAIN_SLOTS - UAMT_LABELED_SLOTS)]
    _write_list(Path(dst) / "train.list", train)
    _write_list(Path(dst) / "test.list", [c.id for c in ds.test] or [labeled[0].id])
    return root


def _write_case(case: Case, path: Path) -> None:
    import h5py  # only the converters need it

    image = read_volume(case.image)
    label = read_label(case.label, image).array if case.label is not None else np.zeros(image.array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, ".h5") as tmp:
        with h5py.File(tmp, "w") as f:
            # A Volume's array is (z, y, x); UA-MT's h5 files are (x, y, z), gzip level 4 like theirs.
            f.create_dataset("image", data=np.ascontiguousarray(image.array.astype(np.float32).transpose(2, 1, 0)),
                             compression="gzip", compression_opts=4)
            f.create_dataset("label", data=np.ascontiguousarray(label.astype(np.uint8).transpose(2, 1, 0)),
                             compression="gzip", compression_opts=4)


def _write_list(path: Path, ids: list[str]) -> None:
    with atomic_path(path, ".list") as tmp:
        Path(tmp).write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
