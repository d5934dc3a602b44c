"""`semiseg suggest`: which unlabeled case is most worth annotating next.

Two ingredients, both computed by the model itself (no label of the pool is read):

- **Uncertainty.** The case is segmented under several *views*: test-time flips along each axis and, for a
  model holding two subnetworks (dual-contrast's V-Net + ResNet), each subnetwork on its own. Where the views
  disagree the model is unsure, and a correction teaches it most (query-by-committee, Seung et al., COLT 1992;
  test-time-augmentation uncertainty, Wang et al., Neurocomputing 2019). Per structure, `disagreement` is
  1 − the mean Dice between each view's mask and the consensus mask; `entropy` is the normalised entropy of
  the consensus probabilities over the voxels any view calls foreground. `uncertainty` is their mean; a
  structure that no view finds counts as fully uncertain (disagreement 1).
- **Diversity.** K picks should not be K near-copies (core-set selection, Sener & Savarese, ICLR 2018): each
  case has a small descriptor (its image and its predicted foreground, both resampled to 12³), and
  `novelty` is the distance to the nearest labeled or already picked case, relative to the typical distance
  between cases (clipped at 1).

The pool is ranked greedily: at each step the case with the largest `uncertainty × novelty` is taken, and
novelty is recomputed against it. The score of a case is its value at the step it was taken.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from semiseg.datasets import Case, load_dataset
from semiseg.errors import ConfigError
from semiseg.infer import sliding_window_probabilities
from semiseg.io import read_label, read_volume
from semiseg.transforms import Preprocessing, preprocess_image, preprocess_label

FLIP_AXES: tuple[tuple[int, ...], ...] = ((), (2,), (3,), (4,))  # identity, then each spatial axis of (1,1,d,h,w)
DESCRIPTOR_SIZE = 12
Progress = Callable[[int, int, str], None]


@dataclass
class CaseUncertainty:
    id: str
    uncertainty: float
    disagreement: float
    entropy: float
    views: int
    missing: list[str]  # structures no view finds


@dataclass
class Suggestion:
    rank: int
    id: str
    image: str
    score: float
    uncertainty: float
    disagreement: float
    entropy: float
    novelty: float
    nearest: str | None  # the most similar labeled or earlier-picked case
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


# ---- uncertainty ---------------------------------------------------------------------------------------
def view_networks(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """The networks whose outputs are compared: each subnetwork of a two-view model, else the model itself."""
    subnetworks = getattr(net, "subnetworks", None)
    if callable(subnetworks):
        names = ("subnetwork A", "subnetwork B")
        return [(names[i] if i < 2 else f"subnetwork {i}", sub) for i, sub in enumerate(subnetworks())]
    return [("model", net)]


def view_probabilities(net: nn.Module, manifest: dict, image: np.ndarray, device: torch.device,
                       overlap: float = 0.25, flips: Sequence[tuple[int, ...]] = FLIP_AXES
                       ) -> list[tuple[list[str], torch.Tensor]]:
    """Preprocessed image (d, h, w) → per label group [(structure names, probs (V, 1 + n, d, h, w))], V views.

    A plain model has one group (all its structures); a prompted model (VerSemi) one group per task prompt.
    """
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None].to(device)
    patch = manifest["patch_size"]
    if manifest.get("prompted"):
        groups = [([lab["name"] for lab in manifest["labels"] if lab.get("task") == t["name"]], t["index"])
                  for t in manifest["tasks"]]
        groups = [(names, index) for names, index in groups if names]
    else:
        groups = [([lab["name"] for lab in manifest["labels"]], None)]
    out = []
    for names, task in groups:
        views = []
        for _, sub in view_networks(net):
            for axes in flips:
                xi = x.flip(axes) if axes else x
                probs = sliding_window_probabilities(sub, xi, patch, overlap=overlap, task=task)
                views.append((probs.flip(axes) if axes else probs)[0])
        out.append((names, torch.stack(views)))
    return out


def _dice(a: torch.Tensor, b: torch.Tensor) -> float:
    denom = float(a.sum() + b.sum())
    return 1.0 if denom == 0 else float(2 * (a & b).sum()) / denom


def measure_uncertainty(case_id: str, groups: list[tuple[list[str], torch.Tensor]]) -> CaseUncertainty:
    """Disagreement and entropy of the views of one case (see the module docstring)."""
    disagreements, entropies, missing, n_views = [], [], [], 1
    for names, probs in groups:
        n_views, n_channels = probs.shape[0], probs.shape[1]
        consensus = probs.mean(0)
        hard_views, hard = probs.argmax(1), consensus.argmax(0)
        entropy = -(consensus * consensus.clamp_min(1e-8).log()).sum(0) / math.log(n_channels)
        for j, name in enumerate(names, start=1):
            in_views = hard_views == j
            region = in_views.any(0)
            if not bool(region.any()):
                missing.append(name)
                disagreements.append(1.0)
                entropies.append(0.0)
                continue
            agreement = float(np.mean([_dice(in_views[v], hard == j) for v in range(n_views)]))
            disagreements.append(1.0 - agreement)
            entropies.append(float(entropy[region].mean()))
    disagreement, entropy = float(np.mean(disagreements)), float(np.mean(entropies))
    return CaseUncertainty(case_id, 0.5 * (disagreement + entropy), disagreement, entropy, n_views, missing)


# ---- diversity ---------------------------------------------------------------------------------------
def descriptor(image: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """(d, h, w) image and foreground probability → a vector whose Euclidean distances compare cases: each
    half is the 12³ resampling, divided by √size so that image and shape count alike."""
    parts = []
    for arr in (image, foreground):
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None, None]
        small = F.interpolate(t, size=(DESCRIPTOR_SIZE,) * 3, mode="trilinear", align_corners=False).flatten()
        parts.append(small.numpy() / math.sqrt(small.numel()))
    return np.concatenate(parts)


def rank_pool(uncertainty: Sequence[float], pool: np.ndarray, labeled: np.ndarray | None = None
              ) -> list[tuple[int, float, float, int | None]]:
    """Greedy ranking of the pool by uncertainty × novelty.

    Args:
        uncertainty: (N,) per pool case, in [0, 1].
        pool: (N, F) descriptors of the pool cases.
        labeled: (L, F) descriptors of the labeled cases (or None).

    Returns:
        [(pool index, score, novelty, nearest)] in pick order; `nearest` indexes the labeled cases
        (0..L-1) and then the pool (L + i) — the reference case closest to the pick, None when there is none.
    """
    labeled = np.zeros((0, pool.shape[1])) if labeled is None else labeled
    everything = np.concatenate([labeled, pool])
    distances = np.linalg.norm(everything[:, None] - everything[None], axis=-1)
    off_diagonal = distances[~np.eye(len(everything), dtype=bool)]
    scale = float(np.median(off_diagonal)) if off_diagonal.size else 1.0
    scale = scale if scale > 0 else 1.0
    n_lab = len(labeled)
    references = list(range(n_lab))
    remaining = list(range(len(pool)))
    order = []
    while remaining:
        best = None
        for i in remaining:
            if references:
                near = min(references, key=lambda r: distances[n_lab + i, r])
                novelty = min(1.0, float(distances[n_lab + i, near]) / scale)
            else:
                near, novelty = None, 1.0
            score = float(uncertainty[i]) * novelty
            if best is None or score > best[1]:
                best = (i, score, novelty, near)
        order.append(best)
        remaining.remove(best[0])
        references.append(n_lab + best[0])
    return order


# ---- the command -----------------------------------------------------------------------------------------
def _reason(u: CaseUncertainty, novelty: float, nearest: str | None, nearest_is_pick: bool) -> str:
    parts = [f"{u.views} views agree at Dice {1 - u.disagreement:.2f}, entropy {u.entropy:.2f} in the predicted "
             f"region"]
    if u.missing:
        parts.insert(0, f"no view finds {', '.join(u.missing)}")
    if nearest is None:
        parts.append("nothing labeled to compare with")
    elif novelty >= 1.0:
        parts.append(f"unlike the labeled cases (nearest {nearest})")
    else:
        kind = "a case picked before it" if nearest_is_pick else "a labeled case"
        parts.append(f"novelty {novelty:.2f}: resembles {nearest}, {kind}")
    return "; ".join(parts)


def suggest(model: Path, data: Path, n: int | None = None, device: str = "auto", overlap: float = 0.25,
            progress: Progress | None = None) -> list[Suggestion]:
    """Rank `data`'s unlabeled cases for annotation with `model`; the first `n` (all when None)."""
    from semiseg.devices import resolve_device
    from semiseg.model import load_model

    if n is not None and n < 1:
        raise ConfigError("-n must be at least 1")
    dataset = load_dataset(Path(data))
    if not dataset.unlabeled:
        raise ConfigError(f"{data}: lists no unlabeled cases to suggest from")
    dev = resolve_device(device)
    net, manifest = load_model(Path(model), dev)
    prep = Preprocessing.from_dict(manifest["preprocessing"])
    values = [lab["value"] for lab in manifest["labels"]]
    measured, pool = [], []
    total = len(dataset.unlabeled) + len(dataset.training)
    for k, case in enumerate(dataset.unlabeled):
        if progress:
            progress(k, total, case.id)
        image = preprocess_image(read_volume(case.image), prep)
        groups = view_probabilities(net, manifest, image, dev, overlap=overlap)
        measured.append(measure_uncertainty(case.id, groups))
        foreground = sum(1 - probs.mean(0)[0] for _, probs in groups).clamp(0, 1)
        pool.append(descriptor(image, foreground.cpu().numpy()))
    labeled = [_labeled_descriptor(case, prep, values) for case in dataset.training]
    if progress:
        progress(total, total, "")
    order = rank_pool([m.uncertainty for m in measured], np.stack(pool),
                      np.stack(labeled) if labeled else None)
    reference_ids = [c.id for c in dataset.training] + [c.id for c in dataset.unlabeled]
    out = []
    for rank, (i, score, novelty, near) in enumerate(order[:n], start=1):
        u, case = measured[i], dataset.unlabeled[i]
        nearest = reference_ids[near] if near is not None else None
        out.append(Suggestion(rank, case.id, str(case.image), round(score, 4), round(u.uncertainty, 4),
                              round(u.disagreement, 4), round(u.entropy, 4), round(novelty, 4), nearest,
                              _reason(u, novelty, nearest, near is not None and near >= len(dataset.training))))
    return out


def _labeled_descriptor(case: Case, prep: Preprocessing, values: list[int]) -> np.ndarray:
    volume = read_volume(case.image)
    label = preprocess_label(read_label(case.label, reference=volume), prep)
    return descriptor(preprocess_image(volume, prep), np.isin(label, values).astype(np.float32))


def format_suggestions(rows: list[Suggestion]) -> str:
    lines = [f"{'rank':>4}  {'case':<28} {'score':>6} {'uncert.':>7} {'novelty':>7}  reason"]
    for r in rows:
        lines.append(f"{r.rank:>4}  {r.id:<28} {r.score:>6.3f} {r.uncertainty:>7.3f} {r.novelty:>7.2f}  {r.reason}")
    return "\n".join(lines)
