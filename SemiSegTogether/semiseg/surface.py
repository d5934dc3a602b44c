"""Closed, smoothed label surfaces in physical (LPS, mm) coordinates, and writers.

The pipeline follows 3D Slicer's labelmap → closed-surface conversion (discrete
flying edges, windowed-sinc smoothing, normals), so a surface exported here
matches what Slicer shows for the same segment and lands in the same place when
loaded into Slicer (which converts LPS files to RAS itself).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Mapping

import numpy as np

# Only the VTK modules needed (importing `vtk` loads every module, ~1 s).
from vtkmodules.util import numpy_support
from vtkmodules.vtkCommonCore import VTK_UNSIGNED_CHAR, vtkIntArray, vtkStringArray
from vtkmodules.vtkCommonDataModel import vtkImageData, vtkPolyData
from vtkmodules.vtkCommonMath import vtkMatrix4x4
from vtkmodules.vtkCommonTransforms import vtkTransform
from vtkmodules.vtkFiltersCore import vtkPolyDataNormals, vtkReverseSense, vtkWindowedSincPolyDataFilter
from vtkmodules.vtkFiltersGeneral import vtkDiscreteFlyingEdges3D, vtkTransformFilter
from vtkmodules.vtkIOGeometry import vtkSTLWriter
from vtkmodules.vtkIOXML import vtkXMLPolyDataWriter

from semiseg.errors import ConfigError, DataError
from semiseg.volume import Volume

# Slicer's default smoothing factor 0.5 → pass band 10**(-4 * 0.5).
PASS_BAND = 0.01
WRITERS = {".vtp": vtkXMLPolyDataWriter, ".stl": vtkSTLWriter}


def _physical_matrix(volume: Volume, offset_xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Affine taking a point p = (index - offset) * spacing (what the vtkImageData
    below produces, origin 0) to LPS: x = origin + D @ (p + offset * spacing)."""
    direction = np.asarray(volume.direction, dtype=np.float64).reshape(3, 3)
    spacing = np.asarray(volume.spacing, dtype=np.float64)
    translation = np.asarray(volume.origin, dtype=np.float64) + direction @ (offset_xyz * spacing)
    return direction, translation


def _label_surface(volume: Volume, value: int, smoothing_iterations: int) -> vtkPolyData | None:
    mask = volume.array == value
    if not mask.any():
        return None
    # Crop to the label (speed) and pad one background voxel on every side so the
    # surface closes where the label touches the volume border.
    nz = [np.flatnonzero(mask.any(axis=tuple(j for j in range(3) if j != i))) for i in range(3)]
    lo_zyx = np.array([n[0] for n in nz])
    hi_zyx = np.array([n[-1] for n in nz]) + 1
    crop = mask[lo_zyx[0] : hi_zyx[0], lo_zyx[1] : hi_zyx[1], lo_zyx[2] : hi_zyx[2]]
    padded = np.pad(crop, 1).astype(np.uint8)
    offset_xyz = (lo_zyx - 1)[::-1].astype(np.float64)  # index of padded[0,0,0], in (x, y, z)

    image = vtkImageData()
    image.SetDimensions(*padded.shape[::-1])  # vtk is (x, y, z), x fastest = C order of (z, y, x)
    image.SetSpacing(*(float(s) for s in volume.spacing))
    image.SetOrigin(0.0, 0.0, 0.0)
    scalars = numpy_support.numpy_to_vtk(padded.ravel(), deep=True, array_type=VTK_UNSIGNED_CHAR)
    image.GetPointData().SetScalars(scalars)

    contour = vtkDiscreteFlyingEdges3D()
    contour.SetInputData(image)
    contour.SetValue(0, 1)
    contour.ComputeNormalsOff()
    contour.ComputeGradientsOff()
    contour.ComputeScalarsOff()
    contour.Update()
    surface = contour.GetOutput()

    if smoothing_iterations > 0:
        smoother = vtkWindowedSincPolyDataFilter()
        smoother.SetInputData(surface)
        smoother.SetNumberOfIterations(int(smoothing_iterations))
        smoother.SetPassBand(PASS_BAND)
        smoother.BoundarySmoothingOff()
        smoother.FeatureEdgeSmoothingOff()
        smoother.NonManifoldSmoothingOff()
        smoother.NormalizeCoordinatesOn()  # numerically stable for any extent
        smoother.Update()
        surface = smoother.GetOutput()

    direction, translation = _physical_matrix(volume, offset_xyz)
    matrix = vtkMatrix4x4()
    for r in range(3):
        for c in range(3):
            matrix.SetElement(r, c, direction[r, c])
        matrix.SetElement(r, 3, translation[r])
    transform = vtkTransform()
    transform.SetMatrix(matrix)
    to_physical = vtkTransformFilter()
    to_physical.SetInputData(surface)
    to_physical.SetTransform(transform)
    to_physical.Update()
    surface = to_physical.GetPolyDataOutput()

    if np.linalg.det(direction) < 0:
        # A reflection turns the triangles' winding inside out; restore it so the
        # normals computed from it (and STL facet normals) point outwards.
        reverse = vtkReverseSense()
        reverse.SetInputData(surface)
        reverse.ReverseCellsOn()
        reverse.ReverseNormalsOff()
        reverse.Update()
        surface = reverse.GetOutput()

    normals = vtkPolyDataNormals()
    normals.SetInputData(surface)
    normals.SplittingOff()  # splitting duplicates points and opens the surface
    normals.ConsistencyOn()
    normals.Update()
    out = vtkPolyData()
    out.DeepCopy(normals.GetOutput())
    return out


def label_surfaces(
    label: Volume, labels: Mapping[str, int], smoothing_iterations: int = 20
) -> dict[str, vtkPolyData]:
    """Per label name, a closed smoothed triangle surface in LPS millimetres.

    Point coordinates follow ITK: x = origin + D @ (index * spacing). Labels whose
    value does not occur in `label.array` are left out of the result.
    `smoothing_iterations=0` keeps the raw flying-edges surface.
    """
    if label.array.ndim != 3:
        raise DataError(f"{label.path or 'label map'}: expected a 3D label map, got shape {label.array.shape}")
    surfaces = {}
    for name, value in labels.items():
        surface = _label_surface(label, int(value), smoothing_iterations)
        if surface is not None:
            _tag(surface, name, int(value))
            surfaces[name] = surface
    return surfaces


def _tag(surface: vtkPolyData, name: str, value: int) -> None:
    # Kept in .vtp files so a surface can be traced back to its label.
    name_array = vtkStringArray()
    name_array.SetName("label_name")
    name_array.InsertNextValue(name)
    value_array = vtkIntArray()
    value_array.SetName("label_value")
    value_array.InsertNextValue(value)
    surface.GetFieldData().AddArray(name_array)
    surface.GetFieldData().AddArray(value_array)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "label"


def surface_paths(path: str | os.PathLike, labels: Mapping[str, int]) -> dict[str, Path]:
    """Output file per label name: exactly `path` for one label, else
    `<stem>_<label-name-slug><ext>` next to it."""
    path = Path(path)
    if path.suffix.lower() not in WRITERS:
        raise ConfigError(f"{path}: surface files must end in .vtp or .stl")
    if len(labels) == 1:
        return {next(iter(labels)): path}
    paths: dict[str, Path] = {}
    for name, value in labels.items():
        slug = _slug(name)
        candidate = path.with_name(f"{path.stem}_{slug}{path.suffix}")
        if candidate in paths.values():  # two names with the same slug
            candidate = path.with_name(f"{path.stem}_{slug}-{value}{path.suffix}")
        paths[name] = candidate
    return paths


def _write_atomic(surface: vtkPolyData, target: Path) -> None:
    suffix = target.suffix.lower()
    writer = WRITERS[suffix]()
    # A temporary file in the same folder, so os.replace is atomic and a crash
    # never leaves a half-written surface under the final name.
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}-", suffix=suffix, dir=target.parent)
    os.close(fd)
    try:
        writer.SetFileName(tmp)
        writer.SetInputData(surface)
        if suffix == ".stl":
            writer.SetFileTypeToBinary()
        if writer.Write() != 1 or writer.GetErrorCode() != 0:
            raise DataError(f"{target}: could not write the surface file")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_surfaces(
    label: Volume,
    path: str | os.PathLike,
    labels: Mapping[str, int],
    overwrite: bool = False,
    smoothing_iterations: int = 20,
) -> list[Path]:
    """Write each present label's surface to .vtp or .stl (binary); return the paths.

    One label → exactly `path`; several → `<stem>_<label-name-slug><ext>` per
    label (see `surface_paths`). Labels absent from the volume are skipped, so
    the list may be shorter than `labels` (empty for an empty prediction).
    Existing files are refused (DataError) unless `overwrite`; every target is
    checked before anything is written.
    """
    targets = surface_paths(path, labels)
    if not overwrite:
        for target in targets.values():
            if target.exists():
                raise DataError(f"{target}: file exists (pass overwrite=True / --overwrite to replace it)")
    surfaces = label_surfaces(label, labels, smoothing_iterations=smoothing_iterations)
    if surfaces:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    written = []
    for name, surface in surfaces.items():
        _write_atomic(surface, targets[name])
        written.append(targets[name])
    return written
