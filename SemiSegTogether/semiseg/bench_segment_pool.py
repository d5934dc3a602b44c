"""`bench --score-pool DIR`: each run's models segment the unlabeled pool, scored against labels only this reads.

The pool is what a clinic leaves unlabeled and wants segmented ("segments the rest"): a semi-supervised method
trained on these images without their labels, its twin and plain supervised never saw them. On la-dev the pool
also has three times the test split's cases, so its paired figures are steadier. Scoring runs after training
(no training time is spent on it), so it is added to the runs an earlier benchmark finished, too, as long as
their models are still in the work folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from semiseg.bench_paired import CHECKPOINTS, mean_std, paired_table, seed_means
from semiseg.datasets import Case, read_channels
from semiseg.infer import predict_volume
from semiseg.io import write_volume
from semiseg.metrics import evaluate_predictions
from semiseg.metrics import mean_std_text as _fmt
from semiseg.model import load_model
from semiseg.predict_cases import prediction_name


def score_pool(run: dict, models: dict[str, Path], cases: list[Case], truth: str, labels: dict[str, int],
               declared: set[int], device: torch.device, pred_root: Path, overlap: float, lcc: bool,
               mirror: bool = False) -> bool:
    """Adds run["pool"] = {"truth": truth, "best" | "last": {"cases": {id: metrics}}} from `models` (checkpoint →
    model package) on `cases` (each with its truth as label), with "tta": True when `mirror`ed; True if the run
    changed. Scores against other labels or with the other inference are dropped; none are added when a model is
    missing (a run read back from a report on another machine)."""
    earlier = run.get("pool", {})
    if earlier.get("truth") == truth and bool(earlier.get("tta")) == mirror:
        return False
    stale = run.pop("pool", None) is not None
    if not all(Path(m).exists() for m in models.values()):
        return stale
    scores: dict = {"truth": truth}
    for ckpt in CHECKPOINTS:
        net, manifest = load_model(models[ckpt], device)
        pred_dir = pred_root / f"pool-{ckpt}"
        shutil.rmtree(pred_dir, ignore_errors=True)  # an earlier scoring's (the engine's own files)
        pairs = []
        for case in cases:
            label, _ = predict_volume(net, manifest, read_channels(case), device, overlap=overlap, lcc=lcc,
                                      mirror=mirror)
            path = pred_dir / prediction_name(case.id, case.image)
            write_volume(label, path)
            pairs.append((case.id, path, case.label))
        per_case = evaluate_predictions(pairs, labels, declared=declared)["cases"]
        scores[ckpt] = {"cases": {cid: m["mean"] for cid, m in per_case.items()}}
    if mirror:
        scores["tta"] = True
    run["pool"] = scores
    return True


def pool_score_lines(methods: list[str], runs: list[dict], paired_rows: list[dict]) -> list[str]:
    """The report's section: each method's Dice and distances on the pool, then the paired gains there."""
    scored = [r for r in runs if "pool" in r]
    if not scored:
        return []
    n_cases = len(next(iter(scored))["pool"]["best"]["cases"])
    lines = ["## Segmenting the unlabeled pool", "",
             f"Each run's models segment the {n_cases} unlabeled cases, scored against labels that only this "
             "measurement reads (`--score-pool`): what a user gets on the scans they did not label. The "
             "semi-supervised methods trained on these images (without labels); twins and supervised never saw "
             "them. Mean ± std over seeds of each seed's mean over the pool.", "",
             "| method | checkpoint | seeds | Dice % | HD95 mm | ASD mm |", "|---|---|---|---|---|---|"]
    for method in methods:
        mruns = [r for r in scored if r["method"] == method]
        for ckpt in CHECKPOINTS if mruns else ():
            cells = [_fmt(mean_std(seed_means(mruns, ckpt, k, "pool")), scale)
                     for k, scale in (("dice", 100), ("hd95_mm", 1), ("asd_mm", 1))]
            lines.append(f"| {method} | {ckpt} | {len(mruns)} | " + " | ".join(cells) + " |")
    missing = sum("key" in r and "pool" not in r for r in runs)  # a peer tool's runs have no model of ours
    if missing:
        lines += ["", f"{missing} run(s) not scored: their models are not in this work folder."]
    if paired_rows:
        lines += ["", "Paired by seed on the pool (method − twin, method − supervised, Dice points):", "",
                  *paired_table(paired_rows)]
    return lines + [""]
