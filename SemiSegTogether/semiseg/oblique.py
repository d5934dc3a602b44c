"""An oblique scan, resampled onto an axis-aligned grid for the network and its labels back onto the scan's.

Permuting axes (semiseg.orientation) cannot undo a tilt: a scan stored 30° oblique would reach the network
turned by 30°. So at prediction such a scan is first resampled (linear) onto a grid with the identity
direction, the same spacing along the canonical axes, covering the whole scan; the predicted labels are
resampled back (nearest neighbour), so the output still lies exactly on the input's grid.
"""

from __future__ import annotations

import itertools

import numpy as np
import SimpleITK as sitk

from semiseg.io import from_sitk, to_sitk
from semiseg.orientation import canonical_spacing
from semiseg.volume import IDENTITY, Volume

OBLIQUE_DEGREES = 10.0  # beyond this the scan is resampled; below it, a permutation is close enough


def axis_aligned(volume: Volume) -> Volume:
    """`volume` resampled onto an identity-direction grid that holds all of it (outside: its minimum)."""
    image = to_sitk(volume)
    size = image.GetSize()
    corners = np.array([image.TransformContinuousIndexToPhysicalPoint([c * (n - 1) for c, n in zip(corner, size)])
                        for corner in itertools.product((0, 1), repeat=3)])
    spacing = canonical_spacing(volume.spacing, volume.direction)
    low, high = corners.min(0), corners.max(0)
    out_size = [int(np.ceil((h - lo) / s)) + 1 for lo, h, s in zip(low, high, spacing)]
    aligned = sitk.Resample(image, out_size, sitk.Transform(), sitk.sitkLinear, low.tolist(), list(spacing),
                            list(IDENTITY), float(np.min(volume.array)), image.GetPixelID())
    return from_sitk(aligned)


def labels_onto(labels: Volume, reference: Volume) -> np.ndarray:
    """Label map on an axis-aligned grid → its values on `reference`'s grid (nearest neighbour)."""
    resampled = sitk.Resample(to_sitk(labels), to_sitk(reference.with_array(np.zeros(reference.array.shape,
                                                                                     np.uint8))),
                              sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return sitk.GetArrayFromImage(resampled).astype(labels.array.dtype, copy=False)
