"""Which Python packages the engine needs, which are installed, which are missing, and how pip is asked.

Installing is done by the module (PyTorchUtils for torch, only when it is missing; `slicer.util.pip_install`
for Resources/requirements.txt), on Apply, after a confirmation, never at import. pip gets a constraints
file that holds torch and numpy at their installed versions: PyTorchUtils chose torch's build for the GPU
driver and Slicer ships its numpy, and e.g. monai 1.6 (torch>=2.8) must not replace either, so pip picks a
monai that fits them. Versions are read from package metadata: nothing here imports torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata
from typing import Optional

_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(>=\s*([0-9][0-9A-Za-z.]*))?"
                  r"\s*(,\s*<\s*([0-9][0-9A-Za-z.]*))?\s*$")
MINIMUM_TORCH_VERSION = "2.2"  # = pyproject.toml's torch floor (a test checks)
HELD_PACKAGES = ("torch", "numpy")  # pip may never change these in Slicer's Python


@dataclass
class Requirement:
    name: str
    minimum: Optional[str] = None
    line: str = ""
    below: Optional[str] = None  # an upper cap ("<2"), for APIs that may break in a major version


def parseRequirements(text: str) -> list:
    """`name`, `name>=X.Y` or `name>=X.Y,<Z` per line; comments and blank lines ignored; anything else is rejected."""
    reqs = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _REQ.match(line)
        if not match:
            raise ValueError(f"requirements: {line!r} is not 'name', 'name>=version' or 'name>=version,<version' "
                             "(only >= floors and < caps are used)")
        reqs.append(Requirement(match.group(1), match.group(4), line, match.group(6)))
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
        if version is None or (req.minimum and versionTuple(version) < versionTuple(req.minimum)) \
                or (req.below and versionTuple(version) >= versionTuple(req.below)):
            missing.append(req)
    return missing


def versionsReport(names, versionOf=installedVersion) -> list:
    """[(name, version or 'not installed')] for the panel."""
    return [(n, versionOf(n) or "not installed") for n in names]


def torchProblem(versionOf=installedVersion) -> Optional[str]:
    """None when the installed torch is recent enough, "missing" when there is none, else what is wrong."""
    version = versionOf("torch")
    if version is None:
        return "missing"
    if versionTuple(version) < versionTuple(MINIMUM_TORCH_VERSION):
        return f"PyTorch {version} is older than {MINIMUM_TORCH_VERSION}"
    return None


def heldConstraints(versionOf=installedVersion) -> str:
    """A pip constraints file pinning the installed torch and numpy (`name==version` lines)."""
    return "".join(f"{name}=={version}\n" for name in HELD_PACKAGES if (version := versionOf(name)))


def pipInstallArguments(requirements: list, constraintsPath: str, upgrade: bool = False) -> list:
    """`pip install` arguments (after "install"): the requirements, held by `constraintsPath`; upgrade = --upgrade."""
    return (["--upgrade"] if upgrade else []) + [r.line for r in requirements] + ["-c", constraintsPath]
