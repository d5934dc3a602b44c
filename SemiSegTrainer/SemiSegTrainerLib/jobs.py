"""A training run on disk, running it in the background, and handing its model over.

Job folder (one per run, under the trainer's work folder):

    job.json           settings, dataset and paths: what Resume needs after a restart
    data/              exported scene cases: imagesTr/ labelsTr/ imagesUn/ dataset.json label-info.json
    checkpoints/       the engine's --workdir (last.pt, best.pt)
    model/NAME.semiseg the engine's --out
    events.jsonl       this part's events; events.partN.jsonl the parts before each Resume
    engine.log         everything the engine printed

`TrainingRunner` runs `semiseg check` and then `semiseg train` (or `train --resume`, same
--workdir and --out), advanced by `poll()` from a QTimer; Cancel sends SIGTERM to the
process tree (the engine then saves its last checkpoint) and forces it after a grace period.
"Check and plan" runs `semiseg check` and, with a time limit, `semiseg plan`, whose plan goes to the log.
"""

from __future__ import annotations

import glob
import json
import os
import re
import time
from dataclasses import asdict
from typing import Callable, Optional

from SemiSegTogetherLib import catalog
from SemiSegTogetherLib.events import EventTail, JobState
from SemiSegTogetherLib.process import EngineJob, PollResult, startBackgroundProcess

from SemiSegTrainerLib.progress import TrainingProgress
from SemiSegTrainerLib.settings import TrainingSettings, buildCheckCommand, buildPlanCommand, buildTrainCommand

JOB_FILE = "job.json"
CANCEL_GRACE_SECONDS = 60.0  # time to write the last checkpoint after SIGTERM


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "model"


class TrainingJobFolder:
    def __init__(self, folder: str):
        self.folder = os.path.abspath(folder)
        self.settings = TrainingSettings()
        self.dataPath = ""
        self.labelInfoPath = ""
        self.modelFileName = "model.semiseg"
        self.registeredPath = ""

    # Layout ---------------------------------------------------------------------------------
    @property
    def dataDir(self) -> str:
        return os.path.join(self.folder, "data")

    @property
    def workDir(self) -> str:
        return os.path.join(self.folder, "checkpoints")

    @property
    def outPath(self) -> str:
        return os.path.join(self.folder, "model", self.modelFileName)

    @property
    def eventsPath(self) -> str:
        return os.path.join(self.folder, "events.jsonl")

    @property
    def logPath(self) -> str:
        return os.path.join(self.folder, "engine.log")

    @property
    def lastCheckpoint(self) -> str:
        return os.path.join(self.workDir, "last.pt")

    # Life cycle --------------------------------------------------------------------------------
    @classmethod
    def create(cls, parent: str, settings: TrainingSettings, name: Optional[str] = None) -> "TrainingJobFolder":
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = os.path.join(parent, f"{stamp}-{_slug(name or settings.modelName or settings.method)}")
        folder, n = base, 1
        while os.path.exists(folder):
            n += 1
            folder = f"{base}-{n}"
        job = cls(folder)
        job.settings = settings
        job.modelFileName = _slug(settings.modelName or os.path.basename(folder)) + ".semiseg"
        os.makedirs(job.dataDir)
        job.save()
        return job

    def save(self) -> None:
        data = {"settings": asdict(self.settings), "dataPath": self.dataPath, "labelInfoPath": self.labelInfoPath,
                "modelFileName": self.modelFileName, "registeredPath": self.registeredPath}
        tmp = os.path.join(self.folder, JOB_FILE + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, os.path.join(self.folder, JOB_FILE))

    @classmethod
    def load(cls, folder: str) -> "TrainingJobFolder":
        path = os.path.join(folder, JOB_FILE)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not a SemiSegTrainer job ({e})") from e
        job = cls(folder)
        known = TrainingSettings.__dataclass_fields__
        job.settings = TrainingSettings(**{k: v for k, v in data.get("settings", {}).items() if k in known})
        job.dataPath = data.get("dataPath", "")
        job.labelInfoPath = data.get("labelInfoPath", "")
        job.modelFileName = data.get("modelFileName", job.modelFileName)
        job.registeredPath = data.get("registeredPath", "")
        return job

    @property
    def finished(self) -> bool:
        return os.path.isfile(os.path.join(self.outPath, "model.json"))

    def canResume(self) -> bool:
        """A checkpoint is there and the model is not finished."""
        return os.path.isfile(self.lastCheckpoint) and not self.finished

    def archivedEventFiles(self) -> list:
        files = glob.glob(os.path.join(self.folder, "events.part*.jsonl"))
        return sorted(files, key=lambda p: int(re.search(r"part(\d+)", p).group(1)))

    def archiveEvents(self) -> Optional[str]:
        """Before a Resume: keep this part's events as events.partN.jsonl (the curves are drawn from all parts)."""
        if not os.path.exists(self.eventsPath):
            return None
        target = os.path.join(self.folder, f"events.part{len(self.archivedEventFiles()) + 1}.jsonl")
        os.replace(self.eventsPath, target)
        return target

    def history(self) -> list:
        """Events of all earlier parts, in order."""
        events = []
        for path in self.archivedEventFiles():
            events += EventTail(path).flush()
        return events


def findResumableJobs(parent: str) -> list:
    """Job folders under `parent` that can be resumed, newest first."""
    jobs = []
    for path in sorted(glob.glob(os.path.join(parent, "*", JOB_FILE)), reverse=True):
        try:
            job = TrainingJobFolder.load(os.path.dirname(path))
        except ValueError:
            continue
        if job.canResume():
            jobs.append(job)
    return jobs


class TrainingRunner:
    """check -> train in the background, one state machine (TrainingProgress) for both."""

    def __init__(self, pythonExecutable: str, env: dict,
                 processFactory: Optional[Callable] = None, cancelGraceSeconds: float = CANCEL_GRACE_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.pythonExecutable = pythonExecutable
        self.env = env
        self.processFactory = processFactory or startBackgroundProcess
        self.cancelGraceSeconds = cancelGraceSeconds
        self.clock = clock
        self.progress = TrainingProgress()
        self.job: Optional[TrainingJobFolder] = None
        self.stage = None  # "check" | "plan" | "train"
        self._check = None  # the running check or plan process
        self._checkOutput = []
        self._steps = []  # (stage, command) still to run before training, or before the end of a check
        self._train: Optional[EngineJob] = None
        self._resume = False
        self._checkOnly = False

    @property
    def running(self) -> bool:
        return self.progress.active

    def start(self, job: TrainingJobFolder, resume: bool = False, checkOnly: bool = False) -> None:
        """Start `semiseg check` then `semiseg train`; `resume` skips the check; `checkOnly` stops after it."""
        if self.running:
            raise RuntimeError("a training is already running")
        if resume and not job.canResume():
            raise ValueError(f"{job.folder}: nothing to resume (no checkpoint, or the model is finished)")
        if not job.dataPath:
            raise ValueError(f"{job.folder}: no dataset")
        self.job, self._resume, self._checkOnly = job, resume, checkOnly
        self.progress = TrainingProgress()  # a Resume redraws the earlier parts from their event files
        self.progress.started()
        if resume:
            self._startTrain()
            return
        self._steps = [("check", buildCheckCommand(self.pythonExecutable, job.dataPath))]
        if checkOnly and job.settings.timeMinutes:  # training prints its plan itself before the first step
            self._steps.append(("plan", buildPlanCommand(self.pythonExecutable, job.dataPath, job.settings)))
        self._startNextStep()

    def _startNextStep(self) -> None:
        self.stage, command = self._steps.pop(0)
        self._checkOutput = []
        self._check = self.processFactory(command, self.env, self.job.logPath)
        try:
            self._check.start()
        except OSError as e:
            self.progress.state = JobState.FAILED
            self.progress.errorMessage = f"could not start the engine ({self.pythonExecutable}): {e}"
            raise

    def _startTrain(self) -> None:
        job = self.job
        self.stage = "train"
        history = []
        if self._resume:
            job.archiveEvents()
            history = job.history()
        args = buildTrainCommand(self.pythonExecutable, job.dataPath, job.outPath, job.workDir, job.eventsPath,
                                 job.settings, labelInfoPath=job.labelInfoPath or None, resume=self._resume)
        process = self.processFactory(args, self.env, job.logPath)
        self._train = EngineJob(process, job.eventsPath, self.progress, cancelGraceSeconds=self.cancelGraceSeconds,
                                clock=self.clock)
        self._train.start()
        self.progress.replay(history)

    def trainCommand(self) -> list:
        job = self.job
        return buildTrainCommand(self.pythonExecutable, job.dataPath, job.outPath, job.workDir, job.eventsPath,
                                 job.settings, labelInfoPath=job.labelInfoPath or None, resume=self._resume)

    def cancel(self) -> bool:
        if not self.running:
            return False
        if self.stage in ("check", "plan"):
            self.progress.requestCancel()
            self._check.killTree()
            return True
        return self._train.cancel()

    def poll(self) -> PollResult:
        if not self.running:
            return PollResult()
        if self.stage in ("check", "plan"):
            result = PollResult(logLines=self._check.readLines())
            self._checkOutput += result.logLines
            code = self._check.poll()
            if code is None:
                return result
            late = self._check.readLines()
            result.logLines += late
            self._checkOutput += late
            if self.progress.state == JobState.CANCELLING:
                self.progress.finished(code)
                result.finished = True
            elif code != 0:
                lines = [line for line in self._checkOutput if line.strip()]
                errors = [line for line in lines if "error" in line.lower()] or lines[-5:]
                self.progress.state = JobState.FAILED
                self.progress.returnCode = code
                what = "the dataset check" if self.stage == "check" else "planning"
                self.progress.errorMessage = f"{what} failed:\n" + "\n".join(errors)
                result.finished = True
            elif self._steps:
                self._startNextStep()
            elif self._checkOnly:
                self.progress.planned = self.stage == "plan"
                self.progress.stage = "checked"
                self.progress.state = JobState.DONE
                self.progress.returnCode = 0
                result.finished = True
            else:
                self._startTrain()
            return result
        return self._train.poll()


def registerModel(modelPath: str, modelsDir: str, overwrite: bool = False) -> str:
    """Copy a finished model package into the models folder (checked first; never silently replaced)."""
    return catalog.importModel(modelPath, modelsDir, overwrite=overwrite)
