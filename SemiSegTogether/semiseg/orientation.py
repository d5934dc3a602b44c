"""One canonical voxel orientation for the network, whatever order the file stores the axes in.

A scan stored as a sagittal stack, rotated 90° axially, or flipped left-right holds the same anatomy, but
the network would see it turned. Before the network, each array axis is permuted and flipped so that axis
x runs towards the patient's left, y posterior, z superior (ITK's LPS, the identity direction); the
prediction is permuted back, so it still lies exactly on the input's grid. This is exact (no
interpolation). An oblique scan is brought to its nearest axes only; `obliquity_degrees` says how far off
that leaves it.

Arrays are in (z, y, x) order, as everywhere in the engine; a direction matrix is ITK's row-major 3 x 3
whose column j is the physical direction of index axis j (x, y, z).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np


def axis_mapping(direction: Sequence[float]) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(physical axis of each index axis x, y, z; sign of each): the permutation closest to `direction`."""
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    best = max(itertools.permutations(range(3)), key=lambda p: sum(abs(d[p[j], j]) for j in range(3)))
    signs = tuple(1 if d[best[j], j] >= 0 else -1 for j in range(3))
    return tuple(best), signs


def is_canonical(direction: Sequence[float]) -> bool:
    return axis_mapping(direction) == ((0, 1, 2), (1, 1, 1))


def _array_axes(direction) -> tuple[list[int], list[int]]:
    """For the canonical array's axes (z, y, x): which stored array axis each comes from, and which to flip."""
    physical, signs = axis_mapping(direction)
    index_of = {p: j for j, p in enumerate(physical)}  # physical axis -> stored index axis
    source = [2 - index_of[2 - b] for b in range(3)]  # array axis b <-> physical axis 2 - b
    flips = [b for b in range(3) if signs[index_of[2 - b]] < 0]
    return source, flips


def to_canonical(array: np.ndarray, direction: Sequence[float]) -> np.ndarray:
    """A (z, y, x) array reordered to the canonical orientation (a view when possible)."""
    source, flips = _array_axes(direction)
    out = np.transpose(array, source)
    return np.flip(out, axis=flips) if flips else out


def from_canonical(array, direction: Sequence[float]):
    """Inverse of `to_canonical` on the last three axes (numpy array or torch tensor)."""
    source, flips = _array_axes(direction)
    lead = array.ndim - 3
    if flips:
        axes = [lead + b for b in flips]
        array = np.flip(array, axis=axes) if isinstance(array, np.ndarray) else array.flip(axes)
    inverse = [source.index(a) for a in range(3)]
    order = [*range(lead), *(lead + i for i in inverse)]
    return np.transpose(array, order) if isinstance(array, np.ndarray) else array.permute(order)


def canonical_spacing(spacing_xyz: Sequence[float], direction: Sequence[float]) -> tuple[float, float, float]:
    """Spacing (x, y, z) along the canonical axes."""
    physical, _ = axis_mapping(direction)
    index_of = {p: j for j, p in enumerate(physical)}
    return tuple(float(spacing_xyz[index_of[k]]) for k in range(3))


def canonical_shape(shape_zyx: Sequence[int], direction: Sequence[float]) -> tuple[int, int, int]:
    source, _ = _array_axes(direction)
    return tuple(int(shape_zyx[a]) for a in source)


def obliquity_degrees(direction: Sequence[float]) -> float:
    """Largest angle between an index axis and the physical axis it is mapped to (0 for an axis-aligned scan)."""
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    physical, _ = axis_mapping(direction)
    cosines = [abs(d[physical[j], j]) / max(np.linalg.norm(d[:, j]), 1e-12) for j in range(3)]
    return max(math.degrees(math.acos(min(1.0, c))) for c in cosines)
