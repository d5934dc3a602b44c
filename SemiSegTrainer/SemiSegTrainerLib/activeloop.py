"""The annotate-train loop in the Trainer: which pool case to annotate next, and the scene volume it is.

"Suggest next cases" runs `semiseg suggest` on the last run's exported data (its unlabeled cases are the pool
it trained with) in the background; the ranking comes back as JSON (docs/contracts.md). The export names each
scene volume of the pool with a case id; `pool.json` in the job folder keeps id -> scene node id, so a ranked
case can be segmented, corrected in the Segment Editor and added as labeled. Nothing here imports slicer.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Optional

from SemiSegTogetherLib.command import engineCommand
from SemiSegTogetherLib.events import InferenceProgress
from SemiSegTogetherLib.process import EngineJob, startBackgroundProcess

POOL_FILE = "pool.json"
SUGGESTIONS_FILE = "suggestions.json"
SUGGEST_EVENTS_FILE = "suggest-events.jsonl"


@dataclass
class Suggestion:
    rank: int
    caseId: str
    score: float
    uncertainty: float
    novelty: float
    reason: str
    nodeId: Optional[str] = None  # the scene volume, when the case came from the scene
    typicality: Optional[float] = None  # absent from rankings of engines before `--strategy`

    def label(self, volumeName: Optional[str] = None) -> str:
        name = volumeName or self.caseId
        typical = "" if self.typicality is None else f"typicality {self.typicality:.2f}, "
        return f"{self.rank}. {name}  score {self.score:.2f} ({typical}uncertainty {self.uncertainty:.2f}, " \
               f"novelty {self.novelty:.2f})"


def buildSuggestCommand(pythonExecutable: str, modelPath: str, dataPath: str, jobFolder: str,
                        device: str = "auto") -> list:
    """`semiseg suggest` ranking the whole pool into JOB/suggestions.json, with events."""
    return engineCommand(pythonExecutable, "suggest", [
        "--model", modelPath, "--data", dataPath, "--device", device, "--overwrite",
        "--out", os.path.join(jobFolder, SUGGESTIONS_FILE), "--events", os.path.join(jobFolder, SUGGEST_EVENTS_FILE)])


def startSuggestJob(pythonExecutable: str, jobFolder: str, modelPath: str, dataPath: str, env: dict,
                    processFactory=None, device: str = "auto") -> EngineJob:
    """`semiseg suggest` in the background; advance it with `poll()` (a QTimer in Slicer), then
    `readSuggestions(jobFolder)` once its progress is DONE."""
    args = buildSuggestCommand(pythonExecutable, modelPath, dataPath, jobFolder, device)
    process = (processFactory or startBackgroundProcess)(args, env, os.path.join(jobFolder, "suggest.log"))
    job = EngineJob(process, os.path.join(jobFolder, SUGGEST_EVENTS_FILE), InferenceProgress())
    job.start()
    return job


def writePoolNodes(jobFolder: str, caseIds: list, nodeIds: list) -> str:
    """Remember which scene volume each exported pool case is (same order as the export)."""
    if len(caseIds) != len(nodeIds):
        raise ValueError(f"{len(caseIds)} exported pool cases but {len(nodeIds)} scene volumes")
    path = os.path.join(jobFolder, POOL_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(dict(zip(caseIds, nodeIds)), f, indent=2)
    os.replace(tmp, path)
    return path


def readPoolNodes(jobFolder: str) -> dict:
    path = os.path.join(jobFolder, POOL_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def readSuggestions(jobFolder: str) -> list:
    """The ranking `semiseg suggest` wrote, each case with its scene node id when it has one."""
    path = os.path.join(jobFolder, SUGGESTIONS_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            rows = json.load(f)["suggestions"]
        nodes = readPoolNodes(jobFolder)
        return [Suggestion(int(r["rank"]), str(r["id"]), float(r["score"]), float(r["uncertainty"]),
                           float(r["novelty"]), str(r["reason"]), nodes.get(str(r["id"])),
                           None if r.get("typicality") is None else float(r["typicality"])) for r in rows]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a ranking from `semiseg suggest` ({e})") from e


# A fine-tune's share of the first run's budget (time limit, or iterations without one). On la-dev, 150
# iterations fine-tuned from the last model matched 400 from scratch on the same cases from the second round on
# and came within 0.6 Dice points in the first (docs/benchmarks/active-loop-last-export, 6 seeds).
FINE_TUNE_SHARE = 0.4


def fineTuneSettings(settings, parentModelPath: str):
    """The same settings with `FINE_TUNE_SHARE` of their budget, starting from the last model
    (`semiseg train --init`)."""
    from dataclasses import replace  # noqa: PLC0415
    if not os.path.isfile(os.path.join(parentModelPath, "model.json")):
        raise ValueError(f"{parentModelPath}: no finished model to fine-tune from")
    return replace(settings, initModel=parentModelPath,
                   timeMinutes=max(1, round(FINE_TUNE_SHARE * settings.timeMinutes)) if settings.timeMinutes else 0,
                   iterations=max(1, round(FINE_TUNE_SHARE * settings.iterations)))
