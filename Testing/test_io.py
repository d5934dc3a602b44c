"""semiseg.io: format round trips with non-trivial geometry, and the errors users see."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from helpers_data import RAS_FLIP, make_label, make_volume, rotation, write_dicom_series
from semiseg.errors import DataError
from semiseg.io import from_sitk, read_label, read_volume, to_sitk, write_volume
from semiseg.volume import Volume

# NIfTI stores geometry as float32; the other formats keep doubles.
GEOMETRY_TOL = {".nii": 1e-5, ".nii.gz": 1e-5, ".nrrd": 1e-12, ".seg.nrrd": 1e-12, ".mha": 1e-12, ".mhd": 1e-12}
DIRECTIONS = {"rotation": rotation(), "ras-flip": RAS_FLIP}


def assert_same(read: Volume, original: Volume, tol: float) -> None:
    np.testing.assert_array_equal(read.array, original.array)
    np.testing.assert_allclose(read.spacing, original.spacing, rtol=0, atol=tol)
    np.testing.assert_allclose(read.origin, original.origin, rtol=0, atol=tol * 100)  # origins are ~100x spacings
    np.testing.assert_allclose(read.direction, original.direction, rtol=0, atol=tol)


@pytest.mark.parametrize("direction", DIRECTIONS.values(), ids=DIRECTIONS.keys())
@pytest.mark.parametrize("ext", GEOMETRY_TOL)
def test_round_trip_keeps_geometry_and_voxels(tmp_path, ext, direction):
    image = make_volume(direction=direction)
    path = write_volume(image, tmp_path / f"img{ext}")
    read = read_volume(path)
    assert read.array.dtype == np.float32
    assert read.path == str(path)
    assert_same(read, image, GEOMETRY_TOL[ext])


@pytest.mark.parametrize("ext", [".nii.gz", ".seg.nrrd"])
def test_integer_labels_are_written_as_uint8(tmp_path, ext):
    label = make_label(make_volume(direction=rotation()), values=(1, 2))
    label.array = label.array.astype(np.int64)
    read = read_label(write_volume(label, tmp_path / f"lab{ext}"))
    assert read.array.dtype == np.uint8
    assert_same(read, label, GEOMETRY_TOL[ext])


def test_large_label_values_stay_integer(tmp_path):
    label = make_label(make_volume(), values=(1, 2))
    label.array = label.array.astype(np.int64)
    label.array[label.array == 2] = 300
    read = read_label(write_volume(label, tmp_path / "lab.nrrd"))
    assert np.issubdtype(read.array.dtype, np.integer)
    assert set(np.unique(read.array)) == {0, 1, 300}


@pytest.mark.parametrize("direction", DIRECTIONS.values(), ids=DIRECTIONS.keys())
def test_dicom_series_round_trip(tmp_path, direction):
    ct = make_volume(shape=(5, 8, 10), spacing=(0.7, 0.9, 2.5), origin=(-80.5, 12.25, -300.0),
                     direction=direction, dtype=np.int16)
    read = read_volume(write_dicom_series(ct, tmp_path / "series"))
    assert read.array.dtype == np.int16
    assert_same(read, ct, 1e-4)


def test_folder_with_two_dicom_series_asks_which(tmp_path):
    ct = make_volume(shape=(3, 8, 10), dtype=np.int16)
    write_dicom_series(ct, tmp_path / "a", series_uid="1.2.3.4.1")
    write_dicom_series(ct, tmp_path / "b", series_uid="1.2.3.4.2")
    for f in (tmp_path / "b").iterdir():
        shutil.move(f, tmp_path / "a" / f"b_{f.name}")
    with pytest.raises(DataError, match="2 DICOM series") as err:
        read_volume(tmp_path / "a")
    assert str(tmp_path / "a") in str(err.value)
    assert read_volume(tmp_path / "a", series_id="1.2.3.4.2").array.shape == (3, 8, 10)


def test_folder_without_dicom_is_an_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello", encoding="utf-8")
    with pytest.raises(DataError, match="no DICOM series") as err:
        read_volume(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.nii.gz"
    with pytest.raises(DataError, match="not found") as err:
        read_volume(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("name", ["junk.nii.gz", "junk.nrrd", "junk.mha"])
def test_unreadable_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x00\x17garbage, not an image" * 20)
    with pytest.raises(DataError, match="cannot read") as err:
        read_volume(path)
    assert str(path) in str(err.value)


def test_2d_image_is_refused(tmp_path):
    path = tmp_path / "flat.nrrd"
    sitk.WriteImage(sitk.Image(8, 8, sitk.sitkFloat32), str(path))
    with pytest.raises(DataError, match="2D") as err:
        read_volume(path)
    assert str(path) in str(err.value)


def test_single_slice_volume_is_refused_as_2d(tmp_path):
    path = tmp_path / "slice.nii.gz"
    sitk.WriteImage(sitk.Image(8, 8, 1, sitk.sitkFloat32), str(path))
    with pytest.raises(DataError, match="2D"):
        read_volume(path)


def test_4d_image_is_refused(tmp_path):
    path = tmp_path / "series4d.nii.gz"
    frame = sitk.Image(6, 6, 4, sitk.sitkFloat32)
    sitk.WriteImage(sitk.JoinSeries([frame, frame, frame]), str(path))
    with pytest.raises(DataError, match="4D") as err:
        read_volume(path)
    assert str(path) in str(err.value)


def test_vector_image_is_refused(tmp_path):
    path = tmp_path / "rgb.mha"
    sitk.WriteImage(sitk.Image([6, 6, 4], sitk.sitkVectorUInt8, 3), str(path))
    with pytest.raises(DataError, match="components") as err:
        read_volume(path)
    assert str(path) in str(err.value)


def test_multi_layer_segmentation_is_refused_clearly(tmp_path):
    path = tmp_path / "layers.seg.nrrd"
    sitk.WriteImage(sitk.Image([6, 6, 4], sitk.sitkVectorUInt8, 2), str(path), True)
    with pytest.raises(DataError, match="multi-layer segmentation") as err:
        read_volume(path)
    assert str(path) in str(err.value)


def test_write_refuses_to_overwrite(tmp_path):
    path = write_volume(make_volume(seed=1), tmp_path / "img.nrrd")
    with pytest.raises(DataError, match="already exists") as err:
        write_volume(make_volume(seed=2), path)
    assert str(path) in str(err.value)
    np.testing.assert_array_equal(read_volume(path).array, make_volume(seed=1).array)  # untouched
    write_volume(make_volume(seed=2), path, overwrite=True)
    np.testing.assert_array_equal(read_volume(path).array, make_volume(seed=2).array)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.nrrd"]  # no temp files left behind


def test_write_creates_folders_and_mhd_keeps_its_data_file(tmp_path):
    path = write_volume(make_volume(), tmp_path / "a" / "b" / "img.mhd")
    assert sorted(p.name for p in path.parent.iterdir()) == ["img.mhd", "img.zraw"]
    np.testing.assert_array_equal(read_volume(path).array, make_volume().array)


def test_write_unknown_format(tmp_path):
    with pytest.raises(DataError, match="cannot write this format"):
        write_volume(make_volume(), tmp_path / "img.png")


def test_float_labels_with_integral_values_are_cast(tmp_path):
    label = make_label(make_volume(), values=(1, 2))
    label.array = label.array.astype(np.float32)
    read = read_label(write_volume(label, tmp_path / "lab.nii.gz"))
    assert read.array.dtype == np.uint8
    np.testing.assert_array_equal(read.array, label.array)


def test_non_integral_label_is_refused(tmp_path):
    path = write_volume(make_volume(), tmp_path / "soft.nii.gz")
    with pytest.raises(DataError, match="non-integer") as err:
        read_label(path)
    assert str(path) in str(err.value)


def _label_with(tmp_path, image: Volume, **geometry) -> tuple[str, str]:
    """Write `image` and a label whose geometry differs as given; return both paths."""
    image_path = write_volume(image, tmp_path / "img.nii.gz")
    base = make_label(image)
    label = Volume(geometry.pop("array", base.array), **{
        "spacing": image.spacing, "origin": image.origin, "direction": image.direction, **geometry})
    return str(image_path), str(write_volume(label, tmp_path / "lab.nii.gz"))


@pytest.mark.parametrize(
    "change, prop",
    [
        (lambda im: {"array": np.zeros((6, 8, 11), np.uint8)}, "size"),
        (lambda im: {"spacing": (0.8, 1.1, 2.6)}, "spacing"),
        (lambda im: {"origin": (-12.5, 30.25, 9.0)}, "origin"),
        (lambda im: {"direction": rotation(az=0.2)}, "direction"),
    ],
    ids=["shape", "spacing", "origin", "direction"],
)
def test_label_geometry_mismatch_names_files_and_property(tmp_path, change, prop):
    image = make_volume(direction=rotation())
    image_path, label_path = _label_with(tmp_path, image, **change(image))
    with pytest.raises(DataError, match=f"differ in {prop}") as err:
        read_label(label_path, reference=read_volume(image_path))
    message = str(err.value)
    assert image_path in message and label_path in message
    assert "label (" in message and "image (" in message  # both values shown


def test_label_within_tolerance_is_accepted(tmp_path):
    image = make_volume(direction=rotation())
    nudged = {"spacing": tuple(s * (1 + 2e-4) for s in image.spacing),
              "origin": tuple(o + 1e-4 for o in image.origin)}
    image_path, label_path = _label_with(tmp_path, image, **nudged)
    label = read_label(label_path, reference=read_volume(image_path))
    assert label.array.dtype == np.uint8


def test_sitk_helpers_round_trip():
    volume = make_volume(direction=RAS_FLIP)
    back = from_sitk(to_sitk(volume), path="mem")
    assert_same(back, volume, 0)
    assert back.path == "mem"
    bool_image = to_sitk(volume.with_array(volume.array > 0))
    assert bool_image.GetPixelID() == sitk.sitkUInt8
