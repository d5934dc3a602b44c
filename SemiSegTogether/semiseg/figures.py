"""Figures for reports: per-case Dice box plots and validation curves (overlays: semiseg.overlays).

matplotlib with the Agg backend, so it runs headless (CI, servers, a Slicer subprocess).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = ["#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6"]


def dice_boxplot(per_method: dict[str, list[float]], path: Path, title: str = "Per-case Dice (test)") -> Path:
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(per_method), 3.4))
    names = list(per_method)
    ax.boxplot([[100 * v for v in per_method[n]] for n in names], showmeans=True)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=20, fontsize=8)
    ax.set_ylabel("Dice (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def validation_curves(curves: dict[str, list[list[tuple[int, float]]]], path: Path) -> Path:
    """Validation Dice against iterations: one colour per method, one line per seed."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for i, (name, runs) in enumerate(curves.items()):
        for j, run in enumerate(runs):
            if run:
                its, dice = zip(*run)
                ax.plot(its, [100 * d for d in dice], color=COLORS[i % len(COLORS)], alpha=0.8,
                        label=name if j == 0 else None)
    ax.set_xlabel("iteration")
    ax.set_ylabel("validation Dice (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
