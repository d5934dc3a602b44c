"""The cases a run trains and validates on: read, preprocessed, split; and the patch size."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from semiseg.datasets import load_dataset
from semiseg.input_profile import training_profile
from semiseg.methods import MethodContext
from semiseg.prepare import LabelSpace, prepare_case, split_validation, training_preprocessing
from semiseg.training.config import TrainConfig
from semiseg.training.pool_quality import with_pool_truth


class TrainingData:
    """The dataset with its label space and preprocessing; training, validation and unlabeled cases prepared
    (resampled and normalised) once; the patch, given or from the training cases' median shape."""

    def __init__(self, cfg: TrainConfig):
        self.dataset = load_dataset(Path(cfg.data))
        self.space = LabelSpace.from_dataset(self.dataset)
        train_cases, val_cases = split_validation(self.dataset.training, cfg.validation_cases())
        # The case the model card's prediction cost is measured on: the first held out, else the first labeled.
        self.measured_case = (val_cases or self.dataset.training)[0]
        self.prep, geometries = training_preprocessing(cfg, train_cases)
        self.train_cases = [prepare_case(k, self.prep, self.space, True) for k in train_cases]
        self.val_cases = [prepare_case(k, self.prep, self.space, True) for k in val_cases]
        # Measurement only (semiseg.training.pool_quality): the pool with held-back truth, read once; what
        # trains is the same cases without it.
        self.pool_truth_cases = [prepare_case(k, self.prep, self.space, True)
                                 for k in with_pool_truth(self.dataset.unlabeled, cfg.pool_truth)] \
            if cfg.pool_truth else []
        self.unlabeled_cases = [replace(k, label=None) for k in self.pool_truth_cases] or \
            [prepare_case(k, self.prep, self.space, False) for k in self.dataset.unlabeled]
        self.patch = list(cfg.patch) if cfg.patch else auto_patch([k.image.shape[1:] for k in self.train_cases])
        self.input_profile = training_profile(geometries, [k.image[0] for k in self.train_cases])

    def split_domains(self) -> dict[str, list[str]]:
        ds = self.dataset
        return {split: sorted({k.domain for k in cases if k.domain})
                for split, cases in (("labeled", ds.training), ("unlabeled", ds.unlabeled), ("test", ds.test))}

    def class_fractions(self) -> list[float]:
        counts = sum(np.bincount(k.label.ravel(), minlength=self.space.n_classes) for k in self.train_cases)
        return [float(v) for v in counts / max(1, counts.sum())]


def method_context(space: LabelSpace, iterations: int, domains: dict[str, list[str]], class_fractions: list[float],
                   options: dict, in_channels: int = 1) -> MethodContext:
    """What a method is built from: the label space, the run's length, the data's setting, its options."""
    return MethodContext(in_channels=in_channels, n_classes=space.n_classes, total_iterations=iterations,
                         n_tasks=max(1, len(space.tasks)), n_domains=max(1, len(space.domains)),
                         task_classes=space.task_classes or [list(range(1, space.n_classes))],
                         domains=domains, class_fractions=class_fractions, options=dict(options))


def auto_patch(shapes: list[tuple[int, ...]], cap: int = 128) -> list[int]:
    """Median case shape, rounded down to a multiple of 16 (at least 16, at most `cap`) per axis."""
    med = np.median(np.array(shapes), axis=0)
    return [int(min(cap, max(16, (int(m) // 16) * 16))) for m in med]
