"""Where a training iteration's time goes: sampling, augmentation, forward (with the losses), backward,
optimiser, teacher/EMA update, and a validation pass; the network's own share and the FLOP/s it reaches.

    python -m semiseg.speed --methods supervised,mean-teacher --patch 32,48,48 --width 16 [--threads 1] [--json]
    python -m semiseg.speed --compare --out docs/benchmarks/speed-cpu    # before/after the overhead removed

`--compare` profiles each method twice, with MONAI's MetaTensor bookkeeping on in the augmentation (as before
it was turned off) and off (as training runs now), and writes report.md and results.json to --out.

The phases are timed around the loop's own calls (the same patch streams, method, optimiser); inside the
forward and backward passes, PyTorch's profiler separates the network's operators (convolutions, norms,
activations, resampling and their gradients) from the rest (losses, masks, copies). FLOPs are counted by
torch.utils.flop_counter on one step; the machine's peak is cores × clock × FP32 FLOPs per cycle from the
CPU's vector units (AVX-512: 2 FMA units × 16 lanes × 2; AVX2 + FMA: 2 × 8 × 2), read from /proc/cpuinfo.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from semiseg.fastpaths import FastPaths
from semiseg.infer import sliding_window_probabilities
from semiseg.methods import MethodContext, build_method
from semiseg.probe import _random_cases
from semiseg.process import load_average
from semiseg.sampling import PatchStream
from semiseg.training.config import TrainConfig
from semiseg.training.optimisation import Optimisation
from semiseg.training.step import to_device
from semiseg.transforms import build_augmentation

NETWORK_OPS = ("conv", "batch_norm", "instance_norm", "group_norm", "native_batch_norm", "relu", "elu", "prelu",
               "leaky_relu", "max_pool", "avg_pool", "upsample", "dropout", "cudnn", "mkldnn")


def cpu_peak_gflops() -> dict:
    """FP32 peak of this CPU from /proc/cpuinfo: cores × MHz × FLOPs/cycle (2 FMA units × lanes × 2)."""
    info = Path("/proc/cpuinfo").read_text(encoding="utf-8") if Path("/proc/cpuinfo").exists() else ""
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    mhz = [float(line.split(":", 1)[1]) for line in info.splitlines() if line.startswith("cpu MHz")]
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    per_cycle = 2 * lanes * (2 if "fma" in flags or lanes == 16 else 1)
    cores = torch.get_num_threads()
    ghz = (np.mean(mhz) if mhz else 2000.0) / 1000
    return {"gflops": cores * ghz * per_cycle, "threads": cores, "ghz": round(float(ghz), 3),
            "flops_per_cycle": per_cycle, "vector": "avx512" if lanes == 16 else "avx2" if lanes == 8 else "sse"}


def profile_method(name: str, patch: list[int], width: int, batch_labeled: int = 2, batch_unlabeled: int = 2,
                   iterations: int = 3, val_shape: list[int] | None = None, before: bool = False) -> dict:
    """Seconds per phase (mean over `iterations` after a warm-up), network share, FLOPs and FLOP/s."""
    torch.manual_seed(0)
    context = MethodContext(n_classes=2, total_iterations=1000, options={"n_filters": width})
    device = torch.device("cpu")
    method = build_method(name, context)
    cfg = TrainConfig(data="", out="", method=name, device="cpu")
    optimisation = Optimisation(cfg, method, device, FastPaths(precision="fp32"))
    augment = build_augmentation("standard", track_meta=before)
    rng = np.random.default_rng(0)
    labeled = PatchStream(_random_cases(patch, context, 2, 1), patch, batch_labeled, augment="none")
    unlabeled = PatchStream(_random_cases(patch, context, 2, 2), patch, batch_unlabeled, fg_ratio=0.0,
                            augment="none", with_labels=False) if method.uses_unlabeled else None
    names = ("sampling", "augmentation", "forward", "backward", "optimizer", "teacher/EMA")
    wall: list[dict[str, float]] = []
    cpu: list[dict[str, float]] = []

    def timed(key, fn):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        wall[-1][key] += time.perf_counter() - start
        cpu[-1][key] += time.process_time() - start_cpu
        return out

    def iteration(it: int, profile: bool):
        wall.append(dict.fromkeys(names, 0.0))
        cpu.append(dict.fromkeys(names, 0.0))
        method.train()
        lab = timed("sampling", lambda: next(labeled))
        unl = timed("sampling", lambda: next(unlabeled)) if unlabeled else None
        timed("augmentation", lambda: _augment(lab, unl, augment, rng))
        lab, unl = to_device(lab, device), (to_device(unl, device) if unl else None)
        method.before_optimizer_step(it)
        prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) if profile else None
        if prof:
            prof.__enter__()
        losses = timed("forward", lambda: method.training_step(lab, unl, it))
        optimisation.optimizer.zero_grad(set_to_none=True)
        timed("backward", lambda: losses["total"].backward())
        if prof:
            prof.__exit__(None, None, None)
        timed("optimizer", lambda: (optimisation.optimizer.step(), optimisation.scheduler.step()))
        timed("teacher/EMA", lambda: method.after_optimizer_step(it))
        return prof

    for it in range(iterations + 1):  # the first is a warm-up, left out of the means
        iteration(it, profile=False)
    seconds = {k: float(np.mean([d[k] for d in wall[1:]])) for k in names}
    cpu_seconds = {k: float(np.mean([d[k] for d in cpu[1:]])) for k in names}
    # The network's share of forward + backward, from one profiled iteration (the profiler slows it, so
    # only the share is taken from it).
    prof = iteration(iterations + 1, profile=True)
    profiled = wall[-1]["forward"] + wall[-1]["backward"]
    net_share_fb = min(1.0, _network_seconds(prof) / max(profiled, 1e-9))
    flops = _step_flops(method, labeled, unlabeled, device)
    step = sum(seconds.values())
    step_cpu = sum(cpu_seconds.values())
    net_seconds = net_share_fb * (seconds["forward"] + seconds["backward"])
    net_cpu = net_share_fb * (cpu_seconds["forward"] + cpu_seconds["backward"])
    out = {"method": name, "variant": "before" if before else "after", "patch": patch, "width": width,
           "batch": [batch_labeled, batch_unlabeled],
           "threads": torch.get_num_threads(), "phases": seconds, "phases_cpu": cpu_seconds, "step_seconds": step,
           "step_cpu_seconds": step_cpu, "network_seconds": net_seconds, "network_share": net_seconds / step,
           "overhead_share": 1 - net_seconds / step, "flops_per_step": flops,
           "gflops_per_second_network": flops / max(net_seconds, 1e-9) / 1e9,
           # per second of CPU time the process got: what the code reaches, whatever else shares the cores
           "gflops_per_cpu_second_network": flops / max(net_cpu, 1e-9) / 1e9,
           "gflops_per_second_step": flops / max(step, 1e-9) / 1e9}
    if val_shape:
        net = method.inference_network().eval()
        image = torch.randn(1, 1, *val_shape)
        start = time.perf_counter()
        sliding_window_probabilities(net, image, patch, overlap=0.25, fast=FastPaths(precision="fp32"),
                                     task=0 if getattr(net, "prompted", False) else None)
        out["validation_seconds_per_case"] = time.perf_counter() - start
    return out


def _augment(lab: dict, unl: dict | None, augment, rng) -> None:
    """The standard augmentation on every patch of the batch, as the stream applies it (timed apart)."""
    for batch in filter(None, (lab, unl)):
        for i in range(batch["image"].shape[0]):
            sample = {"image": batch["image"][i].numpy()}
            if "label" in batch:
                sample["label"] = batch["label"][i].numpy()
            augment(sample, rng=rng)


def _network_seconds(prof) -> float:
    """Self CPU time of the network's own operators in a profile, in seconds."""
    total = 0.0
    for evt in prof.key_averages():  # the network's operators; autograd's *Backward nodes included
        if any(op in evt.key.lower() for op in NETWORK_OPS):
            total += evt.self_cpu_time_total
    return total / 1e6


def _step_flops(method, labeled, unlabeled, device) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    lab = to_device(next(labeled), device)
    unl = to_device(next(unlabeled), device) if unlabeled else None
    counter = FlopCounterMode(display=False)
    with counter:
        losses = method.training_step(lab, unl, 0)
        losses["total"].backward()
    method.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m semiseg.speed", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="supervised,mean-teacher,ad,versemi,dual-contrast")
    ap.add_argument("--patch", default="32,48,48")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--val-shape", default="28,46,62", help="a validation case's shape (la-dev at 2 mm)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--compare", action="store_true", help="each method before and after the overhead removed")
    ap.add_argument("--out", help="with --compare: the folder for report.md and results.json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    patch = [int(v) for v in args.patch.split(",")]
    val_shape = [int(v) for v in args.val_shape.split(",")] if args.val_shape else None
    variants = (True, False) if args.compare else (False,)
    rows = [profile_method(m, patch, args.width, iterations=args.iterations, val_shape=val_shape, before=b)
            for m in args.methods.split(",") if m for b in variants]
    load = load_average()
    result = {"peak": cpu_peak_gflops(), "load_average": load if load == load else None, "rows": rows}
    if args.out:
        write_report(result, Path(args.out))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for r in rows:
        parts = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in r["phases"].items())
        print(f"{r['method']:<14} step {r['step_seconds'] * 1000:.0f} ms ({parts}); network "
              f"{100 * r['network_share']:.0f} %; network {r['gflops_per_second_network']:.1f} GFLOP/s "
              f"({r['gflops_per_cpu_second_network']:.1f} per CPU second) of {result['peak']['gflops']:.0f} peak")
    return 0


def write_report(result: dict, out: Path) -> None:
    """report.md (one row per method and variant) and results.json in `out`."""
    from semiseg.atomic import atomic_path
    out.mkdir(parents=True, exist_ok=True)
    peak = result["peak"]
    lines = ["| method | variant | step ms | augmentation ms | forward ms | backward ms | optimiser ms | "
             "teacher/EMA ms | outside the network | network GFLOP/s | per CPU-second | % of peak |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        ph = r["phases"]
        lines.append(f"| {r['method']} | {r['variant']} | {r['step_seconds'] * 1e3:.0f} | "
                     f"{ph['augmentation'] * 1e3:.0f} | {ph['forward'] * 1e3:.0f} | {ph['backward'] * 1e3:.0f} | "
                     f"{ph['optimizer'] * 1e3:.0f} | {ph['teacher/EMA'] * 1e3:.0f} | "
                     f"{100 * r['overhead_share']:.0f} % | {r['gflops_per_second_network']:.1f} | "
                     f"{r['gflops_per_cpu_second_network']:.1f} | "
                     f"{100 * r['gflops_per_second_network'] / peak['gflops']:.0f} % |")
    r0 = result["rows"][0]
    head = [f"Patch {'x'.join(map(str, r0['patch']))}, width {r0['width']}, batch {r0['batch'][0]} labeled + "
            f"{r0['batch'][1]} unlabeled, {r0['threads']} thread(s); peak {peak['gflops']:.0f} GFLOP/s "
            f"({peak['threads']} thread(s) x {peak['ghz']} GHz x {peak['flops_per_cycle']} FP32 FLOPs/cycle, "
            f"{peak['vector']}); load average {result.get('load_average')}.", ""]
    with atomic_path(out / "report.md", ".md") as tmp:
        tmp.write_text("\n".join(head + lines) + "\n", encoding="utf-8")
    with atomic_path(out / "results.json", ".json") as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
