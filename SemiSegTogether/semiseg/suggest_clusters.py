"""TypiClust's selection (Hacohen, Dekel & Weinshall, ICML 2022; github.com/avihu111/TypiClust): cover the
clusters the labeled set leaves empty, each with its most typical case.

The labeled and pool cases are clustered into L + B clusters by k-means (L labeled, B the cases to pick), so
that there is room for every pick in a cluster of its own. Clusters are visited by how few labeled cases they
hold, then by size (largest first), and each gives its most typical case not yet labeled or picked; the visit
cycles when B exceeds the clusters. Typicality within a cluster uses k = half its unlabeled members (up to 20),
as the authors' code does for small clusters.

Two changes for a clinic's scale: the authors drop clusters of 5 cases or fewer and cap them at 500, for sets
of thousands; here a pool holds tens, so the number of clusters is capped at half the cases (two per cluster
on average) and only singletons are dropped (one case is an outlier, and has no neighbours to be typical
among). Singletons come last in the ranking, most typical first. k-means is seeded, so a ranking repeats.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from semiseg.suggest_diversity import TYPICALITY_NEIGHBOURS, distances_and_scale, novelty_against, typicality

KMEANS_RESTARTS = 10
KMEANS_STEPS = 100


@dataclass
class ClusterPick:
    index: int  # into the pool
    cluster: int  # -1: a singleton, ranked after the clusters
    cluster_size: int  # labeled and pool cases in the cluster
    labeled_in_cluster: int  # labeled cases, and the picks from it before this one
    score: float  # the share of all cases the cluster holds, divided by 1 + labeled_in_cluster


def kmeans(x: np.ndarray, k: int, seed: int = 0, restarts: int = KMEANS_RESTARTS,
           steps: int = KMEANS_STEPS) -> np.ndarray:
    """(N, F) points → (N,) cluster of each, 0..k-1: Lloyd's k-means from k-means++ seeds, the lowest-inertia
    of `restarts` runs. An emptied cluster restarts at the point farthest from its centre."""
    rng = np.random.default_rng(seed)
    best, best_inertia = np.zeros(len(x), dtype=int), np.inf
    for _ in range(restarts):
        centres = _plus_plus(x, k, rng)
        for _ in range(steps):
            distances = ((x[:, None] - centres[None]) ** 2).sum(-1)
            labels = distances.argmin(1)
            moved = centres.copy()
            for c in range(k):
                members = x[labels == c]
                if len(members):
                    moved[c] = members.mean(0)
                else:
                    far = distances[np.arange(len(x)), labels].argmax()
                    moved[c], labels[far] = x[far], c
            if np.allclose(moved, centres):
                break
            centres = moved
        inertia = float(((x - centres[labels]) ** 2).sum())
        if inertia < best_inertia:
            best, best_inertia = labels, inertia
    return best


def _plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centres = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        d2 = np.min([((x - c) ** 2).sum(-1) for c in centres], axis=0)
        total = d2.sum()
        centres.append(x[rng.choice(len(x), p=d2 / total)] if total > 0 else x[rng.integers(len(x))])
    return np.stack(centres)


def typicality_within(x: np.ndarray) -> np.ndarray:
    """(M, F) members of one cluster → (M,) 1 / mean distance to the k = M // 2 (1 to 20) nearest others."""
    if len(x) < 2:
        return np.ones(len(x))
    k = min(TYPICALITY_NEIGHBOURS, max(1, len(x) // 2))
    distances = np.sort(np.linalg.norm(x[:, None] - x[None], axis=-1), axis=1)[:, 1:k + 1]
    return 1.0 / (distances.mean(1) + 1e-5)


def typiclust_rank(pool: np.ndarray, labeled: np.ndarray | None, budget: int, seed: int = 0) -> list[ClusterPick]:
    """Rank every pool case: the TypiClust picks for `budget` first, then the rest in the same visit order.

    Args:
        pool: (N, F) descriptors of the pool cases.
        labeled: (L, F) descriptors of the labeled cases (or None).
        budget: B, how many cases the user will annotate now (sets the number of clusters, L + B).
    """
    labeled = np.zeros((0, pool.shape[1])) if labeled is None else labeled
    everything, n_lab = np.concatenate([labeled, pool]), len(labeled)
    n_clusters = max(1, min(n_lab + budget, len(everything) // 2))
    clusters = kmeans(everything, n_clusters, seed=seed)
    sizes = np.bincount(clusters, minlength=n_clusters)
    taken = np.bincount(clusters[:n_lab], minlength=n_clusters)
    visit = [c for c in sorted(range(n_clusters), key=lambda c: (taken[c], -sizes[c])) if sizes[c] > 1]
    remaining = set(range(len(pool)))
    order: list[ClusterPick] = []
    while visit:
        for c in list(visit):
            members = [i for i in sorted(remaining) if clusters[n_lab + i] == c]
            if not members:
                visit.remove(c)
                continue
            best = members[int(typicality_within(pool[members]).argmax())]
            share = sizes[c] / len(everything)
            order.append(ClusterPick(best, c, int(sizes[c]), int(taken[c]), float(share / (1 + taken[c]))))
            taken[c] += 1
            remaining.discard(best)
    singletons = sorted(remaining)
    if singletons:
        ranked = np.argsort(-typicality(pool[singletons], labeled if n_lab else None), kind="stable")
        order += [ClusterPick(singletons[j], -1, 1, 0, 0.0) for j in ranked]
    return order


def rank_by_clusters(pool: np.ndarray, labeled: np.ndarray | None, budget: int
                     ) -> tuple[list[tuple[int, float, float, int | None]], list[ClusterPick]]:
    """`typiclust_rank` in semiseg.suggest_diversity.rank_pool's form, novelty measured as there."""
    picks = typiclust_rank(pool, labeled, budget)
    labeled = np.zeros((0, pool.shape[1])) if labeled is None else labeled
    distances, scale = distances_and_scale(pool, labeled)
    references, order = list(range(len(labeled))), []
    for p in picks:
        novelty, near = novelty_against(distances, scale, len(labeled) + p.index, references)
        order.append((p.index, p.score, novelty, near))
        references.append(len(labeled) + p.index)
    return order, picks
