"""Is a NIfTI file's voxel data all there, and all finite?

SimpleITK (ITK's NIfTI reader) reads a `.nii.gz` cut short without a word, the missing voxels 0, and
turns NaN and infinite float voxels into 0. So the data is checked here first, straight from the file:
its length against what the header announces, and float voxels for NaN/inf, in chunks, so that a
huge or truncated file costs no more memory than one chunk.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from semiseg.errors import DataError

# NIfTI datatype code -> numpy type of one stored value (complex and RGB: checked for length only).
_FLOAT_TYPES = {16: np.float32, 64: np.float64}
CHUNK_BYTES = 1 << 24


def check_nifti_payload(path: Path) -> None:
    """DataError naming `path` if its voxel data is shorter than the header says or holds NaN/inf."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as stream:
            header = stream.read(540)
            offset, expected, datatype, endian = _parse_header(header, path)
            # The voxel data may start inside the 540 bytes already read (NIfTI-1: at 352).
            first = header[offset:]
            stream.read(max(0, offset - len(header)))  # skip header extensions up to the voxel data
            got, bad = _scan_voxels(first, stream, expected, _FLOAT_TYPES.get(datatype), endian)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{path}: truncated or corrupt compressed file ({exc}); the voxel data is incomplete "
                        f"— copy or export the image again") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read this image ({exc})") from None
    if got < expected:
        raise DataError(f"{path}: truncated: the header announces {expected} bytes of voxel data but the file "
                        f"holds {got} ({100 * got / max(expected, 1):.0f}%) — copy or export the image again")
    if bad:
        raise non_finite_error(path, bad)


def non_finite_error(path, count: int) -> DataError:
    return DataError(f"{path}: {count} voxel(s) are NaN or infinite; replace them (e.g. by the background value) "
                     f"before using this image")


def _parse_header(header: bytes, path: Path) -> tuple[int, int, int, str]:
    """(voxel data offset, voxel data bytes, datatype code, byte order) from a NIfTI-1 or NIfTI-2 header."""
    for endian in ("<", ">"):
        if len(header) >= 4 and struct.unpack(endian + "i", header[:4])[0] == 348 and len(header) >= 348:
            datatype, bitpix = struct.unpack(endian + "hh", header[70:74])
            dims = struct.unpack(endian + "8h", header[40:56])
            offset = int(struct.unpack(endian + "f", header[108:112])[0])
            break
        if len(header) >= 540 and struct.unpack(endian + "i", header[:4])[0] == 540:
            datatype, bitpix = struct.unpack(endian + "hh", header[12:16])
            dims = struct.unpack(endian + "8q", header[16:80])
            offset = int(struct.unpack(endian + "q", header[168:176])[0])
            break
    else:
        raise DataError(f"{path}: not a NIfTI file (no valid header), or the file is cut short")
    n = int(dims[0])
    if not 1 <= n <= 7 or any(d < 0 for d in dims[1:n + 1]):
        raise DataError(f"{path}: NIfTI header has invalid dimensions {dims[:n + 1]}")
    voxels = int(np.prod([int(d) for d in dims[1:n + 1]], dtype=object))
    minimum = 352 if struct.unpack(endian + "i", header[:4])[0] == 348 else 544
    return max(offset, minimum), voxels * int(bitpix) // 8, int(datatype), endian


def _scan_voxels(first: bytes, stream, expected: int, float_type, endian: str) -> tuple[int, int]:
    """(bytes of voxel data present, NaN/inf count among them), reading chunk by chunk after `first`."""
    got, bad = 0, 0
    leftover = b""
    pending = first[:expected]
    while got < expected:
        chunk = pending or stream.read(min(CHUNK_BYTES, expected - got))
        pending = b""
        if not chunk:
            break
        got += len(chunk)
        if float_type is not None:
            data = leftover + chunk
            itemsize = np.dtype(float_type).itemsize
            usable = len(data) - len(data) % itemsize
            values = np.frombuffer(data[:usable], dtype=np.dtype(float_type).newbyteorder(endian))
            bad += int(np.count_nonzero(~np.isfinite(values)))
            leftover = data[usable:]
    return got, bad
