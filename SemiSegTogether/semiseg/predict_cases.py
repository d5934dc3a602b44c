"""Which cases `semiseg predict` segments, and where each label map goes.

`--input` may be one image (or DICOM series folder), a folder of images, or several paths. A folder of
nnU-Net-named channel files (CASE_0000.nii.gz, CASE_0001.nii.gz ...) is one case per CASE, and its label
map is named CASE.nii.gz, as nnUNetv2_predict names it; other files keep their own name. All outputs are
planned before any prediction, so an existing one is reported (or skipped) before the model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from semiseg import nnunet
from semiseg.errors import DataError
from semiseg.io import WRITE_EXTENSIONS, image_extension, strip_image_extension

DEFAULT_OUTPUT_EXTENSION = ".nii.gz"  # for DICOM series folders, whose "extension" cannot be written


@dataclass
class PredictCase:
    id: str
    inputs: list[Path]  # its channels' files in channel order, or one DICOM series folder
    output: Path


def is_image_folder(path: Path) -> bool:
    """A folder of image files (many cases), not a DICOM series folder (one case)."""
    return path.is_dir() and any(p.is_file() and image_extension(p) in WRITE_EXTENSIONS for p in path.iterdir())


def is_many(inputs: list[Path]) -> bool:
    """Whether the inputs are several cases, so --output names a folder rather than a file."""
    return len(inputs) > 1 or is_image_folder(inputs[0])


def collect_cases(inputs: list[Path], n_channels: int = 1) -> list[tuple[str, list[Path]]]:
    """(case id, channel files) for every case in `inputs` (files, DICOM folders or folders of images)."""
    files: list[Path] = []
    for path in inputs:
        if not path.exists():
            raise DataError(f"{path}: no such file or folder")
        if is_image_folder(path):
            files += sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                            and image_extension(p) in WRITE_EXTENSIONS)
        else:
            files += _with_sibling_channels(path, n_channels)
    cases = _group_channels(files, n_channels)
    seen: dict[str, Path] = {}
    for case_id, channels in cases:
        if case_id in seen:
            raise DataError(f"{channels[0]} and {seen[case_id]}: both are case {case_id!r}, and their label maps "
                            f"would overwrite each other; predict them into different --output folders")
        seen[case_id] = channels[0]
    return cases


def _with_sibling_channels(path: Path, n_channels: int) -> list[Path]:
    """CASE_0000.nii.gz given to a model of several channels: CASE_0000 ... CASE_000N beside it."""
    match = nnunet.CHANNEL.match(strip_image_extension(path.name)) if path.is_file() else None
    if n_channels == 1 or match is None:
        return [path]
    ext = image_extension(path)
    siblings = [path.with_name(f"{match['case']}_{i:04d}{ext}") for i in range(n_channels)]
    return [p for p in siblings if p.is_file()]


def _group_channels(files: list[Path], n_channels: int) -> list[tuple[str, list[Path]]]:
    """nnU-Net channel files grouped per case when they are named so; single-channel files stay cases."""
    grouped: dict[str, dict[int, Path]] = {}
    for path in files:
        match = nnunet.CHANNEL.match(strip_image_extension(path.name)) if path.is_file() else None
        if match is None:
            if n_channels > 1:
                raise DataError(f"{path}: this model reads {n_channels} channels per case; name them "
                                f"CASE_0000{image_extension(path) or '.nii.gz'} ... CASE_{n_channels - 1:04d}")
            return [(_plain_id(p), [p]) for p in files]
        grouped.setdefault(str(path.parent / match["case"]), {})[int(match["channel"])] = path
    if n_channels == 1 and any(sorted(ch) != [0] for ch in grouped.values()):
        # e.g. Decathlon's la_0001, la_0002: numbered cases, not channels.
        return [(_plain_id(p), [p]) for p in files]
    cases = []
    for key, channels in grouped.items():
        if sorted(channels) != list(range(n_channels)):
            have = ", ".join(f"_{c:04d}" for c in sorted(channels))
            raise DataError(f"{key}_XXXX: this model reads channels _0000 ... _{n_channels - 1:04d}, found {have}")
        cases.append((Path(key).name, [channels[i] for i in range(n_channels)]))
    return cases


def _plain_id(path: Path) -> str:
    return strip_image_extension(path.name.rstrip("/"))


def output_extension(first_input: Path) -> str:
    ext = image_extension(first_input)
    return ext if ext in WRITE_EXTENSIONS and ext != ".seg.nrrd" else DEFAULT_OUTPUT_EXTENSION


def prediction_name(case_id: str, first_input: Path) -> str:
    """CASE.nii.gz for CASE_0000.nii.gz (nnU-Net) or CASE.nii.gz: what `semiseg evaluate` pairs by case id."""
    return f"{case_id}{output_extension(first_input)}"


def plan_outputs(cases: list[tuple[str, list[Path]]], out_dir: Path) -> list[PredictCase]:
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir}: --output must be a folder when --input holds several cases")
    return [PredictCase(case_id, files, out_dir / prediction_name(case_id, files[0])) for case_id, files in cases]


def existing_outputs(planned: list[PredictCase]) -> list[PredictCase]:
    return [case for case in planned if case.output.exists()]


def refuse_existing(existing: list[PredictCase]) -> None:
    """One error listing every output already there, before any work is done."""
    if not existing:
        return
    names = ", ".join(c.output.name for c in existing[:5]) + (" ..." if len(existing) > 5 else "")
    folder = existing[0].output.parent
    raise DataError(f"{folder}: {len(existing)} label map(s) already exist ({names}); pass --skip-existing to keep "
                    f"them and predict only the others, or --overwrite to replace them")
