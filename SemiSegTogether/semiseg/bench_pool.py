"""The benchmark's pseudo-label section (`bench --pool-truth DIR`): how good each method's targets on the
unlabeled pool are as training goes on, against truth the engine never trains on (semiseg.training.pool_quality).
A supervised twin's row is what the same network would offer as pseudo-labels without learning from the pool."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from semiseg.figures import validation_curves

FIGURE = "pool_quality.png"
POINTS = (("first validation", 0.0), ("halfway", 0.5), ("last", 1.0))


def _curves(methods: list[str], runs: list[dict]) -> dict[str, list[list]]:
    curves = {m: [r["pool_curve"] for r in runs if r["method"] == m and r.get("pool_curve")] for m in methods}
    return {m: c for m, c in curves.items() if c}


def pool_lines(methods: list[str], runs: list[dict]) -> list[str]:
    curves = _curves(methods, runs)
    if not curves:
        return []
    lines = ["## Pseudo-labels on the unlabeled pool", "",
             "Dice % of each method's targets on the unlabeled cases (its teacher, its two subnetworks' union, its "
             "diffusion sampler; a twin's or plain network's own prediction) against labels that only this "
             "measurement reads (`--pool-truth`), mean ± std over seeds.", "",
             "| method | " + " | ".join(name for name, _ in POINTS) + " |",
             "|---|" + "---|" * len(POINTS)]
    for method, runs_curves in curves.items():
        cells = []
        for _, frac in POINTS:
            values = [100 * c[round(frac * (len(c) - 1))][1] for c in runs_curves]
            cells.append(f"{np.mean(values):.1f} ± {np.std(values):.1f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines + ["", f"![pseudo-label Dice on the pool]({FIGURE})", ""]


def pool_figure(report_dir: Path, methods: list[str], runs: list[dict]) -> None:
    curves = _curves(methods, runs)
    if curves:
        validation_curves(curves, report_dir / FIGURE, ylabel="pseudo-label Dice on the pool (%)")
