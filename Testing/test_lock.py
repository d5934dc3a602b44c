"""The lock (constraints.txt) and pyproject.toml agree: every declared dependency is pinned, within its range,
and a venv made by the Makefile on the lock's Python has exactly the pinned versions (what CI was green with)."""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def _lock() -> tuple[str, dict[str, Version]]:
    text = (ROOT / "constraints.txt").read_text(encoding="utf-8")
    python = re.search(r"^# python: (\S+)$", text, re.M).group(1)
    pins = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = Version(version)
    return python, pins


# Extras outside CI, neither installed by the Makefile nor by the tests (nor locked): `.[peers]` holds the
# peer tools `semiseg peer` runs for a benchmark row (nnunetv2).
UNLOCKED_EXTRAS = {"peers"}


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = [r for name, group in project.get("optional-dependencies", {}).items() if name not in UNLOCKED_EXTRAS
              for r in group]
    return [Requirement(r) for r in project["dependencies"] + extras]


def test_every_declared_dependency_is_pinned_within_its_range():
    _, pins = _lock()
    for req in _declared():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is declared in pyproject.toml but not pinned in constraints.txt (make lock)"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {req.name}=={pins[name]}, outside pyproject's range {req.specifier}"


def test_torch_pin_is_the_one_the_makefile_installs():
    _, pins = _lock()
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert f"TORCH := torch=={pins['torch']}" in makefile


def test_this_venv_has_the_locked_versions():
    python, pins = _lock()
    if "%d.%d" % sys.version_info[:2] != python:
        pytest.skip(f"the lock is for Python {python}; the Makefile installs from the ranges on this Python")
    for req in _declared():
        name = canonicalize_name(req.name)
        installed = Version(metadata.version(req.name))
        # a local build label (torch's +cpu) is the same release
        assert Version(installed.public) == pins[name], \
            f"{req.name} {installed} installed, {pins[name]} locked: run make (the venv predates the lock)"
