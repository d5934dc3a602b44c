"""The one in-memory image type the engine passes around.

`array` is in SimpleITK/Slicer index order (z, y, x) — the order that
`sitk.GetArrayFromImage` and `slicer.util.arrayFromVolume` give. `spacing`,
`origin` and `direction` follow ITK's physical (x, y, z) convention, LPS, so a
Volume converts to and from a SimpleITK image or a Slicer volume node without
loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass
class Volume:
    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = field(default=IDENTITY)
    path: str | None = None  # where it was read from, for error messages

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        """Spacing in the array's axis order (what metrics and resampling need)."""
        return tuple(float(s) for s in self.spacing[::-1])

    def with_array(self, array: np.ndarray) -> "Volume":
        """Same geometry, new voxels (e.g. a prediction on the input's grid)."""
        if array.shape != self.array.shape:
            raise ValueError(f"array shape {array.shape} differs from the volume's {self.array.shape}")
        return replace(self, array=array, path=None)

    def same_geometry(self, other: "Volume", tol: float = 1e-3) -> bool:
        return (
            self.array.shape == other.array.shape
            and np.allclose(self.spacing, other.spacing, rtol=tol, atol=tol)
            and np.allclose(self.origin, other.origin, rtol=tol, atol=tol * max(1.0, max(map(abs, self.spacing))))
            and np.allclose(self.direction, other.direction, atol=tol)
        )
