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
    assert pn.swBatchSize == 4 and pn.keepLargestComponent
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
