"""The models folder: where it is, what is in it, and importing a model into it.

A model is a folder ``NAME.semiseg/`` holding ``model.json`` and the weights
(docs/contracts.md). Import takes such a folder or a .zip of one, checks it
completely *before* anything is copied, and never replaces an existing model
unless asked to.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from typing import Mapping, Optional

from SemiSegTogetherLib.manifest import MANIFEST_NAME, ModelCard, ModelPackageError, readManifest

MODELS_DIR_ENV = "SEMISEG_MODELS_DIR"
DEFAULT_MODELS_DIR = os.path.join("~", ".semiseg", "models")
PACKAGE_SUFFIX = ".semiseg"


class ModelExistsError(ModelPackageError):
    """Importing would replace a model that is already in the models folder."""

    def __init__(self, message: str, existingPath: str):
        super().__init__(message)
        self.existingPath = existingPath


def resolveModelsDir(setting: Optional[str] = None, environ: Optional[Mapping[str, str]] = None) -> str:
    """The models folder: the module's setting if the user chose one, else $SEMISEG_MODELS_DIR, else ~/.semiseg/models."""
    environ = os.environ if environ is None else environ
    for candidate in (setting, environ.get(MODELS_DIR_ENV)):
        if candidate and str(candidate).strip():
            return os.path.abspath(os.path.expanduser(str(candidate).strip()))
    return os.path.abspath(os.path.expanduser(DEFAULT_MODELS_DIR))


@dataclass
class ModelEntry:
    """One folder in the models folder: a usable model (card + manifest) or the reason it is not."""
    path: str
    manifest: Optional[dict] = None
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.manifest is not None

    @property
    def name(self) -> str:
        if self.manifest:
            return self.manifest["name"]
        base = os.path.basename(self.path.rstrip("/\\"))
        return base[: -len(PACKAGE_SUFFIX)] if base.endswith(PACKAGE_SUFFIX) else base

    @property
    def card(self) -> Optional[ModelCard]:
        return ModelCard.fromManifest(self.manifest) if self.manifest else None


def listModels(modelsDir: str) -> list:
    """Every model package in `modelsDir`, sorted by name; broken ones are listed with their error."""
    entries = []
    if not os.path.isdir(modelsDir):
        return entries
    for child in sorted(os.listdir(modelsDir)):
        path = os.path.join(modelsDir, child)
        if not os.path.isdir(path):
            continue
        if not (child.endswith(PACKAGE_SUFFIX) or os.path.isfile(os.path.join(path, MANIFEST_NAME))):
            continue
        try:
            entries.append(ModelEntry(path=path, manifest=readManifest(path)))
        except ModelPackageError as e:
            entries.append(ModelEntry(path=path, error=str(e)))
    entries.sort(key=lambda e: (not e.ok, e.name.lower()))
    return entries


def findModel(modelsDir: str, name: str) -> Optional[ModelEntry]:
    """The usable model called `name` (its manifest name, or its folder name), or None."""
    for entry in listModels(modelsDir):
        if entry.ok and (entry.name == name or os.path.basename(entry.path) in (name, name + PACKAGE_SUFFIX)):
            return entry
    return None


def safeFolderName(name: str) -> str:
    """A file-system-safe folder name for a model called `name`."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    return (cleaned or "model") + PACKAGE_SUFFIX


def _safeExtract(zipPath: str, destination: str) -> None:
    """Extract a zip, refusing absolute paths, '..' and links (zip-slip)."""
    try:
        archive = zipfile.ZipFile(zipPath)
    except (zipfile.BadZipFile, OSError) as e:
        raise ModelPackageError(f"{zipPath}: not a readable zip file ({e})") from e
    with archive:
        root = os.path.realpath(destination)
        for info in archive.infolist():
            target = os.path.realpath(os.path.join(destination, info.filename))
            if info.filename.startswith(("/", "\\")) or not (target == root or target.startswith(root + os.sep)):
                raise ModelPackageError(f"{zipPath}: unsafe path {info.filename!r} in the archive")
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise ModelPackageError(f"{zipPath}: the archive contains a symbolic link ({info.filename})")
        archive.extractall(destination)


def _findPackageRoot(folder: str, origin: str) -> str:
    """The folder holding model.json: `folder` itself or its single sub-folder."""
    if os.path.isfile(os.path.join(folder, MANIFEST_NAME)):
        return folder
    candidates = [os.path.join(folder, c) for c in os.listdir(folder)
                  if os.path.isdir(os.path.join(folder, c)) and not c.startswith(("__MACOSX", "."))]
    withManifest = [c for c in candidates if os.path.isfile(os.path.join(c, MANIFEST_NAME))]
    if len(withManifest) == 1:
        return withManifest[0]
    if len(withManifest) > 1:
        raise ModelPackageError(f"{origin}: holds several model packages; import them one at a time")
    raise ModelPackageError(f"{origin}: no {MANIFEST_NAME} found; it is not a SemiSeg model package")


def checkModelSource(source: str):
    """Check a model to import (a .semiseg folder or a .zip of one) without copying it anywhere.

    Returns (manifest, packageDir, tempDir); tempDir is a folder to delete after use (zip) or None.
    """
    source = os.path.abspath(os.path.expanduser(source))
    if not os.path.exists(source):
        raise ModelPackageError(f"{source}: does not exist")
    tempDir = None
    try:
        if os.path.isdir(source):
            packageDir = _findPackageRoot(source, source)
        elif zipfile.is_zipfile(source):
            tempDir = tempfile.mkdtemp(prefix="semiseg-import-")
            _safeExtract(source, tempDir)
            packageDir = _findPackageRoot(tempDir, source)
        else:
            raise ModelPackageError(f"{source}: expected a .semiseg folder or a .zip of one")
        try:
            manifest = readManifest(packageDir)
        except ModelPackageError as e:
            # Name the file the user picked, not our temporary folder.
            message = str(e).replace(tempDir, source) if tempDir else str(e)
            raise ModelPackageError(message) from e
    except BaseException:
        if tempDir:
            shutil.rmtree(tempDir, ignore_errors=True)
        raise
    return manifest, packageDir, tempDir


def importModel(source: str, modelsDir: str, overwrite: bool = False) -> str:
    """Check `source`, then copy it into `modelsDir` as NAME.semiseg/. Returns the new package path.

    Raises ModelPackageError if the package is not valid (nothing is copied) and
    ModelExistsError if a model of that name is there already and `overwrite` is False.
    """
    manifest, packageDir, tempDir = checkModelSource(source)
    try:
        os.makedirs(modelsDir, exist_ok=True)
        destination = os.path.join(modelsDir, safeFolderName(manifest["name"]))
        if os.path.realpath(packageDir) == os.path.realpath(destination):
            return destination  # already in place
        if os.path.exists(destination) and not overwrite:
            raise ModelExistsError(f"{destination}: a model named {manifest['name']!r} is already installed",
                                   destination)
        staging = tempfile.mkdtemp(prefix=".importing-", dir=modelsDir)
        try:
            copied = os.path.join(staging, "package")
            shutil.copytree(packageDir, copied)
            if os.path.exists(destination):
                shutil.rmtree(destination)
            os.replace(copied, destination)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return destination
    finally:
        if tempDir:
            shutil.rmtree(tempDir, ignore_errors=True)
