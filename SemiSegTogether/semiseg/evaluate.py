"""`semiseg evaluate`: a folder of predictions against a dataset split's labels."""

from __future__ import annotations

from pathlib import Path

from semiseg.datasets import load_dataset
from semiseg.errors import DataError
from semiseg.io import image_extension, strip_image_extension
from semiseg.metrics import EMPTY_CONVENTION, METRIC_KEYS, evaluate_predictions, summarize


def prediction_files(pred_dir: Path) -> dict[str, Path]:
    """Case id (file name without image extension) → prediction file; two files for one case are an error
    (which one to score is not ours to guess)."""
    if not pred_dir.is_dir():
        raise DataError(f"{pred_dir}: no such folder of predictions")
    files: dict[str, Path] = {}
    for p in sorted(pred_dir.iterdir()):
        if not p.is_file() or p.name.startswith(".") or not image_extension(p):
            continue
        case_id = strip_image_extension(p.name)
        if case_id in files:
            raise DataError(f"{pred_dir}: two predictions for case {case_id!r} ({files[case_id].name} and "
                            f"{p.name}); keep one")
        files[case_id] = p
    return files


def evaluate_folder(pred_dir: Path, data: Path, split: str = "test") -> dict:
    ds = load_dataset(data)
    cases = [c for c in ds.split(split) if c.label is not None]
    if not cases:
        raise DataError(f"{data}: the {split} split has no labeled case to evaluate against")
    preds = prediction_files(pred_dir)
    missing = [c.id for c in cases if c.id not in preds]
    if missing:
        raise DataError(f"{pred_dir}: no prediction for case(s) {', '.join(missing)}")
    # A case annotated for one task (a multi-dataset training set) is scored on that task's structures only:
    # the others are not annotated in it, so a correct prediction of them is not a false positive.
    by_task: dict[str | None, list] = {}
    for case in cases:
        by_task.setdefault(case.task if ds.tasks else None, []).append(case)
    scored: dict[str, dict] = {}
    for task, group in by_task.items():
        labels = {n: v for n, v in ds.foreground_labels.items() if task is None or n in ds.tasks.get(task, [n])}
        scored.update(evaluate_predictions([(c.id, preds[c.id], c.label) for c in group], labels,
                                           declared=set(ds.labels.values()))["cases"])
    cases_out = {c.id: scored[c.id] for c in cases}
    summary = {name: summarize([m[name] for m in cases_out.values() if name in m], keys=METRIC_KEYS)
               for name in [*ds.foreground_labels, "mean"]}
    return {"cases": cases_out, "summary": summary, "convention": EMPTY_CONVENTION}


def format_summary(result: dict) -> str:
    """A plain table: label × metric, mean ± std over cases (mm and voxels)."""
    keys = [("dice", "Dice", 100), ("jaccard", "Jaccard", 100), ("hd95_mm", "HD95 mm", 1), ("asd_mm", "ASD mm", 1),
            ("hd95_vox", "HD95 vox", 1), ("asd_vox", "ASD vox", 1)]
    lines = [f"{'label':<20}" + "".join(f"{title:>16}" for _, title, _ in keys)]
    for name, summary in result["summary"].items():
        cells = []
        for key, _, scale in keys:
            s = summary[key]
            cells.append(f"{s['mean'] * scale:>9.2f} ± {s['std'] * scale:<5.2f}")
        lines.append(f"{name:<20}" + "".join(f"{c:>16}" for c in cells))
    n = len(result["cases"])
    lines.append(f"({n} case{'s' if n != 1 else ''}; Dice and Jaccard in %; ASD is directed prediction→truth)")
    return "\n".join(lines)
