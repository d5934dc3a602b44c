"""Stand-ins for `ctk`: the CTK widgets the .ui files use, and the classes Slicer's GUI connectors name."""

from __future__ import annotations

import types

from .qt import (QAbstractButton, QAbstractSpinBox, QCheckBox, QComboBox, QDoubleSpinBox, QLineEdit, QPushButton,
                 QWidget, Signal, _notifying)

# --- ctk -------------------------------------------------------------------------------------------


class ctkPathLineEdit(QWidget):
    currentPathChanged = Signal()
    currentPath = _notifying("currentPath", "currentPathChanged", str)
    _default_currentPath = ""
    Dirs, Files, Drives, NoDot, NoDotDot, Readable = 1, 2, 4, 8, 16, 32

    def setCurrentPath(self, path):
        self.currentPath = path


class ctkDirectoryButton(QWidget):
    directoryChanged = Signal()
    directory = _notifying("directory", "directoryChanged", str)


class ctkCollapsibleButton(QAbstractButton):
    contentsCollapsed = Signal()
    collapsed = _notifying("collapsed", "contentsCollapsed", bool)
    _default_collapsed = False


def namespace():
    ctk = types.ModuleType("ctk")
    ctk.ctkPathLineEdit, ctk.ctkDirectoryButton, ctk.ctkCollapsibleButton = (
        ctkPathLineEdit, ctkDirectoryButton, ctkCollapsibleButton)
    for name, base in (("ctkCheckBox", QCheckBox), ("ctkCheckablePushButton", QPushButton),
                       ("ctkColorPickerButton", QPushButton), ("ctkComboBox", QComboBox),
                       ("ctkCheckableComboBox", QComboBox), ("ctkDoubleRangeSlider", QWidget),
                       ("ctkDoubleSlider", QAbstractSpinBox), ("ctkDoubleSpinBox", QDoubleSpinBox),
                       ("ctkRangeWidget", QWidget), ("ctkSliderWidget", QAbstractSpinBox),
                       ("ctkSearchBox", QLineEdit), ("ctkMenuButton", QPushButton)):
        setattr(ctk, name, type(name, (base,), {}))
    return ctk
