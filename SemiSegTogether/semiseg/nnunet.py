"""nnU-Net v2 raw datasets: `DatasetNNN_Name/` with a v2 dataset.json and channel-numbered images.

Layout (nnU-Net v2 `documentation/dataset_format.md`)::

    DatasetNNN_Name/
        dataset.json        {"channel_names": {"0": "T2", "1": "ADC"}, "labels": {"background": 0, "PZ": 1},
                             "numTraining": 32, "file_ending": ".nii.gz"}
        imagesTr/CASE_0000.nii.gz, CASE_0001.nii.gz ...   one file per channel
        labelsTr/CASE.nii.gz
        imagesTs/CASE_0000.nii.gz ...                     optional, labelsTs/CASE.nii.gz optional
        imagesUn/CASE_0000.nii.gz ...                     SemiSeg's unlabeled pool: nnU-Net never reads it

nnU-Net itself only lists `imagesTr/` and `labelsTr/` (github.com/MIC-DKFZ/nnUNet at 0e49508,
nnunetv2/utilities/utils.py:57-70, `get_filenames_of_train_images_and_targets`; https://github.com/MIC-DKFZ/nnUNet/blob/0e495086eb108ff79afe106291e8c15bd2f2bc3a/nnunetv2/utilities/utils.py#L57-L70), so `imagesUn/` can sit in the same folder without changing
what nnU-Net trains on.
"""

from __future__ import annotations

import re
from pathlib import Path

from semiseg.errors import DataError
from semiseg.io import READ_EXTENSIONS, image_extension, strip_image_extension

CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
UNLABELED_FOLDER = "imagesUn"


def is_nnunet_v2(spec: dict) -> bool:
    """A v2 dataset.json: channel_names/file_ending and no Decathlon 'training' list."""
    return "training" not in spec and ("channel_names" in spec or "file_ending" in spec)


def channel_names(spec: dict, where: Path) -> list[str]:
    """['T2', 'ADC'] from {"0": "T2", "1": "ADC"}; the keys must be 0..C-1."""
    raw = spec.get("channel_names")
    if not isinstance(raw, dict) or not raw:
        raise DataError(f"{where}: 'channel_names' must be a non-empty object like {{\"0\": \"MRI\"}}")
    keys = {str(k).strip(): v for k, v in raw.items()}
    if set(keys) != {str(i) for i in range(len(keys))}:
        raise DataError(f"{where}: 'channel_names' keys must be 0..{len(keys) - 1}, got {sorted(keys)}")
    return [str(keys[str(i)]) for i in range(len(keys))]


def file_ending(spec: dict, where: Path) -> str:
    ending = spec.get("file_ending")
    if not isinstance(ending, str) or ending.lower() not in READ_EXTENSIONS:
        raise DataError(f"{where}: 'file_ending' must be one of {', '.join(READ_EXTENSIONS)}, got {ending!r}")
    return ending


def check_v2_labels(raw, where: Path) -> None:
    """v2 labels are name -> value; regions (name -> [values]) and the ignore label have no SemiSeg meaning."""
    if not isinstance(raw, dict):
        return  # datasets.py reports the shape error
    regions = [name for name, value in raw.items() if isinstance(value, (list, tuple))]
    if regions:
        raise DataError(f"{where}: region-based labels ({', '.join(regions)}) are not supported; give each "
                        f"structure one label value")
    if "ignore" in raw:
        raise DataError(f"{where}: nnU-Net's 'ignore' label (partly annotated cases) is not supported; list "
                        f"partly annotated cases without their label under {UNLABELED_FOLDER}/ instead")


def channel_cases(folder: Path, ending: str | None, n_channels: int | None) -> dict[str, list[Path]]:
    """case id -> its channel files in channel order, from CASE_XXXX<ending> names in `folder`.

    With `ending` None any supported image extension is accepted; with `n_channels` None the number
    of channels is whatever the cases agree on. A case missing a channel is an error naming it.
    """
    if not folder.is_dir():
        return {}
    found: dict[str, dict[int, Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if ending is not None and not path.name.endswith(ending):
            continue
        stem = path.name[: -len(ending)] if ending is not None else strip_image_extension(path.name)
        if ending is None and not image_extension(path.name):
            continue
        match = CHANNEL.match(stem)
        if match is None:
            raise DataError(f"{path}: not named CASE_XXXX{ending or '.nii.gz'} (nnU-Net's channel numbering, "
                            f"e.g. {stem}_0000{ending or '.nii.gz'})")
        found.setdefault(match["case"], {})[int(match["channel"])] = path
    expected = n_channels if n_channels is not None else max((len(c) for c in found.values()), default=0)
    cases = {}
    for case_id, channels in found.items():
        if sorted(channels) != list(range(expected)):
            missing = [f"{case_id}_{i:04d}" for i in range(expected) if i not in channels]
            extra = [f"{case_id}_{i:04d}" for i in sorted(channels) if i >= expected]
            detail = f"missing {', '.join(missing)}" if missing else f"unexpected {', '.join(extra)}"
            raise DataError(f"{folder}: case {case_id!r} does not have channels 0..{expected - 1} ({detail})")
        cases[case_id] = [channels[i] for i in range(expected)]
    return cases


def label_files(folder: Path, ending: str, case_ids) -> dict[str, Path]:
    """case id -> label file CASE<ending> in `folder`, for the cases that have one."""
    return {case_id: folder / f"{case_id}{ending}" for case_id in case_ids
            if (folder / f"{case_id}{ending}").is_file()}
