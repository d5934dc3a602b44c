"""Stand-ins for the qMRML widgets and `slicer.app`."""

from __future__ import annotations

from .qt import QObject, QPushButton, QThread, QWidget, Signal

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
