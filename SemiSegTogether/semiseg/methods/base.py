"""The one face every training method shows to the loop, the CLI and the Slicer trainer.

    method = build_method(name, context)
    losses = method.training_step(labeled, unlabeled, step)   # {"total": ..., other named terms}
    net    = method.inference_network()

Every method also takes the common option `unlabeled` (default true). `unlabeled: false` makes the
method's *supervised twin*: the same network, options, optimiser, schedule and augmentation, with every
term that reads an unlabeled image switched off (the loop then draws no unlabeled batch at all, so the
unlabeled images reach neither a gradient nor a BatchNorm statistic). `semiseg bench` runs each method
beside its twin to measure what the unlabeled scans themselves add.

A method is an `nn.Module`, so its whole state (student, teacher, running statistics)
is one `state_dict()` that checkpoints hold and `--resume` restores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from semiseg.losses import one_hot


@dataclass
class MethodContext:
    """What a method needs to know about the data and the run to build itself."""

    in_channels: int = 1
    n_classes: int = 2  # including background
    total_iterations: int = 1000
    n_tasks: int = 1
    n_domains: int = 1
    # For task-prompted methods: the class values each task annotates (background excluded).
    task_classes: list[list[int]] = field(default_factory=list)
    # Domain names per split ({"labeled": [...], "unlabeled": [...], "test": [...]}, from dataset.json's
    # per-case "domain") and the voxel fraction of each class in the labeled cases (background first):
    # what methods that adapt to the setting (A&D) read.
    domains: dict[str, list[str]] = field(default_factory=dict)
    class_fractions: list[float] | None = None
    options: dict[str, Any] = field(default_factory=dict)


# Options every method takes besides its own `defaults`.
RECIPES = ("default", "authors")
COMMON_DEFAULTS: dict[str, Any] = {"unlabeled": True, "recipe": "default"}
COMMON_HELP: dict[str, str] = {
    "unlabeled": "false: the method's supervised twin (same network, options, optimiser, schedule; every term "
                 "that reads unlabeled images off, and no unlabeled batch drawn)",
    "recipe": "default: the values measured to work best within short budgets, where they differ from the "
              "authors' (docs/methods.md lists them) | authors: the authors' published values; options given "
              "beside it still win"}


class LabelsAsLogits(nn.Module):
    """A pseudo-label rule as a network: (B, C_in, ...) → log one-hot (B, n_classes, ...), so that the sliding
    window's softmax and argmax give back its labels. Holds `owner` (the method) so that `.eval()` reaches it."""

    def __init__(self, owner: nn.Module, labels_of, n_classes: int):
        super().__init__()
        self.owner, self.labels_of, self.n_classes = owner, labels_of, n_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return one_hot(self.labels_of(x), self.n_classes).clamp_min(1e-6).log()


class Method(nn.Module):
    """Base class. Subclasses set `name`, `description`, `defaults` (option → default value) and
    `option_help` (option → one line), build `self.net` (the trainable module the optimiser steps
    and DDP wraps) and implement `training_step`."""

    name = "base"
    description = ""
    # Bumped when a change to the method changes its results, so that `semiseg bench --resume` (which reuses a
    # finished run whose settings match) trains it again.
    revision = 1
    defaults: dict[str, Any] = {}
    option_help: dict[str, str] = {}
    # The authors' values of the options whose `defaults` differ from them (`recipe: authors` applies them): a
    # default departs from the authors only where a measurement says users are better served, and says so here.
    authors_recipe: dict[str, Any] = {}
    # Optional optimiser the authors used, e.g. {"optimizer": "adam", "lr": 1e-3}; the loop applies
    # it unless the user chose one.
    preferred_optimizer: dict[str, Any] = {}
    # DistributedDataParallel settings for `self.net` (the loop reads them; it never special-cases a method).
    # find_unused_parameters: some parameters can get no gradient in an iteration (a head that skips one);
    # DDP then searches the graph of the *last* forward pass, so it cannot serve a method that runs several
    # forward passes per step with gradients through different parts (use static_graph there).
    # static_graph: the set of parameters with gradients is the same every iteration; DDP learns it in the
    # first iteration, whatever the number of forward passes, and tolerates parameters that never get one.
    ddp_find_unused_parameters: bool = False
    ddp_static_graph: bool = False

    def __init__(self, context: MethodContext):
        super().__init__()
        self.context = context
        known = {**COMMON_DEFAULTS, **self.defaults}
        unknown = set(context.options) - set(known)
        if unknown:
            from semiseg.errors import ConfigError
            raise ConfigError(f"method {self.name!r} has no option(s) {sorted(unknown)}; "
                              f"it takes {sorted(known)}")
        self.opts = {**known, **self.recipe_options(context.options), **context.options}
        self._step_net: nn.Module | None = None

    @classmethod
    def recipe_options(cls, given: dict[str, Any]) -> dict[str, Any]:
        """The option values the recipe named in `given` (default: "default") sets over `defaults`."""
        recipe = given.get("recipe", COMMON_DEFAULTS["recipe"])
        if recipe not in RECIPES:
            from semiseg.errors import ConfigError
            raise ConfigError(f"method {cls.name!r}: recipe must be one of {', '.join(RECIPES)}, got {recipe!r}")
        return dict(cls.authors_recipe) if recipe == "authors" else {}

    # The loop may wrap `self.net` (DistributedDataParallel); methods run their forward passes
    # through `step_net` so that the wrapper sees them.
    @property
    def step_net(self) -> nn.Module:
        return self._step_net if self._step_net is not None else self.net

    def set_step_net(self, wrapped: nn.Module | None) -> None:
        self._step_net = wrapped

    def optimizer_settings(self) -> dict[str, Any]:
        """The optimiser and schedule the loop applies unless the user chose one: `preferred_optimizer`, which a
        method may adjust from its options (a short-run schedule). A twin gets exactly its method's."""
        return dict(self.preferred_optimizer)

    def trainable(self) -> nn.Module:
        return self.net

    def training_step(self, labeled: dict, unlabeled: dict | None, step: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def before_optimizer_step(self, step: int) -> None:
        """Hook before the forward pass of an iteration (A&D aggregates its decoders here)."""

    def after_optimizer_step(self, step: int) -> None:
        """Hook after the optimiser step (EMA teachers update here)."""

    def inference_network(self) -> nn.Module:
        return self.net

    def pseudo_label_network(self) -> nn.Module:
        """The network whose predictions are this method's targets on unlabeled images (a teacher, the union of
        two subnetworks...), returning logits as `inference_network()` does; `--pool-truth` measures how good
        those targets are. Default: the inference network, the pseudo-labels a model offers of itself (and
        what a supervised twin would give)."""
        return self.inference_network()

    # Fine-tuning (`train --init`): what a parent package's weights initialise, in words for the model card.
    parent_init = "the network"

    def load_parent(self, parent) -> int:
        """Loads a parent package (`semiseg.finetune.Parent`) into the inference network, output channels
        remapped by structure name, then `spread_parent_weights`. Returns how many tensors were loaded."""
        from semiseg.finetune import check_architecture, load_remapped
        target = self.inference_network()
        check_architecture(target, parent.manifest, parent.where)
        n = load_remapped(target, parent.state, parent.classes, parent.where)
        self.spread_parent_weights()
        return n

    def spread_parent_weights(self) -> None:
        """After `load_parent`: start the parts a package does not hold (a teacher, training-only decoders)."""

    # Options read only by the unlabeled terms: a twin ignores them, so `semiseg bench` gives variants that differ
    # only in these one shared twin.
    unlabeled_only: frozenset[str] = frozenset()

    @property
    def is_twin(self) -> bool:
        """True for the supervised twin (`unlabeled: false`)."""
        return not bool(self.opts["unlabeled"])

    @classmethod
    def learns_from(cls, opts: dict[str, Any]) -> bool:
        """Whether the recipe with these options has unlabeled terms at all (methods without any say False).
        A class method, so that `semiseg bench` can tell which variants need a twin without building them."""
        return True

    @property
    def learns_from_unlabeled(self) -> bool:
        return type(self).learns_from(self.opts)

    @property
    def uses_unlabeled(self) -> bool:
        """Whether the loop must draw unlabeled batches: never for a twin."""
        return self.learns_from_unlabeled and not self.is_twin

    def unlabeled_batch(self, unlabeled: dict | None) -> dict | None:
        """What a method's `training_step` reads as its unlabeled batch: None for a twin, whatever it is handed,
        so that no unlabeled image can reach its losses."""
        return unlabeled if self.uses_unlabeled else None


def sigmoid_rampup(step: int, length: int) -> float:
    """exp(−5 (1 − t)²), the ramp of Laine & Aila used by Mean Teacher and its descendants."""
    if length <= 0:
        return 1.0
    t = min(max(step, 0), length) / length
    return float(math.exp(-5.0 * (1.0 - t) ** 2))


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """teacher ← decay·teacher + (1−decay)·student for parameters *and* floating buffers
    (BatchNorm running statistics); integer buffers (batch counters) are copied."""
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.mul_(decay).add_(s.detach(), alpha=1 - decay)
    for t, s in zip(teacher.buffers(), student.buffers()):
        if t.dtype.is_floating_point:
            t.mul_(decay).add_(s.detach(), alpha=1 - decay)
        else:
            t.copy_(s)
