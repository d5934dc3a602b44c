"""Helpers for the Slicer-module tests that run without Slicer (pytest).

- put SemiSegTogether/ and SemiSegTrainer/ on sys.path (their *Lib packages are Slicer-free);
- read the modules' .ui files and the `self.ui.X` names their code uses;
- load a .ui with Qt's own QUiLoader (offscreen) and render a panel to PNG;
- build model packages in the contract's shape (docs/contracts.md) for tests;
- draw the extension and module icons (QPainter).
"""

from __future__ import annotations

import copy
import json
import os
import re
import sys
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOGETHER_DIR = os.path.join(ROOT, "SemiSegTogether")
TRAINER_DIR = os.path.join(ROOT, "SemiSegTrainer")


def addModulePaths() -> None:
    for path in (TOGETHER_DIR, TRAINER_DIR):
        if path not in sys.path:
            sys.path.insert(0, path)


# --- .ui files ----------------------------------------------------------------------------------


def uiPath(module: str) -> str:
    return os.path.join(ROOT, module, "Resources", "UI", f"{module}.ui")


def uiWidgets(path: str) -> dict:
    """{objectName: class} of every widget in a Qt Designer file."""
    tree = ET.parse(path)
    return {w.get("name"): w.get("class") for w in tree.iter("widget")}


def uiCustomWidgets(path: str) -> dict:
    """{custom class: declared base class} from <customwidgets>."""
    tree = ET.parse(path)
    return {c.findtext("class"): c.findtext("extends") for c in tree.iter("customwidget")}


def uiParameterNames(path: str) -> dict:
    """{widget objectName: SlicerParameterName} for widgets bound to the parameter node."""
    out = {}
    for widget in ET.parse(path).iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                out[widget.get("name")] = prop.findtext("string")
    return out


def uiNamesUsedInCode(pyPath: str) -> set:
    with open(pyPath, encoding="utf-8") as f:
        return set(re.findall(r"\bself\.ui\.([A-Za-z_][A-Za-z0-9_]*)", f.read()))


def qtBaseClass(className: str, custom: dict) -> str:
    """Follow <extends> until a class that is not custom (a real Qt class)."""
    seen = set()
    while className in custom and className not in seen:
        seen.add(className)
        className = custom[className]
    return className


# Render-only stand-ins that look like the Slicer widgets (used for the PNG, never for the checks).
PREVIEW_CLASSES = {
    "ctkCollapsibleButton": "QGroupBox",
    "qMRMLNodeComboBox": "QComboBox",
    "ctkPathLineEdit": "QLineEdit",
    "ctkSearchBox": "QLineEdit",
    "ctkMenuButton": "QPushButton",
    "qMRMLSegmentationShow3DButton": "QPushButton",
    "ctkDoubleSpinBox": "QDoubleSpinBox",
    "qMRMLPlotWidget": "QFrame",
    "ctkCheckableComboBox": "QComboBox",
}


def rewriteUi(xmlText: str, preview: bool = False) -> str:
    """Replace custom (Slicer/CTK) class names by Qt classes so that QUiLoader can build everything.

    preview=False: the declared <extends> base class, as Slicer-less Designer would.
    preview=True: look-alike Qt classes (collapsible button -> group box titled with its text,
    node combo box -> combo box showing its placeholder), for rendering screenshots.
    """
    root = ET.fromstring(xmlText)
    custom = {c.findtext("class"): c.findtext("extends") for c in root.iter("customwidget")}
    for widget in root.iter("widget"):
        cls = widget.get("class")
        if cls not in custom:
            continue
        target = PREVIEW_CLASSES.get(cls) if preview else None
        target = target or qtBaseClass(cls, custom)
        widget.set("class", target)
        if preview and cls == "ctkCollapsibleButton":
            for prop in widget.findall("property"):
                if prop.get("name") == "text":
                    prop.set("name", "title")
                elif prop.get("name") == "collapsed":
                    widget.remove(prop)
        if preview and cls in ("qMRMLNodeComboBox", "ctkCheckableComboBox"):
            placeholder = None
            for prop in widget.findall("property"):
                if prop.get("name") == "noneDisplay":
                    placeholder = prop.findtext("string")
                elif prop.get("name") == "nodeTypes" and placeholder is None:
                    types = [s.text for s in prop.iter("string")]
                    placeholder = _nodeTypeLabel(types[0]) if types else None
            item = ET.SubElement(widget, "item")
            prop = ET.SubElement(item, "property", name="text")
            ET.SubElement(prop, "string").text = placeholder or "Select a node"
    customWidgets = root.find("customwidgets")
    if customWidgets is not None:
        root.remove(customWidgets)
    connections = root.find("connections")
    if connections is not None:  # mrmlSceneChanged/setMRMLScene exist only in Slicer
        root.remove(connections)
    return ET.tostring(root, encoding="unicode")


def _nodeTypeLabel(nodeType: str) -> str:
    labels = {"vtkMRMLScalarVolumeNode": "Select a volume", "vtkMRMLSegmentationNode": "Select a segmentation"}
    return labels.get(nodeType, "Select a node")


def qtApplication():
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    return QApplication.instance() or QApplication([])


def loadUi(xmlText: str):
    """Build the widget tree with QUiLoader. Returns (widget, loader error string)."""
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice
    from PySide6.QtUiTools import QUiLoader

    qtApplication()
    buffer = QBuffer()
    buffer.setData(QByteArray(xmlText.encode("utf-8")))
    buffer.open(QIODevice.ReadOnly)
    loader = QUiLoader()
    widget = loader.load(buffer)
    return widget, loader.errorString()


def renderWidget(widget, pngPath: str, width: int = 440) -> tuple:
    """Lay out `widget` at `width` px and save it as PNG. Returns the image size."""
    from PySide6.QtGui import QPalette, QColor

    palette = widget.palette()
    palette.setColor(QPalette.Window, QColor(246, 246, 246))
    widget.setPalette(palette)
    widget.setAutoFillBackground(True)
    widget.adjustSize()
    widget.resize(width, max(widget.sizeHint().height(), 200))
    widget.ensurePolished()
    pixmap = widget.grab()
    os.makedirs(os.path.dirname(pngPath), exist_ok=True)
    if not pixmap.save(pngPath, "PNG"):
        raise OSError(f"could not write {pngPath}")
    return pixmap.width(), pixmap.height()


# --- model packages -------------------------------------------------------------------------------


def exampleManifest(name: str = "la-mean-teacher", labels=None) -> dict:
    """The model.json example of docs/contracts.md (optionally with other labels)."""
    manifest = {
        "format": "semiseg-model", "format_version": 1, "engine_version": "0.1.0",
        "name": name, "description": "Left atrium, MR, trained with mean teacher", "modality": "MR",
        "architecture": {"name": "vnet", "args": {"in_channels": 1, "n_classes": 2, "n_filters": 16, "norm": "batch"}},
        "prompted": False,
        "labels": [{"name": "left atrium", "value": 1, "color": [177, 122, 101],
                    "terminology": {"category": ["SCT", "123037004", "Anatomical Structure"],
                                    "type": ["SCT", "82471001", "Left atrium"]},
                    "task": None}],
        "tasks": [],
        "preprocessing": {"spacing": [1.25, 1.25, 1.25], "intensity": "zscore"},
        "patch_size": [64, 64, 48],
        "method": {"name": "mean-teacher", "options": {}},
        "data": {"labeled": 3, "unlabeled": 12, "validation": 1},
        "metrics": {"validation": {"dice": 0.85}},
        "training": {"iterations": 1000, "seconds": 900.0, "device": "cpu", "peak_memory_mb": 2100},
        "inference": {"seconds_per_volume": 4.2, "peak_memory_mb": 900, "device": "cpu"},
    }
    if labels is not None:
        manifest["labels"] = labels
        manifest["architecture"]["args"]["n_classes"] = len(labels) + 1
    return manifest


def writeModelPackage(folder: str, manifest: dict, weights: bool = True) -> str:
    """Write model.json and a (tiny, real) safetensors weights file into `folder`."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "model.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
    if weights:
        import numpy as np
        from safetensors.numpy import save_file

        save_file({"head.weight": np.zeros((2, 16), dtype=np.float32)}, os.path.join(folder, "weights.safetensors"))
    return folder


# --- icons --------------------------------------------------------------------------------------------


def drawIcon(path: str, kind: str, size: int = 128) -> None:
    """Draw the SemiSeg icons: 'extension', 'together' (structures) or 'trainer' (learning curve)."""
    from PySide6.QtCore import QPointF, QRectF, Qt
    from PySide6.QtGui import QBrush, QColor, QImage, QLinearGradient, QPainter, QPainterPath, QPen

    qtApplication()
    image = QImage(size, size, QImage.Format_ARGB32)
    image.fill(Qt.transparent)
    p = QPainter(image)
    p.setRenderHint(QPainter.Antialiasing)
    s = size / 128.0
    gradient = QLinearGradient(0, 0, 0, size)
    gradient.setColorAt(0, QColor(38, 70, 110))
    gradient.setColorAt(1, QColor(20, 36, 60))
    p.setPen(Qt.NoPen)
    p.setBrush(QBrush(gradient))
    p.drawRoundedRect(QRectF(4 * s, 4 * s, 120 * s, 120 * s), 22 * s, 22 * s)
    # Slice outline: an ellipse "scan"
    p.setPen(QPen(QColor(200, 215, 235), 3 * s))
    p.setBrush(QColor(60, 95, 140))
    p.drawEllipse(QRectF(18 * s, 22 * s, 92 * s, 84 * s))
    if kind in ("extension", "together"):
        # Two segmented structures: one solid (labeled), one drawn with dashes (learned from unlabeled)
        p.setPen(Qt.NoPen)
        p.setBrush(QColor(216, 101, 79))
        p.drawEllipse(QRectF(34 * s, 42 * s, 30 * s, 38 * s))
        pen = QPen(QColor(241, 214, 145), 4 * s)
        pen.setStyle(Qt.DashLine if kind == "extension" else Qt.SolidLine)
        p.setPen(pen)
        p.setBrush(QColor(241, 214, 145, 110 if kind == "extension" else 230))
        p.drawEllipse(QRectF(66 * s, 50 * s, 28 * s, 30 * s))
    if kind in ("extension", "trainer"):
        # A falling loss curve
        curve = QPainterPath(QPointF(26 * s, 44 * s))
        curve.cubicTo(QPointF(44 * s, 92 * s), QPointF(70 * s, 96 * s), QPointF(104 * s, 96 * s))
        p.setBrush(Qt.NoBrush)
        p.setPen(QPen(QColor(144, 238, 144), 6 * s if kind == "trainer" else 4 * s, Qt.SolidLine, Qt.RoundCap))
        p.drawPath(curve)
        if kind == "trainer":
            p.setPen(Qt.NoPen)
            p.setBrush(QColor(241, 214, 145))
            for x, y in ((26, 44), (52, 84), (78, 94), (104, 96)):
                p.drawEllipse(QPointF(x * s, y * s), 5 * s, 5 * s)
    p.end()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not image.save(path, "PNG"):
        raise OSError(f"could not write {path}")


def drawAllIcons() -> None:
    drawIcon(os.path.join(ROOT, "Resources", "Icons", "SemiSeg.png"), "extension")
    drawIcon(os.path.join(TOGETHER_DIR, "Resources", "Icons", "SemiSegTogether.png"), "together")
    drawIcon(os.path.join(TRAINER_DIR, "Resources", "Icons", "SemiSegTrainer.png"), "trainer")


# --- sample data --------------------------------------------------------------------------------------

SAMPLE_COLORS = {"organ": (216, 101, 79), "vessel": (0, 151, 206), "lesion": (241, 214, 145)}


def writeSampleData(resourcesDir: str = os.path.join(TOGETHER_DIR, "Resources")) -> list:
    """Make Resources/SampleData/SemiSegPhantom{.nrrd,.seg.nrrd} and its 128 px thumbnail (seed 3, 48³)."""
    import numpy as np
    from PySide6.QtGui import QImage

    from semiseg.io import write_volume
    from semiseg.segfile import write_segmentation
    from semiseg.synthetic import DEFAULT_STRUCTURES, make_phantom
    from semiseg.volume import Volume

    image, label = make_phantom(shape=(48, 48, 48), seed=3)
    folder = os.path.join(resourcesDir, "SampleData")
    volumePath = os.path.join(folder, "SemiSegPhantom.nrrd")
    write_volume(Volume(np.round(image.array).astype(np.int16), image.spacing, image.origin, image.direction),
                 volumePath, overwrite=True)
    labels = [{"name": s.name, "value": s.value, "color": SAMPLE_COLORS[s.name]} for s in DEFAULT_STRUCTURES]
    segPath = str(write_segmentation(label, labels, os.path.join(folder, "SemiSegPhantom.seg.nrrd"), overwrite=True))
    z = int(np.argmax((label.array > 0).sum(axis=(1, 2))))  # the slice that shows most structures
    grey = np.asarray(image.array[z], float)
    rgb = np.repeat((255 * (grey - grey.min()) / max(np.ptp(grey), 1e-6))[..., None], 3, axis=2)
    for lab in labels:
        mask = label.array[z] == lab["value"]
        rgb[mask] = 0.45 * rgb[mask] + 0.55 * np.array(lab["color"], float)
    rgb = np.ascontiguousarray(rgb[::-1].astype(np.uint8))  # superior up
    qimage = QImage(rgb.data, rgb.shape[1], rgb.shape[0], 3 * rgb.shape[1], QImage.Format_RGB888)
    thumbnail = os.path.join(resourcesDir, "Icons", "SemiSegPhantom.png")
    qtApplication()
    if not qimage.scaled(128, 128).save(thumbnail, "PNG"):
        raise OSError(f"could not write {thumbnail}")
    return [volumePath, segPath, thumbnail]


def deepcopy(value):
    return copy.deepcopy(value)
