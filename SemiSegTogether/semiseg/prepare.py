"""From a dataset on disk to preprocessed in-memory cases the streams and validation use.

Label *values* (any integers the dataset declares) become contiguous class indices 0..C-1 here;
the model package maps them back, so a dataset with values {0, 2, 7} works.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from semiseg.datasets import DEFAULT_TASK, Case, Dataset, read_channels
from semiseg.input_profile import training_spacing
from semiseg.io import read_geometry, read_label
from semiseg.sampling import PreparedCase
from semiseg.transforms import Preprocessing, preprocess_image, preprocess_label
from semiseg.volume import Volume


@dataclass
class LabelSpace:
    """Foreground labels in class order (class index = position + 1), with tasks and domains."""

    names: list[str]
    values: list[int]
    tasks: list[str] = field(default_factory=list)  # sorted task names; empty = one implicit task
    task_classes: list[list[int]] = field(default_factory=list)  # class indices per task
    label_task: dict[str, str] = field(default_factory=dict)
    domains: list[str] = field(default_factory=list)

    @classmethod
    def from_dataset(cls, ds: Dataset) -> "LabelSpace":
        fg = sorted(ds.foreground_labels.items(), key=lambda kv: kv[1])
        names, values = [n for n, _ in fg], [v for _, v in fg]
        tasks = sorted(ds.tasks)
        task_classes = [sorted(names.index(n) + 1 for n in ds.tasks[t]) for t in tasks]
        label_task = {n: t for t in tasks for n in ds.tasks[t]}
        return cls(names, values, tasks, task_classes, label_task, list(ds.domains))

    @property
    def task_names(self) -> list[str]:
        """The declared tasks, or one implicit task covering every label (what a prompted model lists)."""
        return self.tasks or [DEFAULT_TASK]

    def task_of(self, name: str) -> str:
        return self.label_task.get(name, DEFAULT_TASK) if self.tasks else DEFAULT_TASK

    @property
    def n_classes(self) -> int:
        return len(self.names) + 1

    def lookup(self) -> np.ndarray:
        """value → class index table."""
        lut = np.zeros(max(self.values) + 1, dtype=np.int64)
        for i, v in enumerate(self.values):
            lut[v] = i + 1
        return lut

    def task_index(self, case: Case) -> int:
        if not self.tasks:
            return 0
        return self.tasks.index(case.task) if case.task in self.tasks else -1

    def domain_index(self, case: Case) -> int:
        """Index into the dataset's domains; a dataset that names none is one domain (0); a case without a
        domain in a dataset that names some is unknown (-1)."""
        if not self.domains:
            return 0
        return self.domains.index(case.domain) if case.domain in self.domains else -1


def preprocess_channels(volumes: list[Volume], prep: Preprocessing) -> np.ndarray:
    """(C, d, h, w) float32: each channel resampled and normalised on its own, as nnU-Net does."""
    return np.stack([preprocess_image(v, prep) for v in volumes])


def prepare_case(case: Case, prep: Preprocessing, space: LabelSpace, with_label: bool) -> PreparedCase:
    volumes = read_channels(case)
    volume = volumes[0]
    image = preprocess_channels(volumes, prep)
    label = None
    if with_label and case.label is not None:
        lab = read_label(case.label, reference=volume)
        label = space.lookup()[preprocess_label(lab, prep)]
    return PreparedCase(id=case.id, image=image, label=label, task=space.task_index(case),
                        domain=space.domain_index(case))


def training_preprocessing(cfg, cases: list[Case]) -> tuple[Preprocessing, list[tuple]]:
    """The run's preprocessing: canonical orientation, and the asked spacing or, when none was asked, the
    training cases' median spacing (recorded, so a scan at another spacing is resampled at prediction);
    with the cases' (spacing, direction), read from the headers."""
    geometries = [read_geometry(k.image) for k in cases]
    spacing = tuple(cfg.spacing) if cfg.spacing else training_spacing(geometries)
    return Preprocessing(spacing=spacing, intensity=cfg.intensity, orientation="canonical"), geometries


def split_validation(training: list[Case], n_val: int | None) -> tuple[list[Case], list[Case]]:
    """Hold out the last `n_val` labeled cases for validation (never the test split).

    The split is fixed by the dataset's order, not the seed, so every method and seed is selected on
    the same cases. Default: a fifth of the labeled cases (at least one) when there are three or more.
    """
    if n_val is None:
        n_val = max(1, round(0.2 * len(training))) if len(training) >= 3 else 0
    if n_val >= len(training):
        from semiseg.errors import ConfigError
        raise ConfigError(f"{n_val} validation case(s) would leave no labeled case to train on "
                          f"({len(training)} labeled)")
    return (training[:len(training) - n_val], training[len(training) - n_val:]) if n_val else (training, [])
