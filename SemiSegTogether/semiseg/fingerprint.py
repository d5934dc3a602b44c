"""A dataset's fingerprint: what the planner (semiseg.plan) needs to know about the images and labels.

Like nnU-Net's dataset fingerprint (Isensee et al., Nature Methods 2021; nnunetv2/experiment_planning/
dataset_fingerprint/fingerprint_extractor.py): spacings, sizes and foreground intensities of the labeled
cases, plus what a time planner needs on top: every label's volume and thickness, and the smallest structure.

Thickness is the diameter of the largest ball that fits inside the label (twice the maximum of its Euclidean
distance transform, in mm): a vessel's diameter, a lesion's. A structure stays resolvable on a grid whose
coarsest voxel side is at most a third of it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from semiseg.datasets import Dataset, load_dataset
from semiseg.errors import DataError
from semiseg.io import read_label, read_volume

VOXELS_ACROSS_SMALLEST = 3  # the thinnest structure must span this many voxels at the target spacing


@dataclass
class Fingerprint:
    dataset: str
    modality: str
    counts: dict[str, int]  # split -> cases
    spacings: list[list[float]]  # (x, y, z) mm, one per training and unlabeled case
    shapes: list[list[int]]  # array order (z, y, x), same cases
    intensity: dict[str, float]  # foreground intensities of the labeled images: mean, std, p00_5, p99_5
    labels: dict[str, dict]  # name -> {"cases", "median_ml", "min_ml", "thickness_mm"}
    smallest: dict  # {"label", "thickness_mm", "volume_ml"}: the thinnest label over all cases
    seconds: float = 0.0  # time taken to read it

    @property
    def median_spacing(self) -> list[float]:
        return [float(v) for v in np.median(np.array(self.spacings), axis=0)]

    @property
    def median_shape(self) -> list[int]:
        return [int(v) for v in np.median(np.array(self.shapes), axis=0)]

    def median_shape_at(self, spacing_xyz) -> list[int]:
        """Median array shape (z, y, x) after resampling every case to `spacing_xyz`."""
        scaled = [[n * s / t for n, s, t in zip(shape, spacing[::-1], list(spacing_xyz)[::-1])]
                  for shape, spacing in zip(self.shapes, self.spacings)]
        return [max(1, int(round(v))) for v in np.median(np.array(scaled), axis=0)]

    def total_voxels_at(self, spacing_xyz) -> float:
        """Voxels of every training and unlabeled case together after resampling (the cached dataset)."""
        return float(sum(np.prod(shape) * np.prod(np.array(spacing) / np.array(spacing_xyz))
                         for shape, spacing in zip(self.shapes, self.spacings)))

    def to_dict(self) -> dict:
        out = asdict(self)
        out.update(median_spacing=self.median_spacing, median_shape=self.median_shape)
        out.pop("spacings"), out.pop("shapes")
        return out


def fingerprint(data: str | Path | Dataset) -> Fingerprint:
    """Read the labeled cases (images and labels) and the unlabeled images' headers."""
    start = time.perf_counter()
    ds = data if isinstance(data, Dataset) else load_dataset(Path(data))
    spacings, shapes, foreground = [], [], []
    per_label: dict[str, list[tuple[float, float]]] = {n: [] for n in ds.foreground_labels}
    for case in ds.training:
        volume = read_volume(case.image)
        spacings.append([float(s) for s in volume.spacing])
        shapes.append([int(n) for n in volume.array.shape])
        if case.label is None:
            continue
        label = read_label(case.label, reference=volume).array
        foreground.append(_sample(volume.array[label > 0]))
        voxel_ml = float(np.prod(volume.spacing)) / 1000.0
        for name, value in ds.foreground_labels.items():
            mask = label == value
            if mask.any():
                per_label[name].append((mask.sum() * voxel_ml, thickness_mm(mask, volume.spacing_zyx)))
    for case in ds.unlabeled:
        spacing, shape = _header(case.image)
        spacings.append(spacing)
        shapes.append(shape)
    if not spacings:
        raise DataError(f"{ds.root}: no training case to plan from")
    values = np.concatenate(foreground) if foreground else np.zeros(1, np.float32)
    labels = {name: {"cases": len(v), "median_ml": float(np.median([a for a, _ in v])),
                     "min_ml": float(min(a for a, _ in v)), "thickness_mm": float(min(t for _, t in v))}
              for name, v in per_label.items() if v}
    if not labels:
        raise DataError(f"{ds.root}: no labeled voxel in any training case; nothing to plan for")
    thinnest = min(labels, key=lambda n: labels[n]["thickness_mm"])
    return Fingerprint(
        dataset=ds.name, modality=ds.modality,
        counts={"labeled": sum(c.label is not None for c in ds.training), "unlabeled": len(ds.unlabeled),
                "test": len(ds.test)},
        spacings=spacings, shapes=shapes,
        intensity={"mean": float(values.mean()), "std": float(values.std()),
                   "p00_5": float(np.percentile(values, 0.5)), "p99_5": float(np.percentile(values, 99.5))},
        labels=labels,
        smallest={"label": thinnest, "thickness_mm": labels[thinnest]["thickness_mm"],
                  "volume_ml": labels[thinnest]["min_ml"]},
        seconds=time.perf_counter() - start)


def thickness_mm(mask: np.ndarray, spacing_zyx) -> float:
    """Diameter (mm) of the largest ball inside `mask` (d, h, w): twice its largest distance to the outside."""
    where = np.argwhere(mask)
    lo, hi = np.maximum(where.min(0) - 1, 0), where.max(0) + 2
    crop = np.pad(mask[tuple(slice(a, b) for a, b in zip(lo, hi))], 1)  # outside on every side
    return float(2 * ndimage.distance_transform_edt(crop, sampling=spacing_zyx).max())


def max_spacing_for(thickness: float) -> float:
    """The coarsest voxel side (mm) at which a structure `thickness` mm thick stays resolvable."""
    return thickness / VOXELS_ACROSS_SMALLEST


def _header(path: Path) -> tuple[list[float], list[int]]:
    """Spacing (x, y, z) and array shape (z, y, x) from the header alone, or from the image when it has none."""
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        if reader.GetDimension() == 3:
            return [float(s) for s in reader.GetSpacing()], [int(n) for n in reader.GetSize()[::-1]]
    except RuntimeError:
        pass  # a DICOM folder or a format without a separate header: read it whole
    volume = read_volume(path)
    return [float(s) for s in volume.spacing], [int(n) for n in volume.array.shape]


def _sample(values: np.ndarray, n: int = 20000) -> np.ndarray:
    """Up to n evenly strided values (intensity statistics need no more)."""
    step = max(1, values.size // n)
    return values[::step].astype(np.float32)
