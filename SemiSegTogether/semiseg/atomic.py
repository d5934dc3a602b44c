"""Atomic writes: a reader (or a crash) never sees half a file, and nothing the user made is overwritten.

Temporary names carry the writing process's id (`.NAME.<pid>.<random><suffix>`), so the next write of
the same target removes what a killed process (kill -9, a power cut) left behind, and never a temporary
of a process still running. What is written gets the permissions the umask gives, as a plain `open` or
`mkdir` would (mkstemp/mkdtemp make them private to the owner).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _prefix(target: Path) -> str:
    return f".{target.name}.{os.getpid()}."


def remove_leftovers(target: str | os.PathLike, suffix: str = "") -> list[Path]:
    """Delete the temporaries of `target` that a process no longer running left beside it."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    pattern = re.compile(re.escape(f".{target.name}.") + r"(\d+)\..*" + re.escape(suffix) + "$")
    removed = []
    for entry in target.parent.iterdir():
        match = pattern.fullmatch(entry.name)
        if match and not _alive(int(match.group(1))):
            _remove(entry)
            removed.append(entry)
    old = target.with_name(f".{target.name}.old")  # a swap interrupted between its two renames
    if (old.exists() or old.is_symlink()) and target.exists():
        _remove(old)
        removed.append(old)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    except (OverflowError, OSError):
        return False
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def temporary_dir(target: Path, suffix: str = "") -> Path:
    """A new folder beside `target`, named so that `remove_leftovers` recognises it, mode 0777 & ~umask."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(target, suffix)
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(target), suffix=suffix, dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


@contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yields a temporary path beside `target`; on success it is renamed onto `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix or ".tmp"
    remove_leftovers(target, suffix)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(target), suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_umask())  # a writer may have replaced the file
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary folder beside `target`; on success it replaces `target` in one rename."""
    target = Path(target)
    tmp = temporary_dir(target)
    try:
        yield tmp
        if target.exists():
            # Only reached when the caller allowed overwriting: move the old one aside first so the
            # swap is as short as possible and the old package survives a failure.
            old = target.with_name(f".{target.name}.old")
            _remove(old)
            os.replace(target, old)
            os.replace(tmp, target)
            _remove(old)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
