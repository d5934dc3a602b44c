"""SemiSegTrainer's Slicer-free logic (SemiSegTrainerLib): exporting cases with geometry,
checks before training, settings and command line, events -> progress/curves/state,
cancel and resume bookkeeping, registering the finished model."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import time
import zlib

import numpy as np
import pytest
import SimpleITK as sitk

import helpers_slicer as h

h.addModulePaths()

from SemiSegTogetherLib import catalog  # noqa: E402
from SemiSegTogetherLib.command import engineEnvironment  # noqa: E402
from SemiSegTogetherLib.events import JobState  # noqa: E402
from SemiSegTrainerLib import export, jobs, progress, settings  # noqa: E402
from SemiSegTrainerLib.export import Geometry, LabeledCase, SegmentInfo  # noqa: E402

OBLIQUE_RAS = [[0.0, -0.7, 0.0, 12.5], [0.5, 0.0, 0.0, -30.0], [0.0, 0.0, 2.0, 7.0], [0, 0, 0, 1]]


# --- geometry and export -----------------------------------------------------------------------------


def test_ijk_to_ras_becomes_lps_spacing_origin_direction():
    lps = export.ijkToRasToLps(OBLIQUE_RAS)
    assert lps.tolist() == [[-0.0, 0.7, -0.0, -12.5], [-0.5, -0.0, -0.0, 30.0], [0, 0, 2, 7], [0, 0, 0, 1]]
    g = export.geometryFromIjkToRas(OBLIQUE_RAS)
    assert g.spacing == pytest.approx((0.5, 0.7, 2.0))
    assert g.origin == pytest.approx((-12.5, 30.0, 7.0))
    assert g.direction == pytest.approx((0, 1, 0, -1, 0, 0, 0, 0, 1))
    axial = export.geometryFromIjkToRas(np.diag([0.8, 0.8, 3.0, 1.0]))
    assert axial.direction == pytest.approx((-1, 0, 0, 0, -1, 0, 0, 0, 1))  # RAS identity is LPS flip
    with pytest.raises(ValueError, match="zero-length"):
        export.geometryFromIjkToRas(np.diag([0.0, 1, 1, 1]))


def test_written_volume_keeps_array_order_and_geometry(tmp_path):
    g = export.geometryFromIjkToRas(OBLIQUE_RAS)
    array = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)  # (k, j, i)
    path = export.writeVolume(array, g, str(tmp_path / "img.nrrd"))
    image = sitk.ReadImage(path)
    assert image.GetSize() == (6, 5, 4)
    assert np.array_equal(sitk.GetArrayFromImage(image), array)
    assert image.GetSpacing() == pytest.approx(g.spacing)
    assert image.GetOrigin() == pytest.approx(g.origin)
    assert image.GetDirection() == pytest.approx(g.direction)
    # voxel (i=1, j=0, k=0) lies one spacing along the first direction column, in LPS
    assert image.TransformIndexToPhysicalPoint((1, 0, 0)) == pytest.approx((-12.5, 30.0 - 0.5, 7.0))
    label = export.writeVolume(np.full((2, 2, 2), 3), g, str(tmp_path / "lab.nrrd"), isLabel=True)
    assert sitk.ReadImage(label).GetPixelID() == sitk.sitkUInt8
    with pytest.raises(ValueError, match="negative"):
        export.writeVolume(np.full((2, 2, 2), -1), g, str(tmp_path / "bad.nrrd"), isLabel=True)


def test_engine_reads_exported_volume_with_the_same_geometry(tmp_path):
    import semiseg.io as engineIo
    g = export.geometryFromIjkToRas(OBLIQUE_RAS)
    array = np.random.default_rng(0).normal(size=(4, 5, 6)).astype(np.float32)
    volume = engineIo.read_volume(export.writeVolume(array, g, str(tmp_path / "img.nrrd")))
    assert np.allclose(volume.array, array)
    assert tuple(volume.spacing) == pytest.approx(g.spacing)
    assert tuple(volume.origin) == pytest.approx(g.origin)
    assert tuple(volume.direction) == pytest.approx(g.direction)


def test_masks_combine_into_label_values_and_overlaps_are_counted():
    a = np.zeros((2, 3, 3), np.uint8)
    a[0, :2, :2] = 1
    b = np.zeros((2, 3, 3), np.uint8)
    b[0, 1:, 1:] = 1
    labels, overlap = export.combineSegmentMasks({"liver": a, "tumor": b}, {"liver": 1, "tumor": 2}, (2, 3, 3))
    assert overlap == 1 and labels[0, 1, 1] == 2 and labels[0, 0, 0] == 1 and labels[1].max() == 0
    with pytest.raises(ValueError, match="differs"):
        export.combineSegmentMasks({"x": np.zeros((1, 1, 1))}, {"x": 1}, (2, 3, 3))
    assert export.assignLabelValues([["tumor", "liver"], ["liver", "vessel"]], {"background": 0, "liver": 1}) == \
        {"liver": 1, "tumor": 2, "vessel": 3}


def _case(name, shape=(8, 8, 8), segments=("liver",), empty=(), geometry=None):
    g = geometry or Geometry((1.0, 1.0, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    masks = {}
    for i, s in enumerate(segments):
        m = np.zeros(shape, np.uint8)
        if s not in empty:
            m[2 + i:4 + i, 2:5, 2:5] = 1
        masks[s] = m
    # Distinct scans per case: the same image twice is leakage, which `semiseg check` refuses.
    image = np.random.default_rng(zlib.crc32(f"{name}|{','.join(segments)}".encode())).normal(size=shape)
    image = image.astype(np.float32)
    info = {s: SegmentInfo(color=(0.8, 0.4, 0.2),
                           terminology={"category": ["SCT", "123037004", "Anatomical Structure"],
                                        "type": ["SCT", "10200004", "Liver"]} if s == "liver" else None)
            for s in segments}
    return LabeledCase(name, image, g, masks, info)


def test_checks_before_training_give_clear_messages():
    good = [_case("a"), _case("b"), _case("c")]
    assert export.checkCases(good, unlabeledCount=5, method="mean-teacher").text() == ""
    empty = _case("empty case", segments=("liver",), empty=("liver",))
    partEmpty = _case("part", segments=("liver", "tumor"), empty=("tumor",))
    shifted = _case("moved")
    shifted.labelGeometry = Geometry((1.0, 1.0, 2.0), (5.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    wrongGrid = _case("grid")
    wrongGrid.masks["liver"] = np.zeros((4, 4, 4), np.uint8)
    noSegments = _case("none", segments=())
    problems = export.checkCases([empty, partEmpty, shifted, wrongGrid, noSegments], 0, "mean-teacher")
    text = problems.text()
    assert "case 'empty case': the segmentation is empty inside the volume" in text
    assert "case 'part': segment(s) tumor are empty" in text
    assert "case 'moved': the segmentation's geometry" in text and "does not match the volume's" in text
    assert "case 'grid': segment(s) liver are not on the volume's grid" in text
    assert "case 'none': the segmentation has no segments" in text
    assert "case 'empty case' has no segment 'tumor'" in text  # missing structure warning
    assert "the pool is empty" in text
    assert not problems.ok
    few = export.checkCases([_case("a")], 0, "supervised")
    assert few.ok and "only 1 labeled case(s)" in few.text()
    allHeldOut = export.checkCases([_case("a"), _case("b")], 0, "supervised", valCases=2)
    assert not allHeldOut.ok and "leaves none of the 2 labeled case(s) to train on" in allHeldOut.text()
    assert export.checkCases([_case("a"), _case("b"), _case("c")], 0, "supervised", valCases=1).ok
    none = export.checkCases([], 3, "supervised")
    assert "no labeled case" in none.text() and not none.ok
    assert export.checkCases([], 3, "supervised", datasetLabeledCount=4).ok


def test_export_writes_what_the_engine_reads_with_label_info(tmp_path):
    import semiseg.datasets as datasets
    cases = [_case("Patient 1/CT", segments=("liver", "tumor")), _case("Patient 1/CT", segments=("liver",))]
    g = cases[0].geometry
    poolFile = export.writeVolume(np.zeros((8, 8, 8), np.float32), g, str(tmp_path / "pool" / "u1.nii.gz"))
    result = export.exportDataset(str(tmp_path / "data"), cases,
                                  unlabeledArrays=[("scene volume", np.ones((8, 8, 8), np.float32), g)],
                                  unlabeledPaths=[poolFile], name="test")
    assert (result.labels, result.labeledCount, result.unlabeledCount) == ({"liver": 1, "tumor": 2}, 2, 2)
    spec = json.loads(open(result.datasetJson, encoding="utf-8").read())
    assert spec["labels"] == {"background": 0, "liver": 1, "tumor": 2}
    assert [c["id"] for c in spec["training"]] == ["Patient_1_CT", "Patient_1_CT_2"]
    assert spec["unlabeled"][1] == {"image": poolFile}
    info = json.loads(open(result.labelInfoJson, encoding="utf-8").read())
    assert info["liver"] == {"color": [204, 102, 51], "terminology": {
        "category": ["SCT", "123037004", "Anatomical Structure"], "type": ["SCT", "10200004", "Liver"]}}
    assert info["tumor"] == {"color": [204, 102, 51]}
    ds = datasets.load_dataset(result.datasetJson)
    assert [c.id for c in ds.training] == ["Patient_1_CT", "Patient_1_CT_2"] and len(ds.unlabeled) == 2
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(ds.training[0].label)))
    assert set(np.unique(label)) == {0, 1, 2}
    assert np.array_equal(label == 1, (cases[0].masks["liver"] > 0) & ~(cases[0].masks["tumor"] > 0))
    report = datasets.check_dataset(ds)
    assert report is not None


def test_semiseg_check_passes_on_export_and_names_a_geometry_mismatch(tmp_path):
    result = export.exportDataset(str(tmp_path / "ok"), [_case("a"), _case("b")])
    ok = subprocess.run(settings.buildCheckCommand(sys.executable, result.datasetJson), capture_output=True,
                        text=True, timeout=120, env=engineEnvironment())
    assert ok.returncode == 0, ok.stderr
    # A label file on another grid (as a hand-made dataset might have): the engine names it.
    bad = export.exportDataset(str(tmp_path / "bad"), [_case("a")])
    labelPath = os.path.join(str(tmp_path / "bad"), "labelsTr", "a.nrrd")
    moved = Geometry((1.0, 1.0, 2.0), (40.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    export.writeVolume(sitk.GetArrayFromImage(sitk.ReadImage(labelPath)), moved, labelPath, isLabel=True)
    failed = subprocess.run(settings.buildCheckCommand(sys.executable, bad.datasetJson), capture_output=True,
                            text=True, timeout=120, env=engineEnvironment())
    assert failed.returncode == 2
    assert "a.nrrd" in failed.stderr + failed.stdout


def test_user_dataset_merges_with_scene_cases_keeping_its_label_values(tmp_path):
    import semiseg.synthetic as synthetic
    data = synthetic.make_dataset(tmp_path / "user", n_labeled=2, n_unlabeled=1, n_test=0, shape=(32, 32, 32))
    base = export.readBaseDataset(str(data))
    assert base["labels"] == {"organ": 1, "vessel": 2, "lesion": 3}
    assert len(base["training"]) == 2 and os.path.isabs(base["training"][0]["image"])
    scene = _case("scene", shape=(32, 32, 32), segments=("lesion", "cyst"))
    result = export.exportDataset(str(tmp_path / "merged"), [scene], baseDataset=base)
    assert result.labels == {"organ": 1, "vessel": 2, "lesion": 3, "cyst": 4}
    assert result.labeledCount == 3 and result.unlabeledCount == 1
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "merged" / "labelsTr" / "scene.nrrd")))
    assert set(np.unique(label)) == {0, 3, 4}


def test_pool_counts_images_and_dicom_series_only(tmp_path):
    for name in ("a.nii.gz", "b.nrrd", "c.mha", "seg.seg.nrrd", "notes.txt", ".hidden.nii"):
        (tmp_path / name).write_bytes(b"x")
    series = tmp_path / "series1"
    series.mkdir()
    (series / "IM0001").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 10)
    other = tmp_path / "misc"
    other.mkdir()
    (other / "readme").write_text("hello", encoding="utf-8")
    found = [os.path.basename(p) for p in export.countPoolImages(str(tmp_path))]
    assert found == ["a.nii.gz", "b.nrrd", "c.mha", "series1"]
    assert export.countPoolImages(str(tmp_path / "missing")) == [] and export.countPoolImages("") == []


# --- methods and settings ------------------------------------------------------------------------------


SHIPPED_METHODS = os.path.join(h.TRAINER_DIR, "Resources", "methods.json")


def test_methods_json_both_option_shapes_and_recommended_first():
    methods = settings.parseMethodsJson(json.dumps([
        {"name": "supervised", "description": "labeled only", "options": {}},
        {"name": "mean-teacher", "description": "EMA teacher",
         "options": {"ema_decay": {"default": 0.99, "help": "teacher EMA"}, "consistency": 0.1}}]))
    mt = settings.sortMethods(methods)[0]
    assert mt.name == "mean-teacher" and mt.label() == "mean-teacher (recommended)"
    assert mt.options == {"ema_decay": 0.99, "consistency": 0.1} and mt.optionHelp == {"ema_decay": "teacher EMA"}


def test_shipped_method_list_is_the_engines_registry():
    """The panel reads Resources/methods.json (no process at startup): it must equal `semiseg methods --json`.
    Regenerate with: python -m semiseg methods --json > SemiSegTrainer/Resources/methods.json"""
    from semiseg.methods import describe_methods

    with open(SHIPPED_METHODS, encoding="utf-8") as f:
        assert json.load(f) == json.loads(json.dumps(describe_methods())), "regenerate " + SHIPPED_METHODS
    methods = settings.readMethods(SHIPPED_METHODS)
    assert methods[0].name == settings.RECOMMENDED_METHOD
    for method in methods:  # a clinician's words for each, the technical text stays for the tooltip
        assert method.name in settings.PLAIN_DESCRIPTIONS, method.name
        assert method.plainDescription() != method.description


def test_unreadable_method_list_names_the_file(tmp_path):
    bad = tmp_path / "methods.json"
    bad.write_text("[]", encoding="utf-8")
    with pytest.raises(ValueError, match="methods.json: cannot read the method list"):
        settings.readMethods(str(bad))


def test_engine_train_accepts_the_flags_the_panel_uses():
    env = engineEnvironment()
    helpText = subprocess.run([sys.executable, "-m", "semiseg", "train", "--help"], capture_output=True, text=True,
                              timeout=120, env=env).stdout
    planHelp = subprocess.run([sys.executable, "-m", "semiseg", "plan", "--help"], capture_output=True, text=True,
                              timeout=120, env=env).stdout
    for minutes in (0, 30):  # by steps, and with a time limit
        panel = settings.TrainingSettings(timeMinutes=minutes, patch=[32, 32, 32], learningRate=0.01,
                                          methodOptions={"a": 1}, modelName="m", initModel="/p.semiseg")
        for flag in panel.trainArguments() + ["--label-info", "--resume", "--workdir", "--events", "--quiet",
                                              "--overwrite"]:
            if flag.startswith("--"):
                assert flag in helpText, flag
        for flag in panel.planArguments():
            if flag.startswith("--"):
                assert flag in planHelp, flag


def test_a_time_limit_lets_the_planner_choose_steps_batches_and_validation():
    timed = settings.TrainingSettings(method="ad", timeMinutes=45, iterations=300, patch=[32, 32, 32],
                                      modelName="m", initModel="/p.semiseg").trainArguments()
    assert timed[timed.index("--time") + 1] == "45m" and timed[timed.index("--patch") + 1] == "32,32,32"
    for planned in ("--iterations", "--batch-labeled", "--batch-unlabeled", "--val-every"):
        assert planned not in timed
    plan = settings.buildPlanCommand("py", "/j/data/dataset.json",
                                     settings.TrainingSettings(method="ad", timeMinutes=45, modelName="m",
                                                               initModel="/p.semiseg"))
    assert plan[plan.index("plan") + 1] == "/j/data/dataset.json" and "45m" in plan
    assert "--name" not in plan and "--init" not in plan
    # The defaults: 30 minutes; without a limit, the CLI's 6000 steps at the native grid.
    assert settings.TrainingSettings().timeMinutes == 30
    untimed = settings.TrainingSettings(timeMinutes=0).trainArguments()
    assert untimed[untimed.index("--iterations") + 1] == "6000" and "--spacing" not in untimed
    assert "--val-cases" not in untimed  # every labeled case trains unless the user holds some out


def test_settings_validation_messages():
    known = settings.readMethods(SHIPPED_METHODS)
    assert settings.TrainingSettings().validate(known) == []
    bad = settings.TrainingSettings(method="magic", timeMinutes=-5, iterations=0, device="tpu", patch=[96, 90],
                                    batchLabeled=0, learningRate=-1, valEvery=0, valCases=-1, modelName="a/b")
    text = "\n".join(bad.validate(known))
    for part in ("unknown method 'magic'", "time limit", "iterations must be at least 1", "device must be",
                 "multiple of 16", "labeled batch", "learning rate", "validate-every", "held-out cases",
                 "model name"):
        assert part in text
    withOptions = [settings.MethodInfo("mean-teacher", options={"ema_decay": 0.99})]
    assert "has no option(s) typo" in settings.TrainingSettings(methodOptions={"typo": 1}).validate(withOptions)[0]


def test_train_command_fresh_and_resume_use_the_same_workdir_and_out():
    s = settings.TrainingSettings(method="ad", timeMinutes=0, iterations=300, device="cpu", patch=[96, 96, 64],
                                  batchLabeled=2, batchUnlabeled=4, learningRate=0.005, valEvery=50, valCases=1,
                                  methodOptions={"weight": 0.5, "flag": True}, modelName="liver")
    fresh = settings.buildTrainCommand("PythonSlicer", "/j/data/dataset.json", "/j/model/liver.semiseg", "/j/ckpt",
                                       "/j/events.jsonl", s, labelInfoPath="/j/data/label-info.json")
    assert fresh == ["PythonSlicer", "-m", "semiseg", "train", "--data", "/j/data/dataset.json",
                     "--out", "/j/model/liver.semiseg", "--workdir", "/j/ckpt", "--events", "/j/events.jsonl",
                     "--quiet", "--label-info", "/j/data/label-info.json", "--method", "ad", "--device", "cpu",
                     "--iterations", "300", "--batch-labeled", "2", "--batch-unlabeled", "4", "--val-every", "50",
                     "--val-cases", "1", "--patch", "96,96,64", "--lr", "0.005", "--option", "flag=true",
                     "--option", "weight=0.5", "--name", "liver", "--overwrite"]
    resume = settings.buildTrainCommand("PythonSlicer", "/j/data/dataset.json", "/j/model/liver.semiseg", "/j/ckpt",
                                        "/j/events.jsonl", s, labelInfoPath="/j/data/label-info.json", resume=True)
    assert resume[:-1] == fresh[:-1] and resume[-1] == "--resume"


class DictStore:
    def __init__(self):
        self.data = {}

    def value(self, key, default=None):
        return self.data.get(key, default)

    def setValue(self, key, value):
        self.data[key] = value


def test_settings_are_remembered_under_semiseg_keys():
    store = DictStore()
    s = settings.TrainingSettings(method="ad", timeMinutes=0, iterations=50, device="cpu", patch=[32, 32, 32],
                                  learningRate=0.01, methodOptions={"w": 2}, modelName="not remembered")
    s.save(store)
    assert all(k.startswith("SemiSeg/Trainer/") for k in store.data)
    loaded = settings.TrainingSettings.load(store)
    assert loaded == settings.TrainingSettings(method="ad", timeMinutes=0, iterations=50, device="cpu",
                                               patch=[32, 32, 32], learningRate=0.01, methodOptions={"w": 2})
    store.setValue("SemiSeg/Trainer/iterations", "not json")
    store.setValue("SemiSeg/Trainer/device", "5")  # wrong type: default kept
    again = settings.TrainingSettings.load(store)
    assert again.iterations == settings.TrainingSettings().iterations and again.device == "auto"
    assert settings.parseOptionValue("0.5") == 0.5 and settings.parseOptionValue("abc") == "abc"


# --- events -> progress, curves, state ----------------------------------------------------------------------


def trainEvents(start=0, total=10, cancelAt=None):
    evs = [{"event": "start", "total_iterations": total, "start_iteration": start, "method": "mean-teacher",
            "device": "cpu"}]
    for it in range(start + 1, total + 1):
        evs.append({"event": "iteration", "iteration": it, "total_iterations": total,
                    "losses": {"total": 1.0 / it, "supervised": 0.5 / it}, "lr": 0.01, "eta_seconds": 2.0 * (total - it)})
        if it % 5 == 0:
            evs.append({"event": "validation", "iteration": it, "dice": it / 20, "per_label": {"liver": it / 20}})
            evs.append({"event": "checkpoint", "iteration": it, "path": "/ck/best.pt", "kind": "best"})
            evs.append({"event": "checkpoint", "iteration": it, "path": "/ck/last.pt", "kind": "last"})
        if cancelAt == it:
            return evs
    evs.append({"event": "done", "model": "/m/x.semiseg", "checkpoint": "last", "seconds": 20.0, "best_dice": 0.5,
                "last_dice": 0.45})
    return evs


def test_training_progress_curves_eta_and_done():
    p = progress.TrainingProgress()
    p.started()
    assert p.state == JobState.STARTING and p.statusText().startswith("starting")
    evs = trainEvents()
    for e in evs[:8]:
        p.apply(e)
    assert p.state == JobState.RUNNING
    assert p.iteration == 5 and p.percent() == 50
    assert p.statusText() == "iteration 5/10, 10 s left, loss 0.200, validation Dice 0.250"
    for e in evs[8:]:
        p.apply(e)
    p.finished(0)
    assert p.state == JobState.DONE and p.modelPath == "/m/x.semiseg"
    assert [it for it, _ in p.lossCurve()] == list(range(1, 11))
    assert p.dice == [(5, 0.25), (10, 0.5)] and p.perLabelDice["liver"] == [(5, 0.25), (10, 0.5)]
    assert (p.lastCheckpoint, p.bestCheckpoint, p.checkpointIteration) == ("/ck/last.pt", "/ck/best.pt", 10)
    assert p.statusText() == "done, validation Dice 0.450 (last checkpoint)"  # the exported model's
    assert progress.formatDuration(3725) == "1 h 02 min" and progress.formatDuration(None) == "?"


def test_training_progress_says_when_the_time_limit_stopped_training_early():
    p = progress.TrainingProgress()
    p.started()
    for e in trainEvents(total=10, cancelAt=6):
        p.apply(e)
    p.apply({"event": "deadline", "iteration": 6, "total_iterations": 10, "budget_seconds": 60})
    # An engine before the last-checkpoint default: its done event names no checkpoint, and it shipped the best.
    p.apply({"event": "done", "model": "/m/x.semiseg", "seconds": 55.0, "best_dice": 0.3})
    p.finished(0)
    assert p.percent() == 100 and p.stoppedEarly == (6, 10)
    assert p.statusText() == ("done, validation Dice 0.300 (best checkpoint) (stopped at iteration 6 of 10 "
                              "planned, to keep the time limit)")


def test_training_progress_failure_and_cancel():
    p = progress.TrainingProgress()
    p.started()
    p.apply({"event": "error", "message": "/d/dataset.json: missing 'labels'"})
    p.finished(2)
    assert p.state == JobState.FAILED and "missing 'labels'" in p.statusText()
    p = progress.TrainingProgress()
    p.started()
    for e in trainEvents(cancelAt=7):
        p.apply(e)
    p.requestCancel()
    assert p.statusText().startswith("cancelling")
    p.finished(1)
    assert p.state == JobState.IDLE and p.cancelled
    assert p.statusText() == "cancelled; checkpoint at iteration 5 kept, Resume continues it"


def test_resumed_progress_keeps_earlier_curve_up_to_the_checkpoint():
    p = progress.TrainingProgress()
    p.started()
    p.replay(trainEvents(cancelAt=7))  # first part reached 7, checkpoint at 5
    for e in trainEvents(start=5):
        p.apply(e)
    assert [it for it, _ in p.lossCurve()] == list(range(1, 11))
    assert p.dice == [(5, 0.25), (10, 0.5)]


# --- job folder, runner (cancel / resume), registration ------------------------------------------------------

FAKE_TRAIN = textwrap.dedent("""
    # Stands in for `semiseg train` (same CLI, same event kinds, same SIGTERM behaviour: checkpoint, then exit).
    import argparse, json, os, signal, sys, time
    p = argparse.ArgumentParser()
    for a in ("--data", "--out", "--workdir", "--events", "--label-info", "--method", "--iterations", "--device",
              "--batch-labeled", "--batch-unlabeled", "--val-every", "--patch", "--lr", "--name"):
        p.add_argument(a)
    p.add_argument("--option", action="append")
    for a in ("--resume", "--overwrite", "--quiet"):
        p.add_argument(a, action="store_true")
    args = p.parse_args(sys.argv[4:])
    total = int(args.iterations)
    last = os.path.join(args.workdir, "last.pt")
    start = int(open(last).read()) if args.resume else 0
    if not args.resume and os.path.exists(last):
        sys.exit("holds a checkpoint from an earlier run")
    events = open(args.events, "a" if args.resume else "w")
    def emit(**e):
        events.write(json.dumps(e) + "\\n"); events.flush()
    state = {"it": start}
    def save():
        os.makedirs(args.workdir, exist_ok=True)
        open(last, "w").write(str(state["it"]))
        emit(event="checkpoint", iteration=state["it"], path=last, kind="last")
    def onTerm(*_):
        save(); emit(event="error", message="cancelled"); sys.exit(1)
    signal.signal(signal.SIGTERM, onTerm)
    emit(event="start", total_iterations=total, start_iteration=start, method=args.method, resumed=args.resume)
    print("resumed" if args.resume else "fresh", flush=True)
    for it in range(start + 1, total + 1):
        time.sleep(float(os.environ.get("FAKE_STEP", "0.01")))
        state["it"] = it
        emit(event="iteration", iteration=it, total_iterations=total, losses={"total": 1.0 / it}, eta_seconds=1.0)
        if it % 2 == 0:
            save()
    os.makedirs(args.out, exist_ok=True)
    info = json.load(open(args.label_info)) if args.label_info else {}
    labels = [dict({"name": n, "value": v}, **info.get(n, {}))
              for n, v in json.load(open(args.data))["labels"].items() if v != 0]
    json.dump({"format": "semiseg-model", "format_version": 1, "engine_version": "0.1.0", "name": args.name,
               "architecture": {"name": "vnet", "args": {"in_channels": 1, "n_classes": len(labels) + 1}},
               "prompted": False, "labels": labels, "tasks": [],
               "preprocessing": {"spacing": None, "intensity": "zscore"}, "patch_size": [16, 16, 16],
               "method": {"name": args.method, "options": {}}, "data": {"labeled": 2, "unlabeled": 0},
               "metrics": {}, "training": {"iterations": total}},
              open(os.path.join(args.out, "model.json"), "w"))
    open(os.path.join(args.out, "weights.safetensors"), "wb").write(b"x")
    emit(event="done", model=args.out, seconds=0.1)
""")


def runnerFactory(tmp_path, stepSeconds):
    """Real `semiseg check`; the train step is a stand-in script speaking the engine's CLI/events."""
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN, encoding="utf-8")
    commands = []

    def factory(args, env, logPath):
        commands.append(list(args))
        if args[3] == "train":
            args = [args[0], str(script)] + list(args[1:])
            env = dict(env, FAKE_STEP=str(stepSeconds))
        from SemiSegTogetherLib.process import BackgroundProcess
        return BackgroundProcess(args, env=env, logPath=logPath)

    return factory, commands


def _newJob(tmp_path, iterations=40):
    s = settings.TrainingSettings(method="supervised", timeMinutes=0, iterations=iterations, device="cpu",
                                  modelName="tiny liver")
    job = jobs.TrainingJobFolder.create(str(tmp_path / "training"), s)
    exported = export.exportDataset(job.dataDir, [_case("a"), _case("b")])
    job.dataPath, job.labelInfoPath = exported.datasetJson, exported.labelInfoJson
    job.save()
    return job


def test_job_folder_roundtrip_and_event_archives(tmp_path):
    job = _newJob(tmp_path)
    assert os.path.basename(job.folder).endswith("-tiny-liver") and job.modelFileName == "tiny-liver.semiseg"
    loaded = jobs.TrainingJobFolder.load(job.folder)
    assert (loaded.settings, loaded.dataPath, loaded.outPath) == (job.settings, job.dataPath, job.outPath)
    assert not loaded.canResume() and not loaded.finished
    os.makedirs(job.workDir)
    open(job.lastCheckpoint, "w", encoding="utf-8").write("4")
    assert loaded.canResume()
    assert [j.folder for j in jobs.findResumableJobs(str(tmp_path / "training"))] == [job.folder]
    with open(job.eventsPath, "w", encoding="utf-8") as f:
        f.write(json.dumps({"event": "start"}) + "\n")
    assert job.archiveEvents().endswith("events.part1.jsonl") and not os.path.exists(job.eventsPath)
    with open(job.eventsPath, "w", encoding="utf-8") as f:
        f.write(json.dumps({"event": "iteration", "iteration": 1}) + "\n")
    job.archiveEvents()
    assert [e["event"] for e in job.history()] == ["start", "iteration"]
    with pytest.raises(ValueError, match="not a SemiSegTrainer job"):
        jobs.TrainingJobFolder.load(str(tmp_path))


@pytest.mark.skipif(os.name != "posix", reason="SIGTERM semantics")
def test_runner_check_train_cancel_keeps_checkpoint_then_resume_finishes_and_registers(tmp_path):
    factory, commands = runnerFactory(tmp_path, stepSeconds=0.05)
    job = _newJob(tmp_path, iterations=40)
    runner = jobs.TrainingRunner(sys.executable, engineEnvironment(forceCpu=True), factory, cancelGraceSeconds=10)
    runner.start(job)
    assert runner.progress.state == JobState.STARTING and runner.stage == "check"
    deadline = time.monotonic() + 60
    while runner.progress.iteration < 5 and time.monotonic() < deadline and runner.running:
        runner.poll()
        time.sleep(0.02)
    assert runner.stage == "train" and runner.progress.state == JobState.RUNNING
    assert runner.cancel()
    while runner.running and time.monotonic() < deadline:
        runner.poll()
        time.sleep(0.02)
    p = runner.progress
    assert p.state == JobState.IDLE and p.cancelled, p.errorMessage
    assert job.canResume() and p.checkpointIteration == int(open(job.lastCheckpoint, encoding="utf-8").read())
    stoppedAt = p.checkpointIteration
    assert commands[0][3:] == ["check", job.dataPath] and commands[1][3] == "train"

    runner.start(jobs.TrainingJobFolder.load(job.folder), resume=True)
    assert runner.progress.lossCurve()[-1][0] >= stoppedAt  # earlier part redrawn from events.part1.jsonl
    while runner.running and time.monotonic() < deadline + 60:
        runner.poll()
        time.sleep(0.02)
    p = runner.progress
    assert p.state == JobState.DONE, p.errorMessage
    assert commands[2][3] == "train" and commands[2][-1] == "--resume"
    assert commands[2][commands[2].index("--workdir") + 1] == job.workDir
    assert commands[2][commands[2].index("--out") + 1] == job.outPath
    assert [it for it, _ in p.lossCurve()] == list(range(1, 41))
    assert job.finished and not job.canResume()

    models = str(tmp_path / "models")
    path = jobs.registerModel(job.outPath, models)
    entry = catalog.findModel(models, "tiny liver")
    assert entry is not None and entry.path == path
    assert entry.manifest["labels"][0]["terminology"]["type"] == ["SCT", "10200004", "Liver"]
    with pytest.raises(catalog.ModelExistsError):
        jobs.registerModel(job.outPath, models)
    assert jobs.registerModel(job.outPath, models, overwrite=True) == path


def test_runner_reports_a_failed_data_check(tmp_path):
    factory, commands = runnerFactory(tmp_path, stepSeconds=0.01)
    job = _newJob(tmp_path)
    os.remove(os.path.join(job.dataDir, "labelsTr", "a.nrrd"))
    runner = jobs.TrainingRunner(sys.executable, engineEnvironment(), factory)
    runner.start(job)
    deadline = time.monotonic() + 60
    while runner.running and time.monotonic() < deadline:
        runner.poll()
        time.sleep(0.02)
    assert runner.progress.state == JobState.FAILED
    assert "dataset check failed" in runner.progress.errorMessage and "a.nrrd" in runner.progress.errorMessage
    assert [c[3] for c in commands] == ["check"]  # training never started
    with pytest.raises(ValueError, match="nothing to resume"):
        runner.start(job, resume=True)


def test_runner_check_only_stops_after_the_check(tmp_path):
    factory, commands = runnerFactory(tmp_path, stepSeconds=0.01)
    runner = jobs.TrainingRunner(sys.executable, engineEnvironment(), factory)
    runner.start(_newJob(tmp_path), checkOnly=True)
    deadline = time.monotonic() + 60
    while runner.running and time.monotonic() < deadline:
        runner.poll()
        time.sleep(0.02)
    assert runner.progress.state == JobState.DONE and runner.progress.statusText() == "data check passed"
    assert [c[3] for c in commands] == ["check"]


def test_runner_check_and_plan_shows_the_plan_before_training(tmp_path):
    """"Check and plan" with a time limit: the real `semiseg check` and `semiseg plan` on the exported cases;
    the plan's lines reach the log, and nothing trains."""
    factory, commands = runnerFactory(tmp_path, stepSeconds=0.01)
    job = _newJob(tmp_path)
    job.settings = dataclasses.replace(job.settings, timeMinutes=2, methodOptions={"n_filters": 4})
    runner = jobs.TrainingRunner(sys.executable, engineEnvironment(), factory)
    runner.start(job, checkOnly=True)
    lines, deadline = [], time.monotonic() + 300
    while runner.running and time.monotonic() < deadline:
        lines += runner.poll().logLines
        time.sleep(0.05)
    assert [c[3] for c in commands] == ["check", "plan"]
    assert commands[1][commands[1].index("--time") + 1] == "2m"
    assert runner.progress.state == JobState.DONE, runner.progress.errorMessage
    assert runner.progress.statusText() == "data check passed; the plan is in the log"
    text = "\n".join(lines)
    assert "Plan for supervised" in text and "predicted time" in text and "iterations" in text
