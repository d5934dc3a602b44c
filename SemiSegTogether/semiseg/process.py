"""How long this process has been running: the time budget of `semiseg train --time` counts from its start."""

from __future__ import annotations

import os
import time
from pathlib import Path

_IMPORTED = time.perf_counter()


def seconds_since_start() -> float:
    """Wall seconds since the process started (Linux: /proc; elsewhere since this module was imported)."""
    try:
        fields = Path("/proc/self/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time after boot, in ticks
        uptime = float(Path("/proc/uptime").read_text(encoding="utf-8").split()[0])
        return max(0.0, uptime - started)
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - _IMPORTED


# A process that lived this much longer than its command (a test run or a notebook calling `main()`) counts a
# budget from the command's start; a fresh `semiseg` process counts its interpreter start-up too.
LONG_LIVED_SECONDS = 60.0
_command_started: float | None = None


def mark_command_start() -> None:
    """Called by the CLI's `main()`."""
    global _command_started
    _command_started = time.perf_counter()


def seconds_spent() -> float:
    """What a `--time` budget has used so far: since the process started, or since the command began in a
    process that had been running long before it."""
    age = seconds_since_start()
    if _command_started is None:
        return age
    command = time.perf_counter() - _command_started
    return age if age - command < LONG_LIVED_SECONDS else command


def load_average() -> float:
    """The 1-minute load average (NaN where the system does not say): other work on the cores changes speed."""
    try:
        return float(Path("/proc/loadavg").read_text(encoding="utf-8").split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")
