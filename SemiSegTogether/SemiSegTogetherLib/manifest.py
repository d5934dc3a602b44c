"""Model package manifest (model.json): validation, model card, segment specs.

The shape is the one in docs/contracts.md ("Model package"). Slicer's process reads
model.json here, never through the engine: importing ``semiseg.model`` would load
torch into Slicer (seconds of frozen GUI, and a torch that PyTorchUtils may need to
replace). The engine checks the package again when it runs in its own process.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional

MANIFEST_NAME = "model.json"
WEIGHT_NAMES = ("weights.safetensors", "weights.pt", "weights.pth")
FORMAT_NAME = "semiseg-model"
SUPPORTED_FORMAT_VERSION = 1

# Slicer's terminology entry: 7 fields separated by '~', codes as scheme^value^meaning.
TERMINOLOGY_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"

# Fallback colours (0-255) for labels without one, from Slicer's GenericAnatomyColors.
FALLBACK_COLORS = [
    (128, 174, 128), (241, 214, 145), (177, 122, 101), (111, 184, 210), (216, 101, 79),
    (221, 130, 101), (144, 238, 144), (192, 104, 88), (220, 245, 20), (78, 63, 0),
]


class ModelPackageError(Exception):
    """A model package is missing, corrupt, foreign or incompatible. The message names the path."""


def _fail(source: str, problem: str) -> None:
    raise ModelPackageError(f"{source}: {problem}")


def _isCodeTriplet(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 3 and all(isinstance(v, str) for v in value)


def validateManifest(manifest: Any, source: str = MANIFEST_NAME) -> dict:
    """Check a parsed model.json against the contract; return it, or raise ModelPackageError naming `source`."""
    if not isinstance(manifest, dict):
        _fail(source, "model.json must hold a JSON object")
    if manifest.get("format") != FORMAT_NAME:
        _fail(source, f"not a SemiSeg model (format is {manifest.get('format')!r}, expected {FORMAT_NAME!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        _fail(source, "format_version is missing or not an integer")
    if version > SUPPORTED_FORMAT_VERSION:
        _fail(source, f"format_version {version} is newer than this SemiSeg supports ({SUPPORTED_FORMAT_VERSION}); "
              "update the extension")
    name = manifest.get("name")
    if not isinstance(name, str) or not name.strip():
        _fail(source, "the model has no name")
    arch = manifest.get("architecture")
    if not isinstance(arch, dict) or not isinstance(arch.get("name"), str):
        _fail(source, "architecture.name is missing")
    labels = manifest.get("labels")
    if not isinstance(labels, list) or not labels:
        _fail(source, "the model lists no labels (structures)")
    names, values = set(), set()
    for i, label in enumerate(labels):
        if not isinstance(label, dict):
            _fail(source, f"labels[{i}] is not an object")
        lname, value = label.get("name"), label.get("value")
        if not isinstance(lname, str) or not lname.strip():
            _fail(source, f"labels[{i}] has no name")
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            _fail(source, f"label {lname!r} has an invalid value {value!r} (a positive integer is expected)")
        if lname in names:
            _fail(source, f"label name {lname!r} appears twice")
        if value in values:
            _fail(source, f"label value {value} appears twice")
        names.add(lname)
        values.add(value)
        color = label.get("color")
        if color is not None and not (isinstance(color, (list, tuple)) and len(color) == 3
                                      and all(isinstance(c, (int, float)) and 0 <= c <= 255 for c in color)):
            _fail(source, f"label {lname!r} has an invalid color {color!r} (0-255 RGB expected)")
        term = label.get("terminology")
        if term is not None:
            if not isinstance(term, dict):
                _fail(source, f"label {lname!r}: terminology must be an object")
            for key, code in term.items():
                if code is not None and not _isCodeTriplet(code):
                    _fail(source, f"label {lname!r}: terminology {key!r} must be a (scheme, value, meaning) triplet")
    tasks = manifest.get("tasks", [])
    if not isinstance(tasks, list):
        _fail(source, "tasks must be a list")
    for task in tasks:
        if not isinstance(task, dict) or not isinstance(task.get("name"), str):
            _fail(source, "each task needs a name")
        for lname in task.get("labels", []):
            if lname not in names:
                _fail(source, f"task {task['name']!r} names an unknown label {lname!r}")
    return manifest


def readManifest(packageDir: str) -> dict:
    """Read and check `packageDir`/model.json and that the weights are there."""
    manifestPath = os.path.join(packageDir, MANIFEST_NAME)
    if not os.path.isdir(packageDir):
        _fail(packageDir, "is not a folder")
    if not os.path.isfile(manifestPath):
        _fail(packageDir, f"has no {MANIFEST_NAME}; it is not a SemiSeg model package")
    try:
        with open(manifestPath, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        _fail(manifestPath, f"cannot be read as JSON ({e})")
    validateManifest(manifest, manifestPath)
    if not any(os.path.isfile(os.path.join(packageDir, w)) for w in WEIGHT_NAMES):
        _fail(packageDir, f"has no weights file ({WEIGHT_NAMES[0]})")
    return manifest


def rgb01(color) -> tuple:
    return tuple(float(c) / 255.0 for c in color)


def _code(triplet) -> str:
    if not triplet:
        return "^^"
    scheme, value, meaning = triplet
    return f"{scheme}^{value}^{meaning}"


def terminologyEntry(terminology: Optional[dict]) -> str:
    """Slicer terminology entry string from contract triplets ('' when no category/type is known)."""
    if not terminology or not terminology.get("category") or not terminology.get("type"):
        return ""
    fields = [
        TERMINOLOGY_CONTEXT,
        _code(terminology.get("category")),
        _code(terminology.get("type")),
        _code(terminology.get("modifier") or terminology.get("type_modifier")),
        ANATOMIC_CONTEXT,
        _code(terminology.get("region") or terminology.get("anatomic_region")),
        _code(terminology.get("region_modifier") or terminology.get("anatomic_region_modifier")),
    ]
    return "~".join(fields)


def parseTerminologyEntry(entry: str) -> dict:
    """Inverse of terminologyEntry: contract-style triplets from a Slicer terminology string."""
    if not entry:
        return {}
    parts = entry.split("~")
    if len(parts) < 3:
        return {}
    keys = {1: "category", 2: "type", 3: "modifier", 5: "region", 6: "region_modifier"}
    out = {}
    for index, key in keys.items():
        if index < len(parts):
            triplet = parts[index].split("^")
            if len(triplet) == 3 and triplet[1]:
                out[key] = triplet
    return out


@dataclass
class SegmentSpec:
    """What one output segment looks like: the engine's label value, name, colour (0-1) and terminology."""
    name: str
    value: int
    color: tuple
    terminology: str = ""
    task: Optional[str] = None


def segmentSpecs(manifest: dict, prompts: Optional[list] = None) -> list:
    """One SegmentSpec per prompted structure (all labels when `prompts` is None), in the model's label order."""
    labels = manifest["labels"]
    known = [label["name"] for label in labels]
    if prompts is not None:
        unknown = [p for p in prompts if p not in known]
        if unknown:
            raise ModelPackageError(f"model {manifest.get('name')!r} does not know {', '.join(map(repr, unknown))}; "
                                    f"it knows {', '.join(known)}")
    specs = []
    for i, label in enumerate(labels):
        if prompts is not None and label["name"] not in prompts:
            continue
        color = label.get("color") or FALLBACK_COLORS[i % len(FALLBACK_COLORS)]
        specs.append(SegmentSpec(name=label["name"], value=int(label["value"]), color=rgb01(color),
                                 terminology=terminologyEntry(label.get("terminology")), task=label.get("task")))
    return specs


def _fmtSeconds(seconds) -> str:
    if not isinstance(seconds, (int, float)):
        return "?"
    if seconds < 90:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


@dataclass
class ModelCard:
    """The parts of model.json a user chooses a model by."""
    name: str
    description: str = ""
    modality: str = ""
    structures: list = field(default_factory=list)
    tasks: list = field(default_factory=list)
    method: str = ""
    data: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    inference: dict = field(default_factory=dict)
    spacing: Optional[list] = None
    patchSize: Optional[list] = None
    engineVersion: str = ""

    @classmethod
    def fromManifest(cls, manifest: dict) -> "ModelCard":
        pre = manifest.get("preprocessing") or {}
        return cls(
            name=manifest["name"],
            description=manifest.get("description") or "",
            modality=manifest.get("modality") or "",
            structures=[label["name"] for label in manifest["labels"]],
            tasks=[t["name"] for t in manifest.get("tasks") or []],
            method=(manifest.get("method") or {}).get("name", ""),
            data=dict(manifest.get("data") or {}),
            metrics=dict(manifest.get("metrics") or {}),
            training=dict(manifest.get("training") or {}),
            inference=dict(manifest.get("inference") or {}),
            spacing=pre.get("spacing"),
            patchSize=manifest.get("patch_size"),
            engineVersion=manifest.get("engine_version") or "",
        )

    def validationDice(self) -> Optional[float]:
        val = self.metrics.get("validation") or {}
        dice = val.get("dice")
        return float(dice) if isinstance(dice, (int, float)) else None

    def lines(self) -> list:
        """(heading, text) rows of the card, in display order; every value is plain text."""
        rows = []
        if self.description:
            rows.append(("Description", self.description))
        rows.append(("Modality", self.modality or "not stated"))
        rows.append(("Structures", ", ".join(self.structures)))
        if self.tasks:
            rows.append(("Tasks", ", ".join(self.tasks)))
        if self.data:
            parts = [f"{self.data[k]} {k}" for k in ("labeled", "unlabeled", "validation") if k in self.data]
            rows.append(("Training data", ", ".join(parts) if parts else "not stated"))
        if self.method:
            rows.append(("Method", self.method))
        val = self.metrics.get("validation") or {}
        if val:
            rows.append(("Validation", ", ".join(
                f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in val.items()
                if isinstance(v, (int, float)))))
        if self.inference:
            inf = self.inference
            # the sliding window alone, measured at validation; without validation cases, the whole prediction
            text = f"{_fmtSeconds(inf.get('seconds_per_volume', inf.get('prediction_seconds')))} per volume"
            if isinstance(inf.get("peak_memory_mb"), (int, float)):
                text += f", peak {inf['peak_memory_mb']:.0f} MB"
            if inf.get("device"):
                text += f" on {inf['device']}"
            rows.append(("Measured inference", text))
        if self.training:
            tr = self.training
            text = f"{tr.get('iterations', '?')} iterations in {_fmtSeconds(tr.get('seconds'))}"
            if isinstance(tr.get("peak_memory_mb"), (int, float)):
                text += f", peak {tr['peak_memory_mb']:.0f} MB"
            if tr.get("device"):
                text += f" on {tr['device']}"
            rows.append(("Training", text))
        if self.spacing:
            rows.append(("Spacing (mm)", " x ".join(f"{s:g}" for s in self.spacing)))
        if self.engineVersion:
            rows.append(("Engine", self.engineVersion))
        return rows

    def html(self) -> str:
        """The card as a small HTML table for a QLabel/QTextBrowser (values escaped)."""
        import html as _html
        body = "".join(f"<tr><td><b>{_html.escape(k)}</b></td><td>{_html.escape(v)}</td></tr>"
                       for k, v in self.lines())
        return f"<h3>{_html.escape(self.name)}</h3><table cellspacing='2'>{body}</table>"

    def text(self) -> str:
        return "\n".join([self.name] + [f"{k}: {v}" for k, v in self.lines()])
