"""Which Python packages the engine needs, which are installed, which are missing.

Installing is done by the module (PyTorchUtils for torch, `slicer.packaging.pip_ensure`
or `slicer.util.pip_install` for Resources/requirements.txt), on Apply, after a
confirmation, never at import. This file only reads requirements and metadata.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata
from typing import Optional

_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(>=\s*([0-9][0-9A-Za-z.]*))?\s*$")


@dataclass
class Requirement:
    name: str
    minimum: Optional[str] = None
    line: str = ""


def parseRequirements(text: str) -> list:
    """`name` or `name>=X.Y` per line; comments and blank lines ignored; anything else is rejected."""
    reqs = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _REQ.match(line)
        if not match:
            raise ValueError(f"requirements: {line!r} is not 'name' or 'name>=version' (only >= floors are used)")
        reqs.append(Requirement(match.group(1), match.group(4), line))
    return reqs


def readRequirements(path: str) -> list:
    with open(path, encoding="utf-8") as f:
        return parseRequirements(f.read())


def versionTuple(version: str) -> tuple:
    parts = []
    for piece in re.split(r"[.+-]", version):
        match = re.match(r"\d+", piece)
        if not match:
            break
        parts.append(int(match.group()))
    return tuple(parts)


def installedVersion(name: str) -> Optional[str]:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def missingRequirements(requirements: list, versionOf=installedVersion) -> list:
    """Requirements that are not installed, or installed below their floor."""
    missing = []
    for req in requirements:
        version = versionOf(req.name)
        if version is None or (req.minimum and versionTuple(version) < versionTuple(req.minimum)):
            missing.append(req)
    return missing


def versionsReport(names, versionOf=installedVersion) -> list:
    """[(name, version or 'not installed')] for the panel."""
    return [(n, versionOf(n) or "not installed") for n in names]
