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
