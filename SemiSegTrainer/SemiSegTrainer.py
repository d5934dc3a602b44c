import json
import logging
import os
import shutil
from typing import Callable, Optional

import ctk
import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import GuiConnector, parameterNodeGuiConnector, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

# SemiSegTogether is a dependency: its folder (with SemiSegTogetherLib and the engine) is on
# sys.path before this module loads. The engine itself (semiseg) is only imported lazily.
from SemiSegTogetherLib.command import engineEnvironment
from SemiSegTogetherLib.catalog import ModelEntry, ModelExistsError
from SemiSegTogetherLib.events import JobState
from SemiSegTogetherLib.manifest import parseTerminologyEntry, readManifest

from SemiSegTrainerLib.export import (
    LabeledCase,
    SegmentInfo,
    checkCases,
    countPoolImages,
    exportDataset,
    geometryFromIjkToRas,
    readBaseDataset,
)
from SemiSegTrainerLib.activeloop import fineTuneSettings, readSuggestions, startSuggestJob, writePoolNodes
from SemiSegTrainerLib.jobs import TrainingJobFolder, TrainingRunner, findResumableJobs, registerModel
from SemiSegTrainerLib.progress import TrainingProgress
from SemiSegTrainerLib.settings import TrainingSettings, parseOptionValue, readMethods

SETTINGS_WORK_FOLDER = "SemiSeg/Trainer/workFolder"
DEFAULT_WORK_FOLDER = os.path.join("~", ".semiseg", "training")
POLL_INTERVAL_MS = 500


#
# SemiSegTrainer
#


class SemiSegTrainer(ScriptedLoadableModule):
    """Uses ScriptedLoadableModule base class, available at:
    https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py
    """

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SemiSeg Trainer")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["SemiSegTogether"]
        self.parent.contributors = ["SemiSeg contributors"]
        self.parent.helpText = _("""
Teach SemiSeg a new structure: give it a few scans you segmented and, if you have them, scans nobody segmented
(semi-supervised learning uses those too). Training runs in the background; the finished model opens in
SemiSeg Together in one click. To try it, load SemiSegPhantom (a scan with its segmentation) from Sample Data.
See the <a href="https://github.com/SemiSeg/SlicerSemiSeg/blob/main/docs/user-guide-trainer.md">user guide</a>.
""")
        self.parent.acknowledgementText = _("""
SemiSeg builds on MONAI, PyTorch and SimpleITK. Each method's paper is cited in docs/methods.
""")


#
# SemiSegTrainerParameterNode
#


@parameterNodeGuiConnector
class ctkPathLineEditToStrConnector(GuiConnector):
    """Binds a ctkPathLineEdit to a `str` parameter, "" meaning no path.

    Slicer's own connector binds it only to pathlib.Path, whose empty value would show (and be read) as ".".
    """

    @staticmethod
    def canRepresent(widget, datatype) -> bool:
        return type(widget) == ctk.ctkPathLineEdit and datatype is str

    @staticmethod
    def create(widget, datatype):
        return ctkPathLineEditToStrConnector(widget) if ctkPathLineEditToStrConnector.canRepresent(widget, datatype) \
            else None

    def __init__(self, widget):
        super().__init__()
        self._widget = widget

    def _connect(self):
        self._widget.currentPathChanged.connect(self.changed)

    def _disconnect(self):
        self._widget.currentPathChanged.disconnect(self.changed)

    def widget(self):
        return self._widget

    def read(self) -> str:
        return str(self._widget.currentPath or "")

    def write(self, value: str) -> None:
        if value != self._widget.currentPath:
            self._widget.currentPath = value or ""


@parameterNodeWrapper
class SemiSegTrainerParameterNode:
    """
    The parameters needed by module.

    labeledVolumes, labeledSegmentations - Labeled cases from the scene, pair by pair.
    unlabeledVolumes - Scene volumes used as unlabeled images.
    datasetPath - Optional dataset folder or dataset.json with more labeled cases.
    unlabeledFolder - Optional folder of unlabeled images.
    jobFolder - The current (or last) training run, for Resume and hand-over.
    """

    labeledVolumes: list[vtkMRMLScalarVolumeNode]
    labeledSegmentations: list[vtkMRMLSegmentationNode]
    unlabeledVolumes: list[vtkMRMLScalarVolumeNode]
    datasetPath: str = ""
    unlabeledFolder: str = ""
    jobFolder: str = ""


#
# SemiSegTrainerWidget
#


class SemiSegTrainerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Uses ScriptedLoadableModuleWidget base class, available at:
    https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py
    """

    def __init__(self, parent=None, logic=None, showDialogs: bool = True) -> None:
        """Called when the user opens the module the first time and the widget is initialized."""
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = logic
        self.showDialogs = showDialogs
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._methods = []
        self._updatingGui = False
        self._corrections = {}  # volume node id -> the segmentation "Segment with current model" made

    def setup(self) -> None:
        """Called when the user opens the module the first time and the widget is initialized."""
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SemiSegTrainer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        if self.logic is None:
            self.logic = SemiSegTrainerLogic()
        self.logic.logCallback = self.addLog

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.labeledCasesTable.horizontalHeader().setStretchLastSection(True)
        self.ui.methodOptionsTable.horizontalHeader().setStretchLastSection(True)
        self.ui.workFolderPathLineEdit.currentPath = self.logic.workFolder()

        self.ui.addCaseButton.connect("clicked(bool)", self.onAddCase)
        self.ui.findCasesButton.connect("clicked(bool)", self.onFindCases)
        self.ui.removeCaseButton.connect("clicked(bool)", self.onRemoveCase)
        self.ui.refreshUnlabeledButton.connect("clicked(bool)", self.updateUnlabeledList)
        self.ui.unlabeledVolumesListWidget.connect("itemChanged(QListWidgetItem*)", self.onUnlabeledItemChanged)
        self.ui.methodComboBox.connect("currentIndexChanged(int)", self.onMethodChanged)
        self.ui.trainForSpinBox.connect("valueChanged(int)", self.onTrainForChanged)
        self.ui.workFolderPathLineEdit.connect("currentPathChanged(QString)", self.logic.setWorkFolder)
        self.ui.checkButton.connect("clicked(bool)", self.onCheckButton)
        self.ui.trainButton.connect("clicked(bool)", self.onTrainButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.resumeButton.connect("clicked(bool)", self.onResumeButton)
        self.ui.useModelButton.connect("clicked(bool)", self.onUseModelButton)
        self.ui.suggestButton.connect("clicked(bool)", self.onSuggestButton)
        self.ui.suggestionsListWidget.connect("itemSelectionChanged()", self.updateButtons)
        self.ui.segmentSuggestedButton.connect("clicked(bool)", self.onSegmentSuggestedButton)
        self.ui.addAsLabeledButton.connect("clicked(bool)", self.onAddAsLabeledButton)
        self.ui.fineTuneButton.connect("clicked(bool)", self.onFineTuneButton)

        self.loadMethods()
        self.showSettings(self.logic.loadSettings())
        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Called when the application closes and the module widget is destroyed."""
        if self.logic:
            self.logic.cancel()
        self.removeObservers()

    def enter(self) -> None:
        """Called each time the user opens this module."""
        self.initializeParameterNode()
        self.updateUnlabeledList()

    def exit(self) -> None:
        """Called each time the user opens a different module."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        """Called just before the scene is closed."""
        self.setParameterNode(None)
        self.ui.plotWidget.setMRMLPlotViewNode(None)  # its view node goes with the scene

    def onSceneEndClose(self, caller, event) -> None:
        """Called just after the scene is closed."""
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode) -> None:
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
        """Bring the case table and counts up to date, and enable the buttons."""
        pn = self._parameterNode
        if pn is None:
            return
        table = self.ui.labeledCasesTable
        pairs = self.logic.labeledPairs(pn)
        table.setRowCount(len(pairs))
        for row, (volume, segmentation) in enumerate(pairs):
            table.setItem(row, 0, qt.QTableWidgetItem(volume.GetName()))
            table.setItem(row, 1, qt.QTableWidgetItem(segmentation.GetName()))
        counts = self.logic.countCases(pn)
        self.ui.labeledCountLabel.text = _("{scene} labeled case(s) from the scene, {dataset} from the dataset.").format(
            scene=counts["scene"], dataset=counts["dataset"] if counts["dataset"] is not None else 0)
        if counts["datasetError"]:
            self.ui.labeledCountLabel.text += " " + counts["datasetError"]
        self.ui.unlabeledCountLabel.text = _("{count} unlabeled image(s) ({scene} from the scene, {folder} in the folder).").format(
            count=counts["unlabeledScene"] + counts["unlabeledFolder"], scene=counts["unlabeledScene"],
            folder=counts["unlabeledFolder"])
        self.updateButtons()

    # Cases ----------------------------------------------------------------------------------

    def onAddCase(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Cannot add the case."), waitCursor=True):
            self.logic.addLabeledPair(self._parameterNode, self.ui.labeledVolumeSelector.currentNode(),
                                      self.ui.labeledSegmentationSelector.currentNode())

    def onFindCases(self) -> None:
        for volume, segmentation in self.logic.findCasePairs():
            self.logic.addLabeledPair(self._parameterNode, volume, segmentation, ignoreDuplicates=True)

    def onRemoveCase(self) -> None:
        rows = sorted({index.row() for index in self.ui.labeledCasesTable.selectedIndexes()}, reverse=True)
        for row in rows:
            self.logic.removeLabeledPair(self._parameterNode, row)

    def updateUnlabeledList(self) -> None:
        """Scene volumes that are not labeled cases, ticked when they are in the pool."""
        pn = self._parameterNode
        if pn is None:
            return
        labeled = {v.GetID() for v, _s in self.logic.labeledPairs(pn)}
        chosen = {v.GetID() for v in pn.unlabeledVolumes if v}
        self._updatingGui = True
        try:
            self.ui.unlabeledVolumesListWidget.clear()
            for volume in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode"):
                if volume.GetID() in labeled or volume.IsA("vtkMRMLLabelMapVolumeNode"):
                    continue
                item = qt.QListWidgetItem(volume.GetName())
                item.setData(qt.Qt.UserRole, volume.GetID())
                item.setFlags(item.flags() | qt.Qt.ItemIsUserCheckable)
                item.setCheckState(qt.Qt.Checked if volume.GetID() in chosen else qt.Qt.Unchecked)
                self.ui.unlabeledVolumesListWidget.addItem(item)
        finally:
            self._updatingGui = False

    def onUnlabeledItemChanged(self, item) -> None:
        if self._updatingGui or self._parameterNode is None:
            return
        widget = self.ui.unlabeledVolumesListWidget
        ids = [widget.item(i).data(qt.Qt.UserRole) for i in range(widget.count)
               if widget.item(i).checkState() == qt.Qt.Checked]
        self._parameterNode.unlabeledVolumes = [slicer.mrmlScene.GetNodeByID(i) for i in ids]

    # Method and settings -----------------------------------------------------------------------

    def loadMethods(self) -> None:
        self._methods = self.logic.methods()
        self.ui.methodComboBox.clear()
        for method in self._methods:
            self.ui.methodComboBox.addItem(method.label(), method.name)

    def onMethodChanged(self, index: int) -> None:
        method = self._methods[index] if 0 <= index < len(self._methods) else None
        self.ui.methodDescriptionLabel.text = method.plainDescription() if method else ""
        self.ui.methodDescriptionLabel.toolTip = method.description if method else ""
        self.showMethodOptions(method, {})

    def showMethodOptions(self, method, values: dict) -> None:
        table = self.ui.methodOptionsTable
        options = method.options if method else {}
        table.setRowCount(len(options))
        for row, (key, default) in enumerate(sorted(options.items())):
            keyItem = qt.QTableWidgetItem(key)
            keyItem.setFlags(qt.Qt.ItemIsSelectable | qt.Qt.ItemIsEnabled)  # the value column is editable
            keyItem.setToolTip(method.optionHelp.get(key, ""))
            table.setItem(row, 0, keyItem)
            value = values.get(key, default)
            table.setItem(row, 1, qt.QTableWidgetItem(value if isinstance(value, str) else json.dumps(value)))

    def showSettings(self, settings: TrainingSettings) -> None:
        index = self.ui.methodComboBox.findData(settings.method)
        if index >= 0:
            self.ui.methodComboBox.setCurrentIndex(index)
        self.ui.trainForSpinBox.value = settings.timeMinutes
        self.ui.iterationsSpinBox.value = settings.iterations
        self.ui.deviceComboBox.setCurrentIndex(max(0, self.ui.deviceComboBox.findText(settings.device)))
        self.ui.patchLineEdit.text = ",".join(str(p) for p in settings.patch) if settings.patch else ""
        self.ui.batchLabeledSpinBox.value = settings.batchLabeled
        self.ui.batchUnlabeledSpinBox.value = settings.batchUnlabeled
        self.ui.learningRateLineEdit.text = "" if settings.learningRate is None else f"{settings.learningRate:g}"
        self.ui.valEverySpinBox.value = settings.valEvery
        self.ui.valCasesSpinBox.value = settings.valCases
        method = next((m for m in self._methods if m.name == settings.method), None)
        self.showMethodOptions(method, settings.methodOptions)
        self.onTrainForChanged(settings.timeMinutes)

    def onTrainForChanged(self, minutes: int) -> None:
        """With a time limit the planner picks steps, batches and validation interval: those fields rest."""
        for widget in (self.ui.iterationsSpinBox, self.ui.batchLabeledSpinBox, self.ui.batchUnlabeledSpinBox,
                       self.ui.valEverySpinBox):
            widget.enabled = not minutes

    def settingsFromGui(self) -> TrainingSettings:
        """The panel's settings; raises ValueError with every problem listed."""
        problems = []
        patch = None
        if self.ui.patchLineEdit.text.strip():
            try:
                patch = [int(p) for p in self.ui.patchLineEdit.text.replace("x", ",").split(",") if p.strip()]
            except ValueError:
                problems.append(_("patch size: whole numbers separated by commas, e.g. 96,96,64"))
        learningRate = None
        if self.ui.learningRateLineEdit.text.strip():
            try:
                learningRate = float(self.ui.learningRateLineEdit.text)
            except ValueError:
                problems.append(_("learning rate: a number such as 0.01, or empty for the method's default"))
        method = self._methods[self.ui.methodComboBox.currentIndex] if self._methods else None
        options = {}
        table = self.ui.methodOptionsTable
        for row in range(table.rowCount):
            key, value = table.item(row, 0).text(), parseOptionValue(table.item(row, 1).text())
            if method is None or method.options.get(key) != value:
                options[key] = value
        settings = TrainingSettings(
            method=method.name if method else "mean-teacher", timeMinutes=self.ui.trainForSpinBox.value,
            iterations=self.ui.iterationsSpinBox.value,
            device=self.ui.deviceComboBox.currentText, patch=patch, batchLabeled=self.ui.batchLabeledSpinBox.value,
            batchUnlabeled=self.ui.batchUnlabeledSpinBox.value, learningRate=learningRate,
            valEvery=self.ui.valEverySpinBox.value, valCases=self.ui.valCasesSpinBox.value, methodOptions=options,
            modelName=self.ui.modelNameLineEdit.text.strip())
        problems += settings.validate(self._methods)
        if problems:
            raise ValueError("\n".join(problems))
        return settings

    # Run ------------------------------------------------------------------------------------------

    def updateButtons(self) -> None:
        pn = self._parameterNode
        running = self.logic.isRunning()
        counts = self.logic.countCases(pn) if pn else {"scene": 0, "dataset": 0}
        haveCases = counts["scene"] > 0 or bool(counts["dataset"])
        self.ui.trainButton.enabled = haveCases and not running
        self.ui.trainButton.toolTip = _("Train a model.") if haveCases else _("Add labeled cases or a dataset first.")
        self.ui.checkButton.enabled = haveCases and not running
        self.ui.cancelButton.enabled = running
        job = self.logic.currentJob(pn) if pn else None
        resumable = self.resumeCandidate()
        self.ui.resumeButton.enabled = (not running) and resumable is not None
        self.ui.resumeButton.toolTip = (_("Continue {folder} from its last checkpoint.").format(folder=resumable.folder)
                                        if resumable else _("No cancelled or interrupted training to continue."))
        self.ui.useModelButton.enabled = (not running) and job is not None and job.finished
        self.ui.suggestButton.enabled = self.ui.fineTuneButton.enabled = self.ui.useModelButton.enabled
        chosen = self.chosenVolume()
        self.ui.segmentSuggestedButton.enabled = chosen is not None and self.ui.useModelButton.enabled
        self.ui.addAsLabeledButton.enabled = chosen is not None and chosen.GetID() in self._corrections

    def resumeCandidate(self):
        """The current run if it can be resumed, else the newest resumable run in the work folder."""
        job = self.logic.currentJob(self._parameterNode) if self._parameterNode else None
        if job is not None and job.canResume():
            return job
        if job is None:  # e.g. after a restart: runs are kept on disk
            candidates = self.logic.resumableJobs()
            return candidates[0] if candidates else None
        return None

    def onCheckButton(self) -> None:
        self.startRun(checkOnly=True)

    def onTrainButton(self) -> None:
        self.startRun(checkOnly=False)

    def startRun(self, checkOnly: bool, initFrom: Optional[str] = None) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to start training."), waitCursor=True):
            settings = self.settingsFromGui()
            self.logic.saveSettings(settings)
            if initFrom:
                settings = fineTuneSettings(settings, initFrom)
            self.logic.setupPythonRequirements(askConfirmation=self.showDialogs)
            job, problems = self.logic.prepareJob(self._parameterNode, settings)
            if problems.warnings:
                self.addLog(problems.text())
            if job is None:
                raise ValueError(problems.text())
            if problems.warnings and self.showDialogs and not checkOnly and not slicer.util.confirmOkCancelDisplay(
                    _("Training can start, but note:") + "\n\n" + "\n".join(problems.warnings)):
                return
            self._parameterNode.jobFolder = job.folder
            self.ui.logTextEdit.clear()
            self.logic.startTraining(job, checkOnly=checkOnly, progressCallback=self.onProgress,
                                     completedCallback=self.onCompleted)
            self.onProgress(self.logic.runner.progress)

    def onResumeButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to resume training."), waitCursor=True):
            job = self.resumeCandidate()
            if job is None:
                raise ValueError(_("There is no training to resume."))
            self._parameterNode.jobFolder = job.folder
            self.logic.startTraining(job, resume=True, progressCallback=self.onProgress,
                                     completedCallback=self.onCompleted)
            self.onProgress(self.logic.runner.progress)

    def onCancelButton(self) -> None:
        self.logic.cancel()
        self.onProgress(self.logic.runner.progress)

    def showCurves(self) -> None:
        """The plot widget shows the curves once a run has made them (nothing is added to the scene on open)."""
        view = self.logic.curvesViewNode()
        if self.ui.plotWidget.mrmlPlotViewNode() is not view:
            self.ui.plotWidget.setMRMLPlotViewNode(view)

    def onProgress(self, progress: TrainingProgress) -> None:
        self.showCurves()
        busy = progress.state == JobState.STARTING
        self.ui.progressBar.setRange(0, 0 if busy else 100)  # busy indicator while the data is checked
        self.ui.progressBar.value = progress.percent()
        self.ui.statusLabel.text = progress.statusText()
        self.updateButtons()

    def onCompleted(self, progress: TrainingProgress) -> None:
        self.onProgress(progress)
        job = self.logic.currentJob(self._parameterNode)
        if progress.state == JobState.DONE and job is not None and job.finished:
            manifest = readManifest(job.outPath)
            from SemiSegTogetherLib.manifest import ModelCard  # noqa: PLC0415
            self.ui.resultLabel.text = ModelCard.fromManifest(manifest).html()
        elif progress.state == JobState.FAILED and self.showDialogs and not slicer.app.testingEnabled():
            slicer.util.errorDisplay(_("Training failed: {error}").format(error=progress.errorMessage),
                                     detailedText=self.ui.logTextEdit.plainText)

    def onUseModelButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to register the model."), waitCursor=True):
            job = self.logic.currentJob(self._parameterNode)
            try:
                path = self.logic.registerAndSelect(job.outPath)
            except ModelExistsError as e:
                if not slicer.util.confirmYesNoDisplay(
                        _("A model with this name is already installed:\n{path}\n\nReplace it?").format(
                            path=e.existingPath)):
                    return
                path = self.logic.registerAndSelect(job.outPath, overwrite=True)
            self.addLog(_("Model registered: {path}").format(path=path))
            slicer.util.selectModule("SemiSegTogether")

    # Annotate next: suggest, segment, correct, add as labeled, fine-tune -------------------------------

    def onSuggestButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to rank the pool."), waitCursor=True):
            self.ui.suggestionsListWidget.clear()
            self.logic.startSuggest(self.logic.currentJob(self._parameterNode), self.onSuggestionsReady)
            self.ui.statusLabel.text = _("Ranking the unlabeled cases...")

    def onSuggestionsReady(self, progress, suggestions: list) -> None:
        self.ui.statusLabel.text = progress.statusText()
        for row in suggestions:
            volume = slicer.mrmlScene.GetNodeByID(row.nodeId) if row.nodeId else None
            item = qt.QListWidgetItem(row.label(volume.GetName() if volume else None))
            item.setData(qt.Qt.UserRole, row.nodeId or "")
            item.setToolTip(row.reason if volume else row.reason + _(" (a file of the pool, not a scene volume)"))
            self.ui.suggestionsListWidget.addItem(item)
        self.updateButtons()

    def chosenVolume(self):
        item = self.ui.suggestionsListWidget.currentItem()
        nodeId = item.data(qt.Qt.UserRole) if item else ""
        return slicer.mrmlScene.GetNodeByID(nodeId) if nodeId else None

    def onSegmentSuggestedButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to segment the case."), waitCursor=True):
            volume = self.chosenVolume()
            if volume is None:
                raise ValueError(_("This case is a file of the pool folder; load it into the scene to segment it."))

            def segmented(progress, segmentationNode) -> None:
                if segmentationNode is not None:
                    self._corrections[volume.GetID()] = segmentationNode
                    self.logic.openInSegmentEditor(volume, segmentationNode)
                self.updateButtons()

            self.logic.segmentWithJobModel(self.logic.currentJob(self._parameterNode), volume, segmented)

    def onAddAsLabeledButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to add the case."), waitCursor=True):
            volume = self.chosenVolume()
            self.logic.addLabeledPair(self._parameterNode, volume, self._corrections.pop(volume.GetID()))
            self.ui.suggestionsListWidget.takeItem(self.ui.suggestionsListWidget.currentRow)
            self.updateUnlabeledList()
            self.updateButtons()

    def onFineTuneButton(self) -> None:
        self.startRun(checkOnly=False, initFrom=self.logic.currentJob(self._parameterNode).outPath)

    def addLog(self, text: str) -> None:
        self.ui.logTextEdit.appendPlainText(text)


#
# SemiSegTrainerLogic
#


class SemiSegTrainerLogic(ScriptedLoadableModuleLogic):
    """This class should implement all the actual
    computation done by your module.  The interface
    should be such that other python code can import
    this class and make use of the functionality without
    requiring an instance of the Widget.
    Uses ScriptedLoadableModuleLogic base class, available at:
    https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py

    Collaborators can be injected: `pythonExecutable`, `processFactory(args, env, logPath)`,
    `settings` (QSettings-like) and `togetherLogic` (SemiSegTogetherLogic).
    """

    def __init__(self, pythonExecutable: Optional[str] = None, processFactory: Optional[Callable] = None,
                 settings=None, togetherLogic=None) -> None:
        """Called when the logic class is instantiated. Can be used for initializing member variables."""
        ScriptedLoadableModuleLogic.__init__(self)
        self.pythonExecutable = pythonExecutable
        self.processFactory = processFactory
        self.settings = settings
        self._togetherLogic = togetherLogic
        self.logCallback = None
        self.runner = TrainingRunner(self.enginePythonExecutable(), self.engineEnvironment(), processFactory)
        self._timer = None
        self._callbacks = {}
        self._methodsCache = None
        self._curveNodes = None
        self.suggestJob = None  # `semiseg suggest` of "Suggest next cases"
        self._suggestTimer = None

    def getParameterNode(self):
        return SemiSegTrainerParameterNode(super().getParameterNode())

    def log(self, text: str) -> None:
        logging.info(text)
        if self.logCallback:
            self.logCallback(text)

    def _settings(self):
        return self.settings if self.settings is not None else qt.QSettings()

    def togetherLogic(self):
        if self._togetherLogic is None:
            import SemiSegTogether  # noqa: PLC0415  (a module dependency, loaded first)
            self._togetherLogic = SemiSegTogether.SemiSegTogetherLogic(pythonExecutable=self.pythonExecutable,
                                                                       settings=self.settings)
        return self._togetherLogic

    def enginePythonExecutable(self) -> str:
        return self.pythonExecutable or shutil.which("PythonSlicer") or "PythonSlicer"

    def engineEnvironment(self, forceCpu: bool = False) -> dict:
        import SemiSegTogetherLib  # noqa: PLC0415
        enginePath = os.path.dirname(os.path.dirname(os.path.abspath(SemiSegTogetherLib.__file__)))
        return engineEnvironment(enginePath=enginePath, forceCpu=forceCpu)

    def setupPythonRequirements(self, askConfirmation: bool = True) -> None:
        self.togetherLogic().setupPythonRequirements(askConfirmation=askConfirmation)

    # Settings ---------------------------------------------------------------------------------

    def workFolder(self) -> str:
        value = self._settings().value(SETTINGS_WORK_FOLDER, "") or DEFAULT_WORK_FOLDER
        return os.path.abspath(os.path.expanduser(str(value)))

    def setWorkFolder(self, path: str) -> None:
        self._settings().setValue(SETTINGS_WORK_FOLDER, path or "")

    def loadSettings(self) -> TrainingSettings:
        return TrainingSettings.load(self._settings())

    def saveSettings(self, settings: TrainingSettings) -> None:
        settings.save(self._settings())

    @staticmethod
    def methodsPath() -> str:
        return os.path.join(os.path.dirname(os.path.abspath(__file__)), "Resources", "methods.json")

    def methods(self) -> list:
        """The engine's methods, from the list shipped with the module: no process at startup."""
        if self._methodsCache is None:
            self._methodsCache = readMethods(self.methodsPath())
        return self._methodsCache

    # Cases ------------------------------------------------------------------------------------------

    @staticmethod
    def labeledPairs(parameterNode) -> list:
        return [(v, s) for v, s in zip(parameterNode.labeledVolumes, parameterNode.labeledSegmentations) if v and s]

    def addLabeledPair(self, parameterNode, volume, segmentation, ignoreDuplicates: bool = False) -> None:
        if volume is None or segmentation is None:
            raise ValueError(_("Choose a volume and its segmentation."))
        if segmentation.GetSegmentation().GetNumberOfSegments() == 0:
            raise ValueError(_("Segmentation '{name}' has no segments.").format(name=segmentation.GetName()))
        if any(s == segmentation for _v, s in self.labeledPairs(parameterNode)):
            if ignoreDuplicates:
                return
            raise ValueError(_("Segmentation '{name}' is already a case.").format(name=segmentation.GetName()))
        pairs = self.labeledPairs(parameterNode) + [(volume, segmentation)]
        with slicer.util.NodeModify(parameterNode.parameterNode):
            parameterNode.labeledVolumes = [v for v, _s in pairs]
            parameterNode.labeledSegmentations = [s for _v, s in pairs]
            parameterNode.unlabeledVolumes = [v for v in parameterNode.unlabeledVolumes if v and v != volume]

    def removeLabeledPair(self, parameterNode, row: int) -> None:
        pairs = self.labeledPairs(parameterNode)
        del pairs[row]
        with slicer.util.NodeModify(parameterNode.parameterNode):
            parameterNode.labeledVolumes = [v for v, _s in pairs]
            parameterNode.labeledSegmentations = [s for _v, s in pairs]

    @staticmethod
    def findCasePairs() -> list:
        """(volume, segmentation) for every segmentation whose reference geometry is a scalar volume."""
        pairs = []
        for segmentation in slicer.util.getNodesByClass("vtkMRMLSegmentationNode"):
            volume = segmentation.GetNodeReference(segmentation.GetReferenceImageGeometryReferenceRole())
            if volume is not None and volume.IsA("vtkMRMLScalarVolumeNode") \
                    and not volume.IsA("vtkMRMLLabelMapVolumeNode") \
                    and segmentation.GetSegmentation().GetNumberOfSegments() > 0:
                pairs.append((volume, segmentation))
        return pairs

    def countCases(self, parameterNode) -> dict:
        counts = {"scene": len(self.labeledPairs(parameterNode)), "dataset": None, "datasetError": "",
                  "unlabeledScene": len([v for v in parameterNode.unlabeledVolumes if v]),
                  "unlabeledFolder": len(countPoolImages(parameterNode.unlabeledFolder))}
        if parameterNode.datasetPath:
            try:
                base = self.baseDataset(parameterNode.datasetPath)
                counts["dataset"] = len(base["training"])
                counts["unlabeledFolder"] += len(base["unlabeled"])
            except Exception as e:  # semiseg.errors.DataError names the file and the problem
                counts["datasetError"] = str(e)
        return counts

    def baseDataset(self, path: str) -> dict:
        """The user's dataset through the engine's reader; re-read only when the path or its time stamp changes."""
        key = (path, os.path.getmtime(path) if os.path.exists(path) else None)
        if getattr(self, "_baseCache", (None, None))[0] != key:
            self._baseCache = (key, readBaseDataset(path))
        return self._baseCache[1]

    @staticmethod
    def volumeGeometry(volumeNode):
        """ITK/LPS geometry of a volume in world coordinates (a linear parent transform is applied)."""
        ijkToRas = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(ijkToRas)
        transformNode = volumeNode.GetParentTransformNode()
        if transformNode is not None:
            if not transformNode.IsTransformToWorldLinear():
                raise ValueError(_("Volume '{name}' is under a non-linear transform; harden it first.").format(
                    name=volumeNode.GetName()))
            toWorld = vtk.vtkMatrix4x4()
            transformNode.GetMatrixTransformToWorld(toWorld)
            vtk.vtkMatrix4x4.Multiply4x4(toWorld, ijkToRas, ijkToRas)
        return geometryFromIjkToRas([[ijkToRas.GetElement(r, c) for c in range(4)] for r in range(4)])

    def caseFromNodes(self, volumeNode, segmentationNode) -> LabeledCase:
        """Arrays of one scene case: the image and each segment resampled onto the volume's grid."""
        import numpy as np  # noqa: PLC0415

        image = slicer.util.arrayFromVolume(volumeNode).copy()
        segmentation = segmentationNode.GetSegmentation()
        masks, segments = {}, {}
        for i in range(segmentation.GetNumberOfSegments()):
            segmentId = segmentation.GetNthSegmentID(i)
            segment = segmentation.GetSegment(segmentId)
            mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volumeNode)
            masks[segment.GetName()] = (np.zeros(image.shape, dtype=np.uint8) if mask is None
                                        else np.asarray(mask).copy())
            terminology = parseTerminologyEntry(segment.GetTag(segment.GetTerminologyEntryTagName()) or "")
            segments[segment.GetName()] = SegmentInfo(color=tuple(segment.GetColor()), terminology=terminology or None)
        return LabeledCase(name=volumeNode.GetName(), image=image, geometry=self.volumeGeometry(volumeNode),
                           masks=masks, segments=segments)

    def prepareJob(self, parameterNode, settings: TrainingSettings):
        """Check everything, then write the cases to a new job folder. Returns (job or None, problems)."""
        cases = [self.caseFromNodes(v, s) for v, s in self.labeledPairs(parameterNode)]
        poolPaths = countPoolImages(parameterNode.unlabeledFolder)
        unlabeledNodes = [v for v in parameterNode.unlabeledVolumes if v]
        base = self.baseDataset(parameterNode.datasetPath) if parameterNode.datasetPath else None
        unlabeledCount = len(poolPaths) + len(unlabeledNodes) + (len(base["unlabeled"]) if base else 0)
        problems = checkCases(cases, unlabeledCount, settings.method,
                              datasetLabeledCount=len(base["training"]) if base else 0, valCases=settings.valCases)
        if not problems.ok:
            return None, problems
        job = TrainingJobFolder.create(self.workFolder(), settings)
        self.log(_("Writing the cases to {folder}").format(folder=job.dataDir))
        unlabeledArrays = [(v.GetName(), slicer.util.arrayFromVolume(v).copy(), self.volumeGeometry(v))
                           for v in unlabeledNodes]
        exported = exportDataset(job.dataDir, cases, unlabeledArrays, poolPaths, base,
                                 name=settings.modelName or "SemiSegTrainer", modality=(base or {}).get("modality", ""))
        for caseName, voxels in exported.overlaps.items():
            problems.warnings.append(_("case '{case}': {voxels} voxels belong to several segments; the last one "
                                       "wins").format(case=caseName, voxels=voxels))
        job.dataPath, job.labelInfoPath = exported.datasetJson, exported.labelInfoJson
        job.save()
        writePoolNodes(job.folder, exported.unlabeledIds, [v.GetID() for v in unlabeledNodes])
        self.log(_("{labeled} labeled and {unlabeled} unlabeled cases; structures: {labels}").format(
            labeled=exported.labeledCount, unlabeled=exported.unlabeledCount, labels=", ".join(exported.labels)))
        return job, problems

    # Running ----------------------------------------------------------------------------------------

    def isRunning(self) -> bool:
        return self.runner.running

    def currentJob(self, parameterNode) -> Optional[TrainingJobFolder]:
        if parameterNode is None or not parameterNode.jobFolder:
            return None
        try:
            return TrainingJobFolder.load(parameterNode.jobFolder)
        except ValueError:
            return None

    def resumableJobs(self) -> list:
        return findResumableJobs(self.workFolder())

    def startTraining(self, job: TrainingJobFolder, resume: bool = False, checkOnly: bool = False,
                      progressCallback: Optional[Callable] = None,
                      completedCallback: Optional[Callable] = None) -> None:
        """Run `semiseg check` then `semiseg train` (or `train --resume`) in the background."""
        forceCpu = job.settings.device == "cpu"
        self.runner = TrainingRunner(self.enginePythonExecutable(), self.engineEnvironment(forceCpu=forceCpu),
                                     self.processFactory)
        self._callbacks = dict(progress=progressCallback, completed=completedCallback, checkOnly=checkOnly)
        self.runner.start(job, resume=resume, checkOnly=checkOnly)
        self.log(_("Resuming {folder}").format(folder=job.folder) if resume else _("Checking the data..."))
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self.onPollTimer)
        self._timer.start()

    def onPollTimer(self) -> None:
        if self.runner is None:
            return
        wasChecking = self.runner.stage == "check"
        result = self.runner.poll()
        for line in result.logLines:
            self.log(line)
        progress = self.runner.progress
        if wasChecking and (self.runner.stage != "check" or progress.stage == "checked"):
            self.log(_("Data check passed."))
            if self.runner.stage == "plan":
                self.log(_("Planning the run for {minutes} min on this machine (a short timing probe)...").format(
                    minutes=self.runner.job.settings.timeMinutes))
        if result.events:
            self.updateCurves(progress)
        if self._callbacks.get("progress") and (result.events or result.logLines or result.finished):
            self._callbacks["progress"](progress)
        if result.finished:
            self._timer.stop()
            self.log(progress.statusText())
            if self._callbacks.get("completed"):
                self._callbacks["completed"](progress)

    def cancel(self) -> None:
        """End the training process tree; the engine keeps its last checkpoint for Resume."""
        if self.runner is not None and self.runner.cancel():
            self.log(_("Cancelling: the last checkpoint is kept..."))

    def waitForCompletion(self, timeoutSeconds: float = 900.0) -> TrainingProgress:
        """Block (with events processed) until the run ends; scripts and tests."""
        import time  # noqa: PLC0415
        deadline = time.monotonic() + timeoutSeconds
        while self._timer is not None and self._timer.isActive():
            if time.monotonic() > deadline:
                self.cancel()
                raise TimeoutError(_("Training did not finish in {seconds} s").format(seconds=timeoutSeconds))
            slicer.app.processEvents()
            time.sleep(0.05)
        return self.runner.progress

    # The annotate-train loop ------------------------------------------------------------------------

    def startSuggest(self, job: TrainingJobFolder, completedCallback: Callable) -> None:
        """Rank `job`'s pool with its model in the background (`semiseg suggest`); then
        `completedCallback(progress, suggestions)`."""
        if job is None or not job.finished:
            raise ValueError(_("Train a model first: the ranking uses the last trained model."))
        self.suggestJob = startSuggestJob(self.enginePythonExecutable(), job.folder, job.outPath, job.dataPath,
                                          self.engineEnvironment(forceCpu=job.settings.device == "cpu"),
                                          self.processFactory, device=job.settings.device)

        def poll() -> None:
            result = self.suggestJob.poll()
            for line in result.logLines:
                self.log(line)
            if result.finished:
                self._suggestTimer.stop()
                done = self.suggestJob.progress.state == JobState.DONE
                completedCallback(self.suggestJob.progress, readSuggestions(job.folder) if done else [])

        self._suggestTimer = qt.QTimer()
        self._suggestTimer.setInterval(POLL_INTERVAL_MS)
        self._suggestTimer.connect("timeout()", poll)
        self._suggestTimer.start()

    def segmentWithJobModel(self, job: TrainingJobFolder, volume, completedCallback: Callable):
        """`volume` segmented in the background with `job`'s model (all its structures), via SemiSeg Together."""
        manifest = readManifest(job.outPath, useEngine=False)
        return self.togetherLogic().startSegmentation(volume, ModelEntry(job.outPath, manifest),
                                                      [lab["name"] for lab in manifest["labels"]],
                                                      forceCpu=job.settings.device == "cpu",
                                                      completedCallback=completedCallback)

    @staticmethod
    def openInSegmentEditor(volume, segmentation) -> None:
        """Show the prediction in the Segment Editor, on its volume, for correction."""
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(segmentation)
        setSource = getattr(editor, "setSourceVolumeNode", None) or editor.setMasterVolumeNode  # Slicer < 5.4
        setSource(volume)

    # Curves (Slicer plot nodes) -----------------------------------------------------------------------

    def _ensureCurveNodes(self) -> dict:
        """The plot nodes of the training curves, made on the first events: not saved with the scene."""
        if self._curvesPresent():
            return self._curveNodes
        scene = slicer.mrmlScene
        nodes = {"lossTable": scene.AddNewNodeByClass("vtkMRMLTableNode", "SemiSeg training loss"),
                 "diceTable": scene.AddNewNodeByClass("vtkMRMLTableNode", "SemiSeg validation Dice")}
        for key, column, title, color in (("loss", "loss", _("Loss"), (0.85, 0.4, 0.3)),
                                          ("dice", "dice", _("Validation Dice"), (0.2, 0.6, 0.3))):
            table = nodes[key + "Table"]
            for name in ("iteration", column):
                array = vtk.vtkDoubleArray()
                array.SetName(name)
                table.AddColumn(array)
            series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", title)
            series.SetAndObserveTableNodeID(table.GetID())
            series.SetXColumnName("iteration")
            series.SetYColumnName(column)
            series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
            series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone if key == "loss"
                                  else slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle)
            series.SetColor(*color)
            nodes[key + "Series"] = series
        chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", "SemiSeg training")
        chart.AddAndObservePlotSeriesNodeID(nodes["lossSeries"].GetID())
        chart.AddAndObservePlotSeriesNodeID(nodes["diceSeries"].GetID())
        chart.SetTitle(_("Training"))
        chart.SetXAxisTitle(_("iteration"))
        nodes["chart"] = chart
        view = scene.AddNewNodeByClass("vtkMRMLPlotViewNode", "SemiSeg training view")
        view.SetPlotChartNodeID(chart.GetID())
        nodes["view"] = view
        for node in nodes.values():
            node.SetSaveWithScene(False)  # the curves live in the job folder's events, not in the user's scene
        self._curveNodes = nodes
        return nodes

    def _curvesPresent(self) -> bool:
        return bool(self._curveNodes) and all(slicer.mrmlScene.IsNodePresent(n) for n in self._curveNodes.values())

    def curvesViewNode(self):
        """The curves' plot view node, or None before the first run's events (or after Close Scene)."""
        return self._curveNodes["view"] if self._curvesPresent() else None

    def updateCurves(self, progress: TrainingProgress) -> None:
        """Loss (total) and validation Dice into the plot tables, as they come."""
        import numpy as np  # noqa: PLC0415
        nodes = self._ensureCurveNodes()
        for key, points, column in (("lossTable", progress.lossCurve("total"), "loss"),
                                    ("diceTable", progress.dice, "dice")):
            data = np.array(points, dtype=float).reshape(-1, 2)
            slicer.util.updateTableFromArray(nodes[key], [data[:, 0], data[:, 1]], ["iteration", column])

    # Hand-over ------------------------------------------------------------------------------------------

    def registerAndSelect(self, modelPath: str, overwrite: bool = False) -> str:
        """Copy the model into the models folder and select it in SemiSegTogether with all its structures."""
        together = self.togetherLogic()
        path = registerModel(modelPath, together.modelsDir(), overwrite=overwrite)
        manifest = readManifest(path)
        parameterNode = together.getParameterNode()
        with slicer.util.NodeModify(parameterNode.parameterNode):
            parameterNode.modelName = manifest["name"]
            parameterNode.prompts = [label["name"] for label in manifest["labels"]]
        return path


#
# SemiSegTrainerTest
#


class SemiSegTrainerTest(ScriptedLoadableModuleTest):
    """
    Inside Slicer, on the CPU: synthetic cases are loaded into the scene as volumes and
    segmentations, a tiny model is trained for a few iterations, registered, and run
    through SemiSegTogether's logic.
    """

    def setUp(self):
        """Do whatever is needed to reset the state - typically a scene clear will be enough."""
        slicer.mrmlScene.Clear()

    def runTest(self):
        """Run as few or as many tests as needed here."""
        self.setUp()
        self.test_TrainRegisterSegmentCpu()

    def test_TrainRegisterSegmentCpu(self):
        import time  # noqa: PLC0415

        import numpy as np  # noqa: PLC0415

        from semiseg.synthetic import make_dataset  # noqa: PLC0415  (the engine, lazily)

        settings = qt.QSettings()
        savedKeys = {k: settings.value(k) for k in settings.allKeys() if k.startswith("SemiSeg/")}
        tempDir = slicer.util.tempDirectory(key="SemiSegTrainerTest")
        try:
            settings.setValue("SemiSeg/modelsDir", os.path.join(tempDir, "models"))
            settings.setValue(SETTINGS_WORK_FOLDER, os.path.join(tempDir, "training"))
            logic = SemiSegTrainerLogic()
            logic.setupPythonRequirements(askConfirmation=False)

            self.delayDisplay("Loading synthetic cases into the scene")
            data = make_dataset(os.path.join(tempDir, "synthetic"), n_labeled=2, n_unlabeled=2, n_test=1,
                                shape=(32, 32, 32))
            import json  # noqa: PLC0415
            spec = json.loads((data / "dataset.json").read_text(encoding="utf-8"))
            labelValues = {name: int(value) for name, value in spec["labels"].items() if int(value) != 0}
            labelNames = list(labelValues)
            parameterNode = logic.getParameterNode()
            for entry in spec["training"]:
                volume = slicer.util.loadVolume(str(data / entry["image"]))
                labelmap = slicer.util.loadLabelVolume(str(data / entry["label"]))
                segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
                segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
                labels = slicer.util.arrayFromVolume(labelmap)
                for name, value in labelValues.items():
                    segmentId = segmentation.GetSegmentation().AddEmptySegment("", name)
                    slicer.util.updateSegmentBinaryLabelmapFromArray(
                        (labels == value).astype(np.uint8), segmentation, segmentId, labelmap)
                slicer.mrmlScene.RemoveNode(labelmap)
                logic.addLabeledPair(parameterNode, volume, segmentation)
            unlabeled = [slicer.util.loadVolume(str(data / (e["image"] if isinstance(e, dict) else e)))
                         for e in spec.get("unlabeled", [])]
            parameterNode.unlabeledVolumes = unlabeled
            self.assertEqual(len(logic.labeledPairs(parameterNode)), 2)

            self.delayDisplay("Training 5 iterations on the CPU")
            trainingSettings = TrainingSettings(method="mean-teacher", timeMinutes=0, iterations=5, device="cpu",
                                                patch=[32, 32, 32], batchLabeled=1, batchUnlabeled=1, valEvery=5,
                                                modelName="slicer-test-tiny")
            job, problems = logic.prepareJob(parameterNode, trainingSettings)
            self.assertIsNotNone(job, problems.text())
            logic.startTraining(job)
            progress = logic.waitForCompletion(900)
            self.assertEqual(progress.state, JobState.DONE, progress.errorMessage)
            self.assertTrue(job.finished)
            self.assertEqual(progress.iteration, 5)

            self.delayDisplay("Registering and segmenting with SemiSegTogether's logic")
            path = logic.registerAndSelect(job.outPath)
            together = logic.togetherLogic()
            self.assertEqual(together.getParameterNode().modelName, "slicer-test-tiny")
            entry = together.findModel("slicer-test-tiny")
            self.assertIsNotNone(entry)
            self.assertEqual(entry.path, path)
            segmentationNode = together.process(unlabeled[0], entry, together.getParameterNode().prompts,
                                                forceCpu=True)
            names = [segmentationNode.GetSegmentation().GetNthSegment(i).GetName()
                     for i in range(segmentationNode.GetSegmentation().GetNumberOfSegments())]
            self.assertEqual(names, labelNames)

            self.delayDisplay("Annotate next: suggest, segment, add as labeled, fine-tune")
            answer = []
            logic.startSuggest(job, lambda progress, rows: answer.extend([progress, rows]))
            while logic._suggestTimer.isActive():
                slicer.app.processEvents()
                time.sleep(0.05)
            self.assertEqual(answer[0].state, JobState.DONE, answer[0].errorMessage)
            ranked = answer[1]
            self.assertEqual(sorted(r.nodeId for r in ranked), sorted(v.GetID() for v in unlabeled))
            chosen = slicer.mrmlScene.GetNodeByID(ranked[0].nodeId)
            corrected = together.process(chosen, entry, together.getParameterNode().prompts, forceCpu=True)
            logic.addLabeledPair(parameterNode, chosen, corrected)
            self.assertEqual(len(logic.labeledPairs(parameterNode)), 3)
            self.assertNotIn(chosen, list(parameterNode.unlabeledVolumes))
            tuned, problems = logic.prepareJob(parameterNode, fineTuneSettings(trainingSettings, job.outPath))
            self.assertIsNotNone(tuned, problems.text())
            logic.startTraining(tuned)
            progress = logic.waitForCompletion(900)
            self.assertEqual(progress.state, JobState.DONE, progress.errorMessage)
            self.assertEqual(readManifest(tuned.outPath, useEngine=False)["parent"]["path"], job.outPath)
            self.delayDisplay("Test passed")
        finally:
            for key in [k for k in settings.allKeys() if k.startswith("SemiSeg/")]:
                settings.remove(key)
            for key, value in savedKeys.items():
                settings.setValue(key, value)
