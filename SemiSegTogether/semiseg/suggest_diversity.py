"""Diversity and typicality of pool cases, on small descriptors of each case (its image and its predicted
foreground): what `semiseg suggest` combines with a case's value so that K picks are not K near-copies
(semiseg.suggest explains the choices)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

TYPICALITY_NEIGHBOURS = 20  # TypiClust's k: the most, for large sets
NEAR_COPY = 0.5  # novelty reaches 1 at this fraction of the median distance between cases
DESCRIPTOR_SIZE = 12


def descriptor(image: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """(d, h, w) image and foreground probability → a vector whose Euclidean distances compare cases: each
    half is the 12³ resampling, divided by √size so that image and shape count alike."""
    parts = []
    for arr in (image, foreground):
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None, None]
        small = F.interpolate(t, size=(DESCRIPTOR_SIZE,) * 3, mode="trilinear", align_corners=False).flatten()
        parts.append(small.numpy() / math.sqrt(small.numel()))
    return np.concatenate(parts)


def typicality(pool: np.ndarray, labeled: np.ndarray | None = None,
               neighbours: int = TYPICALITY_NEIGHBOURS) -> np.ndarray:
    """(N,) typicality of each pool case in (0, 1]: 1 / mean distance to its k nearest cases among the
    labeled and pool cases, k = ⌈√(L + N)⌉ up to `neighbours`, divided by the pool's largest.

    Args:
        pool: (N, F) descriptors of the pool cases.
        labeled: (L, F) descriptors of the labeled cases (or None).
    """
    everything = pool if labeled is None else np.concatenate([labeled, pool])
    if len(everything) < 2:
        return np.ones(len(pool))
    distances = np.linalg.norm(pool[:, None] - everything[None], axis=-1)
    k = min(neighbours, math.ceil(math.sqrt(len(everything))), len(everything) - 1)
    nearest = np.sort(distances, axis=1)[:, 1:k + 1].mean(1)  # column 0 is the case itself
    density = 1.0 / np.maximum(nearest, 1e-12)
    return density / density.max()


def distances_and_scale(pool: np.ndarray, labeled: np.ndarray) -> tuple[np.ndarray, float]:
    """Distances between all cases (labeled first, then the pool) and the distance at which novelty is 1."""
    everything = np.concatenate([labeled, pool])
    distances = np.linalg.norm(everything[:, None] - everything[None], axis=-1)
    off_diagonal = distances[~np.eye(len(everything), dtype=bool)]
    scale = NEAR_COPY * float(np.median(off_diagonal)) if off_diagonal.size else 1.0
    return distances, scale if scale > 0 else 1.0


def novelty_against(distances: np.ndarray, scale: float, case: int, references: list[int]
                    ) -> tuple[float, int | None]:
    """(novelty of `case` in [0, 1], the nearest of `references`): its distance to that nearest / `scale`."""
    if not references:
        return 1.0, None
    near = min(references, key=lambda r: distances[case, r])
    return min(1.0, float(distances[case, near]) / scale), near


def rank_pool(value: Sequence[float], pool: np.ndarray, labeled: np.ndarray | None = None
              ) -> list[tuple[int, float, float, int | None]]:
    """Greedy ranking of the pool by value (typicality or uncertainty) × novelty.

    Args:
        value: (N,) per pool case, in [0, 1].
        pool: (N, F) descriptors of the pool cases.
        labeled: (L, F) descriptors of the labeled cases (or None).

    Returns:
        [(pool index, score, novelty, nearest)] in pick order; `nearest` indexes the labeled cases
        (0..L-1) and then the pool (L + i) — the reference case closest to the pick, None when there is none.
    """
    labeled = np.zeros((0, pool.shape[1])) if labeled is None else labeled
    distances, scale = distances_and_scale(pool, labeled)
    n_lab = len(labeled)
    references = list(range(n_lab))
    remaining = list(range(len(pool)))
    order = []
    while remaining:
        best = None
        for i in remaining:
            novelty, near = novelty_against(distances, scale, n_lab + i, references)
            score = float(value[i]) * novelty
            if best is None or score > best[1]:
                best = (i, score, novelty, near)
        order.append(best)
        remaining.remove(best[0])
        references.append(n_lab + best[0])
    return order
