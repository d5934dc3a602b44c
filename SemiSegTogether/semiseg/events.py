"""JSON-lines progress events (`--events FILE|-`): what the Slicer modules read.

One object a line, flushed at once so a reader tailing the file sees it immediately.
Nothing ever parses the human progress bar.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import IO, Any


def _clean(value: Any) -> Any:
    """JSON-safe: tensors and numpy scalars to floats, NaN/inf to null (strict JSON readers reject NaN)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class EventWriter:
    """Writes events to a file, to stdout ('-'), or nowhere (None)."""

    def __init__(self, target: str | Path | None, append: bool = False):
        self._own = False
        self._stream: IO[str] | None = None
        if target is None:
            return
        if str(target) == "-":
            self._stream = sys.stdout
        else:
            path = Path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._stream = open(path, "a" if append else "w", encoding="utf-8")
            self._own = True

    def emit(self, event: str, **fields: Any) -> dict:
        record = {"event": event, "time": round(time.time(), 3), **_clean(fields)}
        if self._stream is not None:
            self._stream.write(json.dumps(record) + "\n")
            self._stream.flush()
        return record

    def close(self) -> None:
        if self._own and self._stream is not None:
            self._stream.close()
        self._stream = None

    def __enter__(self) -> "EventWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_events(path: str | Path) -> list[dict]:
    """All complete events in a file (a partly written last line is ignored)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
