"""Segmentation metrics, numerically identical to `medpy.metric.binary`.

Every semi-supervised segmentation paper we compare with (UA-MT, MC-Net, SS-Net,
BCP, ...) reports medpy's `dc`, `jc`, `hd95` and `asd`, without `voxelspacing`,
i.e. distances in voxels. We therefore reproduce medpy's definitions exactly and
report each distance twice: in millimetres (`*_mm`, for users) and in voxels
(`*_vox`, for comparison with published tables).

Definitions (medpy 0.5.2, the version the tests compare with):
- surface of a mask = mask XOR binary_erosion(mask, face-connected 3D structure);
  voxels on the array border count as surface (erosion treats outside as 0);
- directed distances A→B = Euclidean distance transform of "not surface(B)",
  sampled at surface(A) voxels;
- hd95 = 95th percentile of the POOLED directed distances (A→B and B→A
  concatenated). MONAI instead takes max(p95(A→B), p95(B→A)), which is larger,
  so MONAI's HausdorffDistanceMetric must not be used for benchmark numbers;
- asd = mean of the directed pred→gt distances (medpy's `asd` is directed, what
  papers call "ASD");
- assd = mean of the POOLED directed distances, i.e. every surface voxel of both
  masks weighted equally (Heimann et al. 2009). This is medpy 0.5.2's `assd`
  (loli/medpy#131, July 2024); earlier medpy releases returned
  mean(asd(pred, gt), asd(gt, pred)) instead, which differs when the two
  surfaces have different voxel counts.

Empty masks (medpy raises, and the LA papers' evaluation scripts each handle them their own way): see
`EMPTY_CONVENTION`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy.ndimage import binary_erosion, distance_transform_edt, generate_binary_structure

from semiseg.errors import DataError

EMPTY_CONVENTION = (
    "both masks empty: dice = jaccard = 1 and every distance = 0 (a perfect answer); "
    "exactly one mask empty: dice = jaccard = 0 and every distance = NaN (undefined) unless "
    "`empty_distance` is given, which is then used for all six distance fields; "
    "summaries report how many values were NaN and average the others"
)

DISTANCE_KEYS = ("hd95_mm", "asd_mm", "assd_mm", "hd95_vox", "asd_vox", "assd_vox")
METRIC_KEYS = ("dice", "jaccard") + DISTANCE_KEYS


def _surface(mask: np.ndarray, structure: np.ndarray) -> np.ndarray:
    return mask ^ binary_erosion(mask, structure=structure, iterations=1)


def _joint_crop(a: np.ndarray, b: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of a|b plus one voxel of margin, clipped to the array.

    Results are unchanged by the crop: a 1-voxel background margin erodes exactly
    like the original background, where the box meets the array border the
    border is the original one, and the EDT is exact (not path-based) so the
    nearest surface voxel, which lies inside the box, is found at the same
    distance.
    """
    union = a | b
    slices = []
    for axis in range(union.ndim):
        others = tuple(i for i in range(union.ndim) if i != axis)
        idx = np.flatnonzero(union.any(axis=others))
        slices.append(slice(max(int(idx[0]) - 1, 0), min(int(idx[-1]) + 2, union.shape[axis])))
    return tuple(slices)


def _directed(surf_from: np.ndarray, surf_to: np.ndarray, sampling) -> np.ndarray:
    return distance_transform_edt(~surf_to, sampling=sampling)[surf_from]


def binary_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing_zyx: Sequence[float],
    empty_distance: float | None = None,
) -> dict[str, float]:
    """Dice, Jaccard, HD95, ASD and ASSD of two binary masks, as medpy computes them.

    `spacing_zyx` is the spacing in the arrays' axis order (`Volume.spacing_zyx`).
    Distances are returned in mm (`*_mm`, EDT sampled at the spacing) and in
    voxels (`*_vox`, unit sampling, what papers report).

    Empty masks: both empty → dice 1, jaccard 1, distances 0; exactly one empty →
    dice 0, jaccard 0, distances NaN, or `empty_distance` for all six distance
    fields when given (A&D used 128 voxels). See `EMPTY_CONVENTION`.
    """
    pred = np.asarray(pred).astype(bool, copy=False)
    gt = np.asarray(gt).astype(bool, copy=False)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    spacing = np.asarray(spacing_zyx, dtype=np.float64)
    if spacing.shape != (pred.ndim,) or not np.all(spacing > 0):
        raise ValueError(f"spacing {tuple(spacing_zyx)} must be {pred.ndim} positive numbers in array order")

    n_pred = int(np.count_nonzero(pred))
    n_gt = int(np.count_nonzero(gt))
    if n_pred == 0 and n_gt == 0:
        return {"dice": 1.0, "jaccard": 1.0, **{k: 0.0 for k in DISTANCE_KEYS}}
    if n_pred == 0 or n_gt == 0:
        missing = math.nan if empty_distance is None else float(empty_distance)
        return {"dice": 0.0, "jaccard": 0.0, **{k: missing for k in DISTANCE_KEYS}}

    inter = int(np.count_nonzero(pred & gt))
    out = {
        "dice": 2.0 * inter / (n_pred + n_gt),
        "jaccard": inter / (n_pred + n_gt - inter),
    }

    box = _joint_crop(pred, gt)
    structure = generate_binary_structure(pred.ndim, 1)
    sp = _surface(pred[box], structure)
    sg = _surface(gt[box], structure)
    for suffix, sampling in (("mm", spacing), ("vox", None)):
        d_pg = _directed(sp, sg, sampling)
        pooled = np.concatenate((d_pg, _directed(sg, sp, sampling)))
        out[f"hd95_{suffix}"] = float(np.percentile(pooled, 95))
        out[f"asd_{suffix}"] = float(d_pg.mean())
        out[f"assd_{suffix}"] = float(pooled.mean())
    return {k: out[k] for k in METRIC_KEYS}


def _nanmean(values: Iterable[float]) -> float:
    arr = np.asarray(list(values), dtype=np.float64)
    finite = arr[~np.isnan(arr)]
    return float(finite.mean()) if finite.size else math.nan


def case_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing_zyx: Sequence[float],
    labels: Mapping[str, int],
    empty_distance: float | None = None,
) -> dict[str, dict[str, float]]:
    """Per foreground label name → `binary_metrics(pred == value, gt == value)`,
    plus "mean": per metric, the mean over labels ignoring NaN (NaN if all are)."""
    if not labels:
        raise ValueError("no labels to evaluate")
    if "mean" in labels:
        raise ValueError('"mean" is reserved for the average over labels; rename that label')
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    result = {
        name: binary_metrics(pred == value, gt == value, spacing_zyx, empty_distance=empty_distance)
        for name, value in labels.items()
    }
    result["mean"] = {k: _nanmean(result[name][k] for name in labels) for k in METRIC_KEYS}
    return result


def summarize(
    rows: Sequence[Mapping[str, float]], keys: Sequence[str] | None = None
) -> dict[str, dict[str, float]]:
    """Per key: mean and std (ddof=0) over the non-NaN values, `n` = number of
    non-NaN values averaged, `n_nan` = number of NaN (or missing) values.

    `keys` defaults to every key in `rows`, in order of first appearance."""
    if keys is None:
        keys = list(dict.fromkeys(k for row in rows for k in row))
    summary = {}
    for key in keys:
        values = np.asarray([row.get(key, math.nan) for row in rows], dtype=np.float64)
        finite = values[~np.isnan(values)]
        summary[key] = {
            "mean": float(finite.mean()) if finite.size else math.nan,
            "std": float(finite.std(ddof=0)) if finite.size else math.nan,
            "n": int(finite.size),
            "n_nan": int(values.size - finite.size),
        }
    return summary


def mean_std_text(s: Mapping[str, float], scale: float = 1.0, digits: int = 1, sign: bool = False) -> str:
    """A `summarize` entry (or any {"mean", "std"}) as "m ± s" for a report; "n/a" when nothing was averaged."""
    if s["mean"] != s["mean"]:
        return "n/a"
    return f"{s['mean'] * scale:{'+' if sign else ''}.{digits}f} ± {s['std'] * scale:.{digits}f}"


def evaluate_predictions(
    pairs: Sequence[tuple[str, str | Path, str | Path]],
    labels: Mapping[str, int],
    empty_distance: float | None = None,
    declared: set[int] | None = None,
) -> dict:
    """Evaluate (case_id, prediction file, ground-truth file) triples.

    `declared`: the label values a prediction may hold (background included); another value is a
    DataError naming the file (a model of other labels, or a file that is not a prediction).

    Prediction and ground truth must lie on the same grid (shape, spacing,
    origin, direction), else DataError naming both files; mm distances use the
    ground truth's spacing. Returns {"cases": {id: case_metrics(...)},
    "summary": {label name or "mean": summarize(per-case rows)}}. NaN values
    (one mask empty, see `EMPTY_CONVENTION`) are counted in `n_nan`.
    """
    # Imported here so training-time validation (binary_metrics) needs no SimpleITK.
    from semiseg.io import read_label

    cases: dict[str, dict] = {}
    for case_id, pred_path, gt_path in pairs:
        if case_id in cases:
            raise DataError(f"case {case_id!r} listed twice ({pred_path}, {gt_path})")
        pred = read_label(pred_path)
        if declared is not None:
            unknown = sorted(int(v) for v in set(np.unique(pred.array).tolist()) - set(declared))
            if unknown:
                raise DataError(f"{pred_path}: values {unknown} are not labels of this dataset "
                                f"({', '.join(str(v) for v in sorted(declared))}); is it a prediction of another "
                                f"model, or not a label map?")
        gt = read_label(gt_path)
        if not pred.same_geometry(gt):
            raise DataError(
                f"{pred_path} and {gt_path}: prediction and ground truth are on different grids "
                f"(shape {pred.array.shape} vs {gt.array.shape}, spacing {tuple(pred.spacing)} vs "
                f"{tuple(gt.spacing)}, origin {tuple(pred.origin)} vs {tuple(gt.origin)}, "
                f"direction {tuple(pred.direction)} vs {tuple(gt.direction)})"
            )
        cases[case_id] = case_metrics(pred.array, gt.array, gt.spacing_zyx, labels, empty_distance=empty_distance)
    names = list(labels) + ["mean"]
    summary = {name: summarize([c[name] for c in cases.values()], keys=METRIC_KEYS) for name in names}
    return {"cases": cases, "summary": summary}
