"""semiseg.surface: closed surfaces in LPS mm, orientation, files."""

import math

import numpy as np
import pytest
from vtkmodules.util.numpy_support import vtk_to_numpy
from vtkmodules.vtkFiltersCore import vtkFeatureEdges
from vtkmodules.vtkIOGeometry import vtkSTLReader
from vtkmodules.vtkIOXML import vtkXMLPolyDataReader

from semiseg.errors import ConfigError, DataError
from semiseg.surface import label_surfaces, write_surfaces
from semiseg.volume import Volume

SPACING = (0.8, 1.0, 1.5)  # x, y, z
ORIGIN = (10.0, -20.0, 30.0)
RADIUS = 12.0  # mm


def _rot_z(deg):
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


DIRECTIONS = {
    "flip-xy": np.diag([-1.0, -1.0, 1.0]),
    "reflect-z": np.diag([1.0, 1.0, -1.0]),  # det -1: winding must be repaired
    "rotated": _rot_z(30) @ np.diag([-1.0, -1.0, 1.0]),  # not symmetric: catches D vs D^T
}


def _sphere_volume(direction, centre_index_xyz=(17.0, 14.5, 10.0), shape_zyx=(22, 30, 40)):
    """Ball of RADIUS mm around an off-centre index point; returns volume and
    the ball's physical centre computed independently of semiseg."""
    z, y, x = np.indices(shape_zyx, dtype=np.float64)
    cx, cy, cz = centre_index_xyz
    d = np.sqrt(((x - cx) * SPACING[0]) ** 2 + ((y - cy) * SPACING[1]) ** 2 + ((z - cz) * SPACING[2]) ** 2)
    vol = Volume((d <= RADIUS).astype(np.int16), spacing=SPACING, origin=ORIGIN, direction=tuple(direction.ravel()))
    centre = np.array(ORIGIN) + direction @ (np.array(centre_index_xyz) * np.array(SPACING))
    return vol, centre


def _triangles(poly):
    points = vtk_to_numpy(poly.GetPoints().GetData()).astype(np.float64)
    tri = vtk_to_numpy(poly.GetPolys().GetConnectivityArray()).reshape(-1, 3)
    assert poly.GetNumberOfCells() == len(tri)  # triangles only
    return points, tri


def _edge_counts(poly):
    edges = vtkFeatureEdges()
    edges.SetInputData(poly)
    edges.BoundaryEdgesOn()
    edges.NonManifoldEdgesOn()
    edges.FeatureEdgesOff()
    edges.ManifoldEdgesOff()
    edges.Update()
    return edges.GetOutput().GetNumberOfCells()


@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_sphere_surface_in_physical_space(name):
    vol, centre = _sphere_volume(DIRECTIONS[name])
    surfaces = label_surfaces(vol, {"ball": 1, "absent": 7})
    assert list(surfaces) == ["ball"]
    poly = surfaces["ball"]
    points, tri = _triangles(poly)

    # Position: a sphere's bounds are centre ± R whatever the rotation.
    largest_voxel = max(SPACING)
    bounds = np.array(poly.GetBounds()).reshape(3, 2)
    np.testing.assert_allclose(bounds.mean(axis=1), centre, atol=largest_voxel)
    np.testing.assert_allclose(bounds[:, 1] - bounds[:, 0], 2 * RADIUS, atol=2 * largest_voxel)
    np.testing.assert_allclose(points.mean(axis=0), centre, atol=largest_voxel)
    radii = np.linalg.norm(points - centre, axis=1)
    assert np.abs(radii - RADIUS).max() < largest_voxel

    assert _edge_counts(poly) == 0  # closed and manifold

    a, b, c = points[tri[:, 0]], points[tri[:, 1]], points[tri[:, 2]]
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1).sum()
    assert area == pytest.approx(4 * math.pi * RADIUS**2, rel=0.1)
    # Winding and normals point outwards: positive signed volume ≈ 4/3 pi R^3.
    signed_volume = np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6
    assert signed_volume == pytest.approx(4 / 3 * math.pi * RADIUS**3, rel=0.1)
    normals = vtk_to_numpy(poly.GetPointData().GetNormals())
    assert (np.einsum("ij,ij->i", normals, points - centre) > 0).all()


def test_label_touching_border_is_closed():
    array = np.zeros((6, 7, 8), np.uint8)
    array[:3, :, 2:6] = 2  # touches five faces of the array
    poly = label_surfaces(Volume(array, spacing=(0.5, 0.5, 2.0)), {"slab": 2})["slab"]
    assert poly.GetNumberOfPoints() > 0
    assert _edge_counts(poly) == 0


def _read(path):
    reader = vtkXMLPolyDataReader() if path.suffix == ".vtp" else vtkSTLReader()
    reader.SetFileName(str(path))
    reader.Update()
    return reader.GetOutput()


@pytest.mark.parametrize("ext", [".vtp", ".stl"])
def test_write_and_read_back(tmp_path, ext):
    vol, centre = _sphere_volume(DIRECTIONS["rotated"])
    target = tmp_path / f"ball{ext}"
    assert write_surfaces(vol, target, {"ball": 1}) == [target]
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temporary left behind
    back = _read(target)
    original = label_surfaces(vol, {"ball": 1})["ball"]
    assert back.GetNumberOfCells() == original.GetNumberOfCells()
    np.testing.assert_allclose(back.GetBounds(), original.GetBounds(), atol=1e-4)
    if ext == ".stl":
        with open(target, "rb") as f:
            header = f.read(84)
        # binary STL: 80-byte header, uint32 triangle count, 50 bytes a triangle
        assert int.from_bytes(header[80:84], "little") == original.GetNumberOfCells()
        assert target.stat().st_size == 84 + 50 * original.GetNumberOfCells()


def test_multi_label_naming_and_overwrite(tmp_path):
    array = np.zeros((10, 12, 14), np.uint8)
    array[2:5, 2:6, 2:6] = 1
    array[6:9, 6:10, 8:12] = 3
    vol = Volume(array, spacing=(1.0, 1.0, 2.0))
    labels = {"Left Atrium": 1, "vessel/branch 2": 3, "missing": 5}
    written = write_surfaces(vol, tmp_path / "case.vtp", labels)
    assert [p.name for p in written] == ["case_left-atrium.vtp", "case_vessel-branch-2.vtp"]
    assert not (tmp_path / "case.vtp").exists()
    field = _read(written[0]).GetFieldData()
    assert field.GetAbstractArray("label_name").GetValue(0) == "Left Atrium"

    mtime = written[1].stat().st_mtime_ns
    with pytest.raises(DataError, match="case_left-atrium.vtp"):
        write_surfaces(vol, tmp_path / "case.vtp", labels)
    assert written[1].stat().st_mtime_ns == mtime  # nothing written when refusing
    assert write_surfaces(vol, tmp_path / "case.vtp", labels, overwrite=True) == written

    with pytest.raises(ConfigError, match="obj"):
        write_surfaces(vol, tmp_path / "case.obj", labels)
