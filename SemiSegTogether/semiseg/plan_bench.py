"""Benchmark of the time planner: for each budget and method, `semiseg train --time BUDGET` as a user runs it,
its planned against its actual wall time, and the test Dice it reaches.

    python -m semiseg.plan_bench --data DATA --methods supervised,mean-teacher --times 5m,15m \\
        --out docs/benchmarks/plan-NAME --workdir runs/plan-NAME [--resume]

Each run is a fresh `semiseg train` process (its wall time counts from its own start, as the budget does);
the machine's load average is sampled beside it, since other work on the same cores changes the speed.
Each finished run is written at once (WORKDIR/runs/*.json) and the report rewritten, so an interrupted
benchmark keeps what it finished and `--resume` continues it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from semiseg.atomic import atomic_path
from semiseg.events import _clean, read_events
from semiseg.plan import parse_duration
from semiseg.process import load_average
from semiseg.training.progress import format_duration


class LoadSampler:
    """The 1-minute load average every `every` seconds, in a background thread."""

    def __init__(self, every: float = 10.0):
        self.every, self.samples = every, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(load_average())
            self._stop.wait(self.every)

    def __enter__(self) -> "LoadSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_one(data: Path, method: str, budget: str, device: str, work: Path) -> dict:
    tag = f"{method}-{budget}"
    model, events = work / "models" / f"{tag}.semiseg", work / "logs" / f"{tag}.jsonl"
    for stale in (model, Path(str(model) + ".work"), work / "predictions" / tag):
        shutil.rmtree(stale, ignore_errors=True)
    events.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "semiseg", "train", "--data", str(data), "--method", method, "--out", str(model),
           "--time", budget, "--device", device, "--events", str(events), "--quiet"]
    with LoadSampler() as load:
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - start
    record = {"method": method, "budget": budget, "budget_seconds": parse_duration(budget), "command": cmd[2:],
              "exit_code": proc.returncode, "wall_seconds": wall, "load_samples": load.samples,
              "stderr_tail": proc.stderr[-3000:]}
    if proc.returncode != 0:
        return record
    card = json.loads((model / "model.json").read_text(encoding="utf-8"))
    plan = card["plan"]
    record.update(plan={k: plan[k] for k in ("spacing", "patch", "batch_labeled", "batch_unlabeled", "options",
                                             "iterations", "val_every", "threads", "predicted", "peak_memory_mb")},
                  planned_seconds=plan["predicted"]["total"], train_seconds=card["training"]["seconds"],
                  trained_iterations=card["training"]["iterations"],
                  stopped_early=card["training"].get("stopped_early"),
                  peak_memory_mb=card["training"]["peak_memory_mb"],
                  validation=card["metrics"]["validation"], eta=_eta_track(read_events(events), wall))
    record["test"] = _test_dice(model, data, device, work / "predictions" / tag)
    return record


def _eta_track(events: list[dict], wall: float) -> list[dict]:
    """The ETA the run announced, against what was actually left (from the run's last event)."""
    if not events:
        return []
    end = events[-1]["time"]
    return [{"iteration": e.get("iteration"), "eta_seconds": e.get("eta_seconds"),
             "actual_left_seconds": round(end - e["time"], 1)} for e in events if e["event"] in ("start", "iteration")
            and e.get("eta_seconds") is not None][:: max(1, len(events) // 40)]


def _test_dice(model: Path, data: Path, device: str, out: Path) -> dict:
    from semiseg.datasets import load_dataset
    from semiseg.devices import resolve_device
    from semiseg.evaluate import evaluate_folder
    from semiseg.infer import predict_volume
    from semiseg.io import read_volume, write_volume
    from semiseg.model import load_model
    dev = resolve_device(device)
    net, manifest = load_model(model, dev)
    for case in load_dataset(data).test:
        label, _ = predict_volume(net, manifest, read_volume(case.image), dev)
        write_volume(label, out / case.image.name, overwrite=True)
    metrics = evaluate_folder(out, data, split="test")
    dice = [m["mean"]["dice"] for m in metrics["cases"].values()]
    return {"dice_mean": float(np.mean(dice)), "dice_cases": dice}


def report(runs: list[dict], title: str, command: str) -> str:
    lines = [f"# {title}", "", f"Produced by `{command}`.", "",
             "Each row is one `semiseg train --time BUDGET` process on the machine described below; *planned* is "
             "the planner's predicted wall time (planning + data + training + validation + export), *actual* the "
             "process's wall time from start to exit. Test Dice: the package the run wrote (the last checkpoint; "
             "before that became `train`'s default, the best-validation one) on the test split, mean over cases, "
             "in %.", "",
             "| budget | method | planned | actual | actual / planned | test Dice % | spacing mm | patch | width | "
             "iterations | s / step | threads | load (mean, max) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        load = [v for v in r["load_samples"] if v == v]
        load_text = f"{np.mean(load):.1f}, {max(load):.1f}" if load else "-"
        if r["exit_code"] != 0:
            reason = r["stderr_tail"].strip().splitlines()[-1] if r["stderr_tail"].strip() else "failed"
            lines.append(f"| {r['budget']} | {r['method']} | - | {format_duration(r['wall_seconds'])} | - | - | "
                         f"- | - | - | - | - | - | {load_text} | <!-- {reason} -->")
            continue
        p = r["plan"]
        spacing = "native" if p["spacing"] is None else "×".join(f"{v:.2g}" for v in p["spacing"])
        iterations = str(p["iterations"]) if not r.get("stopped_early") else \
            f"{r['trained_iterations']} of {p['iterations']} (stopped at the budget)"
        lines.append(
            f"| {r['budget']} | {r['method']} | {format_duration(r['planned_seconds'])} | "
            f"{format_duration(r['wall_seconds'])} | {r['wall_seconds'] / r['planned_seconds']:.2f} | "
            f"{100 * r['test']['dice_mean']:.1f} | {spacing} | {'×'.join(map(str, p['patch']))} | "
            f"{p['options'].get('n_filters', '-')} | {iterations} | {p['predicted']['step_seconds']:.2f} | "
            f"{p['threads'] or '-'} | {load_text} |")
    failed = [r for r in runs if r["exit_code"] != 0]
    for r in failed:
        lines += ["", f"`{r['method']}` at {r['budget']} stopped (exit {r['exit_code']}):", "", "```",
                  r["stderr_tail"].strip()[-1200:], "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m semiseg.plan_bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--methods", default="supervised,mean-teacher,ad,versemi,dual-contrast")
    ap.add_argument("--times", default="5m,15m", help="budgets, all methods at the first, then the next")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", required=True, help="report folder (report.md, results.json)")
    ap.add_argument("--workdir", required=True, help="models, logs, predictions and finished runs")
    ap.add_argument("--title", default="Time planner: planned against actual wall time")
    ap.add_argument("--resume", action="store_true", help="keep the finished runs in --workdir")
    args = ap.parse_args(argv)
    work, out = Path(args.workdir), Path(args.out)
    shown = [Path(a).name if a == args.data else a for a in (argv if argv is not None else sys.argv[1:])]
    command = "python -m semiseg.plan_bench " + " ".join(shown)  # the data by its name, not this machine's path
    runs = []
    for budget in [t for t in args.times.split(",") if t]:
        for method in [m for m in args.methods.split(",") if m]:
            saved = work / "runs" / f"{method}-{budget}.json"
            if args.resume and saved.exists():
                runs.append(json.loads(saved.read_text(encoding="utf-8")))
                continue
            print(f"{time.strftime('%H:%M:%S')} {method} at {budget} (load {load_average():.1f})", flush=True)
            record = run_one(Path(args.data), method, budget, args.device, work)
            saved.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(saved, ".json") as tmp:
                tmp.write_text(json.dumps(_clean(record), indent=2) + "\n", encoding="utf-8")
            runs.append(record)
            out.mkdir(parents=True, exist_ok=True)
            with atomic_path(out / "results.json", ".json") as tmp:
                tmp.write_text(json.dumps(_clean({"runs": runs, "cpu_count": os.cpu_count()}), indent=2) + "\n",
                               encoding="utf-8")
            with atomic_path(out / "report.md", ".md") as tmp:
                tmp.write_text(report(runs, args.title, command), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
