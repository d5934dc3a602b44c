"""`semiseg bench --time T`: every run gets the wall time a user would give it, and a twin its method's plan.

Each run trains as `semiseg train --time T` does: in its own process, the planner (`semiseg.plan`) times the
method's step on this machine and picks spacing, patch, batch sizes, width, iterations and the validation
interval, and the budget counts from the process's start (planning included). A supervised twin must train the
same network on the same grid and patches as its method, so it inherits the spacing, patch, batch sizes and
width that its method's run (same seed) was planned with; only its iterations and validation interval are
planned for its own, faster step. Within the same wall time the twin therefore takes more steps: the question
is what the unlabeled terms are worth against spending that time on the labeled cases alone.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from semiseg.errors import ConfigError
from semiseg.training.config import TrainConfig

INHERITED = ("spacing", "patch", "batch_labeled", "batch_unlabeled", "n_filters")


def inherited_from(plan: dict) -> dict:
    """The settings a twin takes from its method's plan (the card's `plan`), by planner name."""
    return {"spacing": plan["spacing"], "patch": list(plan["patch"]), "batch_labeled": plan["batch_labeled"],
            "batch_unlabeled": plan["batch_unlabeled"], "n_filters": plan["options"].get("n_filters")}


def with_inherited(cfg: TrainConfig, inherited: dict | None) -> tuple[TrainConfig, set[str]]:
    """`cfg` carrying the inherited settings, and the names the planner must keep as given."""
    if not inherited:
        return cfg, set()
    options = dict(cfg.method_options)
    fixed = {"spacing", "patch", "batch_labeled", "batch_unlabeled"}
    if inherited["n_filters"] is not None:
        options["n_filters"] = inherited["n_filters"]
        fixed.add("n_filters")
    cfg = replace(cfg, spacing=inherited["spacing"], patch=list(inherited["patch"]),
                  batch_labeled=inherited["batch_labeled"], batch_unlabeled=inherited["batch_unlabeled"],
                  method_options=options)
    return cfg, fixed


def plan_and_train(cfg: TrainConfig, budget_seconds: float, fixed: set[str]):
    """In the run's own process (see semiseg.fresh_process): plan, then train within the budget."""
    from semiseg.plan import make_plan
    from semiseg.process import mark_command_start, seconds_spent
    from semiseg.train import train
    mark_command_start()  # a fresh process counts from its own start; a long-lived one (a test) from here
    plan = make_plan(cfg, budget_seconds, fixed=fixed, spent_seconds=seconds_spent())
    if plan.iterations < 1:
        raise ConfigError(plan.message)
    return train(plan.apply(cfg))


def planned_settings(model: Path) -> dict:
    """What the run was planned with, from its model card: the inherited settings, iterations and the prediction."""
    plan = json.loads((Path(model) / "model.json").read_text(encoding="utf-8"))["plan"]
    return {**inherited_from(plan), "iterations": plan["iterations"], "val_every": plan["val_every"],
            "threads": plan.get("threads"), "predicted_seconds": plan["predicted"]["total"],
            "step_seconds": plan["predicted"]["step_seconds"], "options": plan["options"]}
