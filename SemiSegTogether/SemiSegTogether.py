import html
import logging
import os
import shutil
import tempfile
import traceback
from typing import Annotated, Callable, Optional

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from SemiSegTogetherLib import catalog as semisegCatalog
from SemiSegTogetherLib import dependencies as semisegDependencies
from SemiSegTogetherLib.command import buildPredictCommand, engineEnvironment
from SemiSegTogetherLib.events import InferenceProgress, JobState
from SemiSegTogetherLib.manifest import ModelPackageError, segmentSpecs
from SemiSegTogetherLib.memory import checkInferenceMemory, queryGpuMemoryMb, queryRamAvailableMb
from SemiSegTogetherLib.process import EngineJob, startBackgroundProcess
from SemiSegTogetherLib.sampledata import sampleDataSource

SETTINGS_MODELS_DIR = "SemiSeg/modelsDir"
SETTINGS_FORCE_CPU = "SemiSeg/forceCpu"
POLL_INTERVAL_MS = 200


class InstallError(RuntimeError):
    """Installing the engine's Python packages failed or was declined."""

    def __init__(self, message: str, restartRequired: bool = False):
        super().__init__(message)
        self.restartRequired = restartRequired


#
# SemiSegTogether
#


class SemiSegTogether(ScriptedLoadableModule):
    """Uses ScriptedLoadableModule base class, available at:
    https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py
    """

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SemiSeg Together")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["SemiSeg contributors"]
        self.parent.helpText = _("""
Outline structures in a scan with a SemiSeg model: pick the scan, the model and the structures, press Segment.
The result is a new segmentation with the model's names and colours. No model yet? Train one in SemiSeg Trainer
from a few segmented cases, or import one. To try it, load SemiSegPhantom from the Sample Data module.
See the <a href="https://github.com/semiseg/SlicerSemiSeg/blob/main/docs/user-guide-together.md">user guide</a>.
""")
        self.parent.acknowledgementText = _("""
SemiSeg builds on MONAI, PyTorch and SimpleITK. Model packages carry their own citation in their model card.
""")
        # Sample Data lists SemiSeg's phantom once Slicer has started (as Slicer's module template does).
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData() -> None:
    """Add SemiSegPhantom (a small synthetic scan and its segmentation) to the Sample Data module."""
    import SampleData  # noqa: PLC0415  (a Slicer module: importable once Slicer has started)

    resources = os.path.join(os.path.dirname(os.path.abspath(__file__)), "Resources")
    SampleData.SampleDataLogic.registerCustomSampleDataSource(**sampleDataSource(resources))


#
# SemiSegTogetherParameterNode
#


@parameterNodeWrapper
class SemiSegTogetherParameterNode:
    """
    The parameters needed by module.

    inputVolume - The volume to segment.
    outputSegmentation - Where the result goes; None makes a new segmentation node.
    modelName - Name of the chosen model in the models folder.
    prompts - Names of the structures to segment.
    forceCpu - Run on the CPU even when CUDA is usable.
    swBatchSize - Sliding-window batch size.
    overlap - Sliding-window overlap.
    keepLargestComponent - Keep only the largest connected component of each structure.
    testTimeMirroring - Average the prediction over the 8 mirrorings of each window (`predict --tta`).
    showResultIn3D - Create 3D surfaces when the result is loaded.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    modelName: str = ""
    prompts: list[str]
    forceCpu: bool = False
    swBatchSize: Annotated[int, WithinRange(1, 64)] = 1
    overlap: Annotated[float, WithinRange(0.0, 0.9)] = 0.5
    keepLargestComponent: bool = False
    testTimeMirroring: bool = False
    showResultIn3D: bool = False


#
# SemiSegTogetherWidget
#


class SemiSegTogetherWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Uses ScriptedLoadableModuleWidget base class, available at:
    https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py
    """

    def __init__(self, parent=None, logic=None, showDialogs: bool = True) -> None:
        """Called when the user opens the module the first time and the widget is initialized."""
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)  # needed for parameter node observation
        self.logic = logic
        self.showDialogs = showDialogs
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._updatingGui = False
        self._modelEntries = []

    def setup(self) -> None:
        """Called when the user opens the module the first time and the widget is initialized."""
        ScriptedLoadableModuleWidget.setup(self)

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SemiSegTogether.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        if self.logic is None:
            self.logic = SemiSegTogetherLogic()
        self.logic.logCallback = self.addLog

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.modelsFolderPathLineEdit.currentPath = self.logic.modelsDir()
        self.ui.modelsFolderPathLineEdit.connect("currentPathChanged(QString)", self.onModelsFolderChanged)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.refreshModelsButton.connect("clicked(bool)", self.onRefreshModels)
        self.ui.importModelButton.connect("clicked(bool)", self.onImportModel)
        self.ui.openModelsFolderButton.connect("clicked(bool)", self.onOpenModelsFolder)
        self.ui.trainModelButton.connect("clicked(bool)", lambda: slicer.util.selectModule("SemiSegTrainer"))
        self.ui.promptsListWidget.connect("itemChanged(QListWidgetItem*)", self.onPromptItemChanged)
        self.ui.selectAllPromptsButton.connect("clicked(bool)", lambda: self.setAllPromptsChecked(True))
        self.ui.selectNoPromptsButton.connect("clicked(bool)", lambda: self.setAllPromptsChecked(False))
        self.ui.forceCpuCheckBox.connect("toggled(bool)", self.onForceCpuToggled)
        self.ui.installDependenciesButton.connect("clicked(bool)", self.onInstallDependencies)
        self.ui.advancedCollapsibleButton.connect("contentsCollapsed(bool)", self.onAdvancedCollapsed)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.outputSegmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onOutputChanged)

        self.refreshModels()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Called when the application closes and the module widget is destroyed."""
        if self.logic:
            self.logic.cancel()
        self.removeObservers()

    def enter(self) -> None:
        """Called each time the user opens this module."""
        self.initializeParameterNode()

    def exit(self) -> None:
        """Called each time the user opens a different module."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        """Called just before the scene is closed."""
        self.logic.cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        """Called just after the scene is closed."""
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        """Ensure parameter node exists and observed."""
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode
        if str(qt.QSettings().value(SETTINGS_FORCE_CPU, "false")).lower() == "true":
            self._parameterNode.forceCpu = True  # device preference is remembered between sessions
        self.selectFirstModelIfNone()

    def setParameterNode(self, inputParameterNode: Optional[SemiSegTogetherParameterNode]) -> None:
        """Set and observe parameter node; the GUI follows it."""
        if self._parameterNode and self._parameterNodeGuiTag is not None:  # None: already let go in exit()
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
            self.onParameterNodeModified()

    def onParameterNodeModified(self, caller=None, event=None) -> None:
        """Model and prompts are not bound by connectGui: bring them into the GUI, then check Apply."""
        if self._parameterNode is None:
            return
        self.showModel(self._parameterNode.modelName, self._parameterNode.prompts)
        self._checkCanApply()

    # Models ---------------------------------------------------------------

    def refreshModels(self) -> None:
        """Read the models folder into the model chooser, keeping the current choice."""
        current = self._parameterNode.modelName if self._parameterNode else ""
        self._modelEntries = self.logic.listModels()
        wasUpdating, self._updatingGui = self._updatingGui, True
        try:
            self.ui.modelComboBox.clear()
            for entry in self._modelEntries:
                if entry.ok:
                    self.ui.modelComboBox.addItem(entry.name, entry.path)
                else:
                    self.ui.modelComboBox.addItem(_("{name} (unusable)").format(name=entry.name), entry.path)
                    index = self.ui.modelComboBox.count - 1
                    self.ui.modelComboBox.setItemData(index, entry.error, qt.Qt.ToolTipRole)
            if not self._modelEntries:
                self.ui.modelComboBox.addItem(_("No model yet"), "")
        finally:
            self._updatingGui = wasUpdating
        if self._parameterNode and not self.selectFirstModelIfNone():
            self.showModel(current, self._parameterNode.prompts)

    def selectFirstModelIfNone(self) -> bool:
        """No model chosen yet (first open, new scene): choose the first usable one with all its structures."""
        pn = self._parameterNode
        first = next((e for e in self._modelEntries if e.ok), None)
        if pn is None or pn.modelName or first is None:
            return False
        with slicer.util.NodeModify(pn.parameterNode):
            pn.modelName = first.name
            pn.prompts = list(first.card.structures)
        return True

    def _entryByName(self, name):
        for entry in self._modelEntries:
            if entry.name == name:
                return entry
        return None

    def showModel(self, modelName: str, prompts) -> None:
        """Select `modelName` in the chooser, show its card, tick `prompts` in the structures list."""
        entry = self._entryByName(modelName)
        if modelName and entry is None:
            self._modelEntries = self.logic.listModels()  # registered by the Trainer since the last refresh?
            entry = self._entryByName(modelName)
            if entry is not None:
                self.refreshModels()
                return
        wasUpdating, self._updatingGui = self._updatingGui, True
        try:
            index = self.ui.modelComboBox.findData(entry.path) if entry else -1
            if index >= 0 and self.ui.modelComboBox.currentIndex != index:
                self.ui.modelComboBox.setCurrentIndex(index)
            if entry is None:
                self.ui.modelCardLabel.text = _("No model selected.") if self._modelEntries else self.noModelsText()
                self.ui.promptsListWidget.clear()
                return
            if not entry.ok:
                self.ui.modelCardLabel.text = _("This model cannot be used: {error}").format(error=entry.error)
                self.ui.promptsListWidget.clear()
                return
            self.ui.modelCardLabel.text = entry.card.html()
            names = entry.card.structures
            listedNames = [self.ui.promptsListWidget.item(i).text() for i in range(self.ui.promptsListWidget.count)]
            if listedNames != names:
                self.ui.promptsListWidget.clear()
                for label in entry.manifest["labels"]:
                    item = qt.QListWidgetItem(label["name"])
                    item.setFlags(item.flags() | qt.Qt.ItemIsUserCheckable)
                    if label.get("task"):
                        item.setToolTip(_("Task: {task}").format(task=label["task"]))
                    self.ui.promptsListWidget.addItem(item)
            checked = set(prompts or [])
            for i in range(self.ui.promptsListWidget.count):
                item = self.ui.promptsListWidget.item(i)
                item.setCheckState(qt.Qt.Checked if item.text() in checked else qt.Qt.Unchecked)
        finally:
            self._updatingGui = wasUpdating

    def noModelsText(self) -> str:
        """What to do next when the models folder is empty."""
        return _("<b>No model yet</b> in {folder}.<br>To make one from a few segmented cases, press <b>Train a "
                 "model…</b> (SemiSeg Trainer). To use one someone shared, press <b>Import model…</b>.<br>To try "
                 "SemiSeg first, load <b>SemiSegPhantom</b> in the Sample Data module.").format(
            folder=html.escape(self.logic.modelsDir()))

    def onModelChanged(self, index: int) -> None:
        if self._updatingGui or self._parameterNode is None or index < 0:
            return
        path = self.ui.modelComboBox.itemData(index)
        entry = next((e for e in self._modelEntries if e.path == path), None)
        with slicer.util.NodeModify(self._parameterNode.parameterNode):
            self._parameterNode.modelName = entry.name if entry else ""
            self._parameterNode.prompts = list(entry.card.structures) if entry and entry.ok else []

    def onPromptItemChanged(self, item) -> None:
        if self._updatingGui or self._parameterNode is None:
            return
        self._parameterNode.prompts = [
            self.ui.promptsListWidget.item(i).text() for i in range(self.ui.promptsListWidget.count)
            if self.ui.promptsListWidget.item(i).checkState() == qt.Qt.Checked]

    def setAllPromptsChecked(self, checked: bool) -> None:
        if self._parameterNode is None:
            return
        entry = self._entryByName(self._parameterNode.modelName)
        self._parameterNode.prompts = list(entry.card.structures) if (checked and entry and entry.ok) else []

    def onRefreshModels(self) -> None:
        self.refreshModels()

    def onModelsFolderChanged(self, path: str) -> None:
        self.logic.setModelsDir(path)
        self.refreshModels()

    def onOpenModelsFolder(self) -> None:
        folder = self.logic.modelsDir()
        os.makedirs(folder, exist_ok=True)
        qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(folder))

    def onImportModel(self) -> None:
        """Ask for a .semiseg folder or .zip, check it, copy it into the models folder."""
        source = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(), _("Import a SemiSeg model: pick its model.json, or a .zip of the package"),
            "", _("SemiSeg model (model.json *.zip)"))
        if not source:
            return
        if os.path.basename(source) == "model.json":
            source = os.path.dirname(source)
        with slicer.util.tryWithErrorDisplay(_("Failed to import the model."), waitCursor=True):
            try:
                path = self.logic.importModel(source)
            except semisegCatalog.ModelExistsError as e:
                if not slicer.util.confirmYesNoDisplay(
                        _("A model with this name is already installed:\n{path}\n\nReplace it?").format(
                            path=e.existingPath)):
                    return
                path = self.logic.importModel(source, overwrite=True)
            self.refreshModels()
            entry = next((e for e in self._modelEntries if e.path == path), None)
            if entry is not None:
                self._parameterNode.modelName = entry.name
                self._parameterNode.prompts = list(entry.card.structures)
            self.addLog(_("Imported model into {path}").format(path=path))

    # Settings and packages ------------------------------------------------

    def onForceCpuToggled(self, checked: bool) -> None:
        qt.QSettings().setValue(SETTINGS_FORCE_CPU, bool(checked))

    def onAdvancedCollapsed(self, collapsed: bool) -> None:
        if not collapsed:
            self.updatePackagesLabel()

    def updatePackagesLabel(self) -> None:
        versions = self.logic.installedVersions()
        self.ui.packagesLabel.text = ", ".join(f"{name} {version}" for name, version in versions)

    def onInstallDependencies(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to install the Python packages."), waitCursor=True):
            self.logic.setupPythonRequirements(askConfirmation=self.showDialogs, upgrade=True)
        self.updatePackagesLabel()

    # Run ------------------------------------------------------------------

    def onOutputChanged(self, node) -> None:
        self.ui.show3DButton.setSegmentationNode(node)

    def _checkCanApply(self, caller=None, event=None) -> None:
        """Enable Segment only when everything is chosen; its tooltip says what is missing."""
        pn = self._parameterNode
        running = self.logic.isRunning()
        missing = []
        if pn is None or not pn.inputVolume:
            missing.append(_("Select an input volume."))
        entry = self._entryByName(pn.modelName) if pn else None
        if entry is None or not entry.ok:
            missing.append(_("Select a usable model."))
        if pn is not None and not pn.prompts:
            missing.append(_("Tick at least one structure."))
        if running:
            missing.append(_("A segmentation is running."))
        self.ui.applyButton.enabled = not missing
        self.ui.applyButton.toolTip = "\n".join(missing) if missing else _("Segment the input volume.")
        self.ui.cancelButton.enabled = running

    def onApplyButton(self) -> None:
        """Run processing when user clicks "Segment" button."""
        pn = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Failed to start the segmentation."), waitCursor=True):
            entry = self.logic.findModel(pn.modelName)
            if entry is None:
                raise ValueError(_("Model {name} was not found in {folder}").format(
                    name=pn.modelName, folder=self.logic.modelsDir()))
            self.logic.setupPythonRequirements(askConfirmation=self.showDialogs)
            if not self.confirmMemory(entry.manifest):
                return
            replace = False
            if pn.outputSegmentation:
                conflicts = self.logic.conflictingSegmentNames(pn.outputSegmentation, pn.prompts)
                if conflicts:
                    if not slicer.util.confirmYesNoDisplay(_(
                            "Segmentation '{node}' already has segments named {names}. Replace them?").format(
                            node=pn.outputSegmentation.GetName(), names=", ".join(conflicts))):
                        return
                    replace = True
            self.ui.logTextEdit.clear()
            self.logic.startSegmentation(
                pn.inputVolume, entry, list(pn.prompts), outputSegmentation=pn.outputSegmentation,
                replaceSegments=replace, forceCpu=pn.forceCpu, swBatchSize=pn.swBatchSize, overlap=pn.overlap,
                keepLargestComponent=pn.keepLargestComponent, testTimeMirroring=pn.testTimeMirroring,
                showResultIn3D=pn.showResultIn3D,
                progressCallback=self.onProgress, completedCallback=self.onCompleted)
            self.onProgress(self.logic.progress)

    def confirmMemory(self, manifest: dict) -> bool:
        """Memory check: offer a lighter setting instead of failing. False when the user gives up."""
        pn = self._parameterNode
        check = self.logic.checkMemory(pn.inputVolume, manifest, pn.forceCpu, pn.swBatchSize)
        if check.fits:
            return True
        self.addLog(check.message)
        if not self.showDialogs:
            return True
        if check.suggestion:
            device, swBatchSize, _estimate = check.suggestion
            if slicer.util.confirmYesNoDisplay(check.message + "\n\n" + _("Use the lighter setting?")):
                with slicer.util.NodeModify(pn.parameterNode):
                    pn.swBatchSize = swBatchSize
                    if device == "cpu":
                        pn.forceCpu = True
                return True
        return slicer.util.confirmOkCancelDisplay(check.message + "\n\n" + _("Run anyway?"))

    def onCancelButton(self) -> None:
        self.logic.cancel()
        self.onProgress(self.logic.progress)

    def onProgress(self, progress: InferenceProgress) -> None:
        self.ui.progressBar.value = progress.percent()
        self.ui.statusLabel.text = progress.statusText()
        self._checkCanApply()

    def onCompleted(self, progress: InferenceProgress, segmentationNode) -> None:
        self.onProgress(progress)
        if progress.state == JobState.DONE and segmentationNode is not None:
            self._parameterNode.outputSegmentation = segmentationNode
            self.ui.show3DButton.setSegmentationNode(segmentationNode)
        elif progress.state == JobState.FAILED and self.showDialogs and not slicer.app.testingEnabled():
            slicer.util.errorDisplay(_("Segmentation failed: {error}").format(error=progress.errorMessage),
                                     detailedText=self.ui.logTextEdit.plainText)

    def addLog(self, text: str) -> None:
        self.ui.logTextEdit.appendPlainText(text)


#
# SemiSegTogetherLogic
#


class SemiSegTogetherLogic(ScriptedLoadableModuleLogic):
    """This class should implement all the actual
    computation done by your module.  The interface
    should be such that other python code can import
    this class and make use of the functionality without
    requiring an instance of the Widget.
    Uses ScriptedLoadableModuleLogic base class, available at:
    https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py

    Collaborators can be injected (tests, scripts): `pythonExecutable` runs the engine,
    `processFactory(args, env, logPath)` makes the BackgroundProcess, `settings` is a
    QSettings-like object.
    """

    def __init__(self, pythonExecutable: Optional[str] = None, processFactory: Optional[Callable] = None,
                 settings=None) -> None:
        """Called when the logic class is instantiated. Can be used for initializing member variables."""
        ScriptedLoadableModuleLogic.__init__(self)
        self.pythonExecutable = pythonExecutable
        self.processFactory = processFactory or startBackgroundProcess
        self.settings = settings
        self.logCallback = None
        self.progress = InferenceProgress()
        self.job: Optional[EngineJob] = None
        self.keepTemporaryFiles = False
        self._timer = None
        self._run = None

    def getParameterNode(self):
        return SemiSegTogetherParameterNode(super().getParameterNode())

    def log(self, text: str) -> None:
        logging.info(text)
        if self.logCallback:
            self.logCallback(text)

    def _settings(self):
        return self.settings if self.settings is not None else qt.QSettings()

    @staticmethod
    def moduleDir() -> str:
        return os.path.dirname(os.path.abspath(__file__))

    def enginePythonExecutable(self) -> str:
        return self.pythonExecutable or shutil.which("PythonSlicer") or "PythonSlicer"

    # Models -----------------------------------------------------------------

    def modelsDir(self) -> str:
        return semisegCatalog.resolveModelsDir(self._settings().value(SETTINGS_MODELS_DIR, ""))

    def setModelsDir(self, path: str) -> None:
        """Remember a models folder; an empty path goes back to $SEMISEG_MODELS_DIR or ~/.semiseg/models."""
        self._settings().setValue(SETTINGS_MODELS_DIR, path or "")

    def listModels(self) -> list:
        return semisegCatalog.listModels(self.modelsDir())

    def findModel(self, name: str):
        return semisegCatalog.findModel(self.modelsDir(), name)

    def importModel(self, source: str, overwrite: bool = False) -> str:
        path = semisegCatalog.importModel(source, self.modelsDir(), overwrite=overwrite)
        self.log(_("Model imported: {path}").format(path=path))
        return path

    # Dependencies -----------------------------------------------------------

    def requirementsPath(self) -> str:
        return os.path.join(self.moduleDir(), "Resources", "requirements.txt")

    def installedVersions(self) -> list:
        names = ["torch"] + [r.name for r in semisegDependencies.readRequirements(self.requirementsPath())]
        return semisegDependencies.versionsReport(names)

    def setupPythonRequirements(self, askConfirmation: bool = True, upgrade: bool = False) -> None:
        """Install what the engine needs into Slicer's Python; `upgrade` brings every package up to date.

        torch comes from PyTorchUtils and only when there is none; pip never changes torch or numpy
        (a constraints file holds them). Only package metadata is read: torch is not imported here.
        Raises InstallError.
        """
        problem = semisegDependencies.torchProblem()
        if problem == "missing":
            self.installTorch(askConfirmation)
        elif problem:
            raise InstallError(_("{problem}: update it in the PyTorch Util module, then restart Slicer.").format(
                problem=problem))
        requirements = semisegDependencies.readRequirements(self.requirementsPath())
        toInstall = requirements if upgrade else semisegDependencies.missingRequirements(requirements)
        if not toInstall:
            return
        if askConfirmation and not slicer.app.testingEnabled() and not slicer.util.confirmOkCancelDisplay(
                _("SemiSeg needs additional Python packages. Installation needs a network connection and may "
                  "take several minutes. Click OK to proceed."),
                _("Confirm Python package installation"),
                detailedText=_("Python packages that will be installed: {packages}").format(
                    packages=", ".join(r.line for r in toInstall))):
            raise InstallError(_("Installation of the required Python packages was cancelled."))
        self.log(_("Installing {packages}...").format(packages=", ".join(r.line for r in toInstall)))
        folder = tempfile.mkdtemp(prefix="semiseg-pip-")
        try:
            constraints = os.path.join(folder, "constraints.txt")
            with open(constraints, "w", encoding="utf-8") as f:
                f.write(semisegDependencies.heldConstraints())
            slicer.util.pip_install(semisegDependencies.pipInstallArguments(toInstall, constraints, upgrade=upgrade))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        still = semisegDependencies.missingRequirements(requirements)
        if still:
            raise InstallError(_("Packages could not be installed: {packages}. Restart Slicer and try again.").format(
                packages=", ".join(r.line for r in still)), restartRequired=True)

    def installTorch(self, askConfirmation: bool) -> None:
        """PyTorch from the PyTorch extension (a build that fits the GPU driver). It imports torch when done."""
        try:
            import PyTorchUtils  # noqa: PLC0415  (the PyTorch extension)
        except ImportError as e:
            raise InstallError(_("This module needs the PyTorch extension. Install 'PyTorch' from the Extensions "
                                 "Manager and restart Slicer.")) from e
        self.log(_("Installing PyTorch..."))
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
            askConfirmation=askConfirmation,
            torchVersionRequirement=f">={semisegDependencies.MINIMUM_TORCH_VERSION}")
        if torch is None:
            raise InstallError(_("PyTorch is required. Install it with the PyTorch Util module."))

    # Memory -----------------------------------------------------------------

    def checkMemory(self, inputVolume, manifest: dict, forceCpu: bool, swBatchSize: int):
        dims = inputVolume.GetImageData().GetDimensions()
        gpu = None if forceCpu else queryGpuMemoryMb()
        device = "cuda" if gpu is not None else "cpu"
        return checkInferenceMemory(manifest, tuple(reversed(dims)), device, swBatchSize,
                                    gpuFreeMb=gpu[1] if gpu else None, ramAvailableMb=queryRamAvailableMb())

    # Running ----------------------------------------------------------------

    def isRunning(self) -> bool:
        return self.progress.active

    @staticmethod
    def conflictingSegmentNames(segmentationNode, names) -> list:
        segmentation = segmentationNode.GetSegmentation()
        existing = {segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())}
        return [n for n in names if n in existing]

    def startSegmentation(self, inputVolume, modelEntry, prompts, outputSegmentation=None,
                          replaceSegments: bool = False, forceCpu: bool = False, swBatchSize: int = 1,
                          overlap: float = 0.5, keepLargestComponent: bool = False,
                          testTimeMirroring: bool = False, showResultIn3D: bool = False,
                          progressCallback: Optional[Callable] = None,
                          completedCallback: Optional[Callable] = None) -> EngineJob:
        """Start `semiseg predict` in the background. Can be used without GUI widget.

        The volume is written with its geometry to a temporary .nrrd; a QTimer follows the
        engine's events and loads the result into a segmentation node when it is done;
        `completedCallback(progress, segmentationNode or None)` is called at the end.
        """
        if self.isRunning():
            raise RuntimeError(_("A segmentation is already running."))
        if not inputVolume:
            raise ValueError(_("Select an input volume."))
        if not modelEntry or not modelEntry.ok:
            raise ValueError(_("Select a usable model."))
        specs = segmentSpecs(modelEntry.manifest, list(prompts))
        if not specs:
            raise ValueError(_("Tick at least one structure."))
        if outputSegmentation is not None and outputSegmentation.GetTransformNodeID() != inputVolume.GetTransformNodeID():
            raise ValueError(_("Segmentation '{node}' is under another transform than volume '{volume}': choose a "
                               "new segmentation, or put both under the same transform.").format(
                node=outputSegmentation.GetName(), volume=inputVolume.GetName()))
        if outputSegmentation is not None and not replaceSegments:
            conflicts = self.conflictingSegmentNames(outputSegmentation, [s.name for s in specs])
            if conflicts:
                raise ValueError(_("Segmentation '{node}' already has segments named {names}.").format(
                    node=outputSegmentation.GetName(), names=", ".join(conflicts)))

        workDir = slicer.util.tempDirectory(key="SemiSegTogether")
        inputPath = os.path.join(workDir, "input.nrrd")
        outputPath = os.path.join(workDir, "segmentation.nrrd")
        eventsPath = os.path.join(workDir, "events.jsonl")
        self.log(_("Writing {volume} to {path}").format(volume=inputVolume.GetName(), path=inputPath))
        # The volume's own grid (local frame, world=False): the result is placed under the same parent
        # transform, so it lines up with the volume however it is transformed (even non-linearly).
        # exportNode writes a copy: the node's own storage (where the user saves it) stays as it was.
        if not slicer.util.exportNode(inputVolume, inputPath, {"useCompression": 0}, world=False):
            raise RuntimeError(_("Could not write the input volume to {path}").format(path=inputPath))

        args = buildPredictCommand(
            self.enginePythonExecutable(), modelEntry.path, inputPath, outputPath, [s.name for s in specs],
            device="cpu" if forceCpu else "auto", swBatchSize=swBatchSize, overlap=overlap,
            eventsPath=eventsPath, keepLargestComponent=keepLargestComponent, testTimeMirroring=testTimeMirroring)
        env = engineEnvironment(enginePath=self.moduleDir(), forceCpu=forceCpu)
        self.log(" ".join(args))
        process = self.processFactory(args, env, os.path.join(workDir, "engine.log"))
        self.progress = InferenceProgress()
        self.job = EngineJob(process, eventsPath, self.progress)
        self._run = dict(inputVolume=inputVolume, modelEntry=modelEntry, specs=specs, workDir=workDir,
                         outputPath=outputPath, outputSegmentation=outputSegmentation,
                         replaceSegments=replaceSegments, showResultIn3D=showResultIn3D,
                         progressCallback=progressCallback, completedCallback=completedCallback, result=None)
        self.job.start()
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self.onPollTimer)
        self._timer.start()
        return self.job

    def onPollTimer(self) -> None:
        """Called by the QTimer: forward log lines and progress; load the result when done."""
        if self.job is None or self._run is None:
            return
        result = self.job.poll()
        for line in result.logLines:
            self.log(line)
        run = self._run
        if run["progressCallback"] and (result.events or result.finished):
            run["progressCallback"](self.progress)
        if not result.finished:
            return
        self._timer.stop()
        segmentationNode = None
        if self.progress.state == JobState.DONE:
            try:
                segmentationNode = self.importLabelmap(
                    run["outputPath"], run["inputVolume"], run["specs"], run["outputSegmentation"],
                    replaceSegments=run["replaceSegments"], modelName=run["modelEntry"].name,
                    showResultIn3D=run["showResultIn3D"])
                self.log(_("Segmentation loaded into '{node}'.").format(node=segmentationNode.GetName()))
            except Exception as e:
                self.progress.state = JobState.FAILED
                self.progress.errorMessage = _("could not load the result: {error}").format(error=e)
                self.log(traceback.format_exc())
        elif self.progress.state == JobState.FAILED:
            self.log(_("Segmentation failed: {error}").format(error=self.progress.errorMessage))
        else:
            self.log(_("Segmentation cancelled."))
        run["result"] = segmentationNode
        if not self.keepTemporaryFiles:
            shutil.rmtree(run["workDir"], ignore_errors=True)
        if run["completedCallback"]:
            run["completedCallback"](self.progress, segmentationNode)

    def cancel(self) -> None:
        """Stop the running segmentation: the whole engine process tree ends."""
        if self.job is not None and self.job.cancel():
            self.log(_("Cancelling..."))

    def process(self, inputVolume, modelEntry, prompts, forceCpu: bool = True, swBatchSize: int = 1,
                overlap: float = 0.5, timeoutSeconds: float = 600.0, outputSegmentation=None):
        """Segment and wait (scripts, tests). Returns the segmentation node; raises on failure."""
        self.startSegmentation(inputVolume, modelEntry, prompts, outputSegmentation=outputSegmentation,
                               forceCpu=forceCpu, swBatchSize=swBatchSize, overlap=overlap)
        import time  # noqa: PLC0415
        deadline = time.monotonic() + timeoutSeconds
        while self._timer.isActive():  # the timer stops once the result is loaded (or the run failed)
            if time.monotonic() > deadline:
                self.cancel()
                raise TimeoutError(_("Segmentation did not finish in {seconds} s").format(seconds=timeoutSeconds))
            slicer.app.processEvents()
            time.sleep(0.05)
        if self.progress.state != JobState.DONE:
            raise RuntimeError(_("Segmentation failed: {error}").format(error=self.progress.errorMessage))
        return self._run["result"]

    def importLabelmap(self, labelmapPath: str, inputVolume, specs, outputSegmentation=None,
                       replaceSegments: bool = False, modelName: str = "", showResultIn3D: bool = False):
        """Load the engine's label map into a segmentation node on the input's geometry.

        One segment per spec (even if empty), with the model's name, colour and terminology.
        """
        import numpy as np  # noqa: PLC0415

        labelNode = slicer.util.loadLabelVolume(labelmapPath, {"show": False})
        try:
            labels = slicer.util.arrayFromVolume(labelNode)
            segmentationNode = outputSegmentation
            if segmentationNode is None:
                segmentationNode = slicer.mrmlScene.AddNewNodeByClass(
                    "vtkMRMLSegmentationNode",
                    slicer.mrmlScene.GenerateUniqueName(f"{inputVolume.GetName()} {modelName}".strip()))
                segmentationNode.CreateDefaultDisplayNodes()
                segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(inputVolume)
                segmentationNode.SetAndObserveTransformNodeID(inputVolume.GetTransformNodeID())
                self._placeNextTo(segmentationNode, inputVolume)
            segmentation = segmentationNode.GetSegmentation()
            with slicer.util.RenderBlocker():
                for spec in specs:
                    if replaceSegments:
                        existingId = segmentation.GetSegmentIdBySegmentName(spec.name)
                        if existingId:
                            segmentation.RemoveSegment(existingId)
                    segmentId = segmentation.AddEmptySegment("", spec.name, spec.color)
                    mask = (labels == spec.value).astype(np.uint8)
                    if mask.any():
                        slicer.util.updateSegmentBinaryLabelmapFromArray(mask, segmentationNode, segmentId, labelNode)
                    segment = segmentation.GetSegment(segmentId)
                    segment.SetColor(*spec.color)
                    if spec.terminology:
                        segment.SetTag(segment.GetTerminologyEntryTagName(), spec.terminology)
        finally:
            slicer.mrmlScene.RemoveNode(labelNode)
        if showResultIn3D:
            segmentationNode.CreateClosedSurfaceRepresentation()
        return segmentationNode

    @staticmethod
    def _placeNextTo(node, referenceNode) -> None:
        """Put `node` in the same subject-hierarchy folder/study as `referenceNode`."""
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        referenceItem = shNode.GetItemByDataNode(referenceNode)
        if referenceItem:
            shNode.SetItemParent(shNode.GetItemByDataNode(node), shNode.GetItemParent(referenceItem))


#
# SemiSegTogetherTest
#


class SemiSegTogetherTest(ScriptedLoadableModuleTest):
    """
    End-to-end test inside Slicer, on the CPU: the engine trains a tiny model on synthetic
    data for a few iterations, the module segments a synthetic volume with it, and the
    result's segment names, colours and geometry are checked.
    """

    def setUp(self):
        """Do whatever is needed to reset the state - typically a scene clear will be enough."""
        slicer.mrmlScene.Clear()
        self._savedSettings = {k: qt.QSettings().value(k) for k in (SETTINGS_MODELS_DIR, SETTINGS_FORCE_CPU)}

    def tearDown(self):
        settings = qt.QSettings()
        for key, value in self._savedSettings.items():
            if value is None:
                settings.remove(key)
            else:
                settings.setValue(key, value)

    def runTest(self):
        """Run as few or as many tests as needed here."""
        for test in (self.test_ModelCatalog, self.test_EndToEndCpu):
            self.setUp()
            try:
                test()
            finally:
                self.tearDown()

    def test_ModelCatalog(self):
        """The models folder setting, import check and card work inside Slicer too."""
        self.delayDisplay("Models folder and import check")
        logic = SemiSegTogetherLogic()
        tempDir = slicer.util.tempDirectory(key="SemiSegTogetherTest")
        logic.setModelsDir(os.path.join(tempDir, "models"))
        self.assertEqual(logic.modelsDir(), os.path.join(tempDir, "models"))
        self.assertEqual(logic.listModels(), [])
        notAModel = os.path.join(tempDir, "not-a-model")
        os.makedirs(notAModel)
        with self.assertRaises(ModelPackageError):
            logic.importModel(notAModel)
        self.assertFalse(os.path.exists(os.path.join(tempDir, "models", "not-a-model.semiseg")))
        self.delayDisplay("Test passed")

    @staticmethod
    def trainTinyModel(workDir: str, pythonExecutable: str) -> tuple:
        """Synthetic data + `semiseg train --iterations 5` on the CPU. Returns (model path, a test image)."""
        import subprocess  # noqa: PLC0415

        from semiseg.synthetic import make_dataset  # noqa: PLC0415  (engine: lazily, after the install)

        dataDir = os.path.join(workDir, "data")
        make_dataset(dataDir)
        modelPath = os.path.join(workDir, "models", "tiny.semiseg")
        args = [pythonExecutable, "-m", "semiseg", "train", "--data", dataDir, "--method", "supervised",
                "--iterations", "5", "--device", "cpu", "--out", modelPath, "--workdir", os.path.join(workDir, "run")]
        env = engineEnvironment(enginePath=SemiSegTogetherLogic.moduleDir(), forceCpu=True)
        completed = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)
        if completed.returncode != 0:
            raise RuntimeError(f"semiseg train failed ({completed.returncode}):\n{completed.stderr[-4000:]}")
        for folder in ("imagesTs", "imagesTr"):
            path = os.path.join(dataDir, folder)
            if os.path.isdir(path) and os.listdir(path):
                return modelPath, os.path.join(path, sorted(os.listdir(path))[0])
        raise RuntimeError(f"make_dataset wrote no images under {dataDir}")

    def test_EndToEndCpu(self):
        self.delayDisplay("Installing or checking the Python packages")
        logic = SemiSegTogetherLogic()
        logic.setupPythonRequirements(askConfirmation=False)

        self.delayDisplay("Training a tiny model on synthetic data (CPU, 5 iterations)")
        workDir = slicer.util.tempDirectory(key="SemiSegTogetherTest")
        modelPath, imagePath = self.trainTinyModel(workDir, logic.enginePythonExecutable())
        logic.setModelsDir(os.path.dirname(modelPath))
        entries = [e for e in logic.listModels() if e.ok]
        self.assertEqual(len(entries), 1, [e.error for e in logic.listModels()])
        entry = entries[0]
        labelNames = [label["name"] for label in entry.manifest["labels"]]

        self.delayDisplay("Segmenting a synthetic volume")
        inputVolume = slicer.util.loadVolume(imagePath)
        segmentationNode = logic.process(inputVolume, entry, labelNames, forceCpu=True, timeoutSeconds=600)

        segmentation = segmentationNode.GetSegmentation()
        names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
        self.assertEqual(names, labelNames)
        for spec in segmentSpecs(entry.manifest, labelNames):
            segment = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName(spec.name))
            for actual, expected in zip(segment.GetColor(), spec.color):
                self.assertAlmostEqual(actual, expected, places=3)
        referenceGeometry = segmentationNode.GetNodeReference(segmentationNode.GetReferenceImageGeometryReferenceRole())
        self.assertEqual(referenceGeometry, inputVolume)
        volumeArray = slicer.util.arrayFromVolume(inputVolume)
        for i in range(segmentation.GetNumberOfSegments()):
            segmentArray = slicer.util.arrayFromSegmentBinaryLabelmap(
                segmentationNode, segmentation.GetNthSegmentID(i), inputVolume)
            self.assertEqual(segmentArray.shape, volumeArray.shape)
        self.delayDisplay("Test passed")
