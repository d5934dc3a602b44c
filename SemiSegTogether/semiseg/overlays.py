"""Label maps drawn over their image in all three planes, several slices each, with a legend.

Used for `predict --preview` (the prediction alone) and the demo and benchmark reports (truth against
one or more predictions). Every structure has its own saturated colour, chosen to stand out on a grey
image (no white or grey): the truth is drawn as a solid outline, a prediction as a filled, see-through
area with a dashed outline, so both stay visible where they overlap. The slices go through the centre
of each structure, so a small one (a lesion) is shown even when a larger one fills most slices.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from semiseg.figures import save_figure  # noqa: E402

# Saturated, mutually distinct and far from grey: red, cyan, yellow, magenta, green, orange, blue, lime.
LABEL_COLORS = ["#ff2d2d", "#00e5ff", "#ffd500", "#ff3df2", "#2ee64d", "#ff8c00", "#3d7bff", "#b6ff00"]
PLANES = ("axial", "coronal", "sagittal")  # array axes 0 (z), 1 (y), 2 (x)


def label_color(index: int) -> str:
    """Colour of the index-th foreground structure (0-based, in label-value order)."""
    return LABEL_COLORS[index % len(LABEL_COLORS)]


def choose_slices(maps: list[np.ndarray], axis: int, n: int) -> list[int]:
    """Up to `n` slice indices along `axis`: the centre of each structure first, then evenly spread
    positions over the foreground's extent (the middle of the volume when nothing is labeled)."""
    size = maps[0].shape[axis]
    other = tuple(a for a in range(3) if a != axis)
    chosen: list[int] = []
    values = sorted({int(v) for m in maps for v in np.unique(m) if v})
    for value in values:
        counts = sum((m == value).sum(axis=other) for m in maps)
        if counts.any():
            centre = int(round(float(np.average(np.arange(size), weights=counts))))
            if centre not in chosen:
                chosen.append(centre)
    occupied = np.flatnonzero(sum((m > 0).sum(axis=other) for m in maps))
    lo, hi = (int(occupied[0]), int(occupied[-1])) if occupied.size else (size // 4, size - 1 - size // 4)
    for fraction in np.linspace(0.25, 0.75, n) if n > 1 else [0.5]:
        if len(chosen) >= n:
            break
        index = int(round(lo + fraction * (hi - lo)))
        if index not in chosen:
            chosen.append(index)
    return sorted(chosen[:n])


def _plane(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    return np.take(volume, index, axis=axis)


def _aspect(axis: int, spacing_zyx) -> float:
    """Row spacing over column spacing of a slice perpendicular to `axis`."""
    rows, cols = [a for a in range(3) if a != axis]
    return float(spacing_zyx[rows]) / float(spacing_zyx[cols])


def overlay_planes(image: np.ndarray, path: Path, names: dict[int, str], views: dict[str, np.ndarray],
                   truth: np.ndarray | None = None, spacing_zyx=(1.0, 1.0, 1.0), title: str = "",
                   slices_per_plane: int = 3) -> Path:
    """Write a PNG of `views` (name → label map (d, h, w), e.g. one prediction per method) over `image`.

    `names` maps label values to structure names (legend and colours, in value order). With one view the
    grid is planes × slices; with several, one row per view and the planes' slices side by side.
    `truth`, when given, is outlined in every panel.
    """
    maps = [*views.values(), *([truth] if truth is not None else [])]
    panels = [(axis, index) for axis in range(3) for index in choose_slices(maps, axis, slices_per_plane)]
    values = sorted(v for v in names if v)
    colors = {v: label_color(i) for i, v in enumerate(values)}
    lo, hi = np.percentile(image, (1, 99)) if image.size else (0, 1)
    if len(views) == 1:
        grid = [[(next(iter(views)), p) for p in panels if p[0] == axis] for axis in range(3)]
    else:
        grid = [[(name, p) for p in panels] for name in views]
    n_rows, n_cols = len(grid), max(len(r) for r in grid)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.3 * n_cols, 2.3 * n_rows + 0.7), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for r, row in enumerate(grid):
        for c, (view, (axis, index)) in enumerate(row):
            ax = axes[r][c]
            origin = "upper" if axis == 0 else "lower"  # coronal and sagittal: head up
            aspect = _aspect(axis, spacing_zyx)
            ax.imshow(_plane(image, axis, index), cmap="gray", vmin=lo, vmax=hi, aspect=aspect, origin=origin)
            pred = _plane(views[view], axis, index)
            for value in values:
                mask = pred == value
                if mask.any():
                    fill = np.ma.masked_where(~mask, mask.astype(float))
                    ax.imshow(fill, cmap=ListedColormap([colors[value]]), alpha=0.35, aspect=aspect,
                              origin=origin, interpolation="nearest")
                    # contour works in index coordinates, which imshow's origin already orients
                    ax.contour(mask, levels=[0.5], colors=[colors[value]], linewidths=0.9, linestyles="--")
                if truth is not None and (_plane(truth, axis, index) == value).any():
                    ax.contour(_plane(truth, axis, index) == value, levels=[0.5], colors=[colors[value]],
                               linewidths=1.8)
            label = f"{PLANES[axis]} {index}"
            ax.set_title(f"{view}: {label}" if len(views) > 1 and c == 0 else label, fontsize=7)
    handles = [Patch(facecolor=colors[v], edgecolor=colors[v], label=names[v]) for v in values]
    handles.append(Patch(facecolor="#999999", alpha=0.35, edgecolor="#999999", linestyle="--",
                         label="prediction (filled, dashed)"))
    if truth is not None:
        handles.append(Line2D([0], [0], color="#999999", linewidth=1.8, label="truth (solid outline)"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path, dpi=100, rect=(0, 0.06, 1, 1))
