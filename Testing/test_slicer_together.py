"""SemiSegTogether's Slicer-free logic (SemiSegTogetherLib): models folder, import checks,
model card -> segments, command line, events -> state, process tree cancel, memory check."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import pytest

import helpers_slicer as h

h.addModulePaths()

from SemiSegTogetherLib import catalog, command, dependencies, events, manifest, memory, process  # noqa: E402
from SemiSegTogetherLib.events import InferenceProgress, JobState  # noqa: E402

LA_TERMINOLOGY = ("Segmentation category and type - 3D Slicer General Anatomy list"
                  "~SCT^123037004^Anatomical Structure~SCT^82471001^Left atrium~^^"
                  "~Anatomic codes - DICOM master list~^^~^^")


def twoLabelManifest(name="abdomen"):
    return h.exampleManifest(name, labels=[
        {"name": "liver", "value": 1, "color": [221, 130, 101],
         "terminology": {"category": ["SCT", "123037004", "Anatomical Structure"],
                         "type": ["SCT", "10200004", "Liver"]}, "task": None},
        {"name": "spleen", "value": 2, "color": None, "terminology": None, "task": None},
    ])


# --- models folder and import -----------------------------------------------------------------


def test_models_dir_setting_beats_environment_beats_default(tmp_path):
    env = {catalog.MODELS_DIR_ENV: str(tmp_path / "env")}
    assert catalog.resolveModelsDir(str(tmp_path / "chosen"), env) == str(tmp_path / "chosen")
    assert catalog.resolveModelsDir("", env) == str(tmp_path / "env")
    assert catalog.resolveModelsDir(None, {}) == os.path.expanduser(os.path.join("~", ".semiseg", "models"))


def test_list_models_reports_usable_and_broken_packages(tmp_path):
    h.writeModelPackage(str(tmp_path / "b-model.semiseg"), h.exampleManifest("b-model"))
    h.writeModelPackage(str(tmp_path / "a-model.semiseg"), h.exampleManifest("a-model"))
    h.writeModelPackage(str(tmp_path / "noweights.semiseg"), h.exampleManifest("noweights"), weights=False)
    broken = tmp_path / "broken.semiseg"
    broken.mkdir()
    (broken / "model.json").write_text("{not json", encoding="utf-8")
    (tmp_path / "unrelated-folder").mkdir()
    entries = catalog.listModels(str(tmp_path))
    assert [e.name for e in entries] == ["a-model", "b-model", "broken", "noweights"]
    assert [e.ok for e in entries] == [True, True, False, False]
    assert "cannot be read as JSON" in entries[2].error and "broken.semiseg" in entries[2].error
    assert "no weights" in entries[3].error
    assert catalog.findModel(str(tmp_path), "b-model").path == str(tmp_path / "b-model.semiseg")
    assert catalog.findModel(str(tmp_path), "broken") is None
    assert catalog.listModels(str(tmp_path / "missing")) == []


def test_import_folder_copies_after_check_and_never_overwrites_silently(tmp_path):
    source = h.writeModelPackage(str(tmp_path / "src" / "whatever"), h.exampleManifest("My model/v2"))
    models = tmp_path / "models"
    path = catalog.importModel(source, str(models))
    assert path == str(models / "My-model-v2.semiseg")
    assert _card(models / "My-model-v2.semiseg")["name"] == "My model/v2"
    assert (models / "My-model-v2.semiseg" / "weights.safetensors").is_file()
    # Same name again: refused, then replaced only on request.
    changed = h.exampleManifest("My model/v2")
    changed["description"] = "second version"
    h.writeModelPackage(source, changed)
    with pytest.raises(catalog.ModelExistsError) as info:
        catalog.importModel(source, str(models))
    assert info.value.existingPath == path
    assert _card(models / "My-model-v2.semiseg")["description"] != "second version"
    catalog.importModel(source, str(models), overwrite=True)
    assert _card(models / "My-model-v2.semiseg")["description"] == "second version"
    assert sorted(os.listdir(models)) == ["My-model-v2.semiseg"]  # no staging leftovers


def _zipFolder(folder, zipPath, prefix):
    with zipfile.ZipFile(zipPath, "w") as z:
        for name in os.listdir(folder):
            z.write(os.path.join(folder, name), f"{prefix}{name}")


def test_import_zip_with_package_folder_inside(tmp_path):
    package = h.writeModelPackage(str(tmp_path / "abdomen.semiseg"), twoLabelManifest())
    zipPath = tmp_path / "abdomen.zip"
    _zipFolder(package, zipPath, "abdomen.semiseg/")
    path = catalog.importModel(str(zipPath), str(tmp_path / "models"))
    entries = catalog.listModels(str(tmp_path / "models"))
    assert [(e.name, e.path, e.ok) for e in entries] == [("abdomen", path, True)]


@pytest.mark.parametrize("problem, expected", [
    ("foreign", "not a SemiSeg model"),
    ("no-manifest", "no model.json found"),
    ("zip-slip", "unsafe path"),
    ("not-zip", "expected a .semiseg folder or a .zip"),
    ("newer", "newer than this SemiSeg supports"),
])
def test_import_rejects_bad_sources_and_copies_nothing(tmp_path, problem, expected):
    models = tmp_path / "models"
    if problem == "foreign":
        bad = h.exampleManifest()
        bad["format"] = "monai-bundle"
        source = h.writeModelPackage(str(tmp_path / "x.semiseg"), bad)
    elif problem == "newer":
        bad = h.exampleManifest()
        bad["format_version"] = 99
        source = h.writeModelPackage(str(tmp_path / "x.semiseg"), bad)
    elif problem == "no-manifest":
        source = str(tmp_path / "empty")
        os.makedirs(source)
    elif problem == "zip-slip":
        source = str(tmp_path / "evil.zip")
        with zipfile.ZipFile(source, "w") as z:
            z.writestr("../../escaped.txt", "x")
            z.writestr("m/model.json", json.dumps(h.exampleManifest()))
    else:
        source = str(tmp_path / "model.txt")
        open(source, "w", encoding="utf-8").write("hello")
    with pytest.raises(manifest.ModelPackageError) as info:
        catalog.importModel(source, str(models))
    assert expected in str(info.value)
    assert os.path.basename(source) in str(info.value)  # names what the user picked
    assert not models.exists() or os.listdir(models) == []
    assert not (tmp_path.parent / "escaped.txt").exists()


@pytest.mark.parametrize("mutate, expected", [
    (lambda m: m["labels"].append(dict(m["labels"][0], name="other")), "label value 1 appears twice"),
    (lambda m: m["labels"][0].update(color=[300, 0, 0]), "invalid color"),
    (lambda m: m["labels"][0].update(value=0), "invalid value"),
    (lambda m: m.update(labels=[]), "lists no labels"),
    (lambda m: m.update(tasks=[{"name": "la", "index": 0, "labels": ["aorta"]}]), "unknown label 'aorta'"),
    (lambda m: m["labels"][0]["terminology"].update(type=["SCT", "1"]), "triplet"),
    (lambda m: m.pop("architecture"), "architecture.name is missing"),
])
def test_validate_manifest_names_the_problem(mutate, expected):
    data = h.exampleManifest()
    mutate(data)
    with pytest.raises(manifest.ModelPackageError) as info:
        manifest.validateManifest(data, "/models/x.semiseg/model.json")
    assert expected in str(info.value)
    assert str(info.value).startswith("/models/x.semiseg/model.json: ")


def test_module_and_engine_readers_agree_on_the_contract_example(tmp_path):
    from semiseg.model import read_manifest

    package = h.writeModelPackage(str(tmp_path / "la.semiseg"), h.exampleManifest())
    assert manifest.readManifest(package)["name"] == read_manifest(package)["name"] == "la-mean-teacher"


# --- model card -> segments ---------------------------------------------------------------------


def test_segment_specs_carry_name_value_colour_and_terminology():
    specs = manifest.segmentSpecs(h.exampleManifest())
    assert len(specs) == 1
    spec = specs[0]
    assert (spec.name, spec.value) == ("left atrium", 1)
    assert spec.color == pytest.approx((177 / 255, 122 / 255, 101 / 255))
    assert spec.terminology == LA_TERMINOLOGY
    assert manifest.parseTerminologyEntry(spec.terminology) == {
        "category": ["SCT", "123037004", "Anatomical Structure"], "type": ["SCT", "82471001", "Left atrium"]}


def test_segment_specs_follow_prompts_in_model_order_with_fallback_colour():
    data = twoLabelManifest()
    assert [s.name for s in manifest.segmentSpecs(data, ["spleen", "liver"])] == ["liver", "spleen"]
    spleen = manifest.segmentSpecs(data, ["spleen"])
    assert [(s.name, s.value, s.terminology) for s in spleen] == [("spleen", 2, "")]
    assert spleen[0].color == pytest.approx(tuple(c / 255 for c in manifest.FALLBACK_COLORS[1]))
    with pytest.raises(manifest.ModelPackageError, match="does not know 'kidney'"):
        manifest.segmentSpecs(data, ["kidney"])


def test_model_card_shows_counts_metrics_time_and_memory_escaped():
    data = h.exampleManifest("a<b>")
    card = manifest.ModelCard.fromManifest(data)
    rows = dict(card.lines())
    assert rows["Modality"] == "MR"
    assert rows["Structures"] == "left atrium"
    assert rows["Training data"] == "3 labeled, 12 unlabeled, 1 validation"
    assert rows["Validation"] == "dice 0.850"
    assert rows["Measured inference"] == "4.2 s per volume, peak 900 MB on cpu"
    assert rows["Training"] == "1000 iterations in 15.0 min, peak 2100 MB on cpu"
    assert card.validationDice() == pytest.approx(0.85)
    assert "<h3>a&lt;b&gt;</h3>" in card.html()
    # Trained without validation cases: the card measured one whole prediction instead of the window alone.
    data["inference"] = {"device": "cpu", "prediction_seconds": 6.0, "peak_memory_mb": 900}
    assert dict(manifest.ModelCard.fromManifest(data).lines())["Measured inference"] == \
        "6.0 s per volume, peak 900 MB on cpu"


# --- command line and environment ---------------------------------------------------------------


def test_predict_command_line_and_forced_cpu_environment(tmp_path):
    args = command.buildPredictCommand("/opt/Slicer/bin/PythonSlicer", "/m/la.semiseg", "/t/in.nrrd", "/t/out.nrrd",
                                       ["left atrium", "aorta"], device="cpu", swBatchSize=2, overlap=0.25,
                                       eventsPath="/t/events.jsonl", keepLargestComponent=True,
                                       testTimeMirroring=True)
    assert args == ["/opt/Slicer/bin/PythonSlicer", "-m", "semiseg", "predict", "--model", "/m/la.semiseg",
                    "--input", "/t/in.nrrd", "--output", "/t/out.nrrd", "--device", "cpu", "--sw-batch-size", "2",
                    "--overlap", "0.25", "--prompts", "left atrium,aorta", "--lcc", "--tta", "--events",
                    "/t/events.jsonl", "--overwrite"]
    assert "--tta" not in command.buildPredictCommand("py", "m", "i", "o")
    env = command.engineEnvironment({"PYTHONPATH": "/other", "PATH": "/bin"}, enginePath="/ext/SemiSegTogether",
                                    forceCpu=True)
    assert env["PYTHONPATH"] == os.pathsep.join(["/ext/SemiSegTogether", "/other"])
    assert env["CUDA_VISIBLE_DEVICES"] == "-1" and env["PATH"] == "/bin"
    auto = command.engineEnvironment({}, forceCpu=False)
    assert "CUDA_VISIBLE_DEVICES" not in auto
    assert auto["PYTHONPATH"] == h.TOGETHER_DIR  # default: the folder that holds semiseg/
    assert os.path.isdir(os.path.join(auto["PYTHONPATH"], "semiseg"))


@pytest.mark.parametrize("kwargs, expected", [
    ({"device": "gpu"}, "device must be"),
    ({"swBatchSize": 0}, "at least 1"),
    ({"overlap": 1.0}, "overlap"),
    ({"prompts": ["a,b"]}, "comma"),
])
def test_predict_command_rejects_bad_settings(kwargs, expected):
    with pytest.raises(ValueError, match=expected):
        command.buildPredictCommand("py", "m", "i", "o", **kwargs)


def test_engine_cli_accepts_the_flags_the_module_uses():
    out = subprocess.run([sys.executable, "-m", "semiseg", "predict", "--help"], capture_output=True, text=True,
                         timeout=120, env=command.engineEnvironment())
    assert out.returncode == 0, out.stderr
    for flag in ("--model", "--input", "--output", "--prompts", "--device", "--sw-batch-size", "--overlap",
                 "--lcc", "--tta", "--events", "--overwrite"):
        assert flag in out.stdout, flag


# --- events -> progress and state ---------------------------------------------------------------------


def test_event_tail_reads_complete_lines_only_and_survives_garbage(tmp_path):
    path = tmp_path / "events.jsonl"
    bad = []
    tail = events.EventTail(str(path), onBadLine=bad.append)
    assert tail.readNew() == []  # no file yet
    with open(path, "w", encoding="utf-8") as f:
        f.write('{"event": "start", "time": 1}\n{"event": "progress", "fra')
    assert [e["event"] for e in tail.readNew()] == ["start"]
    with open(path, "a", encoding="utf-8") as f:
        f.write('ction": 0.5}\nnot json\n{"no_event": 1}\n')
    got = tail.readNew()
    assert got == [{"event": "progress", "fraction": 0.5}]
    assert bad == ["not json", '{"no_event": 1}']
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"event": "done", "output": "x"}')  # last line without newline
    assert tail.readNew() == []
    assert tail.flush() == [{"event": "done", "output": "x"}]
    path.write_text('{"event": "start"}\n', encoding="utf-8")  # replaced by a new run: read from the start
    assert tail.readNew() == [{"event": "start"}]


def test_inference_progress_success_path():
    p = InferenceProgress()
    assert p.state == JobState.IDLE
    p.started()
    assert p.state == JobState.RUNNING and p.active
    p.apply({"event": "start", "time": 10.0, "input": "in.nrrd", "device": "cpu"})
    p.apply({"event": "progress", "fraction": 0.4, "stage": "sliding window"})
    p.apply({"event": "progress", "fraction": 0.2, "stage": "sliding window"})  # never goes backwards
    assert p.percent() == 40 and p.statusText() == "sliding window (40%) on cpu"
    p.apply({"event": "progress", "fraction": 7})
    assert p.fraction == 1.0
    p.apply({"event": "done", "output": "/t/out.nrrd", "seconds": 3.0})
    p.finished(0)
    assert (p.state, p.outputPath, p.percent()) == (JobState.DONE, "/t/out.nrrd", 100)


@pytest.mark.parametrize("eventsSeen, code, message", [
    ([{"event": "error", "message": "/t/in.nrrd: cannot read"}], 2, "/t/in.nrrd: cannot read"),
    ([], 137, "exited with code 137"),
    ([], 0, "without reporting a result"),
    ([{"event": "done", "output": "o"}, {"event": "error", "message": "late"}], 0, "late"),
])
def test_inference_progress_failures(eventsSeen, code, message):
    p = InferenceProgress()
    p.started()
    for e in eventsSeen:
        p.apply(e)
    p.finished(code)
    assert p.state == JobState.FAILED and message in p.errorMessage and not p.active


def test_inference_progress_cancel_goes_back_to_idle():
    p = InferenceProgress()
    assert not p.requestCancel()  # nothing to cancel
    p.started()
    assert p.requestCancel() and p.state == JobState.CANCELLING and p.active
    p.finished(-15)
    assert p.state == JobState.IDLE and p.cancelled and p.statusText() == "cancelled"


# --- background process: real child processes ------------------------------------------------------------

ENGINE_LIKE = textwrap.dedent("""
    import json, sys, time
    events = sys.argv[1]
    print("loading model", flush=True)
    with open(events, "w") as f:
        for i, ev in enumerate([{"event": "start", "device": "cpu"},
                                {"event": "progress", "fraction": 0.5, "stage": "window"},
                                {"event": "done", "output": "out.nrrd", "seconds": 0.1}]):
            f.write(json.dumps(ev) + "\\n"); f.flush(); time.sleep(0.05)
    print("progress 100%\\rfinished", flush=True)
""")


def test_engine_job_follows_a_real_process_to_done(tmp_path):
    eventsPath = str(tmp_path / "events.jsonl")
    (tmp_path / "events.jsonl").write_text('{"event": "error", "message": "stale from last run"}\n', encoding="utf-8")
    proc = process.BackgroundProcess([sys.executable, "-c", ENGINE_LIKE, eventsPath],
                                     logPath=str(tmp_path / "engine.log"))
    job = process.EngineJob(proc, eventsPath, InferenceProgress())
    job.start()
    lines, seen = [], []
    assert job.waitUntilFinished(30, 0.02, onPoll=lambda r: (lines.extend(r.logLines), seen.extend(r.events)))
    assert job.progress.state == JobState.DONE, job.progress.errorMessage
    assert [e["event"] for e in seen] == ["start", "progress", "done"]
    assert lines == ["loading model", "finished"]
    assert (tmp_path / "engine.log").read_text(encoding="utf-8").splitlines() == lines


def test_engine_job_reports_a_process_that_cannot_start(tmp_path):
    proc = process.BackgroundProcess([str(tmp_path / "no-such-python")])
    job = process.EngineJob(proc, str(tmp_path / "e.jsonl"), InferenceProgress())
    with pytest.raises(OSError):
        job.start()
    assert job.progress.state == JobState.FAILED and "could not start" in job.progress.errorMessage


TREE = textwrap.dedent("""
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    open(sys.argv[1], "w").write(str(child.pid))
    time.sleep(120)
""")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie awaiting its parent counts as ended
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


@pytest.mark.skipif(os.name != "posix", reason="process-group fallback is POSIX")
def test_cancel_ends_the_whole_process_tree(tmp_path):
    """Like PythonSlicer -> python: ending only the launcher would leave the worker running."""
    pidFile = tmp_path / "grandchild.pid"
    proc = process.BackgroundProcess([sys.executable, "-c", TREE, str(pidFile)])
    job = process.EngineJob(proc, str(tmp_path / "e.jsonl"), InferenceProgress(), cancelGraceSeconds=2.0)
    job.start()
    deadline = time.monotonic() + 15
    while not (pidFile.exists() and pidFile.read_text(encoding="utf-8")) and time.monotonic() < deadline:
        time.sleep(0.02)
    grandchild = int(pidFile.read_text(encoding="utf-8"))
    job.poll()
    assert _alive(grandchild)
    assert job.cancel()
    assert job.waitUntilFinished(15, 0.05)
    assert job.progress.state == JobState.IDLE and job.progress.cancelled
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_cancel_escalates_to_kill_when_terminate_is_ignored(tmp_path):
    script = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); " \
             "time.sleep(60)"
    clock = [0.0]
    proc = process.BackgroundProcess([sys.executable, "-c", script])
    job = process.EngineJob(proc, str(tmp_path / "e.jsonl"), InferenceProgress(), cancelGraceSeconds=1.0,
                            clock=lambda: clock[0])
    job.start()
    lines = []
    deadline = time.monotonic() + 15
    while "ready" not in lines and time.monotonic() < deadline:
        lines += job.poll().logLines
        time.sleep(0.02)
    job.cancel()
    time.sleep(0.3)
    assert not job.poll().finished  # SIGTERM ignored
    clock[0] = 5.0  # grace period over: next poll kills
    assert job.waitUntilFinished(10, 0.05)
    assert job.progress.cancelled and job.progress.returnCode == -signal.SIGKILL


# --- memory check ---------------------------------------------------------------------------------------


def test_memory_estimate_grows_with_batch_and_volume_and_uses_measured_peak():
    m = h.exampleManifest()
    small = memory.estimateInferenceMemoryMb(m, (64, 64, 64), 1, "cpu")
    assert memory.estimateInferenceMemoryMb(m, (64, 64, 64), 4, "cpu") > small
    assert memory.estimateInferenceMemoryMb(m, (256, 256, 256), 1, "cpu") > small
    assert memory.estimateInferenceMemoryMb(m, (64, 64, 64), 1, "cuda") == pytest.approx(
        small + memory.CUDA_CONTEXT_MB)
    assert small >= 900  # never below the measured peak
    unmeasured = h.exampleManifest()
    del unmeasured["inference"]
    assert 0 < memory.estimateInferenceMemoryMb(unmeasured, (64, 64, 64), 1, "cpu") < small


def test_memory_check_offers_lighter_settings_instead_of_failing():
    m = h.exampleManifest()
    shape = (200, 256, 256)
    need4 = memory.estimateInferenceMemoryMb(m, shape, 4, "cuda")
    need1 = memory.estimateInferenceMemoryMb(m, shape, 1, "cuda")
    ok = memory.checkInferenceMemory(m, shape, "cuda", 4, gpuFreeMb=need4 * 2, ramAvailableMb=64000)
    assert ok.fits and ok.suggestion is None
    tight = memory.checkInferenceMemory(m, shape, "cuda", 4, gpuFreeMb=need1 * 1.1 / memory.SAFETY,
                                        ramAvailableMb=64000)
    assert not tight.fits
    assert [s[:2] for s in tight.suggestions] == [("cuda", 1), ("cpu", 1)]
    assert "GPU" in tight.message and "sliding-window batch 1" in tight.message
    tiny = memory.checkInferenceMemory(m, shape, "cuda", 1, gpuFreeMb=100, ramAvailableMb=64000)
    assert not tiny.fits and tiny.suggestion[:2] == ("cpu", 1)
    hopeless = memory.checkInferenceMemory(m, shape, "cpu", 1, gpuFreeMb=None, ramAvailableMb=100)
    assert not hopeless.fits and hopeless.suggestions == [] and "crop or resample" in hopeless.message
    unknown = memory.checkInferenceMemory(m, shape, "cuda", 1, gpuFreeMb=None, ramAvailableMb=None)
    assert unknown.fits and "not checked" in unknown.message


def test_nvidia_smi_parsing_and_ram_query():
    assert memory.parseNvidiaSmi("81559, 80123\n24576, 100\n") == (81559.0, 80123.0)
    assert memory.parseNvidiaSmi("N/A, N/A\n") is None
    ram = memory.queryRamAvailableMb()
    assert ram is None or ram > 0


# --- dependencies ------------------------------------------------------------------------------------------


REQUIREMENTS = os.path.join(h.TOGETHER_DIR, "Resources", "requirements.txt")
SHIPPED_BY_SLICER = {"torch", "numpy", "simpleitk", "vtk"}  # torch: PyTorchUtils


def _pyprojectDependencies() -> dict:
    import tomllib

    with open(os.path.join(h.ROOT, "pyproject.toml"), "rb") as f:
        lines = tomllib.load(f)["project"]["dependencies"]
    return {r.name.lower(): r for r in dependencies.parseRequirements("\n".join(lines))}


def test_requirements_use_floors_and_leave_slicers_own_packages_alone():
    reqs = dependencies.readRequirements(REQUIREMENTS)
    names = {r.name.lower() for r in reqs}
    assert {"monai", "safetensors", "scipy", "h5py", "tqdm", "slicerio"} <= names
    assert not names & (SHIPPED_BY_SLICER | {"requests"})
    assert all(r.minimum for r in reqs)
    assert dependencies.parseRequirements("slicerio>=1.1,<2")[0].below == "2"
    with pytest.raises(ValueError, match="only >= floors"):
        dependencies.parseRequirements("monai==1.4\n")


def test_floors_are_the_same_in_slicer_and_in_pyproject():
    engine = _pyprojectDependencies()
    slicerSide = {r.name.lower(): r for r in dependencies.readRequirements(REQUIREMENTS)}
    assert set(engine) - SHIPPED_BY_SLICER == set(slicerSide), "every engine dependency is installed in Slicer"
    for name, req in slicerSide.items():
        assert (req.minimum, req.below) == (engine[name].minimum, engine[name].below), name
    assert engine["torch"].minimum == dependencies.MINIMUM_TORCH_VERSION


def test_installed_monai_fits_the_installed_torch_and_the_torch_floor_fits_the_monai_floor():
    """pip, held to the installed torch, picks a monai whose torch requirement that torch meets."""
    from importlib import metadata

    torchNeed = [r for r in metadata.requires("monai") if r.replace(" ", "").startswith("torch>=")][0]
    need = torchNeed.split(">=")[1].split(",")[0].split(";")[0].strip()
    assert dependencies.versionTuple(metadata.version("torch")) >= dependencies.versionTuple(need)
    # monai 1.4 (the floor) needs torch>=1.9: our floor (2.2) meets it, so a held torch >= 2.2 always has a monai
    assert dependencies.versionTuple(dependencies.MINIMUM_TORCH_VERSION) >= (1, 9)


def test_pip_is_held_to_the_installed_torch_and_numpy_and_update_upgrades():
    versions = {"torch": "2.5.1+cu121", "numpy": "1.26.4", "monai": None}
    assert dependencies.heldConstraints(versions.get) == "torch==2.5.1+cu121\nnumpy==1.26.4\n"
    reqs = dependencies.parseRequirements("monai>=1.4\nslicerio>=1.1,<2")
    assert dependencies.pipInstallArguments(reqs, "/c.txt") == ["monai>=1.4", "slicerio>=1.1,<2", "-c", "/c.txt"]
    assert dependencies.pipInstallArguments(reqs, "/c.txt", upgrade=True)[0] == "--upgrade"
    assert dependencies.torchProblem({"torch": "2.13.0+cpu"}.get) is None
    assert dependencies.torchProblem({}.get) == "missing"
    assert dependencies.torchProblem({"torch": "2.1.2"}.get) == "PyTorch 2.1.2 is older than 2.2"
    assert dependencies.missingRequirements(reqs, {"monai": "1.6.1", "slicerio": "2.0"}.get) == [reqs[1]]


def test_missing_requirements_compares_versions():
    reqs = dependencies.parseRequirements("monai>=1.4\nscipy>=1.10\ntqdm\n")
    versions = {"monai": "1.3.2", "scipy": "1.17.1", "tqdm": None}
    assert [r.name for r in dependencies.missingRequirements(reqs, versions.get)] == ["monai", "tqdm"]
    assert dependencies.versionTuple("2.13.0+cpu") == (2, 13, 0)
    assert dependencies.versionsReport(["tqdm"], versions.get) == [("tqdm", "not installed")]


# --- engine processes on Windows -------------------------------------------------------------------------


def test_engine_processes_get_no_console_window_on_windows_and_their_own_group(monkeypatch):
    options = process.popenOptions("nt")
    assert options["creationflags"] & process.CREATE_NO_WINDOW  # no console: closing it cannot end the job
    assert options["creationflags"] & process.CREATE_NEW_PROCESS_GROUP  # Cancel ends the whole tree
    assert process.popenOptions("posix") == {"start_new_session": True}

    seen = {}

    class Recorder:
        def __init__(self, args, **kwargs):
            seen.update(kwargs)
            raise OSError("recorded")

    monkeypatch.setattr(process.subprocess, "Popen", Recorder)
    with pytest.raises(OSError, match="recorded"):
        process.BackgroundProcess(["engine"]).start()
    assert seen["stdin"] == process.subprocess.DEVNULL
    assert {k: v for k, v in seen.items() if k in ("creationflags", "start_new_session")} == \
        {k: v for k, v in process.popenOptions().items() if k != "startupinfo"}


def _card(model) -> dict:
    return json.loads((model / "model.json").read_text(encoding="utf-8"))
