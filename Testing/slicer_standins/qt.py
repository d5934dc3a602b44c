"""Stand-ins for PythonQt's `qt`: QObject with signals, the widgets the modules' .ui files use, QSettings,
QTimer (fired by the test), and a QUiLoader that builds a .ui from the exact class each widget names.

PythonQt shows Qt properties as attributes (`button.enabled = False`), signals as objects with `.connect`,
and also `obj.connect("signal(args)", slot)`; a slot is called with as many arguments as it accepts.
"""

from __future__ import annotations

import inspect
import os
import sys
import types
import xml.etree.ElementTree as ET

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
    itemSelectionChanged = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self._items, self._current = [], -1

    @property
    def currentRow(self):
        return self._current

    def setCurrentRow(self, row):
        self._current = row if 0 <= row < len(self._items) else -1
        self.itemSelectionChanged.emit()

    def currentItem(self):
        return self.item(self._current)

    def takeItem(self, row):
        if not 0 <= row < len(self._items):
            return None
        item = self._items.pop(row)
        item.listWidget = None
        self.setCurrentRow(min(self._current, len(self._items) - 1))
        return item

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
        self._items, self._current = [], -1


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
        if isinstance(widget, QComboBox):  # a combo box's fixed <item>s, as Designer writes them
            for item in element.findall("item"):
                widget.addItem(next((_uiPropertyValue(p) for p in item.findall("property")
                                     if p.get("name") == "text"), ""))
        for child in element:
            self._buildChildren(child, widget)
        return widget

    def _buildChildren(self, element, parent):
        if element.tag == "widget":
            self._build(element, parent)
        elif element.tag in ("layout", "item"):
            for child in element:
                self._buildChildren(child, parent)


def widgetClass(name: str):
    """The stand-in for a class named in a .ui file (every class the modules' .ui files use)."""
    for namespace in (sys.modules["qt"], sys.modules["ctk"], sys.modules["slicer"]):
        if hasattr(namespace, name):
            return getattr(namespace, name)
    raise KeyError(f"no stand-in for .ui class {name}")


def namespace():
    qt = types.ModuleType("qt")
    for name, value in globals().items():
        if name.startswith("Q") or name == "Qt":
            setattr(qt, name, value)
    qt.Widget = QWidget
    return qt
