"""Reading and writing 3D images and labelmaps through SimpleITK.

Formats: NIfTI (.nii, .nii.gz), NRRD (.nrrd, .seg.nrrd), MetaImage (.mha, .mhd)
and, for reading only, a folder holding a DICOM series. Geometry (spacing,
origin, direction in ITK/LPS) is kept as the file gives it; every problem a
user can fix is a `DataError` that names the file.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from semiseg.atomic import temporary_dir
from semiseg.errors import DataError
from semiseg.nifti_payload import check_nifti_payload, non_finite_error
from semiseg.volume import Volume

# Longest first, so "x.seg.nrrd" matches ".seg.nrrd" before ".nrrd".
WRITE_EXTENSIONS = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
READ_EXTENSIONS = WRITE_EXTENSIONS + (".dcm",)

# Tolerances for "the label lies on the image's grid".
SPACING_RTOL = 1e-3
ORIGIN_TOL_PER_MM_SPACING = 1e-3
DIRECTION_ATOL = 1e-3


def image_extension(path: str | os.PathLike) -> str:
    """The supported extension `path` ends with (lower case), or '' if none."""
    name = Path(path).name.lower()
    for ext in READ_EXTENSIONS:
        if name.endswith(ext):
            return ext
    return ""


def strip_image_extension(name: str) -> str:
    """'case_1.nii.gz' -> 'case_1', 'seg.seg.nrrd' -> 'seg'; other names unchanged."""
    ext = image_extension(name)
    return name[: len(name) - len(ext)] if ext else name


# ---------------------------------------------------------------- conversion


def from_sitk(image: sitk.Image, path: str | os.PathLike | None = None) -> Volume:
    """A 3D scalar SimpleITK image as a Volume (array in z, y, x order)."""
    _check_3d_scalar(image, path)
    return Volume(
        array=sitk.GetArrayFromImage(image),
        spacing=tuple(float(v) for v in image.GetSpacing()),
        origin=tuple(float(v) for v in image.GetOrigin()),
        direction=tuple(float(v) for v in image.GetDirection()),
        path=None if path is None else str(path),
    )


def to_sitk(volume: Volume) -> sitk.Image:
    """The Volume as a SimpleITK image with the same geometry."""
    array = np.asarray(volume.array)
    if array.ndim != 3:
        raise DataError(f"{volume.path or 'volume'}: expected a 3D array, got shape {array.shape}")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    elif array.dtype == np.float16:  # SimpleITK has no half-float pixel type
        array = array.astype(np.float32)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=False)
    image.SetSpacing([float(v) for v in volume.spacing])
    image.SetOrigin([float(v) for v in volume.origin])
    image.SetDirection([float(v) for v in volume.direction])
    return image


def _check_3d_scalar(image: sitk.Image, path) -> None:
    where = path if path is not None else "image"
    components = image.GetNumberOfComponentsPerPixel()
    if components > 1:
        if str(path or "").lower().endswith(".seg.nrrd"):
            raise DataError(
                f"{where}: a multi-layer segmentation ({components} layers); only single-layer "
                "labelmaps are supported — in 3D Slicer, export the segmentation to a labelmap volume "
                "(or collapse it to one layer) and save that"
            )
        raise DataError(f"{where}: has {components} components per voxel (vector/RGB image); expected a scalar 3D image")
    dim = image.GetDimension()
    if dim == 2 or (dim == 3 and 1 in image.GetSize()):
        raise DataError(f"{where}: is a 2D image (size {image.GetSize()}); expected a 3D volume")
    if dim != 3:
        raise DataError(f"{where}: is a {dim}D image (size {image.GetSize()}); expected a single 3D volume")


# ---------------------------------------------------------------- reading


def read_volume(path: str | os.PathLike, series_id: str | None = None) -> Volume:
    """Read a 3D scalar image file, or the DICOM series in a folder.

    `series_id` picks one series when the folder holds several.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    image = _read_dicom_series(path, series_id) if path.is_dir() else _read_file(path)
    return from_sitk(image, path)


def _header(path: Path) -> sitk.ImageFileReader:
    """A reader that has read `path`'s header only (size, type, geometry), no voxels."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise DataError(f"{path}: cannot read this image ({_sitk_reason(e)})") from None
    return reader


def _read_file(path: Path) -> sitk.Image:
    """Header first (size, type: refuse what cannot fit), then the data is checked complete, then read."""
    reader = _header(path)
    check_fits_in_memory(path, reader.GetSize(), reader.GetNumberOfComponents(), reader.GetPixelID())
    if image_extension(path) in (".nii", ".nii.gz"):
        check_nifti_payload(path)  # ITK reads a short file silently and zeroes NaN/inf
    try:
        image = reader.Execute()
    except RuntimeError as e:
        raise DataError(f"{path}: cannot read this image ({_sitk_reason(e)})") from None
    _check_finite(image, path)
    return image


def check_fits_in_memory(path, size, components: int, pixel_id: int) -> None:
    """Refuse, from the header alone, an image whose voxels (as float32, as training and prediction hold
    them, plus the stored copy) would not fit in the memory available now."""
    voxels = int(np.prod([int(n) for n in size], dtype=object)) * max(1, int(components))
    stored = np.dtype(_numpy_type(pixel_id)).itemsize
    needed = voxels * (stored + 4)
    available = available_memory_bytes()
    if available is not None and needed > available:
        raise DataError(
            f"{path}: the header describes {' x '.join(str(int(n)) for n in size)} voxels, which need "
            f"{needed / 2**30:.1f} GiB in memory; only {available / 2**30:.1f} GiB is available — is the header "
            f"corrupt? Otherwise crop or downsample the image first"
        )


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else None (not checked)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _numpy_type(pixel_id: int):
    try:
        return sitk.GetArrayViewFromImage(sitk.Image([1, 1, 1], pixel_id)).dtype
    except (RuntimeError, TypeError):
        return np.float64  # unusual types: assume the widest scalar


def _check_finite(image: sitk.Image, path) -> None:
    array = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(array.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise non_finite_error(path, bad)


def read_geometry(path: str | os.PathLike) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(spacing, direction) of an image from its header alone (a DICOM folder is read whole)."""
    path = Path(path)
    if path.is_dir():
        volume = read_volume(path)
        return tuple(volume.spacing), tuple(volume.direction)
    reader = _header(path)
    return tuple(float(v) for v in reader.GetSpacing()), tuple(float(v) for v in reader.GetDirection())


def _read_dicom_series(folder: Path, series_id: str | None) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    ids = list(reader.GetGDCMSeriesIDs(str(folder)))
    if not ids:
        raise DataError(f"{folder}: a folder with no DICOM series in it (expected an image file or a DICOM folder)")
    if series_id is None:
        if len(ids) > 1:
            raise DataError(
                f"{folder}: holds {len(ids)} DICOM series ({', '.join(ids)}); say which one "
                "(series_id) or put each series in its own folder"
            )
        series_id = ids[0]
    elif series_id not in ids:
        raise DataError(f"{folder}: has no DICOM series {series_id} (found {', '.join(ids)})")
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), series_id))
    try:
        return reader.Execute()
    except RuntimeError as e:
        raise DataError(f"{folder}: cannot read DICOM series {series_id} ({_sitk_reason(e)})") from None


def _sitk_reason(error: RuntimeError) -> str:
    """The useful last line of a SimpleITK exception (the rest is C++ file/line noise)."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    reason = lines[-1] if lines else "unknown error"
    return reason.replace("sitk::ERROR: ", "")


def read_label(path: str | os.PathLike, reference: Volume | None = None) -> Volume:
    """Read a labelmap: integer values, and on `reference`'s grid when one is given."""
    label = read_volume(path)
    label.array = _integer_labels(label.array, label.path)
    if reference is not None:
        check_same_grid(label, reference)
    return label


def _integer_labels(array: np.ndarray, path) -> np.ndarray:
    if np.issubdtype(array.dtype, np.integer):
        return array
    if not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"{path}: label voxels have type {array.dtype}; expected integers")
    bad = ~np.isfinite(array) | (array != np.round(array))
    if bad.any():
        example = array[bad].flat[0]
        raise DataError(
            f"{path}: label has non-integer values (e.g. {example}) in {int(bad.sum())} voxels; "
            "a labelmap must hold whole numbers"
        )
    return narrow_integer(array)


def check_same_grid(label: Volume, image: Volume) -> None:
    """Raise DataError if `label` does not lie on `image`'s voxel grid."""
    where = f"label {label.path} and image {image.path}"
    if label.array.shape != image.array.shape:
        raise DataError(
            f"{where} differ in size: label {_size_xyz(label)} vs image {_size_xyz(image)} voxels (x, y, z)"
        )
    if not np.allclose(label.spacing, image.spacing, rtol=SPACING_RTOL, atol=0):
        raise DataError(f"{where} differ in spacing: label {_fmt(label.spacing)} vs image {_fmt(image.spacing)} mm")
    origin_tol = ORIGIN_TOL_PER_MM_SPACING * max(abs(s) for s in image.spacing)
    if not np.allclose(label.origin, image.origin, rtol=0, atol=origin_tol):
        raise DataError(f"{where} differ in origin: label {_fmt(label.origin)} vs image {_fmt(image.origin)} mm")
    if not np.allclose(label.direction, image.direction, rtol=0, atol=DIRECTION_ATOL):
        raise DataError(
            f"{where} differ in direction: label {_fmt(label.direction)} vs image {_fmt(image.direction)}"
        )


def _size_xyz(volume: Volume) -> tuple[int, ...]:
    return tuple(int(n) for n in volume.array.shape[::-1])


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.6g}" for v in values) + ")"


# ---------------------------------------------------------------- writing


def narrow_integer(array: np.ndarray) -> np.ndarray:
    """Integer (or integral float/bool) voxels in the smallest common type that holds them.

    uint8 first: it is what Slicer and most tools expect for labelmaps.
    """
    if array.size == 0:
        return array.astype(np.uint8)
    lo, hi = array.min(), array.max()
    for dtype in (np.uint8, np.int16, np.uint16, np.int32, np.int64):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return array.astype(dtype, copy=False)
    raise DataError(f"label values {lo}..{hi} do not fit a 64-bit integer")


def write_volume(volume: Volume, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write `volume` to `path` (format from the extension), atomically.

    The image is first written under its final name into a temporary folder next
    to `path`, then moved into place, so a reader never sees a half-written file
    and a crash leaves the old file intact.
    """
    path = Path(path)
    ext = image_extension(path)
    if ext not in WRITE_EXTENSIONS:
        raise DataError(f"{path}: cannot write this format; use one of {', '.join(WRITE_EXTENSIONS)}")
    if path.exists() and not overwrite:
        raise DataError(f"{path}: already exists (choose another name or allow overwriting)")
    if path.is_dir():
        raise DataError(f"{path}: is a folder; give a file name to write the image to")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise DataError(f"{path}: cannot write there, {parent} is a file, not a folder")
            break
    image = to_sitk(_for_writing(volume))
    tmp_dir = temporary_dir(path, ".tmp")
    try:
        tmp_path = tmp_dir / path.name
        try:
            sitk.WriteImage(image, str(tmp_path), useCompression=ext != ".nii")
        except RuntimeError as e:
            raise DataError(f"{path}: cannot write ({_sitk_reason(e)})") from None
        # .mhd also writes a .raw/.zraw data file: move it before the header names it.
        for produced in sorted(tmp_dir.iterdir(), key=lambda p: p.name == path.name):
            os.replace(produced, path.parent / produced.name)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return path


def _for_writing(volume: Volume) -> Volume:
    array = np.asarray(volume.array)
    if array.dtype == bool or np.issubdtype(array.dtype, np.integer):
        array = narrow_integer(array)
    if array is volume.array:
        return volume
    return Volume(array, volume.spacing, volume.origin, volume.direction, volume.path)
