"""Infinite, seeded, resumable patch streams for the labeled and unlabeled batches.

Semi-supervised methods draw a labeled and an unlabeled batch every iteration.
Cases are drawn with replacement, so three labeled cases still fill any batch
size on any number of ranks; the generator is seeded with (seed, rank) so each
rank sees different samples, and its state is saved with a checkpoint so a
resumed run continues the exact stream.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .errors import ConfigError, DataError
from .transforms import Augmentation, build_augmentation, foreground_voxels, sample_patch


@dataclass
class PreparedCase:
    id: str
    image: np.ndarray  # (C, D, H, W) float32, preprocessed (C input channels, usually 1)
    label: np.ndarray | None = None  # (D, H, W) int64 on the image's grid
    task: int = 0  # prompt index for multi-task (VerSemi) models
    domain: int = 0  # scanner/site index, for domain-aware methods


class PatchStream:
    """Endless batches: {"image" (B,1,d,h,w) float32, "label" (B,d,h,w) long, "task" (B,) long,
    "domain" (B,) long, "case" [ids]}; "label" only when `with_labels`.

    `augment` is a strength for build_augmentation or any callable on a sample
    dict; only an Augmentation draws from the stream's generator, so only it is
    covered by state()/load_state().
    """

    def __init__(
        self,
        cases: Sequence[PreparedCase],
        patch: Sequence[int],
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        fg_ratio: float = 0.33,
        augment: str | Callable | None = "standard",
        with_labels: bool = True,
        task_balanced: bool = False,
    ):
        self.cases = list(cases)
        if not self.cases:
            raise DataError("no cases to sample patches from")
        self.patch = tuple(int(p) for p in patch)
        if len(self.patch) != 3 or min(self.patch) < 1:
            raise ConfigError(f"patch size must be 3 positive integers, got {tuple(patch)}")
        if int(batch_size) < 1:
            raise ConfigError(f"batch size must be at least 1, got {batch_size}")
        if not 0.0 <= fg_ratio <= 1.0:
            raise ConfigError(f"fg_ratio must lie in [0, 1], got {fg_ratio}")
        self.batch_size = int(batch_size)
        self.seed, self.rank = int(seed), int(rank)
        self.fg_ratio = float(fg_ratio)
        self.with_labels = with_labels
        # Task-balanced: draw a task uniformly, then a case of it (VerSemi's option; the reference draws
        # cases uniformly, so a large dataset dominates a small one).
        tasks = sorted({c.task for c in self.cases})
        self._by_task = [np.array([i for i, c in enumerate(self.cases) if c.task == t]) for t in tasks] \
            if task_balanced and len(tasks) > 1 else None
        for c in self.cases:
            if c.image.ndim != 4 or c.image.shape[0] < 1:
                raise DataError(f"case {c.id}: image must be (C, D, H, W), got {c.image.shape}")
            if with_labels:
                if c.label is None:
                    raise DataError(f"case {c.id}: has no label but the stream needs labels")
                if c.label.shape != c.image.shape[1:]:
                    raise DataError(f"case {c.id}: label shape {c.label.shape} differs from image {c.image.shape[1:]}")
        if augment is None or isinstance(augment, str):
            augment = build_augmentation(augment or "none")
        self.augment = augment
        self._rng = np.random.default_rng([self.seed, self.rank])
        self.batches = 0
        # Scanning every label for foreground once, not once per patch.
        self._fg = [foreground_voxels(c.label) if with_labels else None for c in self.cases]

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        rng = self._rng
        if self._by_task is None:
            picks = rng.integers(len(self.cases), size=self.batch_size)
        else:
            picks = [int(rng.choice(self._by_task[t])) for t in rng.integers(len(self._by_task), size=self.batch_size)]
        images, labels = [], []
        for i in picks:
            c = self.cases[i]
            img, lab = sample_patch(
                c.image, c.label if self.with_labels else None, self.patch, rng,
                fg_ratio=self.fg_ratio, foreground=self._fg[i],
            )
            sample = {"image": img} if lab is None else {"image": img, "label": lab}
            if isinstance(self.augment, Augmentation):
                sample = self.augment(sample, rng=rng)
            else:
                sample = self.augment(sample)
            images.append(sample["image"])
            labels.append(sample.get("label"))
        self.batches += 1
        batch = {
            "image": torch.from_numpy(np.stack(images).astype(np.float32, copy=False)),
            "task": torch.tensor([self.cases[i].task for i in picks], dtype=torch.long),
            "domain": torch.tensor([self.cases[i].domain for i in picks], dtype=torch.long),
            "case": [self.cases[i].id for i in picks],
        }
        if self.with_labels:
            batch["label"] = torch.from_numpy(np.stack(labels).astype(np.int64, copy=False))
        return batch

    def state(self) -> dict:
        """JSON-safe stream position; PCG64's 128-bit integers are kept as strings."""
        s = self._rng.bit_generator.state
        return {
            "bit_generator": s["bit_generator"],
            "state": str(s["state"]["state"]),
            "inc": str(s["state"]["inc"]),
            "has_uint32": int(s["has_uint32"]),
            "uinteger": int(s["uinteger"]),
            "batches": self.batches,
            "seed": self.seed,
            "rank": self.rank,
        }

    def load_state(self, d: dict) -> None:
        try:
            if d["bit_generator"] != self._rng.bit_generator.state["bit_generator"]:
                raise ConfigError(f"stream state is for {d['bit_generator']}, not {self._rng.bit_generator.state['bit_generator']}")
            self._rng.bit_generator.state = {
                "bit_generator": d["bit_generator"],
                "state": {"state": int(d["state"]), "inc": int(d["inc"])},
                "has_uint32": int(d["has_uint32"]),
                "uinteger": int(d["uinteger"]),
            }
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"invalid patch stream state: {e}") from None
        self.batches = int(d.get("batches", 0))
