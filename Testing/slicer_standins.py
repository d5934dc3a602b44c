"""Thin stand-ins for the compiled parts of 3D Slicer, under a release's own pure-Python `slicer` package.

Slicer's `slicer/` package (parameterNodeWrapper with its GUI connectors, util, ScriptedLoadableModule,
i18n, packaging) is plain Python; what it talks to is compiled: `qt` (PythonQt), `ctk`, the MRML nodes
and scene, the qMRML widgets, `slicer.app`. This file provides only those, shaped like PythonQt sees them
(properties as attributes, signals with `.connect`, `obj.connect("signal(args)", slot)`, exact widget
classes built from the module's .ui), so that every decision Slicer's Python makes (which connector binds
which widget to which parameter type, how parameters are serialized, when observers fire) is made by the
release's own code. `loadRelease(version)` puts one release first on sys.path with these stand-ins.

Real vtk (an engine dependency) supplies vtkCommand, vtkMatrix4x4 and the arrays.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import os
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

RELEASES = ("5.6.2", "5.8.1", "5.10.0", "5.12.3")
ROOT = Path(__file__).resolve().parents[1]


def _findSlicerPython() -> Path:
    """../shared/slicer-python next to the checkout (or next to a folder above it, for worktrees)."""
    for folder in ROOT.parents:
        if (folder / "shared" / "slicer-python").is_dir():
            return folder / "shared" / "slicer-python"
    return ROOT.parent / "shared" / "slicer-python"


SLICER_PYTHON = _findSlicerPython()
MODULE_DIRS = {"SemiSegTogether": ROOT / "SemiSegTogether", "SemiSegTrainer": ROOT / "SemiSegTrainer"}
MODIFIED_EVENT = 33  # vtkCommand::ModifiedEvent


def releaseDir(version: str) -> Path:
    return SLICER_PYTHON / f"v{version}"


def missingReleaseReason(version: str):
    """None when the release's slicer/ package is here, else why the test is skipped."""
    if not (releaseDir(version) / "slicer" / "parameterNodeWrapper").is_dir():
        return (f"Slicer {version}'s Python package is not at {releaseDir(version)} "
                "(../shared/slicer-python is only in the development workspace)")
    return None


# --- signals and objects (PythonQt's view of QObject) ----------------------------------------------


class BoundSignal:
    def __init__(self):
        self._slots = []

    def connect(self, slot):
        self._slots.append(slot)

    def disconnect(self, slot=None):
        if slot is None:
            self._slots.clear()
        elif slot in self._slots:
            self._slots.remove(slot)

    def emit(self, *args):
        for slot in list(self._slots):
            slot(*args[:_acceptedArgumentCount(slot, len(args))])


def _acceptedArgumentCount(slot, given: int) -> int:
    """PythonQt calls a slot with as many of the signal's arguments as the slot accepts."""
    try:
        parameters = inspect.signature(slot).parameters.values()
    except (TypeError, ValueError):
        return given
    if any(p.kind == p.VAR_POSITIONAL for p in parameters):
        return given
    return min(given, sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters))


class Signal:
    """Class attribute that gives each instance its own BoundSignal."""

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        return obj.__dict__.setdefault("_signal_" + self.name, BoundSignal())


def _signalName(signature: str) -> str:
    return signature.split("(", 1)[0]


class QObject:
    destroyed = Signal()

    def __init__(self, parent=None):
        self._children = []
        self._properties = {}
        self._parent = None
        self.name = ""
        if parent is not None:
            self.setParent(parent)

    def setParent(self, parent):
        if self._parent is not None and self in self._parent._children:
            self._parent._children.remove(self)
        self._parent = parent
        if parent is not None:
            parent._children.append(self)

    def parent(self):
        return self._parent

    def children(self):
        return list(self._children)

    def findChildren(self, cls=None):
        found = []
        for child in self._children:
            if cls is None or isinstance(child, cls):
                found.append(child)
            found.extend(child.findChildren(cls))
        return found

    @property
    def objectName(self):
        return self.name

    def property(self, name):  # after the @property above: this name shadows the builtin in the class body
        return self._properties.get(name)

    def setProperty(self, name, value):
        self._properties[name] = value

    def setObjectName(self, name):
        self.name = name

    def connect(self, signature, slot):
        getattr(self, _signalName(signature)).connect(slot)

    def disconnect(self, signature, slot=None):
        getattr(self, _signalName(signature)).disconnect(slot)

    def isWidgetType(self):
        return False

    def className(self):
        return type(self).__name__


def _notifying(attribute, signal=None, convert=None):
    """A PythonQt-like property: setting a new value emits `signal(value)`."""

    def getter(self):
        return self.__dict__.get("_" + attribute, getattr(type(self), "_default_" + attribute, None))

    def setter(self, value):
        value = convert(value) if convert else value
        old = getter(self)
        self.__dict__["_" + attribute] = value
        if signal and value != old:
            getattr(self, signal).emit(value)

    return property(getter, setter)


class QWidget(QObject):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.enabled = True
        self.toolTip = ""
        self.visible = True
        self._layout = None

    def isWidgetType(self):
        return True

    def layout(self):
        return self._layout

    def setLayout(self, layout):
        self._layout = layout
        layout.owner = self

    def show(self):
        self.visible = True

    def setVisible(self, visible):
        self.visible = bool(visible)

    def setEnabled(self, enabled):
        self.enabled = bool(enabled)

    def setToolTip(self, text):
        self.toolTip = text

    def setSizePolicy(self, *args):
        pass

    def deleteLater(self):
        pass


class QLayout(QObject):
    def __init__(self, parent=None):
        super().__init__()
        self.owner = None
        if parent is not None:
            parent.setLayout(self)

    def addWidget(self, widget, *args):
        widget.setParent(self.owner)

    def addRow(self, *items):
        for item in items:
            if isinstance(item, QWidget):
                self.addWidget(item)

    def addStretch(self, *args):
        pass


class QVBoxLayout(QLayout):
    pass


class QHBoxLayout(QLayout):
    pass


class QFormLayout(QLayout):
    pass


class QGridLayout(QLayout):
    pass


class QLabel(QWidget):
    text = _notifying("text")
    _default_text = ""

    def setText(self, text):
        self.text = text


class QAbstractButton(QWidget):
    clicked = Signal()
    toggled = Signal()
    text = _notifying("text")
    _default_text = ""
    checkable = _notifying("checkable")
    _default_checkable = False
    checked = _notifying("checked", "toggled", bool)
    _default_checked = False

    def click(self):
        if not self.enabled:
            return
        if self.checkable:
            self.checked = not self.checked
        self.clicked.emit(self.checked)

    def setChecked(self, value):
        self.checked = value

    def isChecked(self):
        return self.checked


class QPushButton(QAbstractButton):
    def __init__(self, textOrParent=None, parent=None):  # QPushButton("Reload") or QPushButton(parent)
        isText = isinstance(textOrParent, str)
        super().__init__(parent if isText else textOrParent)
        self.text = textOrParent if isText else ""


class QToolButton(QAbstractButton):
    def setMenu(self, menu):
        pass

    def setDefaultAction(self, action):
        pass


class QCheckBox(QAbstractButton):
    stateChanged = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.toggled.connect(lambda checked: self.stateChanged.emit(2 if checked else 0))


class QAbstractSpinBox(QWidget):
    valueChanged = Signal()
    value = _notifying("value", "valueChanged")
    _default_value = 0

    def __init__(self, parent=None):
        super().__init__(parent)
        self.minimum, self.maximum, self.singleStep, self.decimals = 0, 99, 1, 2

    def setRange(self, minimum, maximum):
        self.minimum, self.maximum = minimum, maximum

    def setMinimum(self, value):
        self.minimum = value

    def setMaximum(self, value):
        self.maximum = value

    def setValue(self, value):
        self.value = value


class QSpinBox(QAbstractSpinBox):
    pass


class QDoubleSpinBox(QAbstractSpinBox):
    _default_value = 0.0


class QSlider(QAbstractSpinBox):
    pass


class QLineEdit(QWidget):
    textChanged = Signal()
    text = _notifying("text", "textChanged")
    _default_text = ""

    def setText(self, text):
        self.text = text


class QTextEdit(QWidget):
    textChanged = Signal()
    plainText = _notifying("plainText", "textChanged")
    _default_plainText = ""


class QPlainTextEdit(QWidget):
    plainText = ""

    def appendPlainText(self, text):
        self.plainText = (self.plainText + "\n" if self.plainText else "") + str(text)

    def clear(self):
        self.plainText = ""


class QProgressBar(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.value, self.minimum, self.maximum = 0, 0, 100

    def setRange(self, minimum, maximum):
        self.minimum, self.maximum = minimum, maximum


class Qt:
    Unchecked, Checked = 0, 2
    DisplayRole, ToolTipRole, UserRole = 0, 3, 256
    ItemIsSelectable, ItemIsEditable, ItemIsUserCheckable, ItemIsEnabled = 1, 2, 16, 32
    WaitCursor = 3


class QComboBox(QWidget):
    currentIndexChanged = Signal()
    currentTextChanged = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self._items = []  # [{role: value}]
        self._currentIndex = -1

    @property
    def count(self):
        return len(self._items)

    @property
    def currentIndex(self):
        return self._currentIndex

    @currentIndex.setter
    def currentIndex(self, index):
        self.setCurrentIndex(index)

    def setCurrentIndex(self, index):
        index = index if 0 <= index < len(self._items) else -1
        if index != self._currentIndex:
            self._currentIndex = index
            self.currentIndexChanged.emit(index)
            self.currentTextChanged.emit(self.currentText)

    @property
    def currentText(self):
        return self.itemText(self._currentIndex)

    def addItem(self, text, data=None):
        self._items.append({Qt.DisplayRole: text, Qt.UserRole: data})
        if self._currentIndex < 0:
            self.setCurrentIndex(0)

    def addItems(self, texts):
        for text in texts:
            self.addItem(text)

    def clear(self):
        self._items = []
        if self._currentIndex != -1:
            self._currentIndex = -1
            self.currentIndexChanged.emit(-1)

    def itemText(self, index):
        return self._items[index][Qt.DisplayRole] if 0 <= index < len(self._items) else ""

    def itemData(self, index, role=Qt.UserRole):
        return self._items[index].get(role) if 0 <= index < len(self._items) else None

    def setItemData(self, index, value, role=Qt.UserRole):
        self._items[index][role] = value

    def findData(self, data, role=Qt.UserRole):
        return next((i for i, item in enumerate(self._items) if item.get(role) == data), -1)

    def findText(self, text):
        return self.findData(text, Qt.DisplayRole)

    @property
    def currentData(self):
        return self.itemData(self._currentIndex)


class QListWidgetItem:
    def __init__(self, text=""):
        self._text, self._data, self._flags, self._check, self._tip = text, {}, Qt.ItemIsEnabled, Qt.Unchecked, ""
        self.listWidget = None

    def text(self):
        return self._text

    def setData(self, role, value):
        self._data[role] = value

    def data(self, role):
        return self._data.get(role)

    def flags(self):
        return self._flags

    def setFlags(self, flags):
        self._flags = flags

    def checkState(self):
        return self._check

    def setCheckState(self, state):
        changed = state != self._check
        self._check = state
        if changed and self.listWidget is not None:
            self.listWidget.itemChanged.emit(self)

    def setToolTip(self, text):
        self._tip = text

    def toolTip(self):
        return self._tip


class QListWidget(QWidget):
    itemChanged = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self._items = []

    @property
    def count(self):
        return len(self._items)

    def addItem(self, item):
        item = item if isinstance(item, QListWidgetItem) else QListWidgetItem(item)
        item.listWidget = self
        self._items.append(item)

    def item(self, index):
        return self._items[index] if 0 <= index < len(self._items) else None

    def clear(self):
        for item in self._items:
            item.listWidget = None
        self._items = []


class QTableWidgetItem(QListWidgetItem):
    pass


class _Header:
    def setStretchLastSection(self, stretch):
        self.stretchLastSection = stretch

    def setSectionResizeMode(self, *args):
        pass


class QTableWidget(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self._cells, self._rowCount, self._header, self._selected = {}, 0, _Header(), []

    @property
    def rowCount(self):
        return self._rowCount

    def setRowCount(self, count):
        self._rowCount = count
        self._cells = {k: v for k, v in self._cells.items() if k[0] < count}

    def setItem(self, row, column, item):
        self._cells[(row, column)] = item

    def item(self, row, column):
        return self._cells.get((row, column))

    def horizontalHeader(self):
        return self._header

    def selectedIndexes(self):
        return list(self._selected)


class QFrame(QWidget):
    pass


class QGroupBox(QWidget):
    pass


class QMenu(QWidget):
    def addAction(self, action):
        pass


class QAction(QObject):
    triggered = Signal()

    def __init__(self, text="", parent=None):
        super().__init__(parent)
        self.text = text

    def setStatusTip(self, text):
        pass


class QSizePolicy:
    Preferred = Expanding = Fixed = 0

    def __init__(self, *args):
        pass


class QIcon:
    def __init__(self, *args):
        pass


class QColor:
    def __init__(self, *args):
        self._args = args

    def name(self, *args):
        return "#000000"


class QUrl:
    def __init__(self, text=""):
        self.text = text

    @staticmethod
    def fromLocalFile(path):
        return QUrl(path)


class QDesktopServices:
    opened = []

    @staticmethod
    def openUrl(url):
        QDesktopServices.opened.append(url)
        return True


class QFileDialog:
    @staticmethod
    def getOpenFileName(*args):
        return ""

    @staticmethod
    def getExistingDirectory(*args):
        return ""


class QSettings:
    """One store for the whole test process (QSettings is application-wide in Slicer)."""

    store: dict = {}

    def value(self, key, default=None):
        return QSettings.store.get(key, default)

    def setValue(self, key, value):
        QSettings.store[key] = value

    def remove(self, key):
        QSettings.store.pop(key, None)

    def allKeys(self):
        return list(QSettings.store)

    def contains(self, key):
        return key in QSettings.store


class QTimer(QObject):
    """Fires only when the test calls `fire()` (or `QTimer.fireAll()`): runs are driven step by step."""

    timeout = Signal()
    active: list = []

    def __init__(self, parent=None):
        super().__init__(parent)
        self.interval, self._active, self.singleShot = 0, False, False

    def setInterval(self, msec):
        self.interval = msec

    def setSingleShot(self, value):
        self.singleShot = value

    def start(self, msec=None):
        self._active = True
        if self not in QTimer.active:
            QTimer.active.append(self)

    def stop(self):
        self._active = False
        if self in QTimer.active:
            QTimer.active.remove(self)

    def isActive(self):
        return self._active

    def fire(self):
        if self._active:
            if self.singleShot:
                self.stop()
            self.timeout.emit()

    @staticmethod
    def fireAll():
        for timer in list(QTimer.active):
            timer.fire()


class QThread(QObject):
    main = None

    @staticmethod
    def currentThread():
        return QThread.main


QThread.main = QThread()


class QFile:
    ReadOnly = 1

    def __init__(self, path):
        self.path = str(path)

    def exists(self):
        return os.path.isfile(self.path)

    def open(self, mode):
        return True


def _uiPropertyValue(prop):
    for child in prop:
        if child.tag == "string":
            return child.text or ""
        if child.tag == "bool":
            return child.text == "true"
        if child.tag in ("number", "double"):
            return float(child.text) if child.tag == "double" or "." in (child.text or "") else int(child.text)
        if child.tag == "stringlist":
            return [s.text or "" for s in child.iter("string")]
        if child.tag == "set":
            return child.text
    return None


class QUiLoader:
    """Builds the .ui's widget tree from the stand-in classes of the exact class each widget names."""

    SETTABLE = {"text", "checked", "checkable", "enabled", "toolTip", "value", "minimum", "maximum", "decimals",
                "singleStep", "collapsed", "noneEnabled", "addEnabled", "removeEnabled", "nodeTypes", "plainText"}

    def load(self, qfile, parent=None):
        root = ET.parse(qfile.path).getroot().find("widget")
        return self._build(root, parent)

    def _build(self, element, parent):
        widget = widgetClass(element.get("class"))(parent)
        widget.name = element.get("name") or ""
        for prop in element.findall("property"):
            name, value = prop.get("name"), _uiPropertyValue(prop)
            if name == "SlicerParameterName" or prop.get("stdset") == "0":
                widget.setProperty(name, value)
            elif name in self.SETTABLE:
                setattr(widget, name, value)
        for child in element:
            self._buildChildren(child, widget)
        return widget

    def _buildChildren(self, element, parent):
        if element.tag == "widget":
            self._build(element, parent)
        elif element.tag in ("layout", "item"):
            for child in element:
                self._buildChildren(child, parent)


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


def _ctkNamespace():
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


# --- MRML ------------------------------------------------------------------------------------------


class vtkObservable:
    _tags = itertools.count(1)

    def __init__(self):
        self._observers = {}  # tag -> (event, callback, priority)
        self._disableModified = 0
        self._pendingModified = False

    def AddObserver(self, event, callback, priority=0.0):
        tag = next(vtkObservable._tags)
        self._observers[tag] = (event, callback, priority)
        return tag

    def RemoveObserver(self, tag):
        self._observers.pop(tag, None)

    def InvokeEvent(self, event, callData=None):
        for _tag, (ev, callback, _p) in sorted(self._observers.items(), key=lambda kv: -kv[1][2]):
            if ev == event and _tag in self._observers:
                callback(self, event) if callData is None else callback(self, event, callData)

    def Modified(self):
        if self._disableModified:
            self._pendingModified = True
        else:
            self.InvokeEvent(MODIFIED_EVENT)

    def StartModify(self):
        was = self._disableModified
        self._disableModified = 1
        return was

    def EndModify(self, wasModifying):
        self._disableModified = wasModifying
        if not wasModifying and self._pendingModified:
            self._pendingModified = False
            self.Modified()
        return 0

    def UnRegister(self, other):
        pass


class vtkMRMLNode(vtkObservable):
    def __init__(self):
        super().__init__()
        self._id, self._name, self._scene, self._attributes, self._refs = None, "", None, {}, {}
        self._singletonTag, self.saveWithScene, self.hideFromEditors = None, True, False

    def GetID(self):
        return self._id

    def GetName(self):
        return self._name

    def SetName(self, name):
        self._name = name
        self.Modified()

    def GetClassName(self):
        return type(self).__name__

    def IsA(self, className):
        return any(c.__name__ == className for c in type(self).__mro__)

    def GetScene(self):
        return self._scene

    def SetAttribute(self, name, value):
        self._attributes[name] = value

    def GetAttribute(self, name):
        return self._attributes.get(name)

    def SetSingletonTag(self, tag):
        self._singletonTag = tag

    def GetSingletonTag(self):
        return self._singletonTag

    def SetSaveWithScene(self, value):
        self.saveWithScene = bool(value)

    def GetSaveWithScene(self):
        return self.saveWithScene

    def SetHideFromEditors(self, value):
        self.hideFromEditors = bool(value)

    def GetHideFromEditors(self):
        return self.hideFromEditors

    def SetNodeReferenceID(self, role, nodeId):
        self._refs[role] = [nodeId] if nodeId else []
        self.Modified()

    def SetAndObserveNodeReferenceID(self, role, nodeId):
        self.SetNodeReferenceID(role, nodeId)

    def GetNodeReferenceID(self, role):
        ids = self._refs.get(role) or []
        return ids[0] if ids else None

    def GetNodeReference(self, role):
        nodeId = self.GetNodeReferenceID(role)
        return self._scene.GetNodeByID(nodeId) if (nodeId and self._scene) else None

    def RemoveNodeReferenceIDs(self, role):
        if self._refs.pop(role, None):
            self.Modified()

    # transforms (a parent transform is a node reference, as in MRML)
    def SetAndObserveTransformNodeID(self, nodeId):
        self.SetNodeReferenceID("transform", nodeId)

    def GetTransformNodeID(self):
        return self.GetNodeReferenceID("transform")

    def GetParentTransformNode(self):
        return self.GetNodeReference("transform")

    def CreateDefaultDisplayNodes(self):
        pass


class vtkMRMLScriptedModuleNode(vtkMRMLNode):
    def __init__(self):
        super().__init__()
        self._parameters = {}

    def SetParameter(self, name, value):
        if self._parameters.get(name) != value:
            self._parameters[name] = value
            self.Modified()

    def GetParameter(self, name):
        return self._parameters.get(name, "")

    def HasParameter(self, name):
        return name in self._parameters

    def UnsetParameter(self, name):
        if self._parameters.pop(name, None) is not None:
            self.Modified()

    def GetParameterNames(self):
        return list(self._parameters)


class vtkMRMLTransformNode(vtkMRMLNode):
    def IsTransformToWorldLinear(self):
        return True


class vtkMRMLVolumeNode(vtkMRMLNode):
    pass


class vtkMRMLScalarVolumeNode(vtkMRMLVolumeNode):
    pass


class vtkMRMLLabelMapVolumeNode(vtkMRMLScalarVolumeNode):
    pass


class vtkSegment:
    def __init__(self, name="", color=(0.5, 0.5, 0.5)):
        self._name, self._color, self._tags = name, tuple(color), {}

    def GetName(self):
        return self._name

    def GetColor(self):
        return self._color

    def SetColor(self, r, g, b):
        self._color = (r, g, b)

    def SetTag(self, key, value):
        self._tags[key] = value

    def GetTag(self, key):
        return self._tags.get(key)

    @staticmethod
    def GetTerminologyEntryTagName():
        return "TerminologyEntry"


class vtkSegmentation:
    def __init__(self):
        self._segments, self.masks, self._ids = {}, {}, itertools.count(1)

    def AddEmptySegment(self, segmentId="", name="", color=None):
        segmentId = segmentId or f"Segment_{next(self._ids)}"
        self._segments[segmentId] = vtkSegment(name or segmentId, color or (0.5, 0.5, 0.5))
        return segmentId

    def GetSegment(self, segmentId):
        return self._segments.get(segmentId)

    def GetSegmentIdBySegmentName(self, name):
        return next((i for i, seg in self._segments.items() if seg.GetName() == name), "")

    def RemoveSegment(self, segmentId):
        self._segments.pop(segmentId, None)
        self.masks.pop(segmentId, None)

    def GetNumberOfSegments(self):
        return len(self._segments)

    def GetNthSegmentID(self, index):
        return list(self._segments)[index]

    def GetNthSegment(self, index):
        return list(self._segments.values())[index]


class vtkMRMLSegmentationNode(vtkMRMLNode):
    def __init__(self):
        super().__init__()
        self._segmentation = vtkSegmentation()

    def GetSegmentation(self):
        return self._segmentation

    def GetReferenceImageGeometryReferenceRole(self):
        return "referenceImageGeometryRef"

    def SetReferenceImageGeometryParameterFromVolumeNode(self, volume):
        self.SetNodeReferenceID(self.GetReferenceImageGeometryReferenceRole(), volume.GetID())

    def CreateClosedSurfaceRepresentation(self):
        self.closedSurface = True


class vtkMRMLSubjectHierarchyNode(vtkMRMLNode):
    @staticmethod
    def GetSubjectHierarchyNode(scene):
        return vtkMRMLSubjectHierarchyNode()

    def GetItemByDataNode(self, node):
        return 0  # no folders in these tests


class vtkMRMLTableNode(vtkMRMLNode):
    def __init__(self):
        super().__init__()
        self.columns = []

    def AddColumn(self, array):
        self.columns.append(array)
        return array


class _RecordingNode(vtkMRMLNode):
    def __getattr__(self, name):  # SetXColumnName, SetColor...: recorded, no behaviour needed
        if name.startswith(("Set", "Add")):
            return lambda *args: self.__dict__.setdefault("settings", {}).__setitem__(name, args)
        raise AttributeError(name)


class vtkMRMLPlotSeriesNode(_RecordingNode):
    PlotTypeScatter, MarkerStyleNone, MarkerStyleCircle = 1, 0, 1


class vtkMRMLPlotChartNode(_RecordingNode):
    pass


class vtkMRMLPlotViewNode(_RecordingNode):
    pass


NODE_CLASSES = {c.__name__: c for c in (
    vtkMRMLNode, vtkMRMLScriptedModuleNode, vtkMRMLTransformNode, vtkMRMLVolumeNode, vtkMRMLScalarVolumeNode,
    vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode, vtkMRMLPlotSeriesNode,
    vtkMRMLPlotChartNode, vtkMRMLPlotViewNode, vtkMRMLSubjectHierarchyNode)}


class _Collection:
    def __init__(self, items):
        self._items, self._i = list(items), 0

    def UnRegister(self, other):
        pass

    def InitTraversal(self):
        self._i = 0

    def GetNextItemAsObject(self):
        if self._i >= len(self._items):
            return None
        self._i += 1
        return self._items[self._i - 1]

    def GetNumberOfItems(self):
        return len(self._items)


class vtkMRMLScene(vtkObservable):
    NodeAddedEvent, NodeRemovedEvent = 66000, 66001
    StartCloseEvent, EndCloseEvent = 66002, 66003
    StartImportEvent, EndImportEvent = 66004, 66005

    def __init__(self):
        super().__init__()
        self._nodes, self._ids = {}, itertools.count(1)

    def CreateNodeByClass(self, className):
        return NODE_CLASSES[className]()

    def AddNode(self, node):
        node._id = f"{node.GetClassName()}{next(self._ids)}"
        node._scene = self
        self._nodes[node._id] = node
        self.InvokeEvent(self.NodeAddedEvent, node)
        return node

    def AddNewNodeByClass(self, className, name=""):
        node = self.CreateNodeByClass(className)
        node._name = name or self.GenerateUniqueName(className.replace("vtkMRML", "").replace("Node", ""))
        return self.AddNode(node)

    def RemoveNode(self, node):
        if node is not None and self._nodes.pop(node.GetID(), None) is not None:
            self.InvokeEvent(self.NodeRemovedEvent, node)
            node._scene = None

    def GetNodeByID(self, nodeId):
        return self._nodes.get(nodeId)

    def IsNodePresent(self, node):
        return node is not None and self._nodes.get(node.GetID()) is node

    def nodesOfClass(self, className):
        return [n for n in self._nodes.values() if n.IsA(className)]

    def GetNodesByClass(self, className):
        return _Collection(self.nodesOfClass(className))

    def GetFirstNodeByClass(self, className):
        nodes = self.nodesOfClass(className)
        return nodes[0] if nodes else None

    def GetNumberOfNodesByClass(self, className):
        return len(self.nodesOfClass(className))

    def GetNthNodeByClass(self, index, className):
        nodes = self.nodesOfClass(className)
        return nodes[index] if 0 <= index < len(nodes) else None

    def GetSingletonNode(self, tag, className):
        return next((n for n in self.nodesOfClass(className) if n.GetSingletonTag() == tag), None)

    def GenerateUniqueName(self, base):
        names = {n.GetName() for n in self._nodes.values()}
        if base not in names:
            return base
        return next(f"{base}_{i}" for i in itertools.count(1) if f"{base}_{i}" not in names)

    def Clear(self, removeSingletons=False):
        """Close Scene: every node is removed except singletons, whose content is reset (as MRML does)."""
        self.InvokeEvent(self.StartCloseEvent)
        for node in list(self._nodes.values()):
            if node.GetSingletonTag() and not removeSingletons:
                if isinstance(node, vtkMRMLScriptedModuleNode):
                    node._parameters, node._refs, node._attributes = {}, {}, {}
                continue
            self.RemoveNode(node)
        self.InvokeEvent(self.EndCloseEvent)


# --- qMRML widgets and slicer.app --------------------------------------------------------------------


class qMRMLWidget(QWidget):
    mrmlSceneChanged = Signal()

    def setMRMLScene(self, scene):
        self._scene = scene
        for child in self.findChildren(qMRMLWidget):  # the .ui's mrmlSceneChanged -> setMRMLScene connections
            child._scene = scene

    def mrmlScene(self):
        return getattr(self, "_scene", None)


class qMRMLNodeComboBox(qMRMLWidget):
    currentNodeChanged = Signal()
    currentNodeIDChanged = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.nodeTypes, self._current = [], None
        self.noneEnabled = self.addEnabled = self.removeEnabled = False

    def currentNode(self):
        return self._current

    def setCurrentNode(self, node):
        if node is not self._current:
            self._current = node
            self.currentNodeChanged.emit(node)
            self.currentNodeIDChanged.emit(node.GetID() if node else "")

    def setCurrentNodeID(self, nodeId):
        self.setCurrentNode(self._scene.GetNodeByID(nodeId) if nodeId else None)


class qMRMLPlotWidget(qMRMLWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self._viewNode = None

    def setMRMLPlotViewNode(self, node):
        self._viewNode = node

    def mrmlPlotViewNode(self):
        return self._viewNode


class qMRMLSegmentationShow3DButton(QPushButton):
    def setSegmentationNode(self, node):
        self.segmentationNode = node


class _ModuleManager(QObject):
    moduleAboutToBeUnloaded = Signal()


class SlicerApp(QObject):
    startupCompleted = Signal()

    def __init__(self):
        super().__init__()
        self.testing = False
        self._moduleManager = _ModuleManager()
        self.documentationBaseUrl = "https://slicer.readthedocs.io/en/latest/"

    def thread(self):
        return QThread.main

    def testingEnabled(self):
        return self.testing

    def translate(self, context, text):
        return text

    def moduleManager(self):
        return self._moduleManager

    def processEvents(self):
        pass

    def setOverrideCursor(self, cursor):
        pass

    def restoreOverrideCursor(self):
        pass

    def pauseRender(self):
        pass

    def resumeRender(self):
        pass

    def moduleDocumentationUrl(self, name):
        return self.documentationBaseUrl + name


def widgetClass(name: str):
    """The stand-in for a class named in a .ui file (every class the modules' .ui files use)."""
    for namespace in (sys.modules["qt"], sys.modules["ctk"], sys.modules["slicer"]):
        if hasattr(namespace, name):
            return getattr(namespace, name)
    raise KeyError(f"no stand-in for .ui class {name}")


def _qtNamespace():
    qt = types.ModuleType("qt")
    for name, value in globals().items():
        if name.startswith("Q") or name == "Qt":
            setattr(qt, name, value)
    qt.Widget = QWidget
    return qt


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
        sys.modules["qt"] = _qtNamespace()
        sys.modules["ctk"] = _ctkNamespace()
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
