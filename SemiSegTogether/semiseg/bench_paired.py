"""The benchmark's paired figures: each method against its supervised twin and plain supervised, seed by seed.

A run scores its cases under one field: "checkpoints" (the test split) or "pool" (the unlabeled cases, with
`bench --score-pool`); each holds {"best" | "last": {"cases": {case id: {metric: value}}}}.
"""

from __future__ import annotations

import numpy as np

from semiseg.metrics import mean_std_text as _fmt

CHECKPOINTS = ("best", "last")


def seed_means(runs: list[dict], ckpt: str, key: str, field: str = "checkpoints") -> list[float]:
    """Per run: the mean over its cases of one metric, leaving out cases without it (NaN, or null in a run read
    back from its JSON record under --resume: a missed structure has no surface distance)."""
    out = []
    for r in runs:
        vals = [c[key] for c in r[field][ckpt]["cases"].values() if c[key] is not None and c[key] == c[key]]
        out.append(float(np.mean(vals)) if vals else float("nan"))
    return out


def mean_std(values: list[float]) -> dict:
    arr = np.array([v for v in values if v == v], dtype=float)
    return {"mean": float(arr.mean()) if arr.size else float("nan"),
            "std": float(arr.std(ddof=0)) if arr.size else float("nan"), "n": int(arr.size)}


def dice_by_seed(runs: list[dict], variant: str, ckpt: str, field: str = "checkpoints") -> dict[int, float]:
    mruns = [r for r in runs if r["method"] == variant and field in r]
    return dict(zip([r["seed"] for r in mruns], seed_means(mruns, ckpt, "dice", field)))


def gain(ours: dict[int, float], theirs: dict[int, float]) -> dict:
    """Per-seed differences on the seeds both have: mean ± std and how many are > 0."""
    diffs = [ours[k] - theirs[k] for k in ours if k in theirs and ours[k] == ours[k] and theirs[k] == theirs[k]]
    return {**mean_std(diffs), "improved": sum(d > 0 for d in diffs), "per_seed": diffs}


def paired(pairs: list[tuple[str, str]], variants: list[str], runs: list[dict],
           field: str = "checkpoints") -> list[dict]:
    """For each (method, twin) pair: Dice of method, twin and supervised per checkpoint, and the paired gains
    method − twin and method − supervised (same seed)."""
    out = []
    for v, twin in pairs:
        row = {"method": v, "twin": twin}
        for ckpt in CHECKPOINTS:
            ours, theirs = dice_by_seed(runs, v, ckpt, field), dice_by_seed(runs, twin, ckpt, field)
            sup = dice_by_seed(runs, "supervised", ckpt, field) if "supervised" in variants else {}
            row[ckpt] = {"method": mean_std(list(ours.values())), "twin": mean_std(list(theirs.values())),
                         "supervised": mean_std(list(sup.values())), "gain_over_twin": gain(ours, theirs),
                         "gain_over_supervised": gain(ours, sup)}
        out.append(row)
    return out


def paired_table(rows: list[dict]) -> list[str]:
    """The paired figures as a Markdown table (Dice %, gains in points, seeds improved); without any supervised
    run (`--no-twins` and no `supervised` listed) its columns are left out rather than filled with n/a."""
    with_supervised = any(row[ckpt]["gain_over_supervised"]["n"] for row in rows for ckpt in CHECKPOINTS)
    head = ["method", "checkpoint", "method Dice %", "twin Dice %", "gain over twin", "seeds improved"]
    if with_supervised:
        head[4:4] = ["supervised Dice %"]
        head += ["gain over supervised", "seeds improved"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        for ckpt in CHECKPOINTS:
            c = row[ckpt]
            t, s = c["gain_over_twin"], c["gain_over_supervised"]
            cells = [row["method"], ckpt, _fmt(c["method"], 100), _fmt(c["twin"], 100), _fmt(t, 100),
                     f"{t['improved']}/{t['n']}"]
            if with_supervised:
                cells[4:4] = [_fmt(c["supervised"], 100)]
                cells += [_fmt(s, 100), f"{s['improved']}/{s['n']}"]
            lines.append("| " + " | ".join(cells) + " |")
    return lines
