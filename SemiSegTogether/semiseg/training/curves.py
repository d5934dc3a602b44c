"""The loss and validation curves of a run, drawn as NAME.curves.png beside the model package."""

from __future__ import annotations

from pathlib import Path

from semiseg.figures import training_curves


class LossCurve:
    """Every iteration's losses of this run (after --resume: from the iteration it resumed at)."""

    def __init__(self):
        self.points: list[tuple[int, dict[str, float]]] = []

    def record(self, iteration: int, losses: dict[str, float]) -> None:
        self.points.append((iteration, dict(losses)))


def curves_path(model: str | Path) -> Path:
    """models/la.semiseg -> models/la.curves.png"""
    model = Path(str(model).rstrip("/"))
    return model.with_name(f"{model.name.removesuffix('.semiseg')}.curves.png")


def write_curves(model: str | Path, losses: LossCurve, history: list[dict], title: str) -> Path:
    validation = [(h["iteration"], h["dice"]) for h in history]
    return training_curves(losses.points, validation, curves_path(model), title=title)
