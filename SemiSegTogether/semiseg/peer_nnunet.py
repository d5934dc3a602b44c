"""`semiseg peer nnunet`: what a user would pick instead, as a row of `semiseg bench`.

Converts the dataset to nnU-Net v2's raw layout (`semiseg.peer_nnunet_layout`), runs nnU-Net's own planning
and preprocessing, trains one of its fixed-length trainers (`nnUNetTrainer_<N>epochs`, 250 iterations per
epoch) or, to match a wall time between them, one epoch of N iterations (`semiseg.peer_nnunet_runner`) on the
labeled cases our methods train on, predicts the test cases, and scores them with OUR metrics
(`semiseg evaluate`). The result is a JSON file of runs in `semiseg bench`'s format; `semiseg bench --peer
FILE` puts them in its report. Needs `pip install -e .[peers]` (nnunetv2); nothing in the test suite runs it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from semiseg.atomic import atomic_path
from semiseg.datasets import load_dataset
from semiseg.errors import ConfigError
from semiseg.evaluate import evaluate_folder
from semiseg.events import _clean
from semiseg.peer_nnunet_layout import from_nnunet_predictions, nnunet_name, to_nnunet_raw
from semiseg.peer_nnunet_runner import trainer_name

# nnU-Net v2's fixed-length trainers (nnunetv2/training/nnUNetTrainer/variants/training_length).
EPOCH_TRAINERS = {1: "nnUNetTrainer_1epoch", 5: "nnUNetTrainer_5epochs", 10: "nnUNetTrainer_10epochs",
                  20: "nnUNetTrainer_20epochs", 50: "nnUNetTrainer_50epochs", 100: "nnUNetTrainer_100epochs",
                  250: "nnUNetTrainer_250epochs", 500: "nnUNetTrainer_500epochs", 750: "nnUNetTrainer_750epochs",
                  1000: "nnUNetTrainer"}
COMMANDS = ("nnUNetv2_plan_and_preprocess", "nnUNetv2_train", "nnUNetv2_predict")


def plans(target_spacing: float | None) -> tuple[list[str], list[str], str]:
    """(planning flags, the flags that name the plans to train and predict with, a label for the report).

    nnU-Net plans the la-dev images at their own 0.625 mm as one patch of 96×128×192 voxels, 27 times its 2 mm
    patch (an estimate of the cost, not a measured one). `target_spacing` is nnU-Net's own
    `-overwrite_target_spacing`, saved under its own plans name so that the default plans stay as they are;
    nnU-Net still chooses the patch, batch, network and normalisation, and resamples its predictions back to
    each image's grid."""
    if target_spacing is None:
        return [], [], "its own spacing"
    if not target_spacing > 0:
        raise ConfigError(f"--target-spacing {target_spacing:g}: must be a positive number of millimetres")
    name = f"nnUNetPlans_{target_spacing:g}mm".replace(".", "p")
    return (["-overwrite_target_spacing", *[f"{target_spacing:g}"] * 3, "-overwrite_plans_name", name],
            ["-p", name], f"{target_spacing:g} mm")


def _run(command: list[str], env: dict, log: Path) -> float:
    """Run one nnU-Net command, its output appended to `log`; returns its wall time in seconds."""
    start = time.perf_counter()
    with log.open("a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        done = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        what = f"nnU-Net {command[4]}" if command[0] == sys.executable else command[0]
        raise ConfigError(f"{what} failed (exit {done.returncode}); its output is in {log}")
    return time.perf_counter() - start


def _trainer(epochs: int, iterations: int | None) -> tuple[str, list[str], list[str], int]:
    """(trainer name, train command, predict command, training iterations) for --epochs or --iterations."""
    if iterations is not None:
        if iterations < 1:
            raise ConfigError(f"--iterations {iterations}: must be at least 1")
        runner = [sys.executable, "-m", "semiseg.peer_nnunet_runner", str(iterations)]
        return trainer_name(iterations), [*runner, "train"], [*runner, "predict"], iterations
    if epochs not in EPOCH_TRAINERS:
        raise ConfigError(f"--epochs {epochs}: nnU-Net v2 has trainers for {sorted(EPOCH_TRAINERS)} epochs")
    return EPOCH_TRAINERS[epochs], ["nnUNetv2_train"], ["nnUNetv2_predict"], epochs * 250


def run_peer_nnunet(args) -> Path:
    missing = [c for c in COMMANDS if shutil.which(c) is None]
    if missing:
        raise ConfigError(f"nnU-Net v2 is not installed ({', '.join(missing)} not on PATH): "
                          f"pip install -e '.[peers]'")
    trainer, train, predict, iterations = _trainer(args.epochs, getattr(args, "iterations", None))
    ds = load_dataset(Path(args.data))
    work, out = Path(args.work), Path(args.out)
    if out.exists() and not args.overwrite:
        raise ConfigError(f"{out}: exists (pass --overwrite or choose another --out)")
    config = args.configuration
    spacing = getattr(args, "target_spacing", None)  # a namespace built without the CLI may lack it
    plan_flags, plans_flags, grid = plans(spacing)
    name = nnunet_name(args.dataset_id, ds.name)
    raw = work / "nnUNet_raw"
    if not (raw / name / "dataset.json").is_file():
        to_nnunet_raw(ds, raw, args.dataset_id)
    log = work / "nnunet.log"
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "nnUNet_raw": str(raw), "nnUNet_preprocessed": str(work / "nnUNet_preprocessed"),
           "nnUNet_n_proc_DA": str(args.workers)}
    plan_seconds = _run(["nnUNetv2_plan_and_preprocess", "-d", str(args.dataset_id), "-c", config,
                         "--verify_dataset_integrity", "-np", str(args.workers), *plan_flags], env, log)
    runs = []
    for seed in [int(s) for s in args.seeds.split(",") if s]:
        # nnU-Net takes no seed: each "seed" is an independent repeat with its own results folder.
        env_seed = {**env, "nnUNet_results": str(work / f"nnUNet_results-s{seed}")}
        train_seconds = _run([*train, str(args.dataset_id), config, "all", "-tr", trainer, *plans_flags,
                              "-device", args.device], env_seed, log)
        raw_pred = work / "predictions-raw" / f"s{seed}"
        shutil.rmtree(raw_pred, ignore_errors=True)
        infer_seconds = _run([*predict, "-i", str(raw / name / "imagesTs"), "-o", str(raw_pred),
                              "-d", str(args.dataset_id), "-c", config, "-f", "all", "-tr", trainer,
                              *plans_flags, "-device", args.device], env_seed, log)
        pred_dir = from_nnunet_predictions(ds, raw_pred, work / "predictions" / f"s{seed}")
        metrics = evaluate_folder(pred_dir, Path(args.data), split="test")
        scored = {"predictions": str(pred_dir), "infer_seconds_per_volume": infer_seconds / max(1, len(ds.test)),
                  "cases": {cid: m["mean"] for cid, m in metrics["cases"].items()},
                  "per_label": {cid: {k: v for k, v in m.items() if k != "mean"}
                                for cid, m in metrics["cases"].items()}}
        runs.append({"method": f"nnunet-v2 ({trainer}, {config}, {grid})", "seed": seed,
                     "options": {"peer": "nnunetv2", "target_spacing": spacing},
                     "train_seconds": train_seconds, "plan_seconds": plan_seconds,
                     "iterations": iterations, "iterations_per_second": float("nan"),
                     "peak_memory_mb": float("nan"), "best_iteration": None, "best_validation_dice": None,
                     "last_validation_dice": None, "validation_curve": [],
                     # nnU-Net's final checkpoint under both of bench's rules (fold "all" has no validation).
                     "checkpoints": {"best": scored, "last": scored}})
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, ".json") as tmp:
        tmp.write_text(json.dumps(_clean({"peer": "nnunetv2", "trainer": trainer, "configuration": config,
                                          "data": str(args.data), "runs": runs}), indent=2) + "\n",
                       encoding="utf-8")
    mean = np.mean([np.mean([c["dice"] for c in r["checkpoints"]["last"]["cases"].values()]) for r in runs])
    print(f"nnU-Net v2 peer: {len(runs)} run(s), mean test Dice {100 * mean:.1f} %; add it to a report with "
          f"`semiseg bench ... --peer {out}`")
    return out


__all__ = ["run_peer_nnunet", "EPOCH_TRAINERS", "plans"]
