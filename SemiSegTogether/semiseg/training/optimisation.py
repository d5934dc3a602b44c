"""Optimiser, learning-rate schedule and AMP gradient scaler: the method's preference unless the user chose."""

from __future__ import annotations

import torch

from semiseg.fastpaths import FastPaths
from semiseg.training.config import TrainConfig


class Optimisation:
    """`optimizer`, `scheduler` (stepped once per iteration) and `scaler` (enabled for fp16 autocast only)."""

    def __init__(self, cfg: TrainConfig, method, device: torch.device, fast: FastPaths):
        pref = method.optimizer_settings()
        self.opt_name = cfg.optimizer or pref.get("optimizer", "sgd")
        lr = cfg.lr if cfg.lr is not None else pref.get("lr", 1e-2 if self.opt_name == "sgd" else 1e-3)
        wd = cfg.weight_decay if cfg.weight_decay is not None else pref.get("weight_decay", 1e-4)
        params = [p for p in method.trainable().parameters() if p.requires_grad]
        if self.opt_name == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=lr, momentum=pref.get("momentum", 0.9), weight_decay=wd,
                                             nesterov=bool(pref.get("nesterov", False)))
        else:
            cls = torch.optim.Adam if self.opt_name == "adam" else torch.optim.AdamW
            self.optimizer = cls(params, lr=lr, betas=tuple(pref.get("betas", (0.9, 0.999))), weight_decay=wd)
        self.schedule = cfg.schedule or pref.get("schedule", "poly")
        # How far through the run the --time budget's clock is (semiseg.training.deadline; 0 without a budget),
        # set by the loop: the schedule follows it wherever it is further on than the steps.
        self.clock_fraction = 0.0
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _lr_factor(self.schedule, cfg.iterations, pref.get("milestones", (0.4, 0.8)),
                                       lambda: self.clock_fraction))
        self.scaler = fast.grad_scaler(device)  # loss scaling for fp16 only

    def step(self, total: torch.Tensor) -> None:
        """Backward through `total` (scaled under AMP), one optimiser step, one schedule step."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]


def _lr_factor(schedule: str, total: int, milestone_fractions, clock_fraction=lambda: 0.0):
    """The learning-rate factor at step `it` of `total`, or at `clock_fraction()` of the run where that is further
    on: poly (1 - progress)^0.9, never quite 0; step: × 0.1 at each milestone fraction; constant."""
    milestones = [int(f * total) for f in milestone_fractions]

    def factor(it: int) -> float:
        clock = clock_fraction()
        if schedule == "poly":
            return (1 - min(max(it / total, clock), (total - 1) / total)) ** 0.9
        if schedule == "step":
            return 0.1 ** sum(it >= m or clock >= f for m, f in zip(milestones, milestone_fractions))
        return 1.0

    return factor
