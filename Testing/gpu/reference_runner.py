#!/usr/bin/env python3
"""Runs UA-MT's own code (github yulequan/UA-MT, code/ folder) unchanged, in a process of its own.

    reference_runner.py train --code DIR --root H5ROOT --iterations N --report JSON
    reference_runner.py infer --code DIR --h5 FILE --repeats N --report JSON [--no-grad]

train: `train_LA_meanteacher_certainty_unlabel.py --root_path H5ROOT --max_iterations N` through runpy, so
its source is untouched; at exit the process's peak GPU memory is written to the report (its rate comes
from the script's own log.txt). infer: its VNet (as test_LA.py builds it, random weights: timing does not
depend on them) and `test_util.test_single_case(net, image, 18, 4, (112, 112, 80), num_classes=2)` on one
h5 image, timed per call.

Modules the script imports but this machine lacks (tensorboardX, nibabel, medpy; torchvision, skimage)
are replaced by stand-ins that do nothing the measured work depends on (a SummaryWriter that writes
nothing, an identity make_grid); the report lists them.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import json
import os
import runpy
import statistics
import sys
import time
import types
from pathlib import Path

SCRIPT = "train_LA_meanteacher_certainty_unlabel.py"


def _stand_ins() -> list[str]:
    """Install a stand-in for each module the reference imports that is missing here; return their names."""
    used = []

    def missing(name: str) -> bool:
        try:
            importlib.import_module(name)
            return False
        except ImportError:
            return True

    if missing("tensorboardX"):
        class SummaryWriter:  # writes nothing: the measured loop's cost without TensorBoard files
            def __init__(self, *args, **kwargs):
                pass

            def __getattr__(self, name):
                return lambda *args, **kwargs: None

        sys.modules["tensorboardX"] = types.ModuleType("tensorboardX")
        sys.modules["tensorboardX"].SummaryWriter = SummaryWriter
        used.append("tensorboardX")
    if missing("torchvision"):
        class Compose:
            def __init__(self, transforms):
                self.transforms = transforms

            def __call__(self, sample):
                for t in self.transforms:
                    sample = t(sample)
                return sample

        tv = types.ModuleType("torchvision")
        tv.transforms = types.ModuleType("torchvision.transforms")
        tv.transforms.Compose = Compose
        tv.utils = types.ModuleType("torchvision.utils")
        tv.utils.make_grid = lambda tensor, *args, **kwargs: tensor
        sys.modules.update({"torchvision": tv, "torchvision.transforms": tv.transforms, "torchvision.utils": tv.utils})
        used.append("torchvision")
    for name, children in (("skimage", ("measure",)), ("nibabel", ()), ("medpy", ("metric",))):
        if missing(name):
            module = types.ModuleType(name)
            for child in children:
                sub = types.ModuleType(f"{name}.{child}")
                setattr(module, child, sub)
                sys.modules[f"{name}.{child}"] = sub
            sys.modules[name] = module
            used.append(name)
    return used


def _cuda_peaks() -> dict:
    import torch
    if not torch.cuda.is_available():
        return {"peak_memory_mb": None, "peak_memory_kind": "no CUDA"}
    return {"peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
            "peak_reserved_mb": round(torch.cuda.max_memory_reserved() / 2**20, 1),
            "peak_memory_kind": "GPU, torch max_memory_allocated (whole process)"}


def _write(report: Path, data: dict) -> None:
    tmp = report.with_name(f".{report.name}.tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, report)


def train(args) -> None:
    code = Path(args.code).resolve()
    shims = _stand_ins()
    os.chdir(code)
    sys.path.insert(0, str(code))
    sys.argv = [SCRIPT, "--root_path", str(Path(args.root).resolve()) + "/", "--max_iterations", str(args.iterations)]
    start = time.perf_counter()
    atexit.register(lambda: _write(Path(args.report), {"shims": shims, "wall_seconds": round(
        time.perf_counter() - start, 2), **_cuda_peaks()}))
    runpy.run_path(str(code / SCRIPT), run_name="__main__")


def infer(args) -> None:
    import h5py
    import torch
    code = Path(args.code).resolve()
    shims = _stand_ins()
    os.chdir(code)
    sys.path.insert(0, str(code))
    from networks.vnet import VNet
    from test_util import test_single_case

    device = "cuda" if torch.cuda.is_available() else "cpu"
    net = VNet(n_channels=1, n_classes=2, normalization="batchnorm", has_dropout=False).to(device)
    net.eval()
    with h5py.File(args.h5, "r") as f:
        image = f["image"][:]
    times = []
    context = torch.no_grad if args.no_grad else torch.enable_grad
    for _ in range(1 + args.repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with context():
            test_single_case(net, image, 18, 4, (112, 112, 80), num_classes=2)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    w, h, d = image.shape
    windows = ((-(-(w - 112) // 18) + 1) if w > 112 else 1) * ((-(-(h - 112) // 18) + 1) if h > 112 else 1) * \
              ((-(-(d - 80) // 4) + 1) if d > 80 else 1)
    _write(Path(args.report), {"first_call_seconds": round(times[0], 3),
                               "seconds_per_volume": round(statistics.median(times[1:] or times), 3),
                               "repeats": args.repeats, "volume_shape_xyz": list(image.shape), "windows": windows,
                               "shims": shims, "device": device, **_cuda_peaks()})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    t = sub.add_parser("train")
    t.add_argument("--code", required=True)
    t.add_argument("--root", required=True)
    t.add_argument("--iterations", type=int, required=True)
    t.add_argument("--report", required=True)
    i = sub.add_parser("infer")
    i.add_argument("--code", required=True)
    i.add_argument("--h5", required=True)
    i.add_argument("--repeats", type=int, default=3)
    i.add_argument("--no-grad", action="store_true")
    i.add_argument("--report", required=True)
    args = p.parse_args()
    train(args) if args.what == "train" else infer(args)


if __name__ == "__main__":
    main()
