"""The GPU measurement script (Testing/gpu/measure.sh) at a tiny size on the CPU: it writes its results.

Figures from a CPU mean nothing here; what is checked is that one call measures every part, writes
results.jsonl line by line and results.md, skips the reference clearly when no checkout is given, and runs
a reference checkout's code through its own command line (here a stand-in with UA-MT's interface: the real
one calls .cuda()). Also the h5 export the reference reads, and the log parsing its rate comes from.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from semiseg.datasets import load_dataset
from semiseg.export_la_h5 import UAMT_LABELED_SLOTS, UAMT_TRAIN_SLOTS, export_la_h5
from semiseg.io import read_label, read_volume

GPU_DIR = Path(__file__).resolve().parent / "gpu"
sys.path.insert(0, str(GPU_DIR))
import measure  # noqa: E402  (Testing/gpu/measure.py)

TINY = ["--device", "cpu", "--iterations", "3", "--warmup", "1", "--repeats", "1", "--patch", "16,16,16",
        "--volume-shape", "20,24,28", "--option", "n_filters=4"]


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]


def test_measure_sh_runs_in_one_call_and_writes_its_results(tmp_path):
    out = tmp_path / "results"
    env = {**os.environ, "PYTHON": sys.executable, "MEASURE_SECONDS": "500", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(GPU_DIR / "measure.sh"), "--out", str(out), *TINY,
                           "--methods", "supervised,mean-teacher", "--train-variants", "channels-last",
                           "--infer-variants", "cpu-preprocessing,sw-batch-1"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rs = records(out)
    kinds = [r["kind"] for r in rs]
    assert kinds[0] == "run" and kinds[-1] == "done"
    assert {"environment", "data", "train", "train-variant", "infer", "sampling"} <= set(kinds)
    (ref,) = [r for r in rs if r["kind"] == "reference-train"]
    assert ref["skipped"] == "no --reference checkout given"
    trains = {r["method"]: r for r in rs if r["kind"] == "train"}
    assert set(trains) == {"supervised", "mean-teacher"}
    for r in trains.values():
        assert r["iterations_per_second"] > 0 and r["timed_iterations"] == 2 and r["peak_memory_mb"] > 0
        assert r["options"] == {"n_filters": 4} and r["patch"] == [16, 16, 16]
    (variant,) = [r for r in rs if r["kind"] == "train-variant"]
    assert variant["fast_paths"]["channels_last"] is True and variant["iterations_per_second"] > 0
    infer = {r["variant"]: r for r in rs if r["kind"] == "infer"}
    assert set(infer) == {"default", "cpu-preprocessing", "sw-batch-1"}
    assert infer["default"]["volume_shape_zyx"] == [20, 24, 28] and infer["default"]["seconds_per_volume"] > 0
    for name in ("cpu-preprocessing", "sw-batch-1"):
        assert infer[name]["voxels_equal_to_default"] > 0.999, name  # the same labels, on a CPU
    md = (out / "results.md").read_text(encoding="utf-8")
    assert "skipped (no --reference checkout given)" in md and "| engine | mean-teacher |" in md
    assert "Finished in" in md and md.count("not measured on a GPU") == 3  # no goal is judged on a CPU


def test_a_run_cut_short_keeps_what_it_measured(tmp_path):
    out = tmp_path / "results"
    # A budget too small for any training run: everything after the data is recorded as skipped.
    assert measure.main(["--out", str(out), *TINY, "--budget", "20", "--methods", "supervised",
                         "--train-variants", "", "--infer-variants", ""]) == 0
    rs = records(out)
    assert [r["kind"] for r in rs][:3] == ["run", "environment", "data"]
    (train,) = [r for r in rs if r["kind"] == "train"]
    assert train["skipped"].startswith("time budget")
    assert "skipped (time budget" in (out / "results.md").read_text(encoding="utf-8")


# ---- the reference: a stand-in with UA-MT's interface ---------------------------------------------------
STAND_IN_TRAIN = '''
import argparse, logging, os, sys, time
import h5py, numpy as np
from tensorboardX import SummaryWriter  # stand-in when missing, as in the real script
from torchvision import transforms

parser = argparse.ArgumentParser()
parser.add_argument('--root_path', type=str, default='../data/2018LA_Seg_Training Set/')
parser.add_argument('--exp', type=str, default='UAMT_unlabel')
parser.add_argument('--max_iterations', type=int, default=6000)
args = parser.parse_args()
snapshot_path = "../model/" + args.exp + "/"
os.makedirs(snapshot_path, exist_ok=True)
logging.basicConfig(filename=snapshot_path + "/log.txt", level=logging.INFO,
                    format='[%(asctime)s.%(msecs)03d] %(message)s', datefmt='%H:%M:%S')
ids = open(args.root_path + '/../train.list').read().split()
assert len(ids) == 80, len(ids)
writer = SummaryWriter(snapshot_path + '/log')
for it in range(1, args.max_iterations + 1):
    with h5py.File(args.root_path + '/' + ids[it % 16] + '/mri_norm2.h5', 'r') as f:
        image = f['image'][:]
    time.sleep(0.02)
    writer.add_scalar('loss/loss', float(image.mean()), it)
    logging.info('iteration %d : loss : %f cons_dist: %f, loss_weight: %f' % (it, 0.5, 0.1, 0.01))
'''

STAND_IN_TEST_UTIL = '''
import numpy as np, torch
import nibabel, medpy.metric  # imported at the top of the real test_util.py

def test_single_case(net, image, stride_xy, stride_z, patch_size, num_classes=1):
    x = torch.from_numpy(image[None, None].astype(np.float32))
    return net(x).argmax(1)[0].numpy(), None
'''

STAND_IN_VNET = '''
import torch
class VNet(torch.nn.Module):
    def __init__(self, n_channels=3, n_classes=2, n_filters=16, normalization='none', has_dropout=False):
        super().__init__()
        self.conv = torch.nn.Conv3d(n_channels, n_classes, 3, padding=1)
    def forward(self, x):
        return self.conv(x)
'''


@pytest.fixture()
def stand_in_reference(tmp_path) -> Path:
    checkout = tmp_path / "UA-MT"
    (checkout / "code" / "networks").mkdir(parents=True)
    (checkout / "code" / measure.REFERENCE_SCRIPT).write_text(STAND_IN_TRAIN, encoding="utf-8")
    (checkout / "code" / "test_util.py").write_text(STAND_IN_TEST_UTIL, encoding="utf-8")
    (checkout / "code" / "networks" / "__init__.py").write_text("", encoding="utf-8")
    (checkout / "code" / "networks" / "vnet.py").write_text(STAND_IN_VNET, encoding="utf-8")
    return checkout


def test_the_reference_runs_through_its_own_command_line(tmp_path, stand_in_reference):
    out = tmp_path / "results"
    before = sorted(p.relative_to(stand_in_reference) for p in stand_in_reference.rglob("*"))
    assert measure.main(["--out", str(out), *TINY, "--iterations", "12", "--warmup", "2", "--reference",
                         str(stand_in_reference), "--methods", "", "--train-variants", "",
                         "--infer-variants", ""]) == 0
    rs = records(out)
    (ref,) = [r for r in rs if r["kind"] == "reference-train"]
    assert "error" not in ref, ref
    assert ref["iterations"] == 12 and ref["timed_iterations"] == 10
    assert 0 < ref["iterations_per_second"] < 60  # the stand-in sleeps 20 ms an iteration
    assert "--max_iterations 12" in ref["args"]
    infers = {r["name"]: r for r in rs if r["kind"] == "reference-infer"}
    assert set(infers) == {"grad on", "grad off"}
    for r in infers.values():
        assert r["seconds_per_volume"] > 0 and r["volume_shape_xyz"] == [28, 24, 20], r
    # The checkout itself is never written to (its code runs from a copy).
    assert sorted(p.relative_to(stand_in_reference) for p in stand_in_reference.rglob("*")) == before
    assert "| UA-MT |" in (out / "results.md").read_text(encoding="utf-8")


def test_reference_rate_from_its_log_across_midnight(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text("[23:59:59.000] Namespace(...)\n"
                   "[23:59:59.500] iteration 1 : loss : 1.0\n"
                   "[23:59:59.900] iteration 2 : loss : 1.0\n"
                   "[00:00:00.900] iteration 3 : loss : 1.0\n"
                   "[00:00:01.900] iteration 4 : loss : 1.0\n", encoding="utf-8")
    rate = measure.reference_rate(log, warmup=2)
    assert rate["iterations_per_second"] == pytest.approx(1.0)
    assert rate["timed_iterations"] == 2 and rate["iterations"] == 4


# ---- the h5 layout UA-MT reads ------------------------------------------------------------------------
def test_export_la_h5_is_the_inverse_of_the_la_converter(tiny_dataset, tmp_path):
    root = export_la_h5(tiny_dataset, tmp_path / "h5")
    train_ids = (tmp_path / "h5" / "train.list").read_text(encoding="utf-8").split()
    ds = load_dataset(tiny_dataset)
    assert len(train_ids) == UAMT_TRAIN_SLOTS
    assert set(train_ids[:UAMT_LABELED_SLOTS]) == {c.id for c in ds.training}
    assert set(train_ids[UAMT_LABELED_SLOTS:]) == {c.id for c in ds.unlabeled}
    assert root.name == "2018LA_Seg_Training Set" and not list(root.rglob(".*"))  # no temporary files left
    # What convert_la_h5 reads back: (x, y, z) arrays, gzip level 4 as UA-MT's own files.
    for case in [*ds.training, *ds.unlabeled, *ds.test]:
        image = read_volume(case.image)
        with h5py.File(root / case.id / "mri_norm2.h5", "r") as f:
            assert f["image"].compression == "gzip" and f["image"].dtype == np.float32
            np.testing.assert_array_equal(f["image"][()].transpose(2, 1, 0), image.array.astype(np.float32))
            label = f["label"][()].transpose(2, 1, 0)
        expected = read_label(case.label, image).array if case.label else np.zeros_like(label)
        np.testing.assert_array_equal(label, expected)


def test_stand_in_modules_are_listed_only_when_missing():
    code = textwrap.dedent("""
        import sys, json
        sys.path.insert(0, %r)
        import reference_runner
        used = reference_runner._stand_ins()
        from tensorboardX import SummaryWriter
        SummaryWriter('x').add_scalar('a', 1, 1)
        from torchvision import transforms
        assert transforms.Compose([lambda s: s + 1, lambda s: s * 2])(1) == 4
        print(json.dumps(used))
    """ % str(GPU_DIR))
    used = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                     check=True).stdout)
    for name in used:
        assert subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True).returncode != 0
