"""Scene cases -> files the engine reads: images and label maps (.nrrd, with geometry),
dataset.json and the label-info sidecar (colours and terminology per label).

The Slicer side hands over plain numpy arrays in (k, j, i) order (as
`slicer.util.arrayFromVolume` gives them) and the volume's IJK-to-RAS matrix; here
that matrix becomes ITK/LPS spacing, origin and direction, and SimpleITK writes
the files. Nothing here imports slicer, qt or vtk.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

IMAGE_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
LABEL_ONLY_EXTENSIONS = (".seg.nrrd",)
MIN_LABELED = 1
RECOMMENDED_LABELED = 3


@dataclass
class Geometry:
    """ITK/LPS geometry: spacing and origin (x, y, z), direction 3x3 row-major (9 floats)."""
    spacing: tuple
    origin: tuple
    direction: tuple

    def close(self, other: "Geometry", tolerance: float = 1e-3) -> bool:
        return (np.allclose(self.spacing, other.spacing, rtol=tolerance, atol=1e-6)
                and np.allclose(self.origin, other.origin, atol=tolerance * max(1.0, float(min(self.spacing))))
                and np.allclose(self.direction, other.direction, atol=tolerance))


def ijkToRasToLps(ijkToRas) -> np.ndarray:
    """Slicer's IJK-to-RAS 4x4 -> IJK-to-LPS: flip the first two rows (R->L, A->P)."""
    m = np.array(ijkToRas, dtype=float).reshape(4, 4).copy()
    m[0, :] *= -1
    m[1, :] *= -1
    return m


def geometryFromIjkToRas(ijkToRas) -> Geometry:
    """Spacing, origin and direction (ITK/LPS) from a Slicer IJK-to-RAS matrix."""
    lps = ijkToRasToLps(ijkToRas)
    axes = lps[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    if np.any(spacing <= 0):
        raise ValueError("the IJK-to-RAS matrix has a zero-length axis")
    direction = axes / spacing
    return Geometry(tuple(float(s) for s in spacing), tuple(float(o) for o in lps[:3, 3]),
                    tuple(float(d) for d in direction.reshape(-1)))


def writeVolume(array, geometry: Geometry, path: str, isLabel: bool = False) -> str:
    """Write a (k, j, i) array with its geometry; labels as the smallest unsigned integer type."""
    import SimpleITK as sitk  # noqa: PLC0415  (Slicer ships it)

    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"{path}: expected a 3D array, got shape {array.shape}")
    if isLabel:
        if array.size and array.min() < 0:
            raise ValueError(f"{path}: label values must not be negative")
        array = array.astype(np.uint8 if (not array.size or array.max() < 256) else np.uint16)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing([float(s) for s in geometry.spacing])
    image.SetOrigin([float(o) for o in geometry.origin])
    image.SetDirection([float(d) for d in geometry.direction])
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    sitk.WriteImage(image, path, True)
    return path


def combineSegmentMasks(masks: dict, labelValues: dict, shape: Sequence[int]) -> tuple:
    """One label map from per-segment masks (name -> (k,j,i) array). Returns (labels, overlapping voxel count)."""
    labels = np.zeros(tuple(shape), dtype=np.uint16)
    covered = np.zeros(tuple(shape), dtype=bool)
    overlap = 0
    for name, mask in masks.items():
        mask = np.asarray(mask) > 0
        if mask.shape != tuple(shape):
            raise ValueError(f"segment {name!r}: mask shape {mask.shape} differs from the volume's {tuple(shape)}")
        overlap += int(np.count_nonzero(mask & covered))
        labels[mask] = labelValues[name]
        covered |= mask
    return labels, overlap


def assignLabelValues(segmentNamesPerCase: Sequence[Sequence[str]], existing: Optional[dict] = None) -> dict:
    """Label name -> value: names of `existing` keep their values, new names get the next values in order seen."""
    values = {k: int(v) for k, v in (existing or {}).items() if k != "background" and int(v) != 0}
    nextValue = max(values.values(), default=0) + 1
    for names in segmentNamesPerCase:
        for name in names:
            if name not in values:
                values[name] = nextValue
                nextValue += 1
    return values


@dataclass
class SegmentInfo:
    """What the model card should keep about a structure: colour (0-1 floats) and terminology triplets."""
    color: Optional[tuple] = None
    terminology: Optional[dict] = None


@dataclass
class LabeledCase:
    """One scene case as arrays: the image and one mask per segment, all on the image's grid."""
    name: str
    image: np.ndarray
    geometry: Geometry
    masks: dict = field(default_factory=dict)          # segment name -> (k, j, i) mask
    segments: dict = field(default_factory=dict)       # segment name -> SegmentInfo
    labelGeometry: Optional[Geometry] = None           # when the labels come on their own grid


@dataclass
class CaseProblems:
    errors: list = field(default_factory=list)
    warnings: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def text(self) -> str:
        return "\n".join([f"Error: {e}" for e in self.errors] + [f"Warning: {w}" for w in self.warnings])


def checkCases(cases: Sequence[LabeledCase], unlabeledCount: int, method: str,
               datasetLabeledCount: int = 0, valCases: int = 0) -> CaseProblems:
    """Clear messages before anything starts: geometry, empty segmentations, too few cases (`valCases` of
    them held out for validation)."""
    problems = CaseProblems()
    allNames = []
    for case in cases:
        for name in case.masks:
            if name not in allNames:
                allNames.append(name)
    for case in cases:
        if case.labelGeometry is not None and not case.geometry.close(case.labelGeometry):
            problems.errors.append(f"case '{case.name}': the segmentation's geometry (spacing {case.labelGeometry.spacing}, "
                                   f"origin {case.labelGeometry.origin}) does not match the volume's "
                                   f"(spacing {case.geometry.spacing}, origin {case.geometry.origin})")
        if not case.masks:
            problems.errors.append(f"case '{case.name}': the segmentation has no segments")
            continue
        shapes = {name: np.asarray(m).shape for name, m in case.masks.items()}
        wrong = [n for n, s in shapes.items() if s != case.image.shape]
        if wrong:
            problems.errors.append(f"case '{case.name}': segment(s) {', '.join(wrong)} are not on the volume's grid "
                                   f"({shapes[wrong[0]]} vs {case.image.shape})")
            continue
        empty = [n for n, m in case.masks.items() if not np.any(m)]
        if len(empty) == len(case.masks):
            problems.errors.append(f"case '{case.name}': the segmentation is empty inside the volume "
                                   "(nothing is painted, or it lies outside the volume)")
        elif empty:
            problems.warnings.append(f"case '{case.name}': segment(s) {', '.join(empty)} are empty; "
                                     "they count as background in this case")
        missing = [n for n in allNames if n not in case.masks]
        if missing:
            problems.warnings.append(f"case '{case.name}' has no segment {', '.join(map(repr, missing))}; "
                                     "those voxels count as background in this case")
    labeled = len(cases) + datasetLabeledCount
    if labeled < MIN_LABELED:
        problems.errors.append("no labeled case: add at least one volume with its segmentation, or a dataset")
    elif valCases >= labeled:
        problems.errors.append(f"holding {valCases} case(s) out for validation leaves none of the {labeled} labeled "
                               "case(s) to train on: hold out fewer (0 = none)")
    elif labeled < RECOMMENDED_LABELED:
        problems.warnings.append(f"only {labeled} labeled case(s): a first model from so few is rough; 'Suggest "
                                 "next cases' ranks the pool for the next ones to annotate")
    if method != "supervised" and unlabeledCount == 0:
        problems.errors.append(f"method '{method}' learns from unlabeled images, but the pool is empty: add "
                               "unlabeled volumes or a folder, or choose 'supervised'")
    return problems


def _colorTo255(color) -> Optional[list]:
    if color is None:
        return None
    return [int(round(max(0.0, min(1.0, float(c))) * 255)) for c in color]


def labelInfo(cases: Sequence[LabeledCase]) -> dict:
    """{label name: {"color": [r,g,b] 0-255, "terminology": {...}}} for `semiseg train --label-info`."""
    info = {}
    for case in cases:
        for name, segment in case.segments.items():
            if name in info:
                continue
            entry = {}
            if segment.color is not None:
                entry["color"] = _colorTo255(segment.color)
            if segment.terminology:
                entry["terminology"] = segment.terminology
            info[name] = entry
    return info


def countPoolImages(folder: str) -> list:
    """Images the engine can read in `folder` (not recursive): image files, and DICOM series folders."""
    if not folder or not os.path.isdir(folder):
        return []
    found = []
    for name in sorted(os.listdir(folder)):
        if name.startswith("."):
            continue
        path = os.path.join(folder, name)
        lower = name.lower()
        if os.path.isdir(path):
            if _looksLikeDicomSeries(path):
                found.append(path)
        elif lower.endswith(IMAGE_EXTENSIONS) and not lower.endswith(LABEL_ONLY_EXTENSIONS):
            found.append(path)
    return found


def _looksLikeDicomSeries(folder: str) -> bool:
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        if name.lower().endswith(".dcm") or name == "DICOMDIR":
            return True
        try:
            with open(path, "rb") as f:
                if f.read(132)[128:132] == b"DICM":
                    return True
        except OSError:
            continue
    return False


@dataclass
class ExportedDataset:
    datasetJson: str
    labelInfoJson: str
    labels: dict
    labeledCount: int
    unlabeledCount: int
    overlaps: dict = field(default_factory=dict)  # case name -> overlapping voxels
    unlabeledIds: list = field(default_factory=list)  # case ids of `unlabeledArrays`, in their order


def _safeName(name: str, used: set) -> str:
    base = "".join(c if c.isalnum() or c in "-_" else "_" for c in name).strip("_") or "case"
    candidate, n = base, 1
    while candidate in used:
        n += 1
        candidate = f"{base}_{n}"
    used.add(candidate)
    return candidate


def exportDataset(folder: str, cases: Sequence[LabeledCase], unlabeledArrays: Sequence = (),
                  unlabeledPaths: Sequence[str] = (), baseDataset: Optional[dict] = None,
                  name: str = "scene", modality: str = "") -> ExportedDataset:
    """Write imagesTr/ labelsTr/ imagesUn/, dataset.json and label-info.json into `folder`.

    `unlabeledArrays`: (name, array, Geometry) from the scene; `unlabeledPaths`: files or
    DICOM folders used where they are. `baseDataset`: {"labels": {name: value},
    "training": [{"image", "label"}], "unlabeled": [...]} with absolute paths, from a
    dataset the user chose; its label values are kept.
    """
    base = baseDataset or {}
    labels = assignLabelValues([list(c.masks) for c in cases], base.get("labels"))
    used: set = {e["id"] for e in base.get("training", []) + base.get("unlabeled", []) if e.get("id")}
    training, unlabeled, overlaps = list(base.get("training", [])), list(base.get("unlabeled", [])), {}
    for case in cases:
        caseId = _safeName(case.name, used)
        labelArray, overlap = combineSegmentMasks(case.masks, labels, case.image.shape)
        if overlap:
            overlaps[case.name] = overlap
        imagePath = writeVolume(case.image, case.geometry, os.path.join(folder, "imagesTr", f"{caseId}.nrrd"))
        labelPath = writeVolume(labelArray, case.geometry, os.path.join(folder, "labelsTr", f"{caseId}.nrrd"),
                                isLabel=True)
        training.append({"id": caseId, "image": os.path.relpath(imagePath, folder),
                         "label": os.path.relpath(labelPath, folder)})
    unlabeledIds = []
    for unlabeledName, array, geometry in unlabeledArrays:
        caseId = _safeName(unlabeledName, used)
        unlabeledIds.append(caseId)
        path = writeVolume(array, geometry, os.path.join(folder, "imagesUn", f"{caseId}.nrrd"))
        unlabeled.append({"id": caseId, "image": os.path.relpath(path, folder)})
    for path in unlabeledPaths:
        unlabeled.append({"image": os.path.abspath(path)})
    spec = {"name": name, "description": "exported by SemiSegTrainer", "labels": {"background": 0, **labels},
            "training": training, "unlabeled": unlabeled}
    if modality:
        spec["modality"] = modality
    os.makedirs(folder, exist_ok=True)
    datasetJson = os.path.join(folder, "dataset.json")
    with open(datasetJson, "w", encoding="utf-8") as f:
        json.dump(spec, f, indent=2)
    labelInfoJson = os.path.join(folder, "label-info.json")
    with open(labelInfoJson, "w", encoding="utf-8") as f:
        json.dump(labelInfo(cases), f, indent=2)
    return ExportedDataset(datasetJson, labelInfoJson, labels, len(training), len(unlabeled), overlaps, unlabeledIds)


def readBaseDataset(path: str) -> dict:
    """A user's dataset (folder or dataset.json) as absolute paths, through the engine's own reader."""
    from semiseg.datasets import load_dataset  # noqa: PLC0415  (lazy: the engine, torch-free part)

    ds = load_dataset(path)
    return {
        "labels": {k: v for k, v in ds.labels.items() if v != 0},
        "training": [{"id": c.id, "image": str(c.image), "label": str(c.label)} for c in ds.training if c.label],
        "unlabeled": [{"id": c.id, "image": str(c.image)} for c in ds.unlabeled],
        "modality": ds.modality,
    }
