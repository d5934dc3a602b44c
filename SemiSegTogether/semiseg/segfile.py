"""`.seg.nrrd` with segment metadata: names, colours and terminology, as 3D Slicer saves a segmentation.

The label map alone (what `write_volume` gives) loses what each value means; here every label of the
model becomes a segment with its name, its colour and its terminology codes, so the file opens in Slicer
(or any slicerio reader) ready to use. Writing the NRRD header fields is left to `slicerio`, the
segmentation I/O library kept by Slicer's developers (https://github.com/lassoan/slicerio).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import DataError
from .volume import Volume

TERMINOLOGY_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
# contract key (docs/contracts.md) -> slicerio key
_TERMINOLOGY_KEYS = {"category": "category", "type": "type", "modifier": "typeModifier",
                     "region": "anatomicRegion", "region_modifier": "anatomicRegionModifier"}


def ijk_to_lps(volume: Volume) -> np.ndarray:
    """(4, 4) matrix from voxel (i, j, k) to physical LPS millimetres: direction columns scaled by spacing."""
    matrix = np.eye(4)
    matrix[:3, :3] = np.asarray(volume.direction, dtype=float).reshape(3, 3) * np.asarray(volume.spacing, float)
    matrix[:3, 3] = volume.origin
    return matrix


def slicerio_terminology(terminology: dict | None) -> dict | None:
    """Contract triplets {"category": [scheme, value, meaning], "type": [...], ...} -> slicerio's terminology."""
    if not terminology or not terminology.get("category") or not terminology.get("type"):
        return None
    out = {"contextName": TERMINOLOGY_CONTEXT}
    for key, target in _TERMINOLOGY_KEYS.items():
        code = terminology.get(key)
        if code:
            out[target] = [str(part) for part in code]
    if "anatomicRegion" in out:
        out["anatomicContextName"] = ANATOMIC_CONTEXT
    return out


def segment_metadata(label: dict) -> dict:
    """One model label (name, value, colour 0-255, terminology) as a slicerio segment."""
    segment = {"id": f"Segment_{int(label['value'])}", "name": str(label["name"]), "labelValue": int(label["value"]),
               "layer": 0, "color": [float(c) / 255.0 for c in label.get("color") or (128, 128, 128)]}
    terminology = slicerio_terminology(label.get("terminology"))
    if terminology:
        segment["terminology"] = terminology
    return segment


def _extent(mask: np.ndarray) -> list:
    """[i0, i1, j0, j1, k0, k1] of a (i, j, k) mask; Slicer's empty extent [0, -1, ...] if nothing is set."""
    if not mask.any():
        return [0, -1, 0, -1, 0, -1]
    out = []
    for axis in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        out += [int(hit[0]), int(hit[-1])]
    return out


def write_segmentation(label: Volume, labels: Sequence[dict], path: str | os.PathLike,
                       overwrite: bool = False) -> Path:
    """Write the label map `label` (array (z, y, x) of label values) as a one-layer .seg.nrrd, atomically.

    `labels`: the model's labels to describe ({"name", "value", "color", "terminology"}); each becomes a
    segment, even when empty, so the file always lists what the model looked for.
    """
    import slicerio  # noqa: PLC0415  (only this writer needs it)

    path = Path(path)
    if not path.name.lower().endswith(".seg.nrrd"):
        raise DataError(f"{path}: a segmentation file must end with .seg.nrrd")
    if path.exists() and not overwrite:
        raise DataError(f"{path}: already exists (choose another name or allow overwriting)")
    values = np.asarray(label.array)
    known = {int(lab["value"]) for lab in labels}
    unknown = sorted(set(np.unique(values).tolist()) - known - {0})
    if unknown:
        raise DataError(f"{path}: label values {unknown} are not among the model's labels")
    voxels = np.ascontiguousarray(values.transpose(2, 1, 0)).astype(np.uint8 if max(known, default=0) < 256
                                                                      else np.uint16)
    segments = []
    for lab in labels:
        segment = segment_metadata(lab)
        segment["extent"] = _extent(voxels == segment["labelValue"])
        segments.append(segment)
    segmentation = {"voxels": voxels, "ijkToLPS": ijk_to_lps(label), "encoding": "gzip", "segments": segments}
    with atomic_path(path, suffix=".seg.nrrd") as tmp:
        slicerio.write_segmentation(str(tmp), segmentation)
        os.chmod(tmp, 0o666 & ~_umask())  # as a plain open() would make it (the temporary file is 0600)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
