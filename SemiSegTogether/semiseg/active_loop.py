"""The annotate-few-then-train loop, simulated: does `suggest` pick better cases than chance, and does
fine-tuning (`train --init`) reach from-scratch quality faster?

    python -m semiseg.active_loop --data LA-DEV --truth LA-DEV/labelsUn_truth --out docs/benchmarks/active-loop

The truth folder stands in for the annotator: only `annotate` below reads it, to label the cases a strategy
picked; training, `suggest` and the random picks never see it. Per seed, round 0 trains from scratch on the
labeled cases; then each round adds `--per-round` cases and trains again, three or four ways:

- `suggest + fine-tune`: the cases `suggest` ranks first, the last model fine-tuned (`--finetune-iterations`);
- `random + fine-tune`: cases drawn at random (seeded), the last model fine-tuned;
- `suggest + scratch`: the same labeled set as `suggest + fine-tune`, trained from scratch (`--iterations`);
- `suggest + short fine-tune` (with `--short-finetune-iterations`): the same labeled set, fine-tuned from the
  same parent as `suggest + fine-tune` for fewer iterations: how soon fine-tuning reaches the scratch Dice.

Each round tests two models: the checkpoint the held-out labeled case selected and the last one; the chains
carry the selected one on (`--carry last`: the last one).

Every (seed, strategy, round) writes its result JSON as soon as it ends and is skipped when found, so the
simulation can be stopped and started again; the report is rewritten after each run.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from pathlib import Path

import numpy as np

from semiseg.atomic import atomic_path
from semiseg.datasets import load_dataset
from semiseg.events import _clean

SHORT = "suggest + short fine-tune"
STRATEGIES = ("suggest + fine-tune", "random + fine-tune", "suggest + scratch", SHORT)


def slug(strategy: str) -> str:
    return strategy.replace(" + ", "-").replace(" ", "-")


def resampled_copy(source: Path, truth: Path, target: Path, spacing: float) -> tuple[Path, Path]:
    """`source` (dataset.json) and the truth folder resampled once to `spacing` mm (images linear, labels
    nearest), so that no training run repeats the resampling. Returns (dataset folder, truth folder)."""
    import SimpleITK as sitk
    done = target / "dataset.json"
    if done.exists():
        return target, target / "labelsUn_truth"
    spec = json.loads((source / "dataset.json").read_text(encoding="utf-8"))

    def resample(src: Path, dst: Path, label: bool) -> None:
        image = sitk.ReadImage(str(src))
        size = [max(1, round(n * s / spacing)) for n, s in zip(image.GetSize(), image.GetSpacing())]
        out = sitk.Resample(image, size, sitk.Transform(), sitk.sitkNearestNeighbor if label else sitk.sitkLinear,
                            image.GetOrigin(), (spacing,) * 3, image.GetDirection(), 0,
                            image.GetPixelID())
        dst.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(out, str(dst), True)

    for split in ("training", "unlabeled", "test"):
        for entry in spec.get(split, []):
            for key in ("image", "label"):
                if key in entry:
                    resample(source / entry[key], target / entry[key], key == "label")
    for path in sorted(truth.iterdir()):
        resample(path, target / "labelsUn_truth" / path.name, True)
    (target / "dataset.json").write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    return target, target / "labelsUn_truth"


def round_dataset(source: Path, work: Path) -> Path:
    """Round 0's dataset: `source`'s dataset.json with absolute image paths (the images are not copied)."""
    spec = json.loads((source / "dataset.json").read_text(encoding="utf-8"))
    for split in ("training", "unlabeled", "test"):
        for entry in spec.get(split, []):
            for key in ("image", "label"):
                if key in entry:
                    entry[key] = str((source / entry[key]).resolve())
    work.mkdir(parents=True, exist_ok=True)
    (work / "dataset.json").write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    return work


def annotate(previous: Path, target: Path, picks: list[str], truth: Path) -> Path:
    """The simulated annotator: `previous` round's dataset with `picks` labeled from the truth folder."""
    from semiseg.pool import add_labeled
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(previous, target)
    for case_id in picks:
        add_labeled(target, case_id, truth_file(truth, case_id))
    return target


def truth_file(truth: Path, case_id: str) -> Path:
    """The simulated annotator's label of `case_id` in the truth folder."""
    return next(truth.glob(f"{case_id}.*"))


def pick(strategy: str, model: Path, data: Path, n: int, seed: int, rnd: int, device: str,
         ranking: str = "typical") -> tuple[list[str], float]:
    start = time.perf_counter()
    if strategy.startswith("random"):
        pool = sorted(c.id for c in load_dataset(data).unlabeled)
        return random.Random(1000 * seed + rnd).sample(pool, n), time.perf_counter() - start
    from semiseg.suggest import suggest
    rows = suggest(model, data, n=n, device=device, strategy=ranking)
    return [r.id for r in rows], time.perf_counter() - start


def train_round(args, data: Path, out: Path, seed: int, init: Path | None, iterations: int) -> dict:
    import torch

    from semiseg.bench import PROFILES
    from semiseg.train import TrainConfig, train
    p = PROFILES["cpu-lite"]
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(Path(str(out) + ".work"), ignore_errors=True)
    cfg = TrainConfig(data=str(data), out=str(out), method=args.method,
                      method_options={**p["options"], "n_filters": args.n_filters},
                      iterations=iterations,
                      batch_labeled=p["batch_labeled"], batch_unlabeled=p["batch_unlabeled"],
                      patch=p["patch"], spacing=p["spacing"], seed=seed, device=args.device,
                      val_every=args.val_every, val_cases=args.val_cases, progress=False,
                      init=str(init) if init else None, checkpoint="best", export_other=True)
    cpu = time.process_time()
    result = train(cfg)  # in this process: a fresh one would import torch again, minutes on a loaded machine
    # With one thread per process, CPU seconds are the time on a core of its own, whatever else runs beside.
    return {"train_seconds": result.seconds, "train_cpu_seconds": time.process_time() - cpu,
            "threads": torch.get_num_threads(), "iterations": result.iterations,
            "best_validation_dice": result.best_dice, "best_iteration": result.best_iteration}


def test_dice(model: Path, data: Path, work: Path, device: str) -> dict[str, float]:
    from semiseg.devices import resolve_device
    from semiseg.evaluate import evaluate_folder
    from semiseg.infer import predict_volume
    from semiseg.io import read_volume, write_volume
    from semiseg.model import load_model
    dev = resolve_device(device)
    net, manifest = load_model(model, dev)
    shutil.rmtree(work, ignore_errors=True)
    for case in load_dataset(data).test:
        label, _ = predict_volume(net, manifest, read_volume(case.image), dev, overlap=0.5)
        write_volume(label, work / case.image.name)
    metrics = evaluate_folder(work, data, split="test")
    return {cid: float(m["mean"]["dice"]) for cid, m in metrics["cases"].items()}


def run_one(args, seed: int, strategy: str, rnd: int, state: dict, here: Path) -> dict:
    """One (seed, strategy, round) in folder `here`: pick, annotate, train, test. `state` carries each
    strategy's last model, dataset and picks from round to round."""
    record = here / "result.json"
    if record.exists():
        return json.loads(record.read_text(encoding="utf-8"))
    previous = state[strategy]
    if strategy in ("suggest + scratch", SHORT):  # suggest + fine-tune's cases, again
        partner = state["suggest + fine-tune"]
        data, picks, pick_seconds = partner["data"], partner["picks"], 0.0
        init = partner["parent"] if strategy == SHORT else None
    else:
        picks, pick_seconds = pick(strategy, previous["model"], previous["data"], args.per_round, seed, rnd,
                                   args.device, args.suggest_strategy)
        data = annotate(previous["data"], here / "data", picks, Path(args.truth))
        init = previous["model"]
    model = here / "model.semiseg"
    iterations = {"suggest + scratch": args.iterations,
                  SHORT: args.short_finetune_iterations}.get(strategy, args.finetune_iterations)
    trained = train_round(args, data, model, seed, init, iterations)
    return record_round(args, here, data, {"seed": seed, "strategy": strategy, "round": rnd, "picks": picks,
                                           "pick_seconds": pick_seconds, **trained})


def record_round(args, here: Path, data: Path, result: dict) -> dict:
    """`result` with the test Dice of the round's two models: the selected one (`model.semiseg`, the best on the
    held-out labeled case, which the chain carries on) and the last iteration's (`model-last.semiseg`). One
    held-out case selects noisily (la-dev round 0, seed 2: the best was iteration 50 of 400), so the report
    gives both. Written to `here`/result.json."""
    best = test_dice(here / "model.semiseg", data, here / "predictions", args.device)
    # Without validation cases there is no selection: model.semiseg holds the last weights and is both.
    last = (test_dice(here / "model-last.semiseg", data, here / "predictions-last", args.device)
            if (here / "model-last.semiseg").exists() else best)
    result = {**result, "round_seconds": result["pick_seconds"] + result["train_seconds"],
              "labeled": len(load_dataset(data).training),
              "test_dice": best, "mean_test_dice": float(np.mean(list(best.values()))),
              "last_test_dice": last, "mean_last_test_dice": float(np.mean(list(last.values())))}
    with atomic_path(here / "result.json", ".json") as tmp:
        tmp.write_text(json.dumps(_clean(result), indent=2) + "\n", encoding="utf-8")
    return result


def round_zero(args, seed: int, report) -> tuple[Path, Path]:
    """Seed `seed`'s round 0, trained from scratch on the labeled cases unless found in --workdir.
    Returns (its folder, its dataset)."""
    start = Path(args.workdir) / f"seed{seed}" / "round0"
    if (start / "result.json").exists():
        return start, start / "data"
    data = round_dataset(Path(args.data), start / "data")
    trained = train_round(args, data, start / "model.semiseg", seed, None, args.iterations)
    record_round(args, start, data, {"seed": seed, "strategy": "round 0", "round": 0, "picks": [],
                                     "pick_seconds": 0.0, **trained})
    report()
    return start, data


def simulate_seed(args, seed: int, report) -> None:
    root = Path(args.workdir) / f"seed{seed}"
    start, data = round_zero(args, seed, report)
    carried = carried_model(args)
    state = {s: {"model": start / carried, "data": data, "picks": [], "parent": None} for s in STRATEGIES}
    chosen = arms(args)
    for rnd in range(1, args.rounds + 1):
        for strategy in STRATEGIES:
            here = root / slug(strategy) / f"round{rnd}"
            if strategy not in chosen and not (here / "result.json").exists():
                continue  # an arm this process leaves out; one found in --workdir still carries its chain
            result = run_one(args, seed, strategy, rnd, state, here)
            if strategy.endswith(" + fine-tune"):  # the chains that carry their model to the next round
                state[strategy].update(parent=state[strategy]["model"], model=here / carried,
                                       data=here / "data", picks=result["picks"])
            report()


def carried_model(args) -> str:
    """The model a chain carries to the next round (the one `suggest` ranks with and the next round
    fine-tunes): the selected checkpoint, or with `--carry last` the last iteration's; with `--val-cases 0` there is
    no selection and model.semiseg holds the last."""
    return "model-last.semiseg" if args.carry == "last" and args.val_cases else "model.semiseg"


def arms(args) -> list[str]:
    """The arms this process runs, in STRATEGIES' order (the scratch and short arms reuse suggest + fine-tune's
    picks, so they need it in the same run or already in --workdir)."""
    chosen = [s for s in STRATEGIES if s != SHORT or args.short_finetune_iterations]
    if args.arms:
        wanted = {a.strip() for a in args.arms.split(",") if a.strip()}
        unknown = wanted - {slug(s) for s in STRATEGIES}
        if unknown:
            raise ValueError(f"--arms: unknown {', '.join(sorted(unknown))} (choose from "
                             f"{', '.join(map(slug, STRATEGIES))})")
        chosen = [s for s in chosen if slug(s) in wanted]
    return chosen


def machine_line(device: str) -> str:
    import os

    import torch

    from semiseg.devices import cpu_model
    from semiseg.process import load_average
    return (f"Machine: {os.cpu_count()} cores ({cpu_model()}), device {device}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} thread(s) per process, load average {load_average():.1f} when this "
            f"process started.")


def load_results(workdir: Path) -> list[dict]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(workdir.glob("seed*/**/result.json"))]


def study_parser(prog: str, description: str, name: str) -> argparse.ArgumentParser:
    """The options every la-dev simulation shares (report in docs/benchmarks/`name`, runs in runs/`name`)."""
    p = argparse.ArgumentParser(prog=f"python -m {prog}", description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="dataset folder with dataset.json")
    p.add_argument("--truth", required=True, help="labels of the unlabeled cases (the simulated annotator)")
    p.add_argument("--out", default=f"docs/benchmarks/{name}", help="report folder")
    p.add_argument("--workdir", default=f"runs/{name}", help="models, datasets and per-run results")
    p.add_argument("--seeds", default="0,1,2", help="the seeds this process runs")
    p.add_argument("--planned-seeds", help="all seeds of the study, for the report (default --seeds); several "
                                           "processes can run one seed each into the same --workdir")
    p.add_argument("--val-every", type=int, default=50)
    p.add_argument("--val-cases", type=int, default=1, help="labeled cases held out for validation in every run "
                   "(1, the earlier studies' setting; 0 trains on every annotated case and ships the last weights)")
    p.add_argument("--n-filters", type=int, default=16, help="network width (the cpu-lite profile's is 16)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--resample", type=float, metavar="MM", help="resample the data and the truth once to this "
                   "spacing first (the cpu-lite grid is 2 mm); Dice is then scored on that grid")
    p.add_argument("--report-only", action="store_true", help="rewrite the report from the results found")
    return p


def main(argv: list[str] | None = None) -> int:
    p = study_parser("semiseg.active_loop", __doc__, "active-loop")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--per-round", type=int, default=2)
    p.add_argument("--method", default="mean-teacher")
    p.add_argument("--suggest-strategy", default="typical", choices=("typical", "uncertain", "typiclust"),
                   help="how `suggest` ranks the pool (semiseg suggest --strategy)")
    p.add_argument("--iterations", type=int, default=200, help="from-scratch iterations (round 0 and scratch)")
    p.add_argument("--finetune-iterations", type=int, default=100)
    p.add_argument("--short-finetune-iterations", type=int, help="also fine-tune suggest's cases from the same "
                   "parent for this many iterations (the `suggest + short fine-tune` arm)")
    p.add_argument("--arms", help="comma-separated arms to run (slugs: " + ", ".join(map(slug, STRATEGIES))
                   + "; default all); results of other arms already in --workdir still enter the report")
    p.add_argument("--carry", choices=("best", "last"), default="best", help="the checkpoint each fine-tune "
                   "chain carries on (ranks the pool with and fine-tunes): the best on the held-out case, or the "
                   "last")
    args = p.parse_args(argv)
    try:
        arms(args)
    except ValueError as exc:
        p.error(str(exc))
    from semiseg.active_loop_report import write_report

    seeds = args.planned_seeds or args.seeds
    settings = study_settings(args, (
        f"--data DATA --truth TRUTH{f' --resample {args.resample:g}' if args.resample else ''} "
        f"--seeds {seeds} --method {args.method} --suggest-strategy {args.suggest_strategy} "
        f"--iterations {args.iterations} --finetune-iterations {args.finetune_iterations} "
        f"--val-every {args.val_every} --n-filters {args.n_filters} --per-round {args.per_round} --rounds {args.rounds}"
        + (f" --short-finetune-iterations {args.short_finetune_iterations}" if args.short_finetune_iterations else "")
        + (f" --arms {args.arms}" if args.arms else "") + (" --carry last" if args.carry == "last" else "")
        + (f" --val-cases {args.val_cases}" if args.val_cases != 1 else "")))
    run_seeds(args, simulate_seed, lambda: write_report(load_results(Path(args.workdir)), Path(args.out), settings))
    return 0


def study_settings(args, command: str) -> dict:
    """A simulation's settings for its report: the options with no machine path (the dataset by its folder name),
    `command` and the machine the runs ran on (with --report-only, the one the report already names)."""
    settings = {k: v for k, v in vars(args).items() if k not in ("data", "truth", "out", "workdir", "report_only")}
    settings["data"] = Path(args.data).name
    settings["seeds"] = settings.pop("planned_seeds") or args.seeds
    settings["command"] = command
    settings["machine"] = machine_line(args.device)
    previous = Path(args.out) / "results.json"
    if args.report_only and previous.is_file():
        settings["machine"] = json.loads(previous.read_text(encoding="utf-8"))["settings"].get("machine", "")
    return settings


def run_seeds(args, per_seed, report) -> None:
    """Resample the data once (--resample), run `per_seed(args, seed, report)` for each of --seeds unless
    --report-only, and write the report."""
    if args.resample:
        data, truth = resampled_copy(Path(args.data), Path(args.truth), Path(args.workdir) / "data", args.resample)
        args.data, args.truth = str(data), str(truth)
    if not args.report_only:
        for seed in [int(s) for s in args.seeds.split(",") if s.strip()]:
            per_seed(args, seed, report)
    report()

if __name__ == "__main__":
    raise SystemExit(main())
