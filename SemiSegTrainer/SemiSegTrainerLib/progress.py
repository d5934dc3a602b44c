"""`semiseg train` events -> progress, ETA, loss and Dice curves, and the job state.

    idle -> starting (checking data, loading) -> running -> done | failed
    starting/running -> cancelling -> idle (cancelled; the last checkpoint stays for Resume)
"""

from __future__ import annotations

from typing import Optional

from SemiSegTogetherLib.events import JobProgress, JobState


def formatDuration(seconds: Optional[float]) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


class TrainingProgress(JobProgress):

    def reset(self) -> None:
        super().reset()
        self.iteration = 0
        self.totalIterations = 0
        self.startIteration = 0
        self.etaSeconds = None
        self.losses = {}          # name -> [(iteration, value)]
        self.dice = []            # [(iteration, mean dice)]
        self.perLabelDice = {}    # label -> [(iteration, dice)]
        self.lastCheckpoint = None
        self.bestCheckpoint = None
        self.checkpointIteration = None
        self.modelPath = None
        self.modelDice = None     # (checkpoint, validation Dice) of the exported model: "last" or "best"
        self.device = None
        self.method = None
        self.planned = False      # a check-only run that also printed `semiseg plan`
        self.stoppedEarly = None  # (iteration, planned iterations): training ended early to keep the time limit

    def started(self) -> None:
        """The process was launched; it reads the data before the first event."""
        super().started()
        self.state = JobState.STARTING

    def replay(self, events: list) -> None:
        """Fold events of an earlier part of this run (before a Resume) into the curves."""
        for event in events:
            self._apply(event.get("event"), event)

    def _apply(self, kind: str, event: dict) -> None:
        if kind == "start":
            self.totalIterations = int(event.get("total_iterations") or 0)
            self.startIteration = int(event.get("start_iteration") or 0)
            self.iteration = max(self.iteration, self.startIteration)
            self.device = event.get("device")
            self.method = event.get("method")
            self.stage = "training"
            # A resumed run restarts at startIteration: forget points the engine will redo.
            self.losses = {k: [p for p in v if p[0] <= self.startIteration] for k, v in self.losses.items()}
            self.dice = [p for p in self.dice if p[0] <= self.startIteration]
            self.perLabelDice = {k: [p for p in v if p[0] <= self.startIteration]
                                 for k, v in self.perLabelDice.items()}
        elif kind == "iteration":
            iteration = int(event.get("iteration") or 0)
            self.iteration = iteration
            if event.get("total_iterations"):
                self.totalIterations = int(event["total_iterations"])
            self.etaSeconds = event.get("eta_seconds")
            for name, value in (event.get("losses") or {}).items():
                if isinstance(value, (int, float)):
                    self.losses.setdefault(name, []).append((iteration, float(value)))
        elif kind == "validation":
            iteration = int(event.get("iteration") or self.iteration)
            if isinstance(event.get("dice"), (int, float)):
                self.dice.append((iteration, float(event["dice"])))
            for name, value in (event.get("per_label") or {}).items():
                if isinstance(value, (int, float)):
                    self.perLabelDice.setdefault(name, []).append((iteration, float(value)))
            self.stage = "validating"
        elif kind == "checkpoint":
            if event.get("kind") == "best":
                self.bestCheckpoint = event.get("path")
            else:
                self.lastCheckpoint = event.get("path")
                self.checkpointIteration = event.get("iteration")
        elif kind == "deadline":
            self.stoppedEarly = (int(event.get("iteration") or 0), int(event.get("total_iterations") or 0))
            self.totalIterations = self.stoppedEarly[0] or self.totalIterations
        elif kind == "done":
            self.modelPath = event.get("model")
            shipped = event.get("checkpoint", "best")  # engines before the last-checkpoint default shipped the best
            self.modelDice = (shipped, event.get("last_dice" if shipped == "last" else "best_dice"))
            self.stage = "done"
        if self.totalIterations:
            self.fraction = min(1.0, self.iteration / self.totalIterations)

    def lossCurve(self, name: str = "total") -> list:
        return list(self.losses.get(name, []))

    def statusText(self) -> str:
        if self.state == JobState.STARTING:
            return "starting: checking and loading the data..."
        if self.state == JobState.RUNNING:
            text = f"iteration {self.iteration}/{self.totalIterations}"
            if self.etaSeconds is not None:
                text += f", {formatDuration(self.etaSeconds)} left"
            if self.losses.get("total"):
                text += f", loss {self.losses['total'][-1][1]:.3f}"
            if self.dice:
                text += f", validation Dice {self.dice[-1][1]:.3f}"
            return text
        if self.state == JobState.CANCELLING:
            return "cancelling: saving the last checkpoint..."
        if self.state == JobState.DONE and self.stage == "checked":
            return "data check passed" + ("; the plan is in the log" if self.planned else "")
        if self.state == JobState.DONE:
            text = "done"
            shipped, dice = self.modelDice or ("best", None)
            if isinstance(dice, (int, float)):
                text += f", validation Dice {dice:.3f} ({shipped} checkpoint)"
            if self.stoppedEarly:
                text += " (stopped at iteration {0} of {1} planned, to keep the time limit)".format(*self.stoppedEarly)
            return text
        if self.state == JobState.FAILED:
            return f"failed: {self.errorMessage}"
        if self.cancelled:
            at = f" at iteration {self.checkpointIteration}" if self.checkpointIteration else ""
            return f"cancelled; checkpoint{at} kept, Resume continues it"
        return "idle"
