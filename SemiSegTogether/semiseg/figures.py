"""Figures for reports: per-case Dice box plots and validation curves (overlays: semiseg.overlays).

matplotlib with the Agg backend, so it runs headless (CI, servers, a Slicer subprocess).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from semiseg.atomic import atomic_path  # noqa: E402

COLORS = ["#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6"]


def save_figure(fig, path: Path, dpi: int = 110, rect=None) -> Path:
    """Lay out, write atomically (a reader never sees half a PNG) and free the figure."""
    fig.tight_layout(rect=rect)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return path


def dice_boxplot(per_method: dict[str, list[float]], path: Path, title: str = "Per-case Dice (test)") -> Path:
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(per_method), 3.4))
    names = list(per_method)
    ax.boxplot([[100 * v for v in per_method[n]] for n in names], showmeans=True)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=20, fontsize=8)
    ax.set_ylabel("Dice (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def validation_curves(curves: dict[str, list[list[tuple[int, float]]]], path: Path,
                      ylabel: str = "validation Dice (%)") -> Path:
    """Dice against iterations: one colour per method, one line per seed."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for i, (name, runs) in enumerate(curves.items()):
        for j, run in enumerate(runs):
            if run:
                its, dice = zip(*run)
                ax.plot(its, [100 * d for d in dice], color=COLORS[i % len(COLORS)], alpha=0.8,
                        label=name if j == 0 else None)
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def training_curves(losses: list[tuple[int, dict[str, float]]], validation: list[tuple[int, float]],
                    path: Path, title: str = "") -> Path:
    """The losses (left) and the validation Dice (right) of one training run against the iterations."""

    fig, (left, right) = plt.subplots(1, 2, figsize=(9.0, 3.4))
    names = sorted({k for _, values in losses for k in values}, key=lambda k: (k != "total", k))
    for i, name in enumerate(names):
        points = [(it, values[name]) for it, values in losses if name in values]
        left.plot(*zip(*points), color=COLORS[i % len(COLORS)], linewidth=1.6 if name == "total" else 0.9,
                  label=name)
    left.set_xlabel("iteration")
    left.set_ylabel("loss")
    left.grid(alpha=0.3)
    if names:
        left.legend(fontsize=7)
    if validation:
        its, dice = zip(*validation)
        right.plot(its, [100 * d for d in dice], marker="o", markersize=3, color=COLORS[3])
    else:
        right.text(0.5, 0.5, "no validation cases", ha="center", va="center", transform=right.transAxes)
    right.set_xlabel("iteration")
    right.set_ylabel("validation Dice (%)")
    right.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path, dpi=100)
