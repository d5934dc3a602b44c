"""How good a method's targets on the unlabeled pool are, as training goes on: the network that gives its
pseudo-labels (a teacher, two subnetworks' union, a diffusion sampler) predicts each unlabeled case, scored
against labels the method never trains on.

Measurement only: `--pool-truth DIR` names labels for the unlabeled cases that a benchmark holds back (LA2018's
labelsUn_truth, say). The loop reads them here and nowhere else; no loss, sampler or checkpoint choice sees them.
A measurement costs one prediction per pool case at every validation, and under a --time budget that time is
the run's.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from semiseg.datasets import Case
from semiseg.errors import ConfigError
from semiseg.events import EventWriter
from semiseg.infer import predict_classes
from semiseg.training.validation import dice


def with_pool_truth(unlabeled: list[Case], folder: str | Path, flag: str = "--pool-truth") -> list[Case]:
    """The unlabeled cases, each with its truth from `folder` (named like the case: CASE.nii.gz, CASE.nrrd...);
    an error names `flag`, the option that gave the folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{flag} {folder}: not a folder")
    found = {}
    for path in folder.iterdir():
        found.setdefault(path.name.split(".")[0], path)
    missing = [c.id for c in unlabeled if c.id not in found]
    if missing:
        raise ConfigError(f"{flag} {folder}: no label for unlabeled case(s) {', '.join(missing[:5])}"
                          f"{' ...' if len(missing) > 5 else ''}")
    return [replace(c, label=found[c.id]) for c in unlabeled]


class PoolQuality:
    """Scores `method.pseudo_label_network()` on prepared pool cases with labels; keeps `history`, one entry
    ({"iteration", "dice", "per_label"}) a measurement, and emits a `pool_quality` event."""

    def __init__(self, method, cases: list, device: torch.device, manifest_for, events: EventWriter,
                 overlap: float, fast):
        self.method, self.cases, self.device, self.manifest_for = method, cases, device, manifest_for
        self.events, self.overlap, self.fast = events, overlap, fast
        self.history: list[dict] = []

    def measure(self, iteration: int) -> float:
        net = self.method.pseudo_label_network()
        net.eval()
        manifest = self.manifest_for(net, class_space=True)
        per_label: dict[str, list[float]] = {lab["name"]: [] for lab in manifest["labels"]}
        # A sampler's noise (A&D's DDIM) is drawn from a forked generator: training's random stream is the same
        # with or without the measurement.
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            for case in self.cases:
                pred = predict_classes(net, manifest, case.image, self.device, overlap=self.overlap, fast=self.fast)
                for lab in manifest["labels"]:
                    per_label[lab["name"]].append(dice(pred == lab["value"], case.label == lab["value"]))
        scores = {n: float(np.mean(v)) for n, v in per_label.items()}
        mean = float(np.mean(list(scores.values())))
        self.history.append({"iteration": iteration, "dice": mean, "per_label": scores})
        self.events.emit("pool_quality", iteration=iteration, dice=mean, per_label=scores)
        return mean
