"""Background engine processes: start, read output without blocking, cancel the whole tree.

`PythonSlicer` is a launcher that starts the real Python as a child, so ending the
direct child is not enough: Cancel signals every process of the tree (psutil when
it is importable, as in Slicer; otherwise the process group on POSIX or
``taskkill /T`` on Windows). Nothing here blocks: the GUI calls `EngineJob.poll()`
from a QTimer.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from SemiSegTogetherLib.events import EventTail, JobProgress, JobState


def _psutil():
    try:
        import psutil  # noqa: PLC0415  (Slicer ships it; optional elsewhere)
    except ImportError:
        return None
    return psutil


def processTreePids(pid: int) -> list:
    """`pid` and all its descendants that can be found (children first)."""
    psutil = _psutil()
    if psutil is None:
        return [pid]
    try:
        parent = psutil.Process(pid)
        return [c.pid for c in parent.children(recursive=True)] + [pid]
    except psutil.NoSuchProcess:
        return []


def killProcessTree(pid: int, force: bool = False, knownPids: Optional[Sequence[int]] = None,
                    processGroup: bool = True) -> list:
    """Ask (SIGTERM) or force (SIGKILL) `pid` and its descendants to end. Returns the pids signalled.

    `knownPids` adds descendants seen earlier (a child whose parent has already
    exited is no longer found from the parent). `processGroup`: the process was
    started in its own session, so on POSIX its group can be signalled as a whole.
    """
    pids = list(dict.fromkeys(list(processTreePids(pid)) + list(knownPids or [])))
    psutil = _psutil()
    signalled = []
    if psutil is not None:
        for p in pids:
            try:
                proc = psutil.Process(p)
                proc.kill() if force else proc.terminate()
                signalled.append(p)
            except psutil.NoSuchProcess:
                pass
            except psutil.AccessDenied:
                pass
    if os.name == "posix":
        if processGroup:
            try:
                os.killpg(os.getpgid(pid), signal.SIGKILL if force else signal.SIGTERM)
                if pid not in signalled:
                    signalled.append(pid)
            except (ProcessLookupError, PermissionError):
                pass
        elif psutil is None:
            for p in pids:
                try:
                    os.kill(p, signal.SIGKILL if force else signal.SIGTERM)
                    signalled.append(p)
                except ProcessLookupError:
                    pass
    elif psutil is None:  # Windows without psutil
        args = ["taskkill", "/T", "/PID", str(pid)] + (["/F"] if force else [])
        if subprocess.call(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) == 0:
            signalled.append(pid)
    return signalled


# Windows process creation flags (winbase.h); named here so the choice can be tested on any OS.
CREATE_NEW_PROCESS_GROUP = 0x00000200
CREATE_NO_WINDOW = 0x08000000
STARTF_USESHOWWINDOW, SW_HIDE = 0x00000001, 0


def popenOptions(osName: str = os.name) -> dict:
    """subprocess.Popen options for an engine process: its own process group, and no console window.

    POSIX: a new session, so Cancel can signal the whole tree. Windows: a new process group, no console
    window (CREATE_NO_WINDOW, and a hidden window as Slicer's launchConsoleProcess asks): otherwise each
    run opens a console, and closing it would end the job.
    """
    if osName == "posix":
        return {"start_new_session": True}
    options = {"creationflags": CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW}
    if hasattr(subprocess, "STARTUPINFO"):  # only on Windows
        info = subprocess.STARTUPINFO()
        info.dwFlags |= STARTF_USESHOWWINDOW
        info.wShowWindow = SW_HIDE
        options["startupinfo"] = info
    return options


class BackgroundProcess:
    """A subprocess whose merged stdout/stderr is collected by a reader thread, line by line."""

    def __init__(self, args: Sequence[str], env: Optional[dict] = None, cwd: Optional[str] = None,
                 logPath: Optional[str] = None):
        self.args = [str(a) for a in args]
        self.env = env
        self.cwd = cwd
        self.logPath = logPath
        self.proc: Optional[subprocess.Popen] = None
        self._lines: "queue.Queue[str]" = queue.Queue()
        self._reader: Optional[threading.Thread] = None
        self._knownPids: list = []

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=self.env, cwd=self.cwd, **popenOptions())
        self._reader = threading.Thread(target=self._readOutput, name="semiseg-output", daemon=True)
        self._reader.start()

    def _readOutput(self) -> None:
        log = open(self.logPath, "a", encoding="utf-8") if self.logPath else None
        try:
            for raw in iter(self.proc.stdout.readline, b""):
                # Progress bars rewrite one line with '\r': keep the last state of each.
                text = raw.decode("utf-8", errors="replace").rstrip("\r\n").split("\r")[-1]
                self._lines.put(text)
                if log:
                    log.write(text + "\n")
                    log.flush()
        finally:
            self.proc.stdout.close()
            if log:
                log.close()

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    def readLines(self) -> list:
        """Output lines received since the last call."""
        lines = []
        while True:
            try:
                lines.append(self._lines.get_nowait())
            except queue.Empty:
                return lines

    def poll(self) -> Optional[int]:
        """The exit code once the process has ended and its output has been read; None while running."""
        if self.proc is None:
            return None
        code = self.proc.poll()
        if code is None:
            self._knownPids = list(dict.fromkeys(self._knownPids + processTreePids(self.proc.pid)))
            return None
        if self._reader is not None:
            self._reader.join(timeout=1.0)
            if self._reader.is_alive():
                return None  # a grandchild still holds the pipe open; next poll
        return code

    def terminateTree(self) -> list:
        if self.proc is None:
            return []
        return killProcessTree(self.proc.pid, force=False, knownPids=self._knownPids)

    def killTree(self) -> list:
        if self.proc is None:
            return []
        return killProcessTree(self.proc.pid, force=True, knownPids=self._knownPids)

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        if self.proc is None:
            return None
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.poll()


@dataclass
class PollResult:
    logLines: list = field(default_factory=list)
    events: list = field(default_factory=list)
    finished: bool = False


class EngineJob:
    """An engine subprocess + its events file + a progress state machine, advanced by `poll()`."""

    def __init__(self, process: BackgroundProcess, eventsPath: str, progress: JobProgress,
                 cancelGraceSeconds: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.process = process
        self.eventsPath = eventsPath
        self.progress = progress
        self.cancelGraceSeconds = cancelGraceSeconds
        self.clock = clock
        self._cancelTime: Optional[float] = None
        self._badLines: list = []
        self.tail = EventTail(eventsPath, onBadLine=self._badLines.append)

    def start(self) -> None:
        if os.path.exists(self.eventsPath):
            os.remove(self.eventsPath)  # stale events from an earlier run must not be read as this run's
        self.progress.started()
        try:
            self.process.start()
        except OSError as e:
            self.progress.errorMessage = f"could not start {self.process.args[0]}: {e}"
            self.progress.state = JobState.FAILED
            raise

    @property
    def running(self) -> bool:
        return self.progress.active

    def cancel(self) -> bool:
        """Ask the process tree to end; it is forced after `cancelGraceSeconds` (see poll)."""
        if not self.progress.requestCancel():
            return False
        self._cancelTime = self.clock()
        self.process.terminateTree()
        return True

    def poll(self) -> PollResult:
        result = PollResult()
        if self.process.proc is None or not self.progress.active:
            return result
        result.logLines = self.process.readLines()
        result.events = self.tail.readNew()
        for event in result.events:
            self.progress.apply(event)
        code = self.process.poll()
        if code is None:
            if self._cancelTime is not None and self.clock() - self._cancelTime > self.cancelGraceSeconds:
                self.process.killTree()
            return result
        result.logLines += self.process.readLines()
        late = self.tail.flush()
        for event in late:
            self.progress.apply(event)
        result.events += late
        result.logLines += [f"(unreadable event line) {line}" for line in self._badLines]
        self._badLines.clear()
        self.progress.finished(code)
        result.finished = True
        return result

    def waitUntilFinished(self, timeout: float, interval: float = 0.1,
                          onPoll: Optional[Callable[[PollResult], None]] = None) -> bool:
        """Poll until the job ends (scripts and tests). False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.poll()
            if onPoll:
                onPoll(result)
            if result.finished or not self.progress.active:
                return True
            time.sleep(interval)
        return False


def startBackgroundProcess(args, env=None, logPath=None) -> BackgroundProcess:
    """The default process factory of the inference and training logics (tests inject their own)."""
    return BackgroundProcess(args, env=env, logPath=logPath)


def currentPythonExecutable() -> str:
    return sys.executable
