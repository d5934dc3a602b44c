"""A bench run's models scored on the test split, and scored again when the inference changes.

Training decides a run's key (semiseg.bench_resume); how its models predict does not. So a finished run asked for
with another inference (`--tta`, test-time mirroring) is scored again from its models in the work folder rather
than trained again: a benchmark of hours gets the new scores in minutes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from semiseg.datasets import Case, read_channels
from semiseg.errors import ConfigError
from semiseg.evaluate import evaluate_folder
from semiseg.infer import predict_volume
from semiseg.io import write_volume
from semiseg.model import load_model
from semiseg.predict_cases import prediction_name


def run_models(work: Path, tag: str) -> dict[str, Path]:
    """Checkpoint → model package of the run `tag` in the work folder (the last one is written beside the best)."""
    best = work / "models" / f"{tag}.semiseg"
    last = best.with_name(f"{tag}-last.semiseg")
    return {"best": best, "last": last if last.exists() else best}


def score_test(run: dict, models: dict[str, Path], cases: list[Case], data: Path, device: torch.device,
               pred_root: Path, overlap: float, lcc: bool, mirror: bool) -> None:
    """Sets run["checkpoints"][best | last] (predictions, inference seconds, metrics per case and label) and
    run["tta"] when the predictions were mirrored."""
    run["checkpoints"] = {}
    for ckpt, path in models.items():
        net, manifest = load_model(path, device)
        pred_dir = pred_root / ckpt
        shutil.rmtree(pred_dir, ignore_errors=True)  # an earlier scoring's (the engine's own files)
        seconds = []
        for case in cases:
            label, stats = predict_volume(net, manifest, read_channels(case), device, overlap=overlap, lcc=lcc,
                                          mirror=mirror)
            write_volume(label, pred_dir / prediction_name(case.id, case.image))
            seconds.append(stats["seconds"])
        metrics = evaluate_folder(pred_dir, data, split="test")
        run["checkpoints"][ckpt] = {"predictions": str(pred_dir), "infer_seconds_per_volume": float(np.mean(seconds)),
                                    "cases": {cid: m["mean"] for cid, m in metrics["cases"].items()},
                                    "per_label": {cid: {k: v for k, v in m.items() if k != "mean"}
                                                  for cid, m in metrics["cases"].items()}}
    if mirror:
        run["tta"] = True
    else:
        run.pop("tta", None)


def rescored(run: dict, models: dict[str, Path], cases: list[Case], data: Path, device: torch.device,
             pred_root: Path, overlap: float, lcc: bool, mirror: bool) -> bool:
    """Scores a finished run again if it was scored with the other `mirror`; True if it was. Its pool scores, made
    with the old inference, are dropped (`--score-pool` makes them again)."""
    if bool(run.get("tta")) == mirror:
        return False
    missing = [str(m) for m in models.values() if not Path(m).exists()]
    if missing:
        raise ConfigError(f"{missing[0]}: {run['method']} seed {run['seed']} was scored "
                          f"{'without' if mirror else 'with'} --tta and its model is not in the work folder to score "
                          f"it again (give the --workdir that trained it, or run it again with --overwrite)")
    score_test(run, models, cases, data, device, pred_root, overlap, lcc, mirror)
    run.pop("pool", None)
    return True
