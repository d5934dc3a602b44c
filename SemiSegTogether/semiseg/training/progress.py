"""What a running training shows: the console bar and the JSON `iteration` events, with an ETA from the
measured speed and the latest validation Dice.

Events come at a steady rate in time (at most one every `event_seconds`, plus the first iteration, the last,
and each validated one), whatever the number of iterations. The ETA counts the remaining steps at the mean
measured step time, the remaining validations at the last one's measured time, and the export.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

from semiseg.events import EventWriter

BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"


def format_duration(seconds: float | None) -> str:
    """'42 s', '4.2 min', '3.1 h'; '?' when unknown."""
    if seconds is None:
        return "?"
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """One run's progress. Until a step has been measured, `eta_seconds` is the plan's (None without a plan)."""

    def __init__(self, events: EventWriter, total: int, start: int, val_every: int, has_validation: bool,
                 event_seconds: float, show: bool, desc: str, export_seconds: float = 0.0,
                 planned_eta: float | None = None, deadline=None):
        self.events, self.total, self.start, self.val_every = events, total, start, val_every
        self.has_validation, self.event_seconds, self.export_seconds = has_validation, event_seconds, export_seconds
        self.step_total, self.steps = 0.0, 0
        self.validation_seconds: float | None = None
        self.dice: float | None = None
        self._last_event = -float("inf")
        self.planned_eta = planned_eta  # shown until the first step is measured
        self.deadline = deadline  # with --time: training ends by then at the latest (training.deadline)
        self.bar = tqdm(total=total, initial=start, disable=not show, file=sys.stderr, desc=desc,
                        dynamic_ncols=True, unit="it", bar_format=BAR_FORMAT)
        if planned_eta is not None:
            self.bar.set_postfix({"ETA": format_duration(planned_eta)})

    def remaining_validations(self, done: int) -> int:
        if not self.has_validation or done >= self.total:
            return 0
        return (self.total // self.val_every - done // self.val_every) + (1 if self.total % self.val_every else 0)

    def eta_seconds(self, done: int) -> float | None:
        if not self.steps:
            return self.planned_eta
        eta = (self.total - done) * self.step_total / self.steps
        eta += self.remaining_validations(done) * (self.validation_seconds or 0.0)
        eta += self.export_seconds if done < self.total else 0.0
        return min(eta, self.deadline.seconds_left()) if self.deadline is not None else eta

    def stepped(self, done: int, seconds: float, losses: dict[str, float], lr: float, validating: bool) -> None:
        """After an optimiser step; emits an event when one is due (a validation is about to follow: due)."""
        self.step_total += seconds
        self.steps += 1
        self.bar.update(1)
        self._postfix(done, losses)
        now = time.monotonic()
        due = done == self.start + 1 or done == self.total or validating or \
            now - self._last_event >= self.event_seconds
        if due:
            self._last_event = now
            self.events.emit("iteration", iteration=done, total_iterations=self.total, losses=losses, lr=lr,
                             eta_seconds=self.eta_seconds(done), validation_dice=self.dice)

    def validated(self, dice: float, seconds: float) -> None:
        self.dice, self.validation_seconds = dice, seconds

    def _postfix(self, done: int, losses: dict[str, float]) -> None:
        shown = {k: f"{v:.3f}" for k, v in losses.items() if k in ("total", "supervised")}
        if self.dice is not None:
            shown["val Dice"] = f"{self.dice:.3f}"
        shown["ETA"] = format_duration(self.eta_seconds(done))
        self.bar.set_postfix(shown, refresh=False)

    def close(self) -> None:
        self.bar.close()
