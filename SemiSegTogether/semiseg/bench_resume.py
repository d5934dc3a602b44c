"""What `semiseg bench --resume` reuses: a finished run whose settings are exactly those of the run it would do.

A run's settings (its key: data, profile, method and its revision, options, seed, device, engine version,
budget and, under --time, what a twin inherits from its method) are written twice: in the run's record in the
work folder, as soon as the run ends, and in the report's results.json beside the run. The work folder holds
models and predictions and stays on the machine that trained; the report is what gets committed. So a benchmark
of hours continues on another machine, or in another checkout, from the report alone: its finished runs are read
back from results.json, and only the missing ones train.

Paths in a key are relative to the report folder, so that the same data beside the same report gives the same
key on every machine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from semiseg import __version__
from semiseg.atomic import atomic_path
from semiseg.events import _clean
from semiseg.methods import method_class


def run_key(s, p: dict, method: str, options: dict, seed: int, device, inherited: dict | None,
            report_dir: Path) -> dict:
    """The settings that decide a run's result (`s` is the bench's settings, `p` its profile's)."""
    key = {"data": portable(s.data, report_dir), "profile": {k: v for k, v in p.items() if k != "options"},
           "method": method, "options": options, "seed": seed, "lcc": s.lcc, "device": str(device),
           "engine_version": __version__}
    if s.time_seconds is not None:
        key.update(time_seconds=s.time_seconds, inherited=inherited)
    if s.pool_truth is not None:
        key["pool_truth"] = portable(s.pool_truth, report_dir)
    revision = method_class(method).revision
    if revision != 1:  # absent at 1, so that runs from before revisions existed keep their keys
        key["revision"] = revision
    return json.loads(json.dumps(_clean(key)))  # as it reads back from JSON


def portable(path, report_dir: Path) -> str:
    """`path` relative to the report folder: the same on every machine that has the data beside the report."""
    return Path(os.path.relpath(Path(path).resolve(), Path(report_dir).resolve())).as_posix()


def reported_runs(report_dir: Path) -> list[dict]:
    """The runs of an earlier report in this folder that carry their key (none if there is no report)."""
    try:
        runs = json.loads((Path(report_dir) / "results.json").read_text(encoding="utf-8")).get("runs", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [r for r in runs if isinstance(r, dict) and "key" in r]


def finished_run(record: Path, key: dict, reported: list[dict]) -> dict | None:
    """The finished run with this key: from its record in the work folder, else from the earlier report."""
    if record.exists():
        saved = json.loads(record.read_text(encoding="utf-8"))
        if saved.get("key") == key:
            return {**saved["run"], "key": key}
    return next((r for r in reported if r["key"] == key), None)


def save_record(record: Path, run: dict) -> None:
    record.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(record, ".json") as tmp:
        tmp.write_text(json.dumps(_clean({"key": run["key"], "run": run}), indent=2) + "\n", encoding="utf-8")
