"""`semiseg suggest`: which unlabeled case is most worth annotating next.

Three ingredients, all computed from the images and the model itself (no label of the pool is read):

- **Typicality.** How central a case is among the clinic's scans (labeled and pool): the inverse of its mean
  distance to its k nearest neighbours (TypiClust, Hacohen, Dekel & Weinshall, "Active learning on a budget",
  ICML 2022), divided by the pool's largest. TypiClust's k is 20 on sets of thousands; here k = ⌈√N⌉ up to
  20, because with k near N typicality becomes the mean distance to every case, far outliers included.
  With a handful of labeled cases the typical cases teach the model what most scans look like; outliers
  teach it about themselves and cost the typical ones.
- **Uncertainty.** The case is segmented under several *views*: test-time flips along each axis and, for a
  model holding two subnetworks (dual-contrast's V-Net + ResNet), each subnetwork on its own. Where the views
  disagree the model is unsure, and a correction teaches it most (query-by-committee, Seung et al., COLT 1992;
  test-time-augmentation uncertainty, Wang et al., Neurocomputing 2019). Per structure, `disagreement` is
  1 − the mean Dice between each view's mask and the consensus mask; `entropy` is the normalised entropy of
  the consensus probabilities over the voxels any view calls foreground. `uncertainty` is their mean; a
  structure that no view finds counts as fully uncertain (disagreement 1).
- **Diversity.** K picks should not be K near-copies (core-set selection, Sener & Savarese, ICLR 2018): each
  case has a small descriptor (its image and its predicted foreground, both resampled to 12³), and
  `novelty` is the distance to the nearest labeled or already picked case relative to half the median
  distance between cases, clipped at 1: it discounts near-copies only. (Relative to the whole median, every
  case scored 0.8 to 0.97 on la-dev, and the farthest, least typical cases got a bonus.)

Two strategies take one of the first two as the value: `typical` (the default) ranks by typicality × novelty,
`uncertain` by uncertainty × novelty. Hacohen et al. show that the best query changes with the
budget: typical cases win while the labeled set is small, uncertain ones once it covers the typical cases.
On la-dev (4 to 10 labeled of 20) `uncertain` picked the smallest, least typical atria, and fine-tuning on
them scored below random picks (docs/benchmarks/active-loop-uncertain); fine-tuned with one pool case at a
time, typicality is the one score that predicts what the case adds (docs/benchmarks/case-value). The pool is ranked greedily: at each
step the case with the largest value × novelty is taken, and novelty is recomputed against it. The score of
a case is its value at the step it was taken.

`typiclust` is TypiClust's own selection (semiseg.suggest_clusters): the cases are clustered on the same
descriptors into as many clusters as labeled cases plus picks, and each pick is the most typical case of the
largest cluster no labeled case covers yet. Where `typical` takes the most central cases of the whole set,
which may resemble what is labeled already, this covers the parts of the set the labeled cases miss; its
score is the share of the cases the pick's cluster holds, divided by 1 + the labeled cases and earlier picks
in it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from semiseg.datasets import Case, load_dataset
from semiseg.errors import ConfigError
from semiseg.infer import sliding_window_probabilities
from semiseg.io import read_label, read_volume
from semiseg.suggest_clusters import ClusterPick, rank_by_clusters
from semiseg.suggest_diversity import descriptor, rank_pool, typicality
from semiseg.transforms import Preprocessing, preprocess_image, preprocess_label

STRATEGIES = ("typical", "uncertain", "typiclust")
FLIP_AXES: tuple[tuple[int, ...], ...] = ((), (2,), (3,), (4,))  # identity, then each spatial axis of (1,1,d,h,w)
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
    strategy: str
    typicality: float
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


# ---- the command -----------------------------------------------------------------------------------------
def _reason(u: CaseUncertainty, typical: float, typical_rank: int, pool_size: int, novelty: float,
            nearest: str | None, nearest_is_pick: bool, cluster: ClusterPick | None = None) -> str:
    parts = [f"typicality {typical:.2f} ({_ordinal(typical_rank)} of {pool_size})",
             f"{u.views} views agree at Dice {1 - u.disagreement:.2f}, entropy {u.entropy:.2f} in the predicted "
             f"region"]
    if u.missing:
        parts.insert(0, f"no view finds {', '.join(u.missing)}")
    if cluster is not None:
        parts.insert(0, "unlike every cluster of two or more cases" if cluster.cluster < 0 else
                     f"most typical left in a cluster of {cluster.cluster_size} cases with "
                     f"{cluster.labeled_in_cluster} labeled or picked before")
    if nearest is None:
        parts.append("nothing labeled to compare with")
    elif novelty >= 1.0:
        parts.append(f"unlike the labeled cases (nearest {nearest})")
    else:
        kind = "a case picked before it" if nearest_is_pick else "a labeled case"
        parts.append(f"novelty {novelty:.2f}: resembles {nearest}, {kind}")
    return "; ".join(parts)


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def suggest(model: Path, data: Path, n: int | None = None, device: str = "auto", overlap: float = 0.25,
            strategy: str = "typical", progress: Progress | None = None) -> list[Suggestion]:
    """Rank `data`'s unlabeled cases for annotation with `model` by `strategy` (see the module docstring);
    the first `n` (all when None)."""
    from semiseg.devices import resolve_device
    from semiseg.model import load_model

    if n is not None and n < 1:
        raise ConfigError("-n must be at least 1")
    if strategy not in STRATEGIES:
        raise ConfigError(f"--strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
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
    pool_descriptors, labeled_descriptors = np.stack(pool), (np.stack(labeled) if labeled else None)
    typical = typicality(pool_descriptors, labeled_descriptors)
    typical_rank = {i: r for r, i in enumerate(np.argsort(-typical, kind="stable"), start=1)}
    clusters: dict[int, ClusterPick] = {}
    if strategy == "typiclust":
        order, picks = rank_by_clusters(pool_descriptors, labeled_descriptors, n or len(pool))
        clusters = {p.index: p for p in picks}
    else:
        value = typical if strategy == "typical" else [m.uncertainty for m in measured]
        order = rank_pool(value, pool_descriptors, labeled_descriptors)
    reference_ids = [c.id for c in dataset.training] + [c.id for c in dataset.unlabeled]
    out = []
    for rank, (i, score, novelty, near) in enumerate(order[:n], start=1):
        u, case = measured[i], dataset.unlabeled[i]
        nearest = reference_ids[near] if near is not None else None
        reason = _reason(u, float(typical[i]), typical_rank[i], len(pool), novelty, nearest,
                         near is not None and near >= len(dataset.training), clusters.get(i))
        out.append(Suggestion(rank, case.id, str(case.image), round(score, 4), strategy, round(float(typical[i]), 4),
                              round(u.uncertainty, 4), round(u.disagreement, 4), round(u.entropy, 4),
                              round(novelty, 4), nearest, reason))
    return out


def _labeled_descriptor(case: Case, prep: Preprocessing, values: list[int]) -> np.ndarray:
    volume = read_volume(case.image)
    label = preprocess_label(read_label(case.label, reference=volume), prep)
    return descriptor(preprocess_image(volume, prep), np.isin(label, values).astype(np.float32))


def format_suggestions(rows: list[Suggestion]) -> str:
    lines = [f"{'rank':>4}  {'case':<28} {'score':>6} {'typical':>7} {'uncert.':>7} {'novelty':>7}  reason"]
    for r in rows:
        lines.append(f"{r.rank:>4}  {r.id:<28} {r.score:>6.3f} {r.typicality:>7.3f} {r.uncertainty:>7.3f} "
                     f"{r.novelty:>7.2f}  {r.reason}")
    return "\n".join(lines)
