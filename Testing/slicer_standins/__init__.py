"""Thin stand-ins for the compiled parts of 3D Slicer, under a release's own pure-Python `slicer` package.

Slicer's `slicer/` package (parameterNodeWrapper with its GUI connectors, util, ScriptedLoadableModule,
i18n, packaging) is plain Python; what it talks to is compiled: `qt` (PythonQt), `ctk`, the MRML nodes
and scene, the qMRML widgets, `slicer.app`. This package provides only those, shaped like PythonQt sees them
(properties as attributes, signals with `.connect`, `obj.connect("signal(args)", slot)`, exact widget
classes built from the module's .ui), so that every decision Slicer's Python makes (which connector binds
which widget to which parameter type, how parameters are serialized, when observers fire) is made by the
release's own code. `loadRelease(version)` puts one release first on sys.path with these stand-ins.

Real vtk (an engine dependency) supplies vtkCommand, vtkMatrix4x4 and the arrays.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

from . import ctk as _ctk
from . import qt as _qt
from .mrml import NODE_CLASSES, vtkMRMLScene
from .qmrml import SlicerApp, qMRMLNodeComboBox, qMRMLPlotWidget, qMRMLSegmentationShow3DButton, qMRMLWidget
from .qt import QSettings, Qt, QThread, QTimer, QVBoxLayout, QWidget  # noqa: F401  (what tests use)

RELEASES = ("5.6.2", "5.8.1", "5.10.0", "5.12.3")
ROOT = Path(__file__).resolve().parents[2]


def _findSlicerPython() -> Path:
    """../shared/slicer-python next to the checkout (or next to a folder above it, for worktrees)."""
    for folder in ROOT.parents:
        if (folder / "shared" / "slicer-python").is_dir():
            return folder / "shared" / "slicer-python"
    return ROOT.parent / "shared" / "slicer-python"


SLICER_PYTHON = _findSlicerPython()
MODULE_DIRS = {"SemiSegTogether": ROOT / "SemiSegTogether", "SemiSegTrainer": ROOT / "SemiSegTrainer"}


def releaseDir(version: str) -> Path:
    return SLICER_PYTHON / f"v{version}"


def missingReleaseReason(version: str):
    """None when the release's slicer/ package is here, else why the test is skipped."""
    if not (releaseDir(version) / "slicer" / "parameterNodeWrapper").is_dir():
        return (f"Slicer {version}'s Python package is not at {releaseDir(version)} "
                "(../shared/slicer-python is only in the development workspace)")
    return None


# --- one release -----------------------------------------------------------------------------------


_OWNED_PREFIXES = ("slicer", "qt", "ctk", "SemiSegTogether", "SemiSegTrainer", "SampleData")


def _forgetModules():
    for name in list(sys.modules):
        if name.split(".")[0] in _OWNED_PREFIXES:  # the *Lib packages are Slicer-free: they stay
            del sys.modules[name]


class SlicerRelease:
    """A release's `slicer` package with the stand-ins; `module(name)` imports a SemiSeg module file."""

    def __init__(self, version: str):
        self.version = version
        _forgetModules()
        self._path = str(releaseDir(version))
        sys.path.insert(0, self._path)
        for directory in MODULE_DIRS.values():
            if str(directory) not in sys.path:
                sys.path.insert(1, str(directory))
        sys.modules["qt"] = _qt.namespace()
        sys.modules["ctk"] = _ctk.namespace()
        QSettings.store = {}
        QTimer.active = []
        import slicer  # the release's own package (its kits are absent: the compiled parts come next)

        assert Path(slicer.__file__).resolve().is_relative_to(releaseDir(version).resolve()), slicer.__file__
        self.slicer = slicer
        for name, cls in NODE_CLASSES.items():
            setattr(slicer, name, cls)
        for cls in (vtkMRMLScene, qMRMLWidget, qMRMLNodeComboBox, qMRMLPlotWidget, qMRMLSegmentationShow3DButton):
            setattr(slicer, cls.__name__, cls)
        for name in ("qMRMLSliderWidget", "qMRMLSpinBox", "qMRMLRangeWidget", "qSlicerWidget"):
            setattr(slicer, name, type(name, (QWidget,), {}))
        slicer.app = SlicerApp()
        slicer.mrmlScene = vtkMRMLScene()
        for module in ("slicer.util", "slicer.i18n", "slicer.parameterNodeWrapper", "slicer.ScriptedLoadableModule"):
            importlib.import_module(module)
        for moduleName, directory in MODULE_DIRS.items():
            setattr(slicer.modules, moduleName.lower(), types.SimpleNamespace(path=str(directory / f"{moduleName}.py")))

    def module(self, name: str):
        return importlib.import_module(name)

    def close(self):
        _forgetModules()
        if self._path in sys.path:
            sys.path.remove(self._path)


def loadRelease(version: str) -> SlicerRelease:
    return SlicerRelease(version)


def openModule(release: SlicerRelease, moduleName: str, **logicArgs):
    """What Slicer does on the first open of a module: Widget(parent), setup(), then enter()."""
    module = release.module(moduleName)
    parent = qMRMLWidget()
    parent.setLayout(QVBoxLayout())
    logic = getattr(module, f"{moduleName}Logic")(**logicArgs)
    widget = getattr(module, f"{moduleName}Widget")(parent, logic=logic, showDialogs=False)
    widget.setup()
    parent.isEntered = True
    widget.enter()
    return widget
