"""Training methods and settings: the method list (Resources/methods.json, the engine's
`semiseg methods --json` shipped with the module, so that opening the panel starts no process),
the settings the panel edits, their validation, the `semiseg train` command line, and
remembering them between sessions (QSettings-like store, 'SemiSeg/...')."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Optional

from SemiSegTogetherLib.command import engineCommand

RECOMMENDED_METHOD = "mean-teacher"
SETTINGS_PREFIX = "SemiSeg/Trainer/"
DEVICES = ("auto", "cpu", "cuda")
PER_RUN = ("modelName", "initModel")  # settings that are never remembered between sessions
MAX_MINUTES = 7 * 24 * 60  # "Train for" up to a week

# What each method does, in a clinician's words; the engine's technical description goes in the tooltip.
PLAIN_DESCRIPTIONS = {
    "supervised": "Learns from your segmented cases only. The simplest choice, and the one to compare against.",
    "mean-teacher": "Learns from your segmented cases and also from the scans nobody segmented, by asking for "
                    "the same answer on slightly changed copies of each scan. A good first choice.",
    "ad": "For small or rare structures, or when the scans come from other scanners or hospitals than the "
          "segmented cases. Slower to train.",
    "versemi": "One model for several structures that were segmented in different groups of cases (for "
               "example the liver in some, the vessels in others).",
    "dual-contrast": "Two models check each other on the scans nobody segmented; can help when borders are "
                     "faint. Slower to train.",
}


@dataclass
class MethodInfo:
    name: str
    description: str = ""                            # the engine's (technical) description
    options: dict = field(default_factory=dict)      # option -> default
    optionHelp: dict = field(default_factory=dict)   # option -> one line

    def label(self) -> str:
        return f"{self.name} (recommended)" if self.name == RECOMMENDED_METHOD else self.name

    def plainDescription(self) -> str:
        return PLAIN_DESCRIPTIONS.get(self.name, self.description)


def parseMethodsJson(text: str) -> list:
    """`semiseg methods --json`: [{"name", "description", "options": {k: default | {"default", "help"}}}]."""
    data = json.loads(text)
    if not isinstance(data, list) or not data:
        raise ValueError("expected a non-empty JSON list of methods")
    methods = []
    for item in data:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ValueError("each method needs a name")
        options, helps = {}, {}
        for key, value in (item.get("options") or {}).items():
            if isinstance(value, dict) and "default" in value:
                options[key] = value["default"]
                helps[key] = str(value.get("help") or "")
            else:
                options[key] = value
        methods.append(MethodInfo(item["name"], str(item.get("description") or ""), options, helps))
    return methods


def readMethods(path: str) -> list:
    """The method list shipped with the module (recommended first); ValueError naming the file otherwise."""
    try:
        with open(path, encoding="utf-8") as f:
            return sortMethods(parseMethodsJson(f.read()))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read the method list ({e})") from e


def sortMethods(methods: list) -> list:
    """Recommended first, then the rest in the engine's order."""
    return sorted(methods, key=lambda m: m.name != RECOMMENDED_METHOD)


def parseOptionValue(text: str):
    """A method option typed in the panel: JSON when it parses (numbers, true/false, lists), else text."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return text


@dataclass
class TrainingSettings:
    method: str = RECOMMENDED_METHOD
    # "Train for": the engine plans the run to end within this many minutes (`--time`); 0 = `iterations`
    # below, with the batch sizes and validation interval as set (the CLI's defaults, for the same result).
    timeMinutes: int = 30
    iterations: int = 6000
    device: str = "auto"
    patch: Optional[list] = None          # d,h,w in array order; None = the engine picks
    batchLabeled: int = 2
    batchUnlabeled: int = 2
    learningRate: Optional[float] = None  # None = the method's default
    valEvery: int = 200
    valCases: int = 0  # labeled cases held out for a validation Dice (`--val-cases`); 0 = every one trains
    methodOptions: dict = field(default_factory=dict)
    modelName: str = ""
    initModel: str = ""  # fine-tune: the model package to start from (`--init`); per run, not a preference

    def validate(self, knownMethods: Optional[list] = None) -> list:
        """Problems, each a sentence the user can act on ([] when fine)."""
        errors = []
        names = [m.name for m in knownMethods] if knownMethods else None
        if names is not None and self.method not in names:
            errors.append(f"unknown method '{self.method}' (choose one of {', '.join(names)})")
        if not isinstance(self.timeMinutes, int) or not 0 <= self.timeMinutes <= MAX_MINUTES:
            errors.append(f"the time limit must be 0 (none) to {MAX_MINUTES} minutes")
        if not isinstance(self.iterations, int) or self.iterations < 1:
            errors.append("iterations must be at least 1")
        if self.device not in DEVICES and not str(self.device).startswith("cuda:"):
            errors.append(f"device must be {', '.join(DEVICES)} or cuda:N")
        if self.patch is not None:
            if len(self.patch) != 3 or any(int(p) < 16 or int(p) % 16 for p in self.patch):
                errors.append(f"patch size {self.patch}: three sizes, each a multiple of 16 (e.g. 96,96,64)")
        if self.batchLabeled < 1:
            errors.append("labeled batch must be at least 1")
        if self.batchUnlabeled < 0:
            errors.append("unlabeled batch must not be negative")
        if self.learningRate is not None and not 0 < self.learningRate < 10:
            errors.append("learning rate must be between 0 and 10")
        if self.valEvery < 1:
            errors.append("validate-every must be at least 1")
        if not isinstance(self.valCases, int) or self.valCases < 0:
            errors.append("held-out cases must be 0 (none) or more")
        if knownMethods:
            method = next((m for m in knownMethods if m.name == self.method), None)
            if method is not None and method.options:
                unknown = [k for k in self.methodOptions if k not in method.options]
                if unknown:
                    errors.append(f"method '{self.method}' has no option(s) {', '.join(unknown)}")
        if "," in self.modelName or "/" in self.modelName or "\\" in self.modelName:
            errors.append("the model name must not contain ',', '/' or '\\'")
        return errors

    def trainArguments(self) -> list:
        """`semiseg train` settings. With a time limit the planner picks the steps, batches and validation
        interval; a patch or learning rate typed in Advanced is kept by it."""
        args = ["--method", self.method, "--device", self.device]
        if self.timeMinutes:
            args += ["--time", f"{self.timeMinutes}m"]
        else:
            args += ["--iterations", str(self.iterations), "--batch-labeled", str(self.batchLabeled),
                     "--batch-unlabeled", str(self.batchUnlabeled), "--val-every", str(self.valEvery)]
        if self.valCases:
            args += ["--val-cases", str(self.valCases)]
        if self.patch:
            args += ["--patch", ",".join(str(int(p)) for p in self.patch)]
        if self.learningRate is not None:
            args += ["--lr", f"{self.learningRate:g}"]
        for key, value in sorted(self.methodOptions.items()):
            args += ["--option", f"{key}={json.dumps(value)}"]
        if self.modelName:
            args += ["--name", self.modelName]
        if self.initModel:
            args += ["--init", self.initModel]
        return args

    def planArguments(self) -> list:
        """`semiseg plan` for the same run (the model's name and parent do not change the plan)."""
        args = self.trainArguments()
        for flag in ("--name", "--init"):
            if flag in args:
                del args[args.index(flag):args.index(flag) + 2]
        return args

    # Remembered between sessions -----------------------------------------------------------

    def save(self, store) -> None:
        """Write to a QSettings-like `store` (setValue) under 'SemiSeg/Trainer/'."""
        for key, value in asdict(self).items():
            if key in PER_RUN:
                continue  # per model, not a preference
            store.setValue(SETTINGS_PREFIX + key, json.dumps(value))

    @classmethod
    def load(cls, store) -> "TrainingSettings":
        """Read from a QSettings-like `store` (value(key, default)); bad or missing values keep the defaults."""
        settings = cls()
        for key, default in asdict(settings).items():
            if key in PER_RUN:
                continue
            raw = store.value(SETTINGS_PREFIX + key, None)
            if raw is None:
                continue
            try:
                value = json.loads(raw)
            except (json.JSONDecodeError, TypeError):
                continue
            if default is not None and value is not None and type(value) is not type(default) \
                    and not (isinstance(default, float) and isinstance(value, int)):
                continue
            setattr(settings, key, value)
        return settings


def buildTrainCommand(pythonExecutable: str, dataPath: str, outPath: str, workDir: str, eventsPath: str,
                      settings: TrainingSettings, labelInfoPath: Optional[str] = None, resume: bool = False) -> list:
    """`semiseg train` for a new run, or `--resume` of the same run (same --workdir and --out)."""
    args = ["--data", dataPath, "--out", outPath, "--workdir", workDir, "--events", eventsPath, "--quiet"]
    if labelInfoPath:
        args += ["--label-info", labelInfoPath]
    args += settings.trainArguments()
    if resume:
        args.append("--resume")
    else:
        args.append("--overwrite")  # the package in the job folder is ours; the registered copy is separate
    return engineCommand(pythonExecutable, "train", args)


def buildCheckCommand(pythonExecutable: str, dataPath: str) -> list:
    return engineCommand(pythonExecutable, "check", [dataPath])


def buildPlanCommand(pythonExecutable: str, dataPath: str, settings: TrainingSettings) -> list:
    """`semiseg plan` printing the plan that `train --time` would follow (only with a time limit)."""
    return engineCommand(pythonExecutable, "plan", [dataPath, *settings.planArguments()])
