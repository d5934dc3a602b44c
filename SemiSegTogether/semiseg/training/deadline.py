"""`train --time`: the budget is kept even when the machine slows down after the plan was made.

The plan fixes the iteration count from a timing probe. When other work then takes the cores, the steps get
slower and the planned iterations no longer fit (measured: 1.96× the budget at 15 minutes). The deadline
ends training early, after the last step that still leaves time for a final validation and the export, and
the model card says where it stopped. A faster machine than planned is not stretched: the run ends early.

A run cut short that way would stop with its learning rate still high (cut at half the planned steps, a poly
schedule is at 54 % of its start), its weights not annealed. So the deadline also says how far through the run
the clock is, and the schedule follows the clock wherever it is further on than the steps
(semiseg.training.optimisation): on a slower machine the learning rate still reaches its end at the deadline.
"""

from __future__ import annotations

from semiseg import process


class Deadline:
    def __init__(self, budget_seconds: float, export_seconds: float, validation_seconds: float,
                 spent_before: float = 0.0, clock=None):
        """`spent_before`: training seconds of the run's earlier parts (a resume); `validation_seconds`: the
        plan's time for one validation pass, until one has been measured."""
        self.budget, self.export, self.validation = budget_seconds, export_seconds, validation_seconds
        self.spent_before, self.clock = spent_before, clock or process.seconds_spent
        self.stopped_at: int | None = None
        self.start, self.start_fraction = spent_before, 0.0

    @classmethod
    def from_plan(cls, plan: dict | None, spent_before: float = 0.0) -> "Deadline | None":
        """None without a budget (a run of given settings, whose estimate is only shown)."""
        if not plan or not plan.get("budget_seconds"):
            return None
        predicted = plan.get("predicted") or {}
        per_validation = float(predicted.get("validation") or 0.0) / max(int(predicted.get("validations") or 1), 1)
        return cls(float(plan["budget_seconds"]), float(predicted.get("export") or 0.0), per_validation,
                   spent_before)

    def next_step_fits(self, mean_step_seconds: float, validation_seconds: float | None, validates: bool) -> bool:
        """Whether one more step, then the final validation (when there are validation cases) and the export,
        end within the budget."""
        final = self._final_validation(validation_seconds, validates)
        return self.spent_before + self.clock() + mean_step_seconds + final + self.export <= self.budget

    def begin(self, done_fraction: float = 0.0) -> None:
        """The training loop starts now, with `done_fraction` of the run's steps already trained (a resume)."""
        self.start, self.start_fraction = self.spent_before + self.clock(), done_fraction

    def run_fraction(self, validation_seconds: float | None, validates: bool) -> float:
        """How far through the run the clock is, from 0 at `begin` (or the resumed fraction) to 1 when the last
        step must end: the budget less the final validation and the export."""
        final = self._final_validation(validation_seconds, validates)
        span = self.budget - self.export - final - self.start
        if span <= 0:
            return 1.0
        elapsed = self.spent_before + self.clock() - self.start
        return min(1.0, self.start_fraction + (1.0 - self.start_fraction) * max(0.0, elapsed) / span)

    def _final_validation(self, validation_seconds: float | None, validates: bool) -> float:
        """Seconds the final validation takes: as measured, else as planned; 0 without validation cases."""
        if not validates:
            return 0.0
        return validation_seconds if validation_seconds is not None else self.validation

    def seconds_left(self) -> float:
        """Of the budget: what a progress ETA may not exceed (training stops in time for the export)."""
        return max(0.0, self.budget - self.spent_before - self.clock())

    def card(self, planned_iterations: int) -> dict:
        reason = ("the time budget: the steps ran slower than the plan's probe (the learning-rate schedule followed "
                  "the clock to its end)")
        return {"stopped_early": {"iteration": self.stopped_at, "planned_iterations": planned_iterations,
                                  "reason": reason}}
