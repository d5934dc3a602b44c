"""Small synthetic volumes and datasets for the data tests (tiny, so tests stay fast)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from semiseg.io import write_volume
from semiseg.volume import IDENTITY, Volume

RAS_FLIP = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


def rotation(ax: float = 0.3, az: float = 0.5) -> tuple[float, ...]:
    """A proper rotation (about x, then z) as a row-major direction matrix."""
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return tuple(float(v) for v in (rz @ rx).ravel())


def make_volume(
    shape=(6, 8, 10),
    spacing=(0.8, 1.1, 2.5),
    origin=(-12.5, 30.25, 7.0),
    direction=IDENTITY,
    dtype=np.float32,
    seed: int = 0,
) -> Volume:
    """Random voxels with the given geometry; shape is array order (z, y, x)."""
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.integer):
        array = rng.integers(-1000, 2000, size=shape).astype(dtype)
    else:
        array = rng.normal(size=shape).astype(dtype)
    return Volume(array, tuple(spacing), tuple(origin), tuple(direction))


def make_label(image: Volume, values=(1,), seed: int = 1) -> Volume:
    """A label on `image`'s grid: a box per value, background elsewhere."""
    array = np.zeros(image.array.shape, np.uint8)
    for i, value in enumerate(values):
        array[1 + i : 3 + i, 1:4, 2:5] = value
    return image.with_array(array)


def write_dicom_series(volume: Volume, folder: Path, series_uid: str = "1.2.826.0.1.3680043.2.1125.1.1") -> Path:
    """Write an int16 volume as a CT-like DICOM series, one file per slice, with full geometry tags."""
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(volume.array.astype(np.int16))
    image.SetSpacing(volume.spacing)
    image.SetOrigin(volume.origin)
    image.SetDirection(volume.direction)
    d = volume.direction
    orientation = "\\".join(f"{v:.10f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))
    now = time.strftime("%Y%m%d"), time.strftime("%H%M%S")
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()  # keep our series UID so all slices form one series
    for k in range(image.GetDepth()):
        slice_ = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0060": "CT",
            "0008|0008": "ORIGINAL\\PRIMARY\\AXIAL",
            "0008|0020": now[0],
            "0008|0030": now[1],
            "0020|000d": series_uid + ".0",
            "0020|000e": series_uid,
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.10f}" for v in position),
            "0020|0037": orientation,
            "0018|0050": f"{volume.spacing[2]:.10f}",
            "0028|0030": f"{volume.spacing[1]:.10f}\\{volume.spacing[0]:.10f}",
        }
        for tag, value in tags.items():
            slice_.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice_{k:03d}.dcm"))
        writer.Execute(slice_)
    return folder


def write_dataset(
    root: Path,
    n_train: int = 2,
    n_unlabeled: int = 1,
    n_test: int = 1,
    labels=None,
    label_values=(1,),
    shape=(6, 8, 10),
    ext: str = ".nii.gz",
    json_file: bool = True,
    extra: dict | None = None,
) -> Path:
    """A tiny imagesTr/labelsTr/imagesUn/imagesTs/labelsTs dataset; returns the dataset.json path
    (or `root` when json_file is False)."""
    spec = {"name": "tiny", "labels": labels or {"background": 0, "organ": 1}, "training": [], "unlabeled": [], "test": []}
    plan = [("training", "imagesTr", "labelsTr", n_train), ("unlabeled", "imagesUn", None, n_unlabeled),
            ("test", "imagesTs", "labelsTs", n_test)]
    for k, (split, image_dir, label_dir, n) in enumerate(plan):
        for i in range(n):
            case = f"{split}_{i}"
            image = make_volume(shape=shape, seed=100 * k + i)  # distinct scans: the same one twice is leakage
            entry = {"image": f"{image_dir}/{case}{ext}"}
            write_volume(image, root / entry["image"])
            if label_dir:
                entry["label"] = f"{label_dir}/{case}{ext}"
                write_volume(make_label(image, label_values), root / entry["label"])
            spec[split].append(entry)
    spec.update(extra or {})
    if not json_file:
        return root
    path = root / "dataset.json"
    path.write_text(json.dumps(spec, indent=1), encoding="utf-8")
    return path


def write_nnunet_dataset(root: Path, n_train: int = 2, n_test: int = 1, n_unlabeled: int = 0, channels=("MRI",),
                         labels=None, shape=(6, 8, 10), ending: str = ".nii.gz", json_file: bool = True) -> Path:
    """An nnU-Net v2 raw dataset (CASE_XXXX channel files, v2 dataset.json); returns its folder."""
    plan = [("imagesTr", "labelsTr", "case", n_train), ("imagesTs", None, "test", n_test),
            ("imagesUn", None, "pool", n_unlabeled)]
    for offset, (image_dir, label_dir, prefix, n) in enumerate(plan):
        for i in range(n):
            case = f"{prefix}_{i:03d}"
            image = make_volume(shape=shape, seed=100 * offset + i)  # distinct scans: check refuses duplicates
            for c in range(len(channels)):
                write_volume(image.with_array(image.array + c), root / image_dir / f"{case}_{c:04d}{ending}")
            if label_dir:
                write_volume(make_label(image, (1,)), root / label_dir / f"{case}{ending}")
    if json_file:
        spec = {"channel_names": {str(i): n for i, n in enumerate(channels)},
                "labels": labels or {"background": 0, "left atrium": 1}, "numTraining": n_train,
                "file_ending": ending}
        (root / "dataset.json").write_text(json.dumps(spec, indent=1), encoding="utf-8")
    return root
