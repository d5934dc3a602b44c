"""Our dataset in nnU-Net v2's raw layout, and nnU-Net's predictions back in our label values.

nnU-Net v2 (Isensee et al., Nature Methods 2021; github.com/MIC-DKFZ/nnUNet) reads
`nnUNet_raw/DatasetNNN_NAME/` with `imagesTr/CASE_0000.nii.gz`, `labelsTr/CASE.nii.gz`,
`imagesTs/CASE_0000.nii.gz` and a `dataset.json` holding `channel_names`, `labels` (name → consecutive
integers from 0), `numTraining` and `file_ending`. It learns from labeled cases only, so the peer gets
exactly the labeled cases our methods train on (the validation cases `semiseg bench` holds out are left
out too) and predicts the same test cases. A structure a case's task does not annotate is background to
nnU-Net, as to a plain supervised network.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from semiseg.datasets import Dataset
from semiseg.errors import ConfigError
from semiseg.io import read_label, read_volume, write_volume
from semiseg.prepare import split_validation

FILE_ENDING = ".nii.gz"


def nnunet_name(dataset_id: int, name: str) -> str:
    """'Dataset501_LA' style: three digits (nnU-Net reserves 1–999) and a name without spaces."""
    if not 1 <= dataset_id <= 999:
        raise ConfigError(f"--dataset-id {dataset_id}: nnU-Net dataset ids are 1 to 999")
    clean = "".join(ch if ch.isalnum() else "_" for ch in name) or "SemiSeg"
    return f"Dataset{dataset_id:03d}_{clean}"


def label_values(ds: Dataset) -> list[int]:
    """Our label values in order; nnU-Net's value for ours is its index (0 = background)."""
    return [0, *sorted(ds.foreground_labels.values())]


def to_nnunet_raw(ds: Dataset, raw_root: Path, dataset_id: int, val_cases: int | None = None) -> Path:
    """Write the training cases (minus `semiseg bench`'s validation cases) and the test images in nnU-Net v2's
    raw layout under raw_root. Returns the dataset folder. Images are written as NIfTI, labels renumbered
    0..K in the order of our values."""
    folder = raw_root / nnunet_name(dataset_id, ds.name)
    if folder.exists() and any(folder.iterdir()):
        raise ConfigError(f"{folder}: exists and is not empty (choose another --work folder or dataset id)")
    train_cases, _ = split_validation(ds.training, val_cases)
    values = label_values(ds)
    lut = np.zeros(max(values) + 1, dtype=np.uint8)
    lut[values] = np.arange(len(values))
    for case in train_cases:
        write_volume(read_volume(case.image), folder / "imagesTr" / f"{case.id}_0000{FILE_ENDING}")
        label = read_label(case.label)
        write_volume(label.with_array(lut[label.array]), folder / "labelsTr" / f"{case.id}{FILE_ENDING}")
    for case in ds.test:
        write_volume(read_volume(case.image), folder / "imagesTs" / f"{case.id}_0000{FILE_ENDING}")
    names = {v: n for n, v in ds.labels.items()}
    spec = {"name": ds.name, "description": f"{ds.name}, exported by semiseg for an nnU-Net v2 peer run",
            "channel_names": {"0": ds.modality or "MRI"},
            "labels": {("background" if v == 0 else names[v]): i for i, v in enumerate(values)},
            "numTraining": len(train_cases), "file_ending": FILE_ENDING}
    (folder / "dataset.json").write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    return folder


def from_nnunet_predictions(ds: Dataset, pred_dir: Path, out_dir: Path) -> Path:
    """nnU-Net's test predictions (CASE.nii.gz, values 0..K) → our label values, one file per test case named
    like its image, so `semiseg evaluate` scores them like ours."""
    values = np.array(label_values(ds))
    for case in ds.test:
        source = pred_dir / f"{case.id}{FILE_ENDING}"
        if not source.is_file():
            raise ConfigError(f"{source}: nnU-Net wrote no prediction for test case {case.id}")
        pred = read_label(source)
        write_volume(pred.with_array(values[pred.array].astype(np.uint16 if values.max() > 255 else np.uint8)),
                     out_dir / case.image.name,
                     overwrite=True)
    return out_dir
