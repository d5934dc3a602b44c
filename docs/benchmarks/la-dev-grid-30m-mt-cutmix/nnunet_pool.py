"""nnU-Net v2's peer models segment the 12 la-dev pool cases, scored with our metrics beside the bench's own
pool predictions, each with and without keeping the largest connected component; and this report's test
predictions with it. Measurement only: the truth of the pool is read here, never in training.

Run from the repository root once the peer runs (`semiseg peer nnunet --work runs/peers/nnunet-1150it-2mm ...`,
their models kept under --work) and the bench runs (work folders under runs/bench) have finished, with nnU-Net
installed in runs/nnunet-venv:

    PYTHONPATH=SemiSegTogether .venv/bin/python docs/benchmarks/la-dev-grid-30m-mt-cutmix/nnunet_pool.py

It writes nnunet_pool.json beside itself (Dice per case, "plain" and "lcc", per run) and prints the means.
"""
import json
import os
import subprocess
from pathlib import Path

import numpy as np

from semiseg.infer import keep_largest_component
from semiseg.io import read_volume, write_volume
from semiseg.metrics import evaluate_predictions

DATA = Path("../shared/data/la-dev")
HERE = Path(__file__).parent
BENCH = Path("runs/bench")
ds = json.loads((DATA / "dataset.json").read_text())


def ids(split):
    return [Path(e["image"]).name.removesuffix(".nii.gz") for e in ds[split]]


def nnunet_pool_predictions(pool):
    """Runs nnU-Net's predictor (as `semiseg peer nnunet` does, mirroring) on the pool images; returns the folders."""
    images = Path("runs/peers/pool-images")
    if not images.is_dir():
        for cid in pool:
            write_volume(read_volume(DATA / "imagesUn" / f"{cid}.nii.gz"), images / f"{cid}_0000.nii.gz")
    folders = {}
    for work, iterations, seeds in (("runs/peers/nnunet-1150it-2mm", 1150, (0, 1, 2)),
                                    ("runs/peers/nnunet-400it-2mm", 400, (0,))):
        for seed in seeds:
            out = Path(work) / "pool-pred" / f"s{seed}"
            if not all((out / f"{c}.nii.gz").is_file() for c in pool):
                env = {**os.environ, "nnUNet_raw": f"{work}/nnUNet_raw",
                       "nnUNet_preprocessed": f"{work}/nnUNet_preprocessed",
                       "nnUNet_results": f"{work}/nnUNet_results-s{seed}"}
                subprocess.run(["runs/nnunet-venv/bin/python", "-m", "semiseg.peer_nnunet_runner", str(iterations),
                                "predict", "-i", str(images), "-o", str(out), "-d", "501", "-c", "3d_fullres",
                                "-f", "all", "-tr", f"nnUNetTrainer_{iterations}iters", "-p", "nnUNetPlans_2mm",
                                "-device", "cpu"], env=env, check=True, stdout=subprocess.DEVNULL)
            folders[f"nnunet-{iterations} s{seed}"] = out
    return folders


def dice_per_case(folder, cases, truth, lcc, scratch):
    pairs = []
    for cid in cases:
        path = next(p for p in Path(folder).iterdir() if p.name.startswith(cid))
        if lcc:
            vol = read_volume(path)
            path = write_volume(vol.with_array(keep_largest_component(np.asarray(vol.array))),
                                scratch / f"{cid}.nii.gz", overwrite=True)
        pairs.append((cid, path, truth / f"{cid}.nii.gz"))
    scored = evaluate_predictions(pairs, {"left atrium": 1}, declared={0, 1})["cases"]
    return {cid: m["mean"]["dice"] for cid, m in scored.items()}


pool, test = ids("unlabeled"), ids("test")
jobs = [(name, folder, pool, DATA / "labelsUn_truth") for name, folder in nnunet_pool_predictions(pool).items()]
for s in range(3):
    for name, folder in ((f"mt-cutmix s{s}", f"la-dev-grid-30m-mt-cutmix/predictions/mean-teacher-mix-cutmix-s{s}"),
                         (f"mt-shipped s{s}", f"la-dev-grid-30m-mt1/predictions/mean-teacher-rampup-1-s{s}"),
                         (f"mt-strong s{s}", f"la-dev-grid-30m-mt-strong/predictions/mean-teacher-s{s}"),
                         (f"supervised s{s}", f"la-dev-grid-30m-mt1/predictions/supervised-s{s}")):
        jobs.append((name, BENCH / folder / "pool-last", pool, DATA / "labelsUn_truth"))
    cutmix_test = BENCH / f"la-dev-grid-30m-mt-cutmix/predictions/mean-teacher-mix-cutmix-s{s}/last"
    jobs.append((f"test mt-cutmix s{s}", cutmix_test, test, DATA / "labelsTs"))
result = {}
for name, folder, cases, truth in jobs:
    scratch = Path("runs/peers/pool-lcc-tmp") / name.replace(" ", "-")
    result[name] = {kind: dice_per_case(folder, cases, truth, kind == "lcc", scratch) for kind in ("plain", "lcc")}
    print(name, *(round(100 * np.mean(list(result[name][k].values())), 1) for k in ("plain", "lcc")), flush=True)
(HERE / "nnunet_pool.json").write_text(json.dumps(result, indent=1) + "\n")
