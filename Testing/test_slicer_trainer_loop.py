"""SemiSegTrainerLib's annotate-train loop (Slicer-free): the suggest command and its ranking mapped back to
scene volumes, the pool case ids of an export, and Fine-tune's `--init`."""

import json
import os
import sys

import numpy as np
import pytest

import helpers_slicer as h

h.addModulePaths()

from SemiSegTogetherLib.command import engineEnvironment  # noqa: E402
from SemiSegTogetherLib.events import JobState  # noqa: E402
from SemiSegTrainerLib import activeloop, export, settings  # noqa: E402
from SemiSegTrainerLib.export import Geometry, LabeledCase, SegmentInfo  # noqa: E402

GEOMETRY = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))


def _export(folder, n_unlabeled=3):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(32, 32, 32)).astype(np.float32)
    mask = np.zeros(image.shape, np.uint8)
    mask[8:20, 8:20, 8:20] = 1
    image[mask > 0] += 3
    cases = [LabeledCase(name=f"Scan {i}", image=image, geometry=GEOMETRY, masks={"organ": mask},
                         segments={"organ": SegmentInfo(color=(1, 0, 0))}) for i in range(2)]
    pool = [(f"Pool scan {i}", np.roll(image, 3 * i, axis=0), GEOMETRY) for i in range(n_unlabeled)]
    return export.exportDataset(str(folder), cases, pool, name="test")


def test_export_names_the_pool_cases_it_wrote(tmp_path):
    exported = _export(tmp_path / "data")
    spec = json.loads(open(exported.datasetJson, encoding="utf-8").read())
    assert exported.unlabeledIds == [e["id"] for e in spec["unlabeled"]] == ["Pool_scan_0", "Pool_scan_1",
                                                                             "Pool_scan_2"]


def test_suggest_command_and_ranking_back_to_scene_volumes(tmp_path):
    job = tmp_path / "job"
    job.mkdir()
    args = activeloop.buildSuggestCommand("/py", "/m/x.semiseg", "/d/dataset.json", str(job), device="cpu")
    assert args[:4] == ["/py", "-m", "semiseg", "suggest"]
    assert args[args.index("--out") + 1] == str(job / "suggestions.json") and "--events" in args
    activeloop.writePoolNodes(str(job), ["a", "b"], ["vtkMRMLScalarVolumeNode3", "vtkMRMLScalarVolumeNode4"])
    (job / "suggestions.json").write_text(json.dumps({"suggestions": [
        {"rank": 1, "id": "b", "score": 0.5, "typicality": 0.7, "uncertainty": 0.6, "novelty": 0.8, "reason": "r"},
        {"rank": 2, "id": "c", "score": 0.1, "uncertainty": 0.2, "novelty": 0.5, "reason": "s"}]}), encoding="utf-8")
    rows = activeloop.readSuggestions(str(job))
    assert [(r.caseId, r.nodeId) for r in rows] == [("b", "vtkMRMLScalarVolumeNode4"), ("c", None)]
    assert rows[0].label("Pool scan 1") == \
        "1. Pool scan 1  score 0.50 (typicality 0.70, uncertainty 0.60, novelty 0.80)"
    assert rows[1].label() == "2. c  score 0.10 (uncertainty 0.20, novelty 0.50)"  # a ranking without typicality
    (job / "suggestions.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ValueError, match="suggestions.json: not a ranking"):
        activeloop.readSuggestions(str(job))
    with pytest.raises(ValueError, match="2 exported pool cases but 1"):
        activeloop.writePoolNodes(str(job), ["a", "b"], ["n"])


def test_fine_tune_passes_init_and_is_not_remembered(tmp_path):
    model = tmp_path / "last.semiseg"
    with pytest.raises(ValueError, match="no finished model"):
        activeloop.fineTuneSettings(settings.TrainingSettings(), str(model))
    model.mkdir()
    (model / "model.json").write_text("{}", encoding="utf-8")
    tuned = activeloop.fineTuneSettings(settings.TrainingSettings(timeMinutes=0, iterations=500), str(model))
    args = tuned.trainArguments()
    # A fine-tune gets a share of the first run's budget: iterations without a time limit, else the minutes.
    assert args[args.index("--init") + 1] == str(model) and args[args.index("--iterations") + 1] == "200"
    timed = activeloop.fineTuneSettings(settings.TrainingSettings(timeMinutes=30, iterations=6000), str(model))
    assert (timed.timeMinutes, timed.trainArguments()[timed.trainArguments().index("--time") + 1]) == (12, "12m")
    assert activeloop.fineTuneSettings(settings.TrainingSettings(timeMinutes=1), str(model)).timeMinutes == 1
    assert "--init" not in settings.TrainingSettings().trainArguments()

    class Store(dict):
        def setValue(self, key, value):
            self[key] = value

        def value(self, key, default=None):
            return self.get(key, default)

    store = Store()
    tuned.save(store)
    assert not any("initModel" in k for k in store)
    assert settings.TrainingSettings.load(store).initModel == ""


def test_the_engine_answers_the_suggest_command(tmp_path, tiny_model):
    """The command as the Trainer builds it, run by the engine on an exported scene dataset."""
    job = tmp_path / "job"
    exported = _export(job / "data")
    activeloop.writePoolNodes(str(job), exported.unlabeledIds, ["n0", "n1", "n2"])
    # The tiny model knows organ, vessel and lesion; a pool ranking needs no label of these cases.
    running = activeloop.startSuggestJob(sys.executable, str(job), str(tiny_model), exported.datasetJson,
                                         engineEnvironment(enginePath=h.TOGETHER_DIR), device="cpu")
    assert running.waitUntilFinished(timeout=600)
    assert running.progress.state == JobState.DONE, running.progress.errorMessage
    rows = activeloop.readSuggestions(str(job))
    assert sorted(r.nodeId for r in rows) == ["n0", "n1", "n2"] and [r.rank for r in rows] == [1, 2, 3]
    assert os.path.isfile(job / "suggest.log")
