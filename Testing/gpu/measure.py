#!/usr/bin/env python3
"""GPU speed and memory of the engine, side by side with the authors' UA-MT code on the same machine.

    python Testing/gpu/measure.py [--reference UA-MT-CHECKOUT] [--data LA-DATASET] [--out docs/benchmarks/gpu]

Measures, in this order (most wanted first, so a run cut short still has them):
  1. the machine (GPU, driver, PyTorch, bf16 support, free memory);
  2. training iterations per second and peak GPU memory of UA-MT's own loop,
     `code/train_LA_meanteacher_certainty_unlabel.py` of github yulequan/UA-MT, run unchanged but for its
     --root_path and --max_iterations, on our images written in its h5 layout (semiseg.export_la_h5);
  3. the same for every engine method at the LA protocol: patch 80×112×112 (d, h, w), 2 labeled + 2
     unlabeled patches a step, with the default fast paths;
  4. inference seconds per full-resolution LA volume and peak memory: `semiseg predict`'s path
     (predict_volume) and UA-MT's `test_single_case` (stride 18/4, patch 112×112×80, as its test_LA.py);
  5. the fast paths one at a time on Mean Teacher (fp32, fp16, channels_last, torch.compile, no cuDNN
     autotuning) and on inference, so that their defaults can be set from numbers;
  6. the CPU cost of the engine's patch sampling (what a GPU step waits for).

Every result is appended to results.jsonl the moment it exists and results.md is rewritten from it, so
a run that is cut short keeps what it measured. --budget (seconds) stops starting new measurements when
the next one would not fit. The UA-MT checkout is never changed: its code/ folder is copied into the
work folder and run there. Without --reference that part is recorded as skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REFERENCE_SCRIPT = "train_LA_meanteacher_certainty_unlabel.py"
LA_PATCH = (80, 112, 112)  # (d, h, w); UA-MT's (112, 112, 80) in its (x, y, z) order
METHODS = ("supervised", "mean-teacher", "ad", "versemi", "dual-contrast")
TRAIN_VARIANTS = ("fp32", "fp16", "channels-last", "no-cudnn-benchmark", "compile")  # compile: slowest, last
INFER_VARIANTS = ("fp32", "channels-last", "cpu-preprocessing", "sw-batch-1")
# Rough seconds each part needs on a GPU, to decide whether it still fits in the budget.
ESTIMATE_S = {"reference-train": 75, "train": 25, "compile": 90, "infer": 15, "reference-infer": 40,
              "sampling": 10, "data": 30}


# ---- results: one JSON line each, and a Markdown report rewritten after every line ------------------------
class Results:
    def __init__(self, out: Path, budget_s: float, header: dict):
        self.out, self.start, self.budget = out, time.monotonic(), budget_s
        out.mkdir(parents=True, exist_ok=True)
        self.jsonl, self.md = out / "results.jsonl", out / "results.md"
        self.records: list[dict] = []
        self.jsonl.write_text("", encoding="utf-8")
        self.add({"kind": "run", **header})

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.start)

    def fits(self, part: str, scale: float = 1.0) -> bool:
        return self.left() > ESTIMATE_S[part] * scale

    def add(self, record: dict) -> dict:
        record = {**record, "at_s": round(time.monotonic() - self.start, 1)}
        self.records.append(record)
        with open(self.jsonl, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        _write_atomically(self.md, render_markdown(self.records))
        print(f"[measure {record['at_s']:6.1f} s] {json.dumps(record)}", flush=True)
        return record

    def skip(self, kind: str, name: str, why: str) -> dict:
        return self.add({"kind": kind, "name": name, "skipped": why})

    def attempt(self, kind: str, name: str, part: str, fn, scale: float = 1.0) -> dict | None:
        """Run one measurement if it fits; its exception becomes an 'error' record, not the end of the run."""
        if not self.fits(part, scale):
            return self.skip(kind, name, f"time budget: {self.left():.0f} s left, needs about "
                                         f"{ESTIMATE_S[part] * scale:.0f} s")
        try:
            return self.add({"kind": kind, "name": name, **fn()})
        except Exception as exc:  # one failed measurement must not lose the others
            return self.add({"kind": kind, "name": name, "error": f"{type(exc).__name__}: {exc}"[:2000]})
        finally:
            _release_gpu_memory()


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _release_gpu_memory() -> None:
    import gc
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---- the machine ----------------------------------------------------------------------------------------------
def environment(device: torch.device) -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "device": str(device),
           "cpu_count": os.cpu_count(), "platform": platform.platform()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        free, total = torch.cuda.mem_get_info(device)
        env.update(gpu=props.name, capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version(), gpu_memory_gb=round(total / 2**30, 1),
                   free_memory_gb=round(free / 2**30, 1),
                   bf16=torch.cuda.is_bf16_supported(including_emulation=False))
        try:
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return env


# ---- data ------------------------------------------------------------------------------------------------------
def prepare_data(args, work: Path) -> tuple[Path, dict]:
    """The engine dataset to train on: --data, or LA-sized phantoms made here."""
    if args.data:
        return Path(args.data), {"data": "given", "path_name": Path(args.data).name}
    from semiseg.synthetic import make_dataset
    shape = tuple(args.volume_shape)
    path = make_dataset(work / "phantoms", n_labeled=2, n_unlabeled=2, n_test=1, shape=shape, seed=0,
                        overwrite=True)
    return path, {"data": "synthetic phantoms (semiseg synthetic)", "shape_zyx": list(shape)}


def describe_data(path: Path) -> dict:
    from semiseg.datasets import load_dataset
    from semiseg.io import read_volume
    ds = load_dataset(path)
    test = (ds.test or ds.training)[0]
    vol = read_volume(test.image)
    return {"labeled": len(ds.training), "unlabeled": len(ds.unlabeled), "test": len(ds.test),
            "inference_case": test.id, "inference_shape_zyx": list(vol.array.shape),
            "inference_spacing_xyz": list(vol.spacing)}


# ---- engine training -------------------------------------------------------------------------------------------
def steady_rate(events: Path, warmup: int) -> dict:
    """Iterations/s between iteration `warmup` and the last, from the events' wall-clock stamps."""
    its = []
    start = None
    for line in events.read_text(encoding="utf-8").splitlines():
        e = json.loads(line)
        if e["event"] == "start":
            start = e["time"]
        elif e["event"] == "iteration":
            its.append((e["iteration"], e["time"]))
    if not its:
        raise RuntimeError(f"{events}: no iteration events")
    first_t = its[0][1]
    base = next(((i, t) for i, t in its if i >= warmup), its[0])
    last_it, last_t = its[-1]
    rate = (last_it - base[0]) / (last_t - base[1]) if last_t > base[1] else float("nan")
    return {"iterations_per_second": round(rate, 3), "timed_iterations": last_it - base[0],
            "first_iteration_seconds": round(first_t - start, 3) if start is not None else None,
            "warmup_iterations": base[0]}


def engine_training(method: str, data: Path, work: Path, args, fast) -> dict:
    from semiseg.train import TrainConfig, train
    options = method_options(method, args.option)
    tag = f"{method}-{len(list(work.glob('*.jsonl')))}"
    events = work / f"{tag}.jsonl"
    cfg = TrainConfig(data=str(data), out=str(work / f"{tag}.semiseg"), method=method,
                      method_options=dict(options or {}), iterations=args.iterations, batch_labeled=2,
                      batch_unlabeled=2, patch=list(args.patch), device=args.device, val_cases=0,
                      workdir=str(work / f"{tag}.work"), events=str(events), progress=False, overwrite=True,
                      fast=fast)
    result = train(cfg)
    device = torch.device(result_device(args.device))
    record = {"method": method, "options": dict(options or {}), "patch": list(args.patch),
              "batch": "2 labeled + 2 unlabeled", "fast_paths": fast.describe(device),
              **steady_rate(events, args.warmup), "iterations": result.iterations,
              "peak_memory_mb": round(result.peak_memory_mb, 1),
              "peak_memory_kind": "GPU, torch max_memory_allocated" if device.type == "cuda" else "CPU process RSS",
              "model": str(result.model)}
    if device.type == "cuda":
        record["peak_reserved_mb"] = round(torch.cuda.max_memory_reserved(device) / 2**20, 1)
    return record


def method_options(method: str, pairs: list[str]) -> dict:
    """--option KEY=VALUE for the methods that take KEY (e.g. n_filters for a small test run)."""
    from semiseg.methods import method_class
    known = method_class(method).defaults
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key in known:
            out[key] = json.loads(value)
    return out


def result_device(name: str) -> str:
    from semiseg.devices import resolve_device
    return str(resolve_device(name))


def train_variant(name: str):
    from semiseg.fastpaths import FastPaths
    return {"default": FastPaths(), "fp32": FastPaths(precision="fp32"), "fp16": FastPaths(precision="fp16"),
            "channels-last": FastPaths(channels_last=True), "compile": FastPaths(compile=True),
            "no-cudnn-benchmark": FastPaths(cudnn_benchmark=False)}[name]


def patch_sampling(data: Path, args) -> dict:
    """CPU seconds to draw one labeled + one unlabeled batch (with the default augmentation)."""
    from semiseg.datasets import load_dataset
    from semiseg.prepare import LabelSpace, prepare_case
    from semiseg.sampling import PatchStream
    from semiseg.transforms import Preprocessing
    ds = load_dataset(data)
    space, prep = LabelSpace.from_dataset(ds), Preprocessing()
    labeled = PatchStream([prepare_case(k, prep, space, True) for k in ds.training[:4]], args.patch, 2, seed=0)
    unlabeled = PatchStream([prepare_case(k, prep, space, False) for k in (ds.unlabeled or ds.training)[:4]],
                            args.patch, 2, seed=1, fg_ratio=0.0, with_labels=False)
    next(labeled), next(unlabeled)
    n = max(2, args.iterations // 2)
    start = time.perf_counter()
    for _ in range(n):
        next(labeled), next(unlabeled)
    seconds = (time.perf_counter() - start) / n
    return {"seconds_per_step": round(seconds, 4), "steps": n, "augment": "standard",
            "note": "drawn in the training process, before each step; a step cannot run faster than this"}


# ---- engine inference ------------------------------------------------------------------------------------------
def infer_variant(name: str) -> dict:
    from semiseg.fastpaths import FastPaths
    return {"default": {}, "fp32": {"fast": FastPaths(precision="fp32")},
            "channels-last": {"fast": FastPaths(channels_last=True)},
            "cpu-preprocessing": {"preprocess_on_device": False}, "sw-batch-1": {"sw_batch_size": 1}}[name]


def engine_inference(model: Path | None, data: Path, args, variant: str, reference_labels: dict) -> dict:
    """predict_volume on the first test case: a first call (cuDNN autotuning, allocator warm-up), then
    `repeats` timed calls; each call loads the model afresh, so a variant cannot leak into the next."""
    from semiseg.datasets import load_dataset
    from semiseg.infer import predict_volume, window_count
    from semiseg.io import read_volume
    device = torch.device(result_device(args.device))
    ds = load_dataset(data)
    vol = read_volume((ds.test or ds.training)[0].image)
    times, stats, label, patch = [], {}, None, None
    for _ in range(1 + args.repeats):
        net, manifest = _inference_model(model, device, args)
        patch = manifest["patch_size"]
        label, stats = predict_volume(net, manifest, vol, device, **infer_variant(variant))
        times.append(stats["seconds"])
    record = {"variant": variant, "first_call_seconds": round(times[0], 3),
              "seconds_per_volume": round(statistics.median(times[1:] or times), 3), "repeats": args.repeats,
              "volume_shape_zyx": list(vol.array.shape), "patch": patch,
              "windows": window_count(vol.array.shape, patch, 0.5), "overlap": 0.5,
              "includes": "preprocessing, sliding window, resampling back, labels to the CPU; not the file read",
              **{k: v for k, v in stats.items() if k != "seconds"}}
    if variant == "default":
        reference_labels["default"] = label.array
    elif "default" in reference_labels:
        record["voxels_equal_to_default"] = round(float((label.array == reference_labels["default"]).mean()), 6)
    return record


def _inference_model(model: Path | None, device: torch.device, args):
    """The mean-teacher model trained above (its weights make the labels meaningful); else a fresh V-Net."""
    from semiseg.model import load_model
    if model is not None and Path(model).exists():
        return load_model(model, device)
    from semiseg.nets import build_network
    net = build_network("vnet", in_channels=1, n_classes=2, n_filters=16)
    manifest = {"labels": [{"name": "left atrium", "value": 1}], "tasks": [], "prompted": False,
                "patch_size": list(args.patch), "preprocessing": {"spacing": None, "intensity": "zscore"}}
    return net, manifest


# ---- the reference (UA-MT) -------------------------------------------------------------------------------------
def reference_code(checkout: Path, work: Path) -> Path:
    """A copy of the checkout's code/ folder in `work` (the script writes ../model/ beside its folder)."""
    src = checkout / "code" if (checkout / "code").is_dir() else checkout
    if not (src / REFERENCE_SCRIPT).is_file():
        raise FileNotFoundError(f"{checkout}: no {REFERENCE_SCRIPT} in it or in its code/ folder")
    dst = work / "uamt" / "code"
    shutil.rmtree(dst.parent, ignore_errors=True)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".git", "__pycache__"))
    return dst


LOG_LINE = re.compile(r"^\[(\d\d):(\d\d):(\d\d)\.(\d{3})\] iteration (\d+) :")


def reference_rate(log: Path, warmup: int) -> dict:
    """Iterations/s from UA-MT's log.txt ('[HH:MM:SS.mmm] iteration N : loss ...')."""
    stamps, previous, day = [], None, 0.0
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        m = LOG_LINE.match(line)
        if not m:
            continue
        h, mi, s, ms, it = (int(g) for g in m.groups())
        t = h * 3600 + mi * 60 + s + ms / 1000 + day
        if previous is not None and t < previous:  # past midnight
            day += 86400
            t += 86400
        previous = t
        stamps.append((it, t))
    if len(stamps) < 2:
        raise RuntimeError(f"{log}: fewer than 2 iteration lines")
    base = next(((i, t) for i, t in stamps if i >= warmup), stamps[0])
    last = stamps[-1]
    return {"iterations_per_second": round((last[0] - base[0]) / max(last[1] - base[1], 1e-3), 3),
            "timed_iterations": last[0] - base[0], "warmup_iterations": base[0], "iterations": last[0]}


def reference_training(checkout: Path, data: Path, work: Path, args) -> dict:
    from semiseg.export_la_h5 import export_la_h5
    code = reference_code(checkout, work)
    root = export_la_h5(data, work / "uamt" / "data")
    report = work / "uamt" / "train-report.json"
    cmd = [sys.executable, str(HERE / "reference_runner.py"), "train", "--code", str(code), "--root", str(root),
           "--iterations", str(args.iterations), "--report", str(report)]
    proc = _run(cmd, code, timeout=max(30.0, args.reference_timeout))
    log = code.parent / "model" / "UAMT_unlabel" / "log.txt"
    if proc.returncode != 0 and not log.exists():
        raise RuntimeError(f"UA-MT training exited with {proc.returncode}: {proc.stdout[-1500:]}")
    record = {"script": f"code/{REFERENCE_SCRIPT}", "args": f"--root_path <data> --max_iterations {args.iterations}",
              "patch": "112x112x80 (x, y, z)", "batch": "2 labeled + 2 unlabeled", **reference_rate(log, args.warmup)}
    if report.exists():
        record.update(json.loads(report.read_text(encoding="utf-8")))
    if proc.returncode != 0:
        record["exit_code"] = proc.returncode
    return record


def reference_inference(checkout: Path, data: Path, work: Path, args, no_grad: bool) -> dict:
    code = work / "uamt" / "code"
    if not code.is_dir():
        code = reference_code(checkout, work)
    case = _first_h5(work / "uamt" / "data", data, work)
    report = work / "uamt" / f"infer-report-{int(no_grad)}.json"
    cmd = [sys.executable, str(HERE / "reference_runner.py"), "infer", "--code", str(code), "--h5", str(case),
           "--repeats", str(args.repeats), "--report", str(report)] + (["--no-grad"] if no_grad else [])
    proc = _run(cmd, code, timeout=max(30.0, args.reference_timeout))
    if proc.returncode != 0 or not report.exists():
        raise RuntimeError(f"UA-MT test_single_case exited with {proc.returncode}: {proc.stdout[-1500:]}")
    return {"function": "test_util.test_single_case", "stride_xy": 18, "stride_z": 4,
            "patch": "112x112x80 (x, y, z)", "grad": "off (torch.no_grad)" if no_grad else
            "on, as test_LA.py calls it", **json.loads(report.read_text(encoding="utf-8"))}


def _first_h5(h5_root: Path, data: Path, work: Path) -> Path:
    """The h5 file of the same case the engine's inference measures."""
    from semiseg.convert import LA_CASES_FOLDER, LA_H5_NAME
    from semiseg.datasets import load_dataset
    ds = load_dataset(data)
    case = (ds.test or ds.training)[0]
    path = h5_root / LA_CASES_FOLDER / case.id / LA_H5_NAME
    if not path.exists():
        from semiseg.export_la_h5 import export_la_h5
        export_la_h5(data, h5_root)
    return path


def _run(cmd: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return subprocess.CompletedProcess(cmd, -9, stdout=out + f"\n(stopped after {timeout:.0f} s)", stderr="")


# ---- the report ------------------------------------------------------------------------------------------------
def _gb(mb) -> str:
    return "–" if mb is None else f"{mb / 1024:.2f}"


def _peak(r: dict) -> str:
    """Peak GPU memory in GB; a CPU run's resident memory is marked as such."""
    if r.get("peak_memory_kind", "GPU").startswith("GPU"):
        return _gb(r.get("peak_memory_mb"))
    return f"({_gb(r.get('peak_memory_mb'))} CPU RSS)"


def _outcome(r: dict) -> str:
    return r.get("skipped") and f"skipped ({r['skipped']})" or r.get("error") and f"error: {r['error'][:160]}" or ""


def render_markdown(records: list[dict]) -> str:
    run = next((r for r in records if r["kind"] == "run"), {})
    env = next((r for r in records if r["kind"] == "environment"), {})
    lines = ["# GPU measurements (written by Testing/gpu/measure.py)", "",
             f"- Command: `{run.get('command', '')}`", f"- Started (UTC): {run.get('started_utc', '')}"]
    for key in ("gpu", "capability", "gpu_memory_gb", "driver", "cuda", "cudnn", "torch", "bf16", "device",
                "cpu_count"):
        if key in env:
            lines.append(f"- {key}: {env[key]}")
    data = next((r for r in records if r["kind"] == "data"), None)
    if data:
        lines.append(f"- Data: {json.dumps({k: v for k, v in data.items() if k not in ('kind', 'at_s')})}")
    lines += ["", "## Training: iterations per second and peak memory", "",
              "| code | method | fast paths | it/s (steady) | first iteration s | peak allocated GB | "
              "peak reserved GB | note |", "|---|---|---|---|---|---|---|---|"]
    ref = next((r for r in records if r["kind"] == "reference-train" and "iterations_per_second" in r), None)
    for r in records:
        if r["kind"] == "reference-train":
            lines.append(f"| UA-MT | {REFERENCE_SCRIPT} | fp32, as released | {r.get('iterations_per_second', '–')} "
                         f"| – | {_peak(r)} | {_gb(r.get('peak_reserved_mb'))} | "
                         f"{_outcome(r)}{' shims: ' + ', '.join(r['shims']) if r.get('shims') else ''} |")
        elif r["kind"] in ("train", "train-variant"):
            fp = r.get("fast_paths", {})
            paths = ", ".join(f"{k}={v}" for k, v in fp.items()) if fp else r["name"]
            note = _outcome(r)
            if ref and "iterations_per_second" in r and ref["iterations_per_second"]:
                note += f" {r['iterations_per_second'] / ref['iterations_per_second']:.2f}× UA-MT"
            method = r.get("method", r["name"]) + (f" ({r['name']})" if r["kind"] == "train-variant" else "")
            lines.append(f"| engine | {method} | {paths} | {r.get('iterations_per_second', '–')} "
                         f"| {r.get('first_iteration_seconds', '–')} | {_peak(r)} | "
                         f"{_gb(r.get('peak_reserved_mb'))} | {note.strip()} |")
    lines += ["", "## Inference: seconds per full-resolution LA volume", "",
              "| code | variant | s/volume (median) | first call s | windows | peak allocated GB | note |",
              "|---|---|---|---|---|---|---|"]
    for r in records:
        if r["kind"] == "reference-infer":
            lines.append(f"| UA-MT | test_single_case, grad {r.get('grad', r['name'])} | "
                         f"{r.get('seconds_per_volume', '–')} | {r.get('first_call_seconds', '–')} | "
                         f"{r.get('windows', '–')} | {_gb(r.get('peak_memory_mb'))} | {_outcome(r)} |")
        elif r["kind"] == "infer":
            note = _outcome(r)
            if "voxels_equal_to_default" in r:
                note += f" voxels equal to default: {r['voxels_equal_to_default']:.4%}"
            lines.append(f"| engine | {r.get('variant', r['name'])} | {r.get('seconds_per_volume', '–')} | "
                         f"{r.get('first_call_seconds', '–')} | {r.get('windows', '–')} | "
                         f"{_gb(r.get('peak_gpu_memory_mb'))} | {note.strip()} |")
    sampling = next((r for r in records if r["kind"] == "sampling"), None)
    if sampling:
        lines += ["", f"Patch sampling on the CPU (2 labeled + 2 unlabeled, standard augmentation): "
                      f"{sampling.get('seconds_per_step', _outcome(sampling))} s per step."]
    lines += ["", "## Goals of issue 17", ""] + goal_lines(records)
    done = next((r for r in records if r["kind"] == "done"), None)
    lines += ["", f"Finished in {done['at_s']} s." if done else "Not finished (cut short, or still running)."]
    return "\n".join(lines) + "\n"


def goal_lines(records: list[dict]) -> list[str]:
    ref = next((r for r in records if r["kind"] == "reference-train" and r.get("iterations_per_second")), None)
    trains = [r for r in records if r["kind"] == "train" and "iterations_per_second" in r]
    infer = next((r for r in records if r["kind"] == "infer" and r.get("variant") == "default"
                  and "seconds_per_volume" in r and str(r.get("device", "")).startswith("cuda")), None)
    out = []
    on_gpu = any(r["kind"] == "environment" and str(r.get("device", "")).startswith("cuda") for r in records)
    if ref and trains and on_gpu:
        worst = min(trains, key=lambda r: r["iterations_per_second"])
        ratio = worst["iterations_per_second"] / ref["iterations_per_second"]
        out.append(f"- Training ≥ 3× UA-MT's it/s: slowest method {worst['method']} at {ratio:.2f}× → "
                   f"{'met' if ratio >= 3 else 'NOT met'} (per method in the table).")
    else:
        out.append("- Training ≥ 3× UA-MT's it/s: not measured on a GPU.")
    if infer:
        s = infer["seconds_per_volume"]
        out.append(f"- ≤ 0.3 s per LA volume: {s} s → {'met' if s <= 0.3 else 'NOT met'}.")
    else:
        out.append("- ≤ 0.3 s per LA volume: not measured on a GPU.")
    peaks = [r for r in trains if r.get("peak_memory_kind", "").startswith("GPU")]
    if peaks:
        top = max(peaks, key=lambda r: r["peak_memory_mb"])
        out.append(f"- ≤ 8 GB peak GPU memory to train any method: highest {top['method']} "
                   f"{top['peak_memory_mb'] / 1024:.2f} GB → {'met' if top['peak_memory_mb'] <= 8192 else 'NOT met'}"
                   f" (at patch {top['patch']}).")
    else:
        out.append("- ≤ 8 GB peak GPU memory: not measured on a GPU.")
    return out


# ---- the run ---------------------------------------------------------------------------------------------------
def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(HERE.parents[1] / "docs" / "benchmarks" / "gpu"),
                   help="where results.jsonl and results.md go (default docs/benchmarks/gpu)")
    p.add_argument("--reference", help="a checkout of github yulequan/UA-MT (or its code/ folder); absent: skipped")
    p.add_argument("--data", help="engine dataset folder (e.g. la-dev); default: LA-sized phantoms made here")
    p.add_argument("--work", help="scratch folder (default: a temporary one, removed at the end)")
    p.add_argument("--device", default="auto")
    p.add_argument("--budget", type=float, default=450.0, help="seconds in all (default 450)")
    p.add_argument("--iterations", type=int, default=40, help="training iterations per run (default 40)")
    p.add_argument("--warmup", type=int, default=10, help="iterations left out of the rate (default 10)")
    p.add_argument("--repeats", type=int, default=3, help="timed inference calls after a first one (default 3)")
    p.add_argument("--patch", type=lambda t: [int(v) for v in t.split(",")], default=list(LA_PATCH),
                   help="training patch d,h,w (default 80,112,112)")
    p.add_argument("--volume-shape", type=lambda t: [int(v) for v in t.split(",")], default=[88, 140, 190],
                   help="phantom shape z,y,x when no --data (default 88,140,190: a cropped LA volume)")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--train-variants", default=",".join(TRAIN_VARIANTS))
    p.add_argument("--infer-variants", default=",".join(INFER_VARIANTS))
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="method option for the methods that take it (default: each method's own defaults)")
    p.add_argument("--reference-timeout", type=float, default=150.0, help="seconds for each UA-MT run")
    return p.parse_args(argv)


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(HERE.parents[1] / "SemiSegTogether"))  # the engine without installing it
    from semiseg.devices import resolve_device
    from semiseg.fastpaths import FastPaths

    device = resolve_device(args.device)
    results = Results(Path(args.out), args.budget, {
        "command": " ".join(["Testing/gpu/measure.py", *(argv if argv is not None else sys.argv[1:])]),
        "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "budget_s": args.budget,
        "iterations": args.iterations, "warmup": args.warmup})
    results.add({"kind": "environment", **environment(device)})
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="semiseg-gpu-measure-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        data, about = prepare_data(args, work)
        results.add({"kind": "data", **about, **describe_data(data)})
        reference = Path(args.reference) if args.reference else None
        if reference is None:
            results.skip("reference-train", "UA-MT", "no --reference checkout given")
        elif not reference.exists():
            results.skip("reference-train", "UA-MT", f"--reference {reference}: not found")
        else:
            results.attempt("reference-train", "UA-MT", "reference-train",
                            lambda: reference_training(reference, data, work / "runs", args))
        models = {}
        for method in _names(args.methods):
            r = results.attempt("train", method, "train",
                                lambda m=method: engine_training(m, data, work / "runs", args, FastPaths()))
            if r and "model" in r:
                models[method] = Path(r["model"])
        model = models.get("mean-teacher") or next(iter(models.values()), None)
        labels: dict = {}
        results.attempt("infer", "default", "infer", lambda: engine_inference(model, data, args, "default", labels))
        if reference is not None and reference.exists():
            for name, no_grad in (("grad on", False), ("grad off", True)):
                results.attempt("reference-infer", name, "reference-infer",
                                lambda g=no_grad: reference_inference(reference, data, work / "runs", args, g))
        results.attempt("sampling", "patch sampling", "sampling", lambda: patch_sampling(data, args))
        for variant in _names(args.infer_variants):
            results.attempt("infer", variant, "infer",
                            lambda v=variant: engine_inference(model, data, args, v, labels))
        for variant in _names(args.train_variants):
            results.attempt("train-variant", variant, "compile" if variant == "compile" else "train",
                            lambda v=variant: engine_training("mean-teacher", data, work / "runs", args,
                                                              train_variant(v)))
        results.add({"kind": "done"})
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
