"""Validation during training: sliding-window Dice on held-out labeled cases, the best checkpoint, and the
measured inference cost the model card reports."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from semiseg.atomic import atomic_path
from semiseg.events import EventWriter
from semiseg.fastpaths import FastPaths
from semiseg.infer import predict_classes
from semiseg.training.inference_cost import sliding_window_cost


class Validator:
    """Scores the method's inference network on `cases`; keeps `history` (one entry a validation), `best`
    ({"dice", "iteration"}) and writes `best_ckpt` whenever the mean Dice improves.

    `manifest_for(net, class_space=True)` gives the labels to predict, as class indices.
    """

    def __init__(self, method, cases: list, space, device: torch.device, manifest_for: Callable,
                 best_ckpt: Path, events: EventWriter, overlap: float, fast):
        self.method, self.cases, self.space, self.device = method, cases, space, device
        self.manifest_for, self.best_ckpt, self.events = manifest_for, best_ckpt, events
        self.overlap, self.fast = overlap, fast
        self.best: dict = {"dice": None, "iteration": None}
        self.history: list[dict] = []
        self.inference_cost: dict | None = None  # measured at validation, for the model card

    def validate(self, iteration: int) -> float:
        """Mean Dice over labels (each the mean over the cases annotated for it); emits a `validation` event."""
        net = self.method.inference_network()
        net.eval()
        manifest = self.manifest_for(net, class_space=True)
        per_label: dict[str, list[float]] = {n: [] for n in self.space.names}
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        for case in self.cases:
            chosen = manifest["labels"]
            if self.space.tasks and case.task >= 0:
                # The case is annotated for its task only: score (and, prompted, predict) those structures.
                chosen = [lab for lab in chosen if lab["task"] == self.space.task_names[case.task]]
            pred = predict_classes(net, manifest, case.image, self.device, chosen, overlap=self.overlap,
                                   fast=self.fast)
            for lab in chosen:
                per_label[lab["name"]].append(dice(pred == lab["value"], case.label == lab["value"]))
        # The model card's measured sliding-window cost (its whole-prediction cost is measured at the end).
        self.inference_cost = sliding_window_cost(time.perf_counter() - start, len(self.cases), self.device)
        scores = {n: float(np.mean(v)) for n, v in per_label.items() if v}
        mean = float(np.mean(list(scores.values()))) if scores else float("nan")
        self.history.append({"iteration": iteration, "dice": mean, "per_label": scores})
        self.events.emit("validation", iteration=iteration, dice=mean, per_label=scores)
        if self.best["dice"] is None or mean > self.best["dice"]:
            self.best = {"dice": mean, "iteration": iteration}
            with atomic_path(self.best_ckpt, ".pt") as tmp:
                torch.save({"iteration": iteration, "dice": mean, "inference": net.state_dict()}, tmp)
            self.events.emit("checkpoint", iteration=iteration, path=str(self.best_ckpt), kind="best")
        return mean


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice of two boolean masks of one shape; 1 when both are empty."""
    denom = pred.sum() + gt.sum()
    return 1.0 if denom == 0 else float(2 * np.logical_and(pred, gt).sum() / denom)
