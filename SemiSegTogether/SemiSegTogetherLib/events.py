"""The engine's JSON-lines events (docs/contracts.md, "Events") turned into progress and state.

`EventTail` reads whatever new complete lines a growing events file has;
`InferenceProgress` folds events and the process exit into one state machine:

    idle -> running -> done | failed           (events, then the exit code)
    running -> cancelling -> idle (cancelled)  (Cancel)
"""

from __future__ import annotations

import json
import os
from typing import Callable, Optional


class JobState:
    IDLE = "idle"
    STARTING = "starting"
    RUNNING = "running"
    CANCELLING = "cancelling"
    DONE = "done"
    FAILED = "failed"

    ACTIVE = (STARTING, RUNNING, CANCELLING)


class EventTail:
    """Incremental reader of a JSON-lines file that another process is appending to."""

    def __init__(self, path: str, onBadLine: Optional[Callable[[str], None]] = None):
        self.path = path
        self.offset = 0
        self._partial = b""
        self.onBadLine = onBadLine

    def readNew(self) -> list:
        """Events in complete lines written since the last call (a half-written last line waits)."""
        try:
            with open(self.path, "rb") as f:
                if os.fstat(f.fileno()).st_size < self.offset:  # file was replaced: start over
                    self.offset, self._partial = 0, b""
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()  # b"" when data ended with a newline
        events = []
        for raw in lines:
            self._parseLine(raw, events)
        return events

    def flush(self) -> list:
        """At process end: also parse a last line that has no newline."""
        events = self.readNew()
        data, self._partial = self._partial, b""
        self._parseLine(data, events)
        return events

    def _parseLine(self, raw: bytes, events: list) -> None:
        """Appends the event on one line; a line that is not an event object goes to onBadLine."""
        text = raw.decode("utf-8", errors="replace").strip()
        if not text:
            return
        try:
            event = json.loads(text)
        except json.JSONDecodeError:
            event = None
        if isinstance(event, dict) and isinstance(event.get("event"), str):
            events.append(event)
        elif self.onBadLine:
            self.onBadLine(text)


class JobProgress:
    """State shared by inference and training jobs: state, fraction done, messages."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.state = JobState.IDLE
        self.fraction = 0.0
        self.stage = ""
        self.errorMessage = ""
        self.cancelled = False
        self.returnCode = None
        self.startTime = None
        self.doneEvent = None

    @property
    def active(self) -> bool:
        return self.state in JobState.ACTIVE

    def started(self) -> None:
        self.reset()
        self.state = JobState.RUNNING

    def requestCancel(self) -> bool:
        """Cancel pressed: True when there is something to cancel."""
        if not self.active:
            return False
        self.state = JobState.CANCELLING
        return True

    def apply(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "start":
            self.startTime = event.get("time")
            if self.state == JobState.STARTING:
                self.state = JobState.RUNNING
        elif kind == "error":
            self.errorMessage = str(event.get("message") or "the engine reported an error")
        elif kind == "done":
            self.doneEvent = event
            self.fraction = 1.0
        self._apply(kind, event)

    def _apply(self, kind: str, event: dict) -> None:  # subclasses
        pass

    def finished(self, returnCode: int) -> None:
        """The process has exited with `returnCode`."""
        self.returnCode = returnCode
        if self.state == JobState.CANCELLING:
            self.cancelled = True
            self.state = JobState.IDLE
            self.stage = "cancelled"
        elif returnCode == 0 and self.doneEvent is not None and not self.errorMessage:
            self.state = JobState.DONE
            self.fraction = 1.0
        else:
            self.state = JobState.FAILED
            if not self.errorMessage:
                if returnCode == 0:
                    self.errorMessage = "the engine exited without reporting a result"
                else:
                    self.errorMessage = f"the engine exited with code {returnCode}"

    def percent(self) -> int:
        return int(round(100 * max(0.0, min(1.0, self.fraction))))


class InferenceProgress(JobProgress):
    """`semiseg predict` events: start, progress (fraction, stage), done (output), error."""

    def reset(self) -> None:
        super().reset()
        self.outputPath = None
        self.device = None

    def _apply(self, kind: str, event: dict) -> None:
        if kind == "start":
            self.device = event.get("device")
            self.stage = "started"
        elif kind == "progress":
            fraction = event.get("fraction")
            if isinstance(fraction, (int, float)):
                self.fraction = max(self.fraction, max(0.0, min(1.0, float(fraction))))
            if event.get("stage"):
                self.stage = str(event["stage"])
        elif kind == "done":
            self.outputPath = event.get("output")
            self.stage = "done"

    def statusText(self) -> str:
        if self.state == JobState.RUNNING:
            return f"{self.stage or 'running'} ({self.percent()}%)" + (f" on {self.device}" if self.device else "")
        if self.state == JobState.CANCELLING:
            return "cancelling..."
        if self.state == JobState.DONE:
            return "done"
        if self.state == JobState.FAILED:
            return f"failed: {self.errorMessage}"
        return "cancelled" if self.cancelled else "idle"


def removeIfExists(path: Optional[str]) -> None:
    if path and os.path.exists(path):
        os.remove(path)
