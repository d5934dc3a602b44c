"""What the engine made, and so what `--overwrite` may replace: never the input, never anything else.

A model package is recognised by its model.json (format "semiseg-model") beside its weights. A folder the
engine generates (a synthetic or converted dataset, the demo's output) holds a marker file listing what the
engine wrote into it; `--overwrite` removes exactly those entries and leaves every other file alone.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from semiseg.errors import ConfigError, DataError, ModelError

GENERATED_MARKER = ".semiseg-generated.json"
_PACKAGE_FORMAT = "semiseg-model"
_WEIGHT_FILES = ("weights.safetensors", "weights.pt")


def is_model_package(path: str | os.PathLike) -> bool:
    """A folder holding a SemiSeg model.json and a weights file."""
    path = Path(path)
    if not (path.is_dir() and (path / "model.json").is_file()):
        return False
    try:
        manifest = json.loads((path / "model.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return (isinstance(manifest, dict) and manifest.get("format") == _PACKAGE_FORMAT
            and any((path / w).is_file() for w in _WEIGHT_FILES))


def check_model_target(path: str | os.PathLike, overwrite: bool, option: str = "--out", error=ModelError) -> None:
    """Refuse to write a model package at `path` if something is there that we may not replace."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        if path.parent.exists() and not path.parent.is_dir():
            raise error(f"{option} {path}: {path.parent} is a file, not a folder")
        return
    if not is_model_package(path):
        what = "a file" if not path.is_dir() else "a folder that is not a SemiSeg model package (no model.json " \
                                                  "and weights in it)"
        raise error(f"{option} {path}: already exists and is {what}; it will not be replaced, even with "
                           f"--overwrite — choose another {option}")
    if not overwrite:
        raise error(f"{option} {path}: a model package already exists there (choose another {option} or "
                           f"pass --overwrite)")


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """`a` and `b` name the same file or folder (through links too), or the same path when neither exists."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return Path(os.path.abspath(a)) == Path(os.path.abspath(b))


def check_new_file(path: str | os.PathLike, overwrite: bool, option: str) -> Path:
    """A file we are about to write: refuse an existing one unless `overwrite`, a folder always, and a
    parent that is missing or a file — before any work, so a long run does not fail at its end."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a folder; give a file name")
    if path.exists() and not overwrite:
        raise ConfigError(f"{option} {path}: already exists (choose another name or pass --overwrite)")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{option} {path}: {parent} is a file, not a folder")
            break
    return path


# ---------------------------------------------------------------- generated folders


class GeneratedFolder:
    """A folder the engine fills: `prepare` empties what an earlier generation wrote (only that), and
    `add` records each entry before it is written, so even a killed run leaves a complete list."""

    def __init__(self, root: str | os.PathLike, kind: str):
        self.root, self.kind = Path(root), kind
        self.entries: list[str] = []

    @property
    def marker(self) -> Path:
        return self.root / GENERATED_MARKER

    def prepare(self, overwrite: bool) -> "GeneratedFolder":
        root = self.root
        if root.exists() and not root.is_dir():
            raise DataError(f"{root}: exists and is not a folder")
        if root.exists() and any(root.iterdir()):
            if not overwrite:
                raise DataError(f"{root}: folder is not empty (choose an empty folder or pass --overwrite)")
            self._remove_previous()
        root.mkdir(parents=True, exist_ok=True)
        self._write_marker()
        return self

    def add(self, relative: str | os.PathLike) -> Path:
        """Record `relative` (a file or a folder the engine owns whole) as ours; returns its full path."""
        rel = Path(relative).as_posix()
        if rel not in self.entries:
            self.entries.append(rel)
            self._write_marker()
        return self.root / rel

    def _remove_previous(self) -> None:
        previous = _read_marker(self.marker)
        if previous is None:
            raise DataError(f"{self.root}: is not empty and was not made by semiseg (no {GENERATED_MARKER} in "
                               f"it); nothing there will be deleted, even with --overwrite — choose an empty or "
                               f"new folder")
        if previous.get("kind") != self.kind:
            raise DataError(f"{self.root}: holds a semiseg {previous.get('kind')}, not a {self.kind}; choose "
                               f"another folder")
        root = Path(os.path.abspath(self.root))
        emptied: set[Path] = set()
        for rel in previous.get("entries", []):
            target = Path(os.path.abspath(root / str(rel)))
            if root not in target.parents:  # a tampered marker cannot reach outside the folder
                continue
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target, ignore_errors=True)
            elif target.exists() or target.is_symlink():
                target.unlink()
            emptied.update(p for p in target.parents if root in p.parents)
        # The folders that held our entries go too once empty; one still holding a user's file stays.
        for folder in sorted(emptied, key=lambda p: -len(p.parts)):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        self.marker.unlink(missing_ok=True)

    def _write_marker(self) -> None:
        from semiseg.atomic import atomic_path
        with atomic_path(self.marker, ".json") as tmp:
            tmp.write_text(json.dumps({"made_by": "semiseg", "kind": self.kind, "entries": self.entries},
                                      indent=1) + "\n", encoding="utf-8")


def _read_marker(marker: Path) -> dict | None:
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("made_by") == "semiseg" else None
