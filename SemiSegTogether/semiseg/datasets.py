"""Dataset description (dataset.json or an imagesTr/labelsTr folder) and its validation.

Three layouts: a Decathlon/MONAI dataset.json listing every case, an nnU-Net v2 raw dataset
(`DatasetNNN_Name/` with channel_names/file_ending and CASE_XXXX channel files, see semiseg.nnunet),
and a bare imagesTr/labelsTr/... folder paired by file name.

`load_dataset` reads the description and checks that it is consistent and that
every listed file exists; `check_dataset` reads every image and label and
reports all problems at once, or a summary when there are none.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from semiseg import nnunet
from semiseg.errors import DataError
from semiseg.ownership import GeneratedFolder
from semiseg.io import image_extension, read_label, read_volume, strip_image_extension

SPLITS = ("training", "unlabeled", "test")
FOLDERS = {"training": ("imagesTr", "labelsTr"), "unlabeled": ("imagesUn", None), "test": ("imagesTs", "labelsTs")}
DEFAULT_TASK = "default"


@dataclass
class Case:
    id: str
    image: Path
    label: Path | None = None
    task: str | None = None
    domain: str | None = None
    more_channels: tuple[Path, ...] = ()  # channels 1.. of a multi-channel case (nnU-Net CASE_0001, ...)

    @property
    def images(self) -> list[Path]:
        """Every channel's file, in channel order (one for a single-channel case)."""
        return [self.image, *self.more_channels]


@dataclass
class Dataset:
    root: Path
    name: str
    labels: dict[str, int]  # name -> value, with "background": 0
    training: list[Case]
    unlabeled: list[Case]
    test: list[Case]
    tasks: dict[str, list[str]] = field(default_factory=dict)  # task -> label names; {} = one task
    modality: str = ""
    description: str = ""
    channels: list[str] = field(default_factory=lambda: ["image"])  # input channel names, in order

    @property
    def foreground_labels(self) -> dict[str, int]:
        return {name: value for name, value in self.labels.items() if value != 0}

    @property
    def task_names(self) -> list[str]:
        return sorted(self.tasks) if self.tasks else [DEFAULT_TASK]

    @property
    def domains(self) -> list[str]:
        return sorted({c.domain for c in self.all_cases() if c.domain is not None})

    def all_cases(self) -> list[Case]:
        return [*self.training, *self.unlabeled, *self.test]

    def split(self, name: str) -> list[Case]:
        if name not in SPLITS:
            raise DataError(f"dataset {self.name}: no split {name!r} (expected one of {', '.join(SPLITS)})")
        return getattr(self, name)

    def task_label_values(self, task: str | None) -> set[int]:
        """Label values a case of `task` may contain (background included)."""
        if task is None or not self.tasks:
            return set(self.labels.values())
        return {0} | {self.labels[name] for name in self.tasks[task]}


# ---------------------------------------------------------------- loading


LAYOUT_FOLDERS = ("imagesTr", "labelsTr", "imagesUn", "imagesTs", "labelsTs")


def prepare_dataset_folder(out: Path, overwrite: bool) -> GeneratedFolder:
    """A folder ready to receive a generated dataset, with the layout's subfolders.

    A non-empty folder is refused unless `overwrite`, and even then unless semiseg generated it (its
    marker file lists what it wrote): only those files go, never the user's, so a real dataset given by
    mistake is never touched. Record each file with the returned folder's `add` before writing it.
    """
    folder = GeneratedFolder(out, "dataset").prepare(overwrite)
    for sub in LAYOUT_FOLDERS:
        (out / sub).mkdir(parents=True, exist_ok=True)
    return folder


def load_dataset(path: str | os.PathLike) -> Dataset:
    """A dataset.json, a folder holding one, or an imagesTr/labelsTr/... folder."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: dataset not found")
    if path.is_file():
        return _load_json(path)
    if (path / "dataset.json").is_file():
        return _load_json(path / "dataset.json")
    if (path / "imagesTr").is_dir():
        return _load_folder(path)
    raise DataError(f"{path}: neither a dataset.json nor a folder with imagesTr/ (and labelsTr/) in it")


def _load_json(json_path: Path) -> Dataset:
    try:
        spec = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{json_path}: cannot read the dataset description ({e})") from None
    if not isinstance(spec, dict):
        raise DataError(f"{json_path}: expected a JSON object with 'labels' and 'training', got {type(spec).__name__}")
    if nnunet.is_nnunet_v2(spec):
        return _load_nnunet_v2(json_path, spec)
    for key in ("labels", "training"):
        if key not in spec:
            raise DataError(f"{json_path}: missing '{key}'")
    root = Path(os.path.abspath(json_path.parent))
    labels = _parse_labels(spec["labels"], json_path)
    tasks = _parse_tasks(spec.get("tasks", {}), labels, json_path)
    splits = {
        split: _parse_cases(spec.get(split, []), split, root, json_path, tasks, label_required=split == "training")
        for split in SPLITS
    }
    ds = Dataset(
        root=root,
        name=str(spec.get("name") or root.name),
        labels=labels,
        tasks=tasks,
        modality=_parse_modality(spec.get("modality")),
        channels=_decathlon_channels(spec.get("modality")),
        description=str(spec.get("description") or ""),
        **splits,
    )
    _check_structure(ds, json_path)
    return ds


def _load_nnunet_v2(json_path: Path, spec: dict) -> Dataset:
    """An nnU-Net v2 raw dataset: cases found by their CASE_XXXX<file_ending> names."""
    for key in ("labels", "channel_names", "file_ending"):
        if key not in spec:
            raise DataError(f"{json_path}: missing '{key}' (an nnU-Net v2 dataset.json has labels, "
                            f"channel_names, numTraining and file_ending)")
    nnunet.check_v2_labels(spec["labels"], json_path)
    root = Path(os.path.abspath(json_path.parent))
    channels = nnunet.channel_names(spec, json_path)
    ending = nnunet.file_ending(spec, json_path)
    splits = {}
    for split, (image_dir, label_dir) in FOLDERS.items():
        images = nnunet.channel_cases(root / image_dir, ending, len(channels))
        labels = nnunet.label_files(root / label_dir, ending, images) if label_dir else {}
        if split == "training":
            unlabeled = sorted(set(images) - set(labels))
            if unlabeled:
                raise DataError(f"{root / 'labelsTr'}: no label for case(s) {', '.join(unlabeled)} (expected "
                                f"{unlabeled[0]}{ending}; put unlabeled images in {nnunet.UNLABELED_FOLDER}/)")
        splits[split] = [Case(id=i, image=files[0], label=labels.get(i), more_channels=tuple(files[1:]))
                         for i, files in sorted(images.items())]
    expected = spec.get("numTraining")
    if expected is not None and _as_int(expected) != len(splits["training"]):
        raise DataError(f"{json_path}: numTraining is {expected} but {root / 'imagesTr'} holds "
                        f"{len(splits['training'])} case(s)")
    ds = Dataset(root=root, name=str(spec.get("name") or root.name), labels=_parse_labels(spec["labels"], json_path),
                 modality=", ".join(dict.fromkeys(channels)), description=str(spec.get("description") or ""),
                 channels=channels, **splits)
    _check_structure(ds, json_path)
    return ds


def _parse_labels(raw, where: Path) -> dict[str, int]:
    """name -> value; also Decathlon's {"0": "background", "1": "liver"}."""
    if not isinstance(raw, dict) or not raw:
        raise DataError(f"{where}: 'labels' must be a non-empty object of name -> value")
    if all(isinstance(k, str) and k.strip().isdigit() for k in raw):
        pairs = [(str(name), k) for k, name in raw.items()]
    else:
        pairs = list(raw.items())
    labels: dict[str, int] = {}
    for name, value in pairs:
        number = _as_int(value)
        if number is None or number < 0:
            raise DataError(f"{where}: label {name!r} has value {value!r}; expected a whole number >= 0")
        if number in labels.values():
            raise DataError(f"{where}: two labels have value {number}")
        labels[name] = number
    if labels.get("background", 0) != 0:
        raise DataError(f"{where}: 'background' must have value 0, not {labels['background']}")
    # Value 0 is background whatever it is called, and is always present.
    labels = {name: v for name, v in labels.items() if v != 0}
    if not labels:
        raise DataError(f"{where}: 'labels' declares no foreground label (only background)")
    return {"background": 0, **dict(sorted(labels.items(), key=lambda kv: kv[1]))}


def _as_int(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _parse_tasks(raw, labels: dict[str, int], where: Path) -> dict[str, list[str]]:
    if not isinstance(raw, dict):
        raise DataError(f"{where}: 'tasks' must be an object of task name -> list of label names")
    tasks = {}
    for task, names in raw.items():
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise DataError(f"{where}: task {task!r} must list one or more label names")
        unknown = [n for n in names if n not in labels or labels[n] == 0]
        if unknown:
            raise DataError(
                f"{where}: task {task!r} names label(s) {unknown} that are not foreground labels "
                f"in 'labels' ({', '.join(n for n in labels if n != 'background')})"
            )
        tasks[str(task)] = list(names)
    return tasks


def _parse_modality(raw) -> str:
    if isinstance(raw, dict):  # Decathlon: {"0": "MRI", "1": "ADC"} -> the first channel
        return str(next(iter(raw.values()), ""))
    return "" if raw is None else str(raw)


def _decathlon_channels(raw) -> list[str]:
    """One channel: Decathlon's multi-channel images are single 4D files, which the engine does not read
    (read_volume refuses them with a clear error), so a case listed here is one 3D image."""
    return [_parse_modality(raw) or "image"]


def _parse_cases(raw, split: str, root: Path, where: Path, tasks, label_required: bool) -> list[Case]:
    if not isinstance(raw, list):
        raise DataError(f"{where}: '{split}' must be a list")
    return [_parse_case(entry, f"{split}[{i}]", root, where, tasks, label_required) for i, entry in enumerate(raw)]


def _parse_case(entry, what: str, root: Path, where: Path, tasks, label_required: bool) -> Case:
    if isinstance(entry, str):
        entry = {"image": entry}
    if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
        raise DataError(f"{where}: {what} must be an object with an 'image' path")
    if label_required and not isinstance(entry.get("label"), str):
        raise DataError(f"{where}: {what} has no 'label' (list images without labels under 'unlabeled')")
    image = _existing(root, entry["image"], what, where)
    label = _existing(root, entry["label"], what, where) if entry.get("label") else None
    task = entry.get("task")
    if task is not None and str(task) not in tasks:
        known = ", ".join(tasks) if tasks else "none: there is no 'tasks' object"
        raise DataError(f"{where}: {what} has task {task!r}, which is not in 'tasks' ({known})")
    domain = entry.get("domain")
    return Case(
        id=str(entry.get("id") or strip_image_extension(image.name)),
        image=image,
        label=label,
        task=None if task is None else str(task),
        domain=None if domain is None else str(domain),
    )


def _existing(root: Path, relative: str, what: str, where: Path) -> Path:
    # abspath, not resolve: tidy "..", but keep the user's symlinked folders as they named them.
    path = Path(os.path.abspath(root / relative))
    if not path.exists():
        raise DataError(f"{where}: {what} lists {relative}, which does not exist ({path})")
    return path


def _check_structure(ds: Dataset, where: Path) -> None:
    seen: dict[str, Path] = {}
    for case in ds.all_cases():
        if case.id in seen and seen[case.id] != case.image:
            raise DataError(
                f"{where}: two cases have id {case.id!r} ({seen[case.id]} and {case.image}); give them an 'id'"
            )
        seen[case.id] = case.image
    if not any(c.label is not None for c in ds.training):
        raise DataError(f"{where}: no labeled case — 'training' needs at least one image with a label")


def _load_folder(root: Path) -> Dataset:
    """imagesTr/labelsTr (required), imagesUn, imagesTs/labelsTs (optional), paired by file name; nnU-Net's
    CASE_XXXX channel names (CASE_0000, CASE_0001 ... with labels CASE) are grouped into one case."""
    root = Path(os.path.abspath(root))
    channel_named = _channel_named(root)
    splits = {}
    for split, (image_dir, label_dir) in FOLDERS.items():
        labels_required = split == "training"
        folder_cases = _channel_folder_cases if channel_named else _folder_cases
        splits[split] = folder_cases(root / image_dir, root / label_dir if label_dir else None, labels_required)
    n_channels = len(splits["training"][0].images) if splits["training"] else 1
    ds = Dataset(root=root, name=root.name, labels={}, channels=[f"channel {i}" for i in range(n_channels)]
                 if n_channels > 1 else ["image"], **splits)
    for case in ds.all_cases():
        if len(case.images) != n_channels:
            raise DataError(f"{case.image}: case {case.id} has {len(case.images)} channel(s), the training cases "
                            f"{n_channels}")
    ds.labels = _labels_from_files(ds)
    _check_structure(ds, root)
    return ds


def _channel_named(root: Path) -> bool:
    """Every training image is named CASE_XXXX and its label is named CASE (nnU-Net), not CASE_XXXX."""
    images = _image_entries(root / "imagesTr") if (root / "imagesTr").is_dir() else {}
    labels = _image_entries(root / "labelsTr") if (root / "labelsTr").is_dir() else {}
    matches = [nnunet.CHANNEL.match(stem) for stem in images]
    return bool(images) and all(matches) and not any(stem in labels for stem in images)


def _channel_folder_cases(image_dir: Path, label_dir: Path | None, labels_required: bool) -> list[Case]:
    label_files = _image_entries(label_dir) if label_dir is not None and label_dir.is_dir() else {}
    cases = []
    for case_id, files in sorted(nnunet.channel_cases(image_dir, None, None).items()):
        label = label_files.get(case_id)
        if label is None and labels_required:
            raise DataError(f"{files[0]}: no label for it in {label_dir} (expected a file named {case_id}.*)")
        cases.append(Case(id=case_id, image=files[0], label=label, more_channels=tuple(files[1:])))
    return cases


def _folder_cases(image_dir: Path, label_dir: Path | None, labels_required: bool) -> list[Case]:
    if not image_dir.is_dir():
        return []
    label_files = _image_entries(label_dir) if label_dir is not None and label_dir.is_dir() else {}
    cases = []
    for case_id, image in sorted(_image_entries(image_dir).items()):
        label = label_files.get(case_id)
        if label is None and labels_required:
            raise DataError(f"{image}: no label for it in {label_dir} (expected a file named {case_id}.*)")
        cases.append(Case(id=case_id, image=image, label=label))
    return cases


def _image_entries(folder: Path) -> dict[str, Path]:
    """case id -> image file (or DICOM series folder) in `folder`, hidden files skipped."""
    entries = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not (path.is_dir() or image_extension(path)):
            continue
        case_id = strip_image_extension(path.name)
        if case_id in entries:
            raise DataError(f"{folder}: two files for case {case_id!r} ({entries[case_id].name}, {path.name})")
        entries[case_id] = path
    return entries


def _labels_from_files(ds: Dataset) -> dict[str, int]:
    """{"background": 0, "foreground": 1}, or label_N names when the files hold other values."""
    values: set[int] = set()
    for case in ds.all_cases():
        if case.label is not None:
            values |= {int(v) for v in np.unique(read_label(case.label).array)}
    values.discard(0)
    if values <= {1}:
        return {"background": 0, "foreground": 1}
    return {"background": 0, **{f"label_{v}": v for v in sorted(values)}}


def read_channels(case: Case) -> list:
    """Every channel's Volume of a case, in order, each checked to lie on channel 0's grid."""
    volumes = [read_volume(path) for path in case.images]
    for extra in volumes[1:]:
        if not extra.same_geometry(volumes[0]):
            raise DataError(f"{extra.path}: this channel does not lie on the grid of channel 0 ({case.image}); "
                            f"every channel of a case must share size, spacing, origin and direction")
    return volumes


# ---------------------------------------------------------------- checking


@dataclass
class CaseInfo:
    id: str
    split: str
    shape: tuple[int, int, int]  # array order (z, y, x)
    spacing: tuple[float, float, float]  # (x, y, z) mm
    task: str | None = None
    domain: str | None = None
    label_volumes_ml: dict[str, float] | None = None  # None for an unlabeled case
    digest: str | None = None  # content hash of the image (None when images are not read)


@dataclass
class CheckReport:
    name: str
    root: Path
    counts: dict[str, int]  # split -> number of cases
    labeled_counts: dict[str, int]  # split -> cases with a label
    cases: list[CaseInfo]
    labels: dict[str, int]
    domains: list[str]
    tasks: dict[str, list[str]]
    modality: str = ""
    channels: list[str] = field(default_factory=lambda: ["image"])

    def label_volumes(self, name: str) -> list[float]:
        """Volumes (mL) of label `name` over the labeled cases whose task covers it."""
        return [c.label_volumes_ml[name] for c in self.cases if c.label_volumes_ml and name in c.label_volumes_ml]

    def format(self) -> str:
        lines = [f"Dataset {self.name} ({self.root})", f"modality: {self.modality or 'not given'}"]
        if len(self.channels) > 1:
            lines.append(f"channels: {', '.join(f'{i}: {n}' for i, n in enumerate(self.channels))}")
        lines.append("")
        lines.append(f"{'split':<12}{'cases':>7}{'labeled':>9}")
        for split in SPLITS:
            lines.append(f"{split:<12}{self.counts[split]:>7}{self.labeled_counts[split]:>9}")
        if self.cases:
            lines += ["", _range_line("size (x, y, z)", [c.shape[::-1] for c in self.cases], "{:d}")]
            lines.append(_range_line("spacing (mm)", [c.spacing for c in self.cases], "{:.4g}"))
        lines += ["", f"{'label':<24}{'value':>6}{'cases':>7}{'mean mL':>10}{'min mL':>10}{'max mL':>10}"]
        for name, value in self.labels.items():
            if value == 0:
                continue
            vols = self.label_volumes(name)
            stats = (f"{np.mean(vols):>10.2f}{min(vols):>10.2f}{max(vols):>10.2f}") if vols else f"{'-':>10}" * 3
            lines.append(f"{name:<24}{value:>6}{len(vols):>7}{stats}")
        lines.append("")
        lines.append("tasks: " + ("; ".join(f"{t}: {', '.join(n)}" for t, n in self.tasks.items()) or "one (all labels)"))
        lines.append("domains: " + (", ".join(self.domains) or "-"))
        return "\n".join(lines)


def _range_line(title: str, rows, fmt: str) -> str:
    rows = np.asarray(rows)
    lo = ", ".join(fmt.format(v.item()) for v in rows.min(axis=0))
    hi = ", ".join(fmt.format(v.item()) for v in rows.max(axis=0))
    return f"{title:<16}min ({lo})  max ({hi})"


def check_dataset(ds: Dataset, read_images: bool = True) -> CheckReport:
    """Read every image and label, collect every problem, raise one DataError listing them all.

    With read_images=False only labels are read: faster, but no image/label grid
    check, and unlabeled cases get no per-case entry in the report.
    """
    problems: list[str] = []
    if not any(c.label is not None for c in ds.training):
        problems.append(f"{ds.root}: no labeled case in 'training'")
    infos = []
    digests: dict[str, list[tuple[str, Case]]] = {}
    for split in SPLITS:
        for i, case in enumerate(ds.split(split)):
            info = _check_case(ds, case, split, read_images, problems)
            if info is not None:
                infos.append(info)
                if info.digest is not None:
                    digests.setdefault(info.digest, []).append((f"{split}[{i}]", case))
    problems += _leakage(ds, digests)
    if problems:
        listing = "\n".join(f"  - {p}" for p in problems)
        raise DataError(f"dataset {ds.name} ({ds.root}) has {len(problems)} problem(s):\n{listing}")
    return CheckReport(
        name=ds.name,
        root=ds.root,
        counts={s: len(ds.split(s)) for s in SPLITS},
        labeled_counts={s: sum(c.label is not None for c in ds.split(s)) for s in SPLITS},
        cases=infos,
        labels=dict(ds.labels),
        domains=ds.domains,
        tasks={t: list(n) for t, n in ds.tasks.items()},
        modality=ds.modality,
        channels=list(ds.channels),
    )


def _check_case(ds: Dataset, case: Case, split: str, read_images: bool, problems: list[str]) -> CaseInfo | None:
    image = None
    if not read_images and case.label is None:
        return None
    if read_images:
        try:
            image = read_channels(case)[0]
        except DataError as e:
            problems.append(str(e))
            return None
    geometry = image
    volumes = None
    if case.label is not None:
        try:
            label = read_label(case.label, reference=image)
        except DataError as e:
            problems.append(str(e))
            return None
        geometry = label
        volumes = _check_label(ds, case, label.array, float(np.prod(label.spacing)), problems)
    shape = tuple(int(n) for n in geometry.array.shape)
    spacing = tuple(float(s) for s in geometry.spacing)
    digest = None if image is None else _content_digest(image)
    return CaseInfo(case.id, split, shape, spacing, case.task, case.domain, volumes, digest)


def _content_digest(volume) -> str:
    """Hash of the voxels and the grid: the same scan under two names (or two formats) hashes alike."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((volume.array.shape, str(volume.array.dtype), tuple(round(float(v), 4) for v in volume.spacing)))
             .encode())
    h.update(np.ascontiguousarray(volume.array).tobytes())
    return h.hexdigest()


def _leakage(ds: Dataset, digests: dict[str, list[tuple[str, Case]]]) -> list[str]:
    """A file listed twice, or one scan (by content) both in training and in test, or twice in training: the
    validation or test score would then measure memory, not generalisation."""
    problems = []
    where: dict[Path, list[str]] = {}
    for split in SPLITS:
        for i, case in enumerate(ds.split(split)):
            where.setdefault(case.image, []).append(f"{split}[{i}]")
    for path, entries in where.items():
        if len(entries) > 1:
            problems.append(f"{path}: listed {len(entries)} times ({', '.join(entries)}); list each scan once")
    for group in digests.values():
        paths = {case.image for _, case in group}
        if len(paths) < 2:
            continue  # one file listed twice: reported above
        splits = [entry.split("[")[0] for entry, _ in group]
        if "test" in splits and any(s != "test" for s in splits) or splits.count("training") > 1:
            listing = ", ".join(f"{entry} {case.image}" for entry, case in group)
            problems.append(f"identical images (same voxels and grid) in {listing}: one scan counted twice "
                            f"leaks between training, validation and test; keep one")
    return problems


def _check_label(ds: Dataset, case: Case, array: np.ndarray, voxel_mm3: float, problems) -> dict[str, float]:
    """Value checks on one label; returns its per-label volumes in mL."""
    counts = _value_counts(array)
    values = set(counts)
    declared = set(ds.labels.values())
    undeclared = sorted(values - declared)
    if undeclared:
        problems.append(
            f"{case.label}: values {undeclared} are not declared in the dataset's labels "
            f"({', '.join(f'{n}={v}' for n, v in ds.labels.items())})"
        )
    if not values - {0}:
        problems.append(f"{case.label}: no foreground — every voxel is background (0)")
    allowed = ds.task_label_values(case.task)
    outside = sorted((values & declared) - allowed)
    if outside:
        names = [n for n, v in ds.labels.items() if v in outside]
        problems.append(
            f"{case.label}: case {case.id} of task {case.task!r} contains {', '.join(names)} "
            f"(values {outside}), which task {case.task!r} does not annotate ({', '.join(ds.tasks[case.task])})"
        )
    covered = {n: v for n, v in ds.foreground_labels.items() if v in allowed}
    return {n: counts.get(v, 0) * voxel_mm3 / 1000.0 for n, v in covered.items()}


def _value_counts(array: np.ndarray) -> dict[int, int]:
    """value -> voxel count; bincount when it can (much faster than unique on big volumes)."""
    if array.size and array.min() >= 0 and array.max() < 65536:
        counts = np.bincount(array.ravel().astype(np.intp, copy=False))
        return {int(v): int(n) for v, n in enumerate(counts) if n}
    values, counts = np.unique(array, return_counts=True)
    return {int(v): int(n) for v, n in zip(values, counts)}


# ---------------------------------------------------------------- one set of rules for every command

_VALIDATED: dict[tuple, CheckReport] = {}


def validate_dataset(path: str | os.PathLike) -> tuple[Dataset, CheckReport]:
    """`check`'s rules, as train and bench apply them before any work: the dataset and every file in it
    (DataError listing every problem). Remembered per process while no file changes, so a caller that
    validates the same data twice reads it once."""
    ds = load_dataset(path)
    key = _state_key(ds)
    if key not in _VALIDATED:
        _VALIDATED[key] = check_dataset(ds)
    return ds, _VALIDATED[key]


def _state_key(ds: Dataset) -> tuple:
    files = [ds.root / "dataset.json", *(p for c in ds.all_cases() for p in (c.image, c.label) if p is not None)]
    stats = []
    for f in files:
        try:
            st = f.stat()
            stats.append((str(f), st.st_mtime_ns, st.st_size))
        except OSError:
            stats.append((str(f), None, None))
    return tuple(stats)
