"""TypiClust's selection: k-means, typicality within a cluster, and covering what the labeled set misses."""

from __future__ import annotations

import numpy as np

from semiseg.suggest_clusters import kmeans, typicality_within, typiclust_rank


def _groups(sizes: list[int], seed: int = 0, spread: float = 0.05) -> tuple[np.ndarray, list[int]]:
    """Well-separated Gaussian groups in 8-D: (sum(sizes), 8) points and each point's group."""
    rng = np.random.default_rng(seed)
    centres = np.eye(8)[: len(sizes)] * 10
    points = [centres[g] + rng.normal(scale=spread, size=(n, 8)) for g, n in enumerate(sizes)]
    return np.concatenate(points), [g for g, n in enumerate(sizes) for _ in range(n)]


def test_kmeans_recovers_separated_groups_and_repeats_with_its_seed():
    x, groups = _groups([4, 3, 5])
    labels = kmeans(x, 3, seed=0)
    assert len(set(labels)) == 3
    for g in range(3):  # each group is one cluster, and no cluster spans two groups
        assert len({labels[i] for i in range(len(x)) if groups[i] == g}) == 1
    assert (kmeans(x, 3, seed=0) == labels).all()


def test_the_most_typical_member_is_the_one_in_the_middle():
    x = np.array([[0.0], [1.0], [1.1], [1.2], [5.0]])
    assert typicality_within(x).argmax() == 2
    assert typicality_within(x).argmin() == 4
    assert typicality_within(x[:1]).tolist() == [1.0]


def test_picks_cover_the_groups_the_labeled_cases_miss_largest_first():
    x, groups = _groups([5, 4, 3])
    labeled_rows = [0]  # group 0 has a labeled case; groups 1 and 2 are not covered (1 + 2 clusters)
    pool_rows = [i for i in range(len(x)) if i not in labeled_rows]
    order = typiclust_rank(x[pool_rows], x[labeled_rows], budget=2)
    assert sorted(p.index for p in order) == list(range(len(pool_rows))), "every pool case is ranked once"
    first, second = (groups[pool_rows[p.index]] for p in order[:2])
    assert (first, second) == (1, 2), "the largest uncovered group first, then the next"
    assert order[0].labeled_in_cluster == 0 and order[0].score > order[1].score > 0
    # Within its group, the first pick is the most typical member, not an arbitrary one.
    members = [j for j, i in enumerate(pool_rows) if groups[i] == 1]
    assert order[0].index == members[int(typicality_within(x[pool_rows][members]).argmax())]


def test_the_greedy_typical_ranking_would_stay_in_the_crowd_where_typiclust_does_not():
    from semiseg.suggest_diversity import rank_pool, typicality
    x, groups = _groups([8, 3], spread=0.05)
    labeled_rows = [0]  # the crowd (group 0) already has a labeled case
    pool_rows = list(range(1, len(x)))
    pool, labeled = x[pool_rows], x[labeled_rows]
    greedy = rank_pool(typicality(pool, labeled), pool, labeled)
    clusters = typiclust_rank(pool, labeled, budget=1)
    assert groups[pool_rows[greedy[0][0]]] == 0, "typicality alone picks from the crowd, beside the labeled case"
    assert groups[pool_rows[clusters[0].index]] == 1, "typiclust picks the group nothing labeled covers"


def test_a_lone_case_is_ranked_after_the_clusters():
    x, _ = _groups([4, 4])
    outlier = np.full((1, 8), -30.0)
    pool = np.concatenate([x, outlier])
    order = typiclust_rank(pool, None, budget=3)
    assert order[-1].index == len(pool) - 1 and order[-1].cluster == -1 and order[-1].score == 0.0
