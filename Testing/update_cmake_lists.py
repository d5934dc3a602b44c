#!/usr/bin/env python3
"""Rewrite the MODULE_PYTHON_SCRIPTS / MODULE_PYTHON_RESOURCES blocks of each Slicer module's
CMakeLists.txt from the files on disk.

    python Testing/update_cmake_lists.py          # rewrite
    python Testing/update_cmake_lists.py --check  # exit 1 and list differences, change nothing

Scripts: every *.py under the module folder (the engine SemiSegTogether/semiseg/** included),
except __pycache__/ and Testing/. Resources: every file under Resources/, plus non-Python package
data inside Python packages (e.g. semiseg/**/*.json). Testing/test_slicer_packaging.py checks
the same rule, so run this after adding or removing a file.
"""

from __future__ import annotations

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = ("SemiSegTogether", "SemiSegTrainer")
SKIP_DIRS = {"__pycache__", "Testing", ".pytest_cache"}
SKIP_SUFFIXES = (".pyc", ".pyo")


def _walk(moduleDir: str):
    for dirpath, dirnames, filenames in os.walk(moduleDir):
        rel = os.path.relpath(dirpath, moduleDir)
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith(".")
                             and not d.endswith(".egg-info"))
        for name in sorted(filenames):
            if name.startswith(".") or name.endswith(SKIP_SUFFIXES):
                continue
            yield ("" if rel == "." else rel.replace(os.sep, "/") + "/") + name


def expectedFiles(moduleDir: str) -> tuple:
    """(scripts, resources) relative to the module folder, '/'-separated, sorted."""
    scripts, resources = [], []
    for path in _walk(moduleDir):
        top = path.split("/", 1)[0]
        if path.endswith(".py"):
            scripts.append(path)
        elif top == "Resources":
            resources.append(path)
        elif "/" in path and os.path.isfile(os.path.join(moduleDir, top, "__init__.py")):
            resources.append(path)  # package data shipped next to the engine's code
    return sorted(scripts, key=_order), sorted(resources)


def _order(path: str):
    return ("/" in path, path)  # the module's main file first


def _block(name: str, items: list) -> str:
    return f"set({name}\n" + "".join(f"  {item}\n" for item in items) + "  )"


def parseListBlock(text: str, name: str, moduleName: str) -> list:
    match = re.search(r"set\(\s*" + name + r"\b(.*?)\)", text, re.S)
    if not match:
        raise ValueError(f"no set({name} ...) block")
    body = re.sub(r"#[^\n]*", "", match.group(1))
    return [t.replace("${MODULE_NAME}", moduleName) for t in body.split()]


def update(check: bool = False) -> int:
    status = 0
    for module in MODULES:
        moduleDir = os.path.join(ROOT, module)
        cmakePath = os.path.join(moduleDir, "CMakeLists.txt")
        if not os.path.isfile(cmakePath):
            continue
        with open(cmakePath, encoding="utf-8") as f:
            text = f.read()
        scripts, resources = expectedFiles(moduleDir)
        if check:
            for name, expected in (("MODULE_PYTHON_SCRIPTS", scripts), ("MODULE_PYTHON_RESOURCES", resources)):
                listed = parseListBlock(text, name, module)
                for path in sorted(set(expected) - set(listed)):
                    print(f"{module}/CMakeLists.txt {name}: missing {path}")
                    status = 1
                for path in sorted(set(listed) - set(expected)):
                    print(f"{module}/CMakeLists.txt {name}: lists {path}, which does not exist")
                    status = 1
            continue
        new = re.sub(r"set\(\s*MODULE_PYTHON_SCRIPTS\b.*?\)", lambda m: _block("MODULE_PYTHON_SCRIPTS", scripts),
                     text, count=1, flags=re.S)
        new = re.sub(r"set\(\s*MODULE_PYTHON_RESOURCES\b.*?\)",
                     lambda m: _block("MODULE_PYTHON_RESOURCES", resources), new, count=1, flags=re.S)
        if new != text:
            with open(cmakePath, "w", encoding="utf-8") as f:
                f.write(new)
            print(f"updated {module}/CMakeLists.txt ({len(scripts)} scripts, {len(resources)} resources)")
    return status


if __name__ == "__main__":
    sys.exit(update(check="--check" in sys.argv[1:]))
