"""The modules' widgets and logic run under each release's own `slicer` package (5.6.2 ... 5.12.3).

Slicer's parameterNodeWrapper, GUI connectors, util and ScriptedLoadableModule come from
../shared/slicer-python/vX.Y.Z/slicer; only compiled parts (qt, ctk, MRML, qMRML widgets, slicer.app)
are stand-ins (Testing/slicer_standins.py). Skips, naming the folder, where ../shared is absent.
"""

import os

import pytest

import helpers_slicer as h
import slicer_standins as standins

h.addModulePaths()
# VTKObservationMixin warns when an observer is removed twice (exit() then enter()): a bug here, not noise.
pytestmark = pytest.mark.filterwarnings("error:does not have observer", "error:already has observer")


@pytest.fixture(params=standins.RELEASES, ids=lambda v: f"slicer-{v}")
def release(request):
    reason = standins.missingReleaseReason(request.param)
    if reason:
        pytest.skip(reason)
    loaded = standins.loadRelease(request.param)
    yield loaded
    loaded.close()


def touch(folder, *names):
    os.makedirs(folder, exist_ok=True)
    for name in names:
        open(os.path.join(folder, name), "wb").close()
    return str(folder)


# --- item 1: the Trainer's panel binds -------------------------------------------------------------


def test_trainer_panel_binds_both_ways_and_survives_reopening(release, tmp_path):
    widget = standins.openModule(release, "SemiSegTrainer", pythonExecutable="/bin/false")
    pn = widget._parameterNode
    ui = widget.ui
    pool = touch(tmp_path / "pool", "a.nrrd", "b.nii.gz")

    ui.unlabeledFolderPathLineEdit.currentPath = pool  # the user picks a folder
    assert pn.unlabeledFolder == pool
    assert "2 unlabeled image(s)" in ui.unlabeledCountLabel.text  # the observer brought the counts up to date

    pn.datasetPath = str(tmp_path / "no-such-dataset.json")  # e.g. a scene loaded from disk
    assert ui.datasetPathLineEdit.currentPath == str(tmp_path / "no-such-dataset.json")

    widget.exit()
    widget.enter()  # every enter() connects again
    ui.unlabeledFolderPathLineEdit.currentPath = ""
    assert pn.unlabeledFolder == ""
    assert "0 unlabeled image(s)" in ui.unlabeledCountLabel.text


def test_trainer_train_for_a_time_lets_the_planner_choose_the_steps(release):
    widget = standins.openModule(release, "SemiSegTrainer", pythonExecutable="/bin/false")
    ui = widget.ui
    assert ui.trainForSpinBox.value == 30 and ui.checkButton.text == "Check and plan"
    assert not ui.iterationsSpinBox.enabled and not ui.valEverySpinBox.enabled  # planned
    assert widget.settingsFromGui().trainArguments()[-2:] == ["--time", "30m"]
    ui.trainForSpinBox.value = 0  # no time limit: the steps are the user's again
    assert ui.iterationsSpinBox.enabled and ui.iterationsSpinBox.value == 6000
    args = widget.settingsFromGui().trainArguments()
    assert "--time" not in args and args[args.index("--iterations") + 1] == "6000"
    assert ui.valCasesSpinBox.value == 0 and "--val-cases" not in args  # every labeled case trains
    ui.valCasesSpinBox.value = 1  # the user holds one out for a validation Dice
    args = widget.settingsFromGui().trainArguments()
    assert args[args.index("--val-cases") + 1] == "1"


# --- item 4: the first open shows the model ---------------------------------------------------------


def withOneModel(tmp_path):
    folder = tmp_path / "models"
    h.writeModelPackage(str(folder / "la.semiseg"), h.exampleManifest())
    standins.QSettings.store["SemiSeg/modelsDir"] = str(folder)
    return folder


def test_together_first_open_shows_the_model_its_structures_and_enables_segment(release, tmp_path):
    withOneModel(tmp_path)
    volume = release.slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "MRI")
    widget = standins.openModule(release, "SemiSegTogether", pythonExecutable="/bin/false")
    ui = widget.ui
    assert ui.modelComboBox.currentText == "la-mean-teacher"
    assert "<h3>la-mean-teacher</h3>" in ui.modelCardLabel.text
    assert [ui.promptsListWidget.item(i).text() for i in range(ui.promptsListWidget.count)] == ["left atrium"]
    assert ui.promptsListWidget.item(0).checkState() == standins.Qt.Checked
    assert ui.inputVolumeSelector.currentNode() is volume  # bound by Slicer's qMRMLNodeComboBox connector
    assert ui.applyButton.enabled, ui.applyButton.toolTip

    release.slicer.mrmlScene.Clear()  # Close Scene: a fresh parameter node gets the model again
    assert widget._parameterNode.modelName == "la-mean-teacher"
    assert not ui.applyButton.enabled and "Select an input volume." in ui.applyButton.toolTip


def test_together_binds_its_settings_both_ways(release, tmp_path):
    widget = standins.openModule(release, "SemiSegTogether", pythonExecutable="/bin/false")
    pn, ui = widget._parameterNode, widget.ui
    ui.swBatchSizeSpinBox.value = 4
    ui.keepLargestComponentCheckBox.checked = True
    ui.testTimeMirroringCheckBox.checked = True
    assert pn.swBatchSize == 4 and pn.keepLargestComponent and pn.testTimeMirroring
    pn.overlap = 0.25
    assert ui.overlapSpinBox.value == 0.25


# --- item 2: Slicer's process never imports torch --------------------------------------------------


SLICER_PROCESS = """
import sys
sys.path[:0] = [{testing!r}]
import helpers_slicer as h, slicer_standins as standins
h.addModulePaths()
release = standins.loadRelease({version!r})
folder = {models!r}
h.writeModelPackage(folder + "/la.semiseg", h.exampleManifest())
standins.QSettings.store["SemiSeg/modelsDir"] = folder
release.slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "MRI")
together = standins.openModule(release, "SemiSegTogether", pythonExecutable="/bin/false")
trainer = standins.openModule(release, "SemiSegTrainer", pythonExecutable="/bin/false")
together.onRefreshModels()
together.ui.modelComboBox.setCurrentIndex(0)
together.logic.findModel("la-mean-teacher")
trainer.logic.togetherLogic().listModels()
print("loaded:", sorted(m for m in ("torch", "semiseg", "semiseg.model", "monai") if m in sys.modules))
"""


def test_opening_the_modules_and_listing_models_never_imports_the_engine(release, tmp_path):
    import subprocess
    import sys

    code = SLICER_PROCESS.format(testing=os.path.dirname(__file__), version=release.version,
                                 models=str(tmp_path / "models"))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "loaded: []" in done.stdout, done.stdout + done.stderr[-2000:]


# --- item 3: no process when the Trainer opens -----------------------------------------------------


def test_trainer_opens_without_starting_a_process(release, monkeypatch):
    import subprocess

    started = []

    def noProcess(*args, **kwargs):
        started.append(args[:1])
        raise OSError("no process may start while the module opens")

    monkeypatch.setattr(subprocess, "run", noProcess)
    monkeypatch.setattr(subprocess, "Popen", noProcess)
    widget = standins.openModule(release, "SemiSegTrainer")
    assert started == []
    ui = widget.ui
    assert ui.methodComboBox.count >= 5 and ui.methodComboBox.currentText == "mean-teacher (recommended)"
    assert "scans nobody segmented" in ui.methodDescriptionLabel.text  # a clinician's words...
    assert "EMA" in ui.methodDescriptionLabel.toolTip  # ...and the technical term in the tooltip
    widget.exit()
    widget.enter()


# --- item 8: no plot nodes in the user's scene on open ---------------------------------------------


CURVE_CLASSES = ("vtkMRMLTableNode", "vtkMRMLPlotSeriesNode", "vtkMRMLPlotChartNode", "vtkMRMLPlotViewNode")


def test_trainer_adds_no_nodes_on_open_and_its_curves_are_not_saved_nor_dangling(release, monkeypatch):
    from SemiSegTrainerLib.progress import TrainingProgress

    scene = release.slicer.mrmlScene
    widget = standins.openModule(release, "SemiSegTrainer")
    assert [n for c in CURVE_CLASSES for n in scene.nodesOfClass(c)] == []
    assert widget.ui.plotWidget.mrmlPlotViewNode() is None

    tables = {}
    monkeypatch.setattr(release.slicer.util, "updateTableFromArray",
                        lambda node, arrays, names: tables.__setitem__(node.GetName(), names))
    progress = TrainingProgress()
    widget.logic.updateCurves(progress)  # the first events of a run
    widget.onProgress(progress)
    made = [n for c in CURVE_CLASSES for n in scene.nodesOfClass(c)]
    assert len(made) == 6 and not any(n.GetSaveWithScene() for n in made)
    assert widget.ui.plotWidget.mrmlPlotViewNode() is widget.logic.curvesViewNode() is not None

    scene.Clear()  # Close Scene
    assert widget.ui.plotWidget.mrmlPlotViewNode() is None
    assert widget.logic.curvesViewNode() is None
    widget.logic.updateCurves(progress)  # the next run makes them again
    widget.onProgress(progress)
    assert scene.IsNodePresent(widget.ui.plotWidget.mrmlPlotViewNode())


# --- item 6: installing the engine's packages into Slicer's Python ---------------------------------


class FakePip:
    """Slicer's pip_install ends in (_)executePythonModule("pip", args): record args and the constraints."""

    def __init__(self, versions):
        self.versions, self.calls = versions, []

    def __call__(self, module, args, *rest, **kwargs):
        args = list(args)
        constraints = open(args[args.index("-c") + 1], encoding="utf-8").read() if "-c" in args else None
        self.calls.append((module, args, constraints))
        from SemiSegTogetherLib.dependencies import parseRequirements

        for req in parseRequirements("\n".join(a for a in args[1:] if a[0].isalpha())):
            if req.name in self.versions:  # pip installs the floor; --upgrade a newer one
                self.versions[req.name] = req.minimum + (".1" if "--upgrade" in args else "")


@pytest.mark.parametrize("torchInstalled", [True, False], ids=["torch-present", "torch-missing"])
def test_setup_holds_torch_and_numpy_installs_missing_and_update_upgrades(release, monkeypatch, torchInstalled):
    import sys
    import types
    from importlib import metadata

    from SemiSegTogetherLib import dependencies

    requirements = dependencies.readRequirements(
        os.path.join(h.TOGETHER_DIR, "Resources", "requirements.txt"))
    versions = {r.name: None for r in requirements}
    versions.update(numpy="1.26.4", torch="2.5.1+cu121" if torchInstalled else None)

    def version(name):
        if versions.get(name) is None:
            raise metadata.PackageNotFoundError(name)
        return versions[name]

    monkeypatch.setattr(dependencies.metadata, "version", version)
    torchCalls = []

    class PyTorchUtilsLogic:
        def torchInstalled(self):
            raise AssertionError("torchInstalled() imports torch into Slicer")

        def installTorch(self, askConfirmation=False, forceComputationBackend=None, torchVersionRequirement=None):
            torchCalls.append(torchVersionRequirement)
            versions["torch"] = "2.9.0+cu128"
            return types.ModuleType("torch")

    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(PyTorchUtilsLogic=PyTorchUtilsLogic))
    pip = FakePip(versions)
    for name in ("_executePythonModule", "executePythonModule"):  # 5.6-5.10 / 5.12 (via slicer.packaging)
        if hasattr(release.slicer.util, name):
            monkeypatch.setattr(release.slicer.util, name, pip)
    release.slicer.app.testing = True  # as under Slicer --testing: no dialogs, plain blocking pip
    module = release.module("SemiSegTogether")
    logic = module.SemiSegTogetherLogic()

    logic.setupPythonRequirements(askConfirmation=False)
    assert torchCalls == ([] if torchInstalled else [">=2.2"])
    (name, args, constraints), = pip.calls
    assert name == "pip" and args[0] == "install" and "--upgrade" not in args
    assert set(r.line for r in requirements) <= set(args) and not any(a.startswith("torch") for a in args)
    assert constraints == f"torch=={versions['torch']}\nnumpy==1.26.4\n"

    logic.setupPythonRequirements(askConfirmation=False)  # all there now: no second pip call
    assert len(pip.calls) == 1
    logic.setupPythonRequirements(askConfirmation=False, upgrade=True)  # "Update packages"
    assert "--upgrade" in pip.calls[1][1] and pip.calls[1][2] == constraints


# --- items 7 and 9: the result sits on the volume, with the model's names, colours and terminology --


def loadedLabelmaps(release, monkeypatch):
    """loadLabelVolume / arrayFromVolume / updateSegmentBinaryLabelmapFromArray need MRML's readers."""
    import numpy as np
    import SimpleITK as sitk

    util = release.slicer.util

    def loadLabelVolume(path, properties=None):
        node = release.slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "label")
        node.array = sitk.GetArrayFromImage(sitk.ReadImage(path))
        return node

    monkeypatch.setattr(util, "loadLabelVolume", loadLabelVolume)
    monkeypatch.setattr(util, "arrayFromVolume", lambda node: node.array)
    monkeypatch.setattr(util, "updateSegmentBinaryLabelmapFromArray",
                        lambda mask, seg, segmentId, ref: seg.GetSegmentation().masks.__setitem__(segmentId, mask))
    return np


def test_result_follows_the_volumes_transform_and_keeps_the_models_segments(release, monkeypatch, tmp_path):
    import SimpleITK as sitk

    from SemiSegTogetherLib.manifest import segmentSpecs

    np = loadedLabelmaps(release, monkeypatch)
    scene = release.slicer.mrmlScene
    transform = scene.AddNewNodeByClass("vtkMRMLTransformNode", "registration")
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "MRI")
    volume.SetAndObserveTransformNodeID(transform.GetID())
    labels = np.zeros((3, 4, 5), np.uint8)
    labels[1, 1:3, 1:4] = 1
    sitk.WriteImage(sitk.GetImageFromArray(labels), str(tmp_path / "result.nrrd"))
    manifest = h.exampleManifest()
    specs = segmentSpecs(manifest, ["left atrium"])
    logic = release.module("SemiSegTogether").SemiSegTogetherLogic(pythonExecutable="/bin/false")

    result = logic.importLabelmap(str(tmp_path / "result.nrrd"), volume, specs, modelName="la")
    assert result.GetTransformNodeID() == transform.GetID()  # drawn where the volume is, not at its local frame
    segment = result.GetSegmentation().GetNthSegment(0)
    assert segment.GetName() == "left atrium"
    assert segment.GetColor() == pytest.approx((177 / 255, 122 / 255, 101 / 255))
    assert "SCT^82471001^Left atrium" in segment.GetTag(segment.GetTerminologyEntryTagName())
    assert result.GetSegmentation().masks[result.GetSegmentation().GetNthSegmentID(0)].sum() == 6

    other = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "elsewhere")  # not under the transform
    standins.QSettings.store["SemiSeg/modelsDir"] = str(withOneModel(tmp_path))
    entry = logic.findModel("la-mean-teacher")
    with pytest.raises(ValueError, match="under another transform"):
        logic.startSegmentation(volume, entry, ["left atrium"], outputSegmentation=other)


# --- item 10: something to try, and what to do next -------------------------------------------------


def test_sample_data_is_registered_after_startup_and_loads_from_the_module(release, monkeypatch, tmp_path):
    import hashlib
    import sys
    import types
    import urllib.request

    import SimpleITK as sitk
    import slicerio

    registered = []
    sampleData = types.ModuleType("SampleData")
    sampleData.SampleDataLogic = types.SimpleNamespace(registerCustomSampleDataSource=lambda **kw: registered.append(kw))
    monkeypatch.setitem(sys.modules, "SampleData", sampleData)
    module = release.module("SemiSegTogether")
    parent = types.SimpleNamespace(path=module.__file__)
    module.SemiSegTogether(parent)  # Slicer makes the module object at startup...
    assert registered == []
    release.slicer.app.startupCompleted.emit()  # ...and Sample Data is asked once startup is complete
    (source,) = registered
    assert source["category"] == "SemiSeg" and source["sampleName"] == "SemiSegPhantom"
    assert source["loadFileType"] == ["VolumeFile", "SegmentationFile"]
    assert os.path.getsize(source["thumbnailFileName"]) > 0
    copies = []
    for uri, name, checksum in zip(source["uris"], source["fileNames"], source["checksums"]):
        copy = str(tmp_path / name)
        urllib.request.urlretrieve(uri, copy)  # what SampleDataLogic.downloadFile does with the address
        assert checksum == "SHA256:" + hashlib.sha256(open(copy, "rb").read()).hexdigest()
        assert os.path.getsize(copy) < 200_000  # small enough to ship
        copies.append(copy)
    volume, segmentation = sitk.ReadImage(copies[0]), sitk.ReadImage(copies[1])
    assert volume.GetSize() == segmentation.GetSize() and volume.GetOrigin() == segmentation.GetOrigin()
    assert [s["name"] for s in slicerio.read_segmentation(copies[1])["segments"]] == ["organ", "vessel", "lesion"]


def test_with_no_models_the_panel_says_what_to_do_next(release, monkeypatch, tmp_path):
    standins.QSettings.store["SemiSeg/modelsDir"] = str(tmp_path / "empty")
    selected = []
    monkeypatch.setattr(release.slicer.util, "selectModule", selected.append)
    widget = standins.openModule(release, "SemiSegTogether", pythonExecutable="/bin/false")
    card = widget.ui.modelCardLabel.text
    for hint in ("No model yet", "Train a model", "Import model", "SemiSegPhantom", "Sample Data"):
        assert hint in card
    widget.ui.trainModelButton.click()
    assert selected == ["SemiSegTrainer"]


JARGON = ("prompt", "sliding", "cpu", "cuda", "component", "ema ", "iteration", "optimiser")


@pytest.mark.parametrize("module", ["SemiSegTogether", "SemiSegTrainer"])
def test_panel_words_are_a_clinicians_with_the_technical_term_in_the_tooltip(module):
    import xml.etree.ElementTree as ET

    root = ET.parse(h.uiPath(module)).getroot()
    advancedBox = next(w for w in root.iter("widget") if w.get("name") == "advancedCollapsibleButton")
    advanced = {w.get("name") for w in advancedBox.iter("widget")}  # engineers' settings may say what they are
    visible, tooltips = [], []
    for widget in root.iter("widget"):
        for prop in widget.findall("property"):
            text = prop.findtext("string") or ""
            if prop.get("name") == "toolTip":
                tooltips.append(text)
            elif prop.get("name") in ("text", "title") and widget.get("name") not in advanced:
                visible.append(text.lower())
    assert not [t for t in visible if any(word in t for word in JARGON)], visible
    assert any("(Technical:" in t for t in tooltips)
