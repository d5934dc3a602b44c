"""`semiseg bench`: method against method on one dataset, several seeds, honest protocol.

Each (method, seed) is trained with checkpoint selection on validation cases held out from the labeled
set (never the test split); both the selected ("best") and the last checkpoint predict the test split,
and the predictions are evaluated like `semiseg evaluate`. The report gives mean ± std over seeds of
each seed's mean over test cases, plus time, speed and memory, and the figures.

Unless `--no-twins`, every semi-supervised variant runs beside its supervised twin (the same variant with
`unlabeled=false`: same network, options, optimiser and schedule, no unlabeled term) and the plain
supervised baseline, and the report opens with the paired gain (method − twin, seed by seed).

With `--time T` every run trains for a wall-time budget as `semiseg train --time T` does, and a twin on its
method's plan (semiseg.bench_budget).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from semiseg import __version__
from semiseg.atomic import atomic_path
from semiseg.bench_budget import INHERITED, planned_settings, plan_and_train, with_inherited
from semiseg.bench_paired import CHECKPOINTS, mean_std, paired, paired_table, seed_means
from semiseg.bench_pool import pool_figure, pool_lines
from semiseg.bench_resume import finished_run, portable, reported_runs, run_key, save_record
from semiseg.bench_score import rescored, run_models, score_test
from semiseg.bench_segment_pool import pool_score_lines, score_pool
from semiseg.datasets import validate_dataset
from semiseg.devices import machine_name, resolve_device
from semiseg.errors import ConfigError
from semiseg.events import _clean
from semiseg.figures import dice_boxplot, validation_curves
from semiseg.fresh_process import in_fresh_process
from semiseg.io import read_label, read_volume
from semiseg.metrics import mean_std_text as _fmt
from semiseg.methods import method_class, method_names
from semiseg.overlays import overlay_planes
from semiseg.predict_cases import prediction_name
from semiseg.transforms import AUGMENTATION_STRENGTHS
from semiseg.train import TrainConfig, train
from semiseg.training.pool_quality import with_pool_truth

# Settings per profile; command-line flags override them.
PROFILES: dict[str, dict] = {
    # la-dev on 2 CPU cores: 2 mm voxels (3.2x coarser than LA's 0.625 mm, so a case is about 58x43x28) and a
    # 32x48x48 patch that covers most of it; 300 iterations, so the two baselines at 3 seeds take about 10
    # minutes and all six variants about 70 (measured, docs/benchmarks/la-dev-cpu-lite).
    "cpu-lite": {"spacing": [2.0, 2.0, 2.0], "patch": [32, 48, 48], "iterations": 300, "val_every": 50,
                 "batch_labeled": 2, "batch_unlabeled": 2, "overlap": 0.5, "options": {"n_filters": 16}},
    # The LA protocol: native 0.625 mm, patch 112×112×80 and batch 2 labeled + 2 unlabeled as UA-MT (Yu et al.,
    # MICCAI 2019; github.com/yulequan/UA-MT at 88ed29a, code/train_LA_meanteacher_certainty_unlabel.py:29-30,
    # 61), the 15k iterations of MC-Net onward (Wu et al., MICCAI 2021, arXiv 2103.02911), SGD 0.01 poly; for a GPU.
    "paper": {"spacing": None, "patch": [80, 112, 112], "iterations": 15000, "val_every": 500,
              "batch_labeled": 2, "batch_unlabeled": 2, "overlap": 0.5, "options": {}},
    # The built-in phantoms (`semiseg synthetic`, 48³): native spacing, whole-ish 32³ patches, 2 CPU cores.
    "synthetic": {"spacing": None, "patch": [32, 32, 32], "iterations": 300, "val_every": 50,
                  "batch_labeled": 2, "batch_unlabeled": 2, "overlap": 0.5, "options": {"n_filters": 16}},
    # Tiny, for tests and smoke runs on synthetic data.
    "smoke": {"spacing": None, "patch": [32, 32, 32], "iterations": 4, "val_every": 2, "batch_labeled": 1,
              "batch_unlabeled": 1, "overlap": 0.25, "options": {"n_filters": 4}},
}
METRICS = ("dice", "jaccard", "hd95_mm", "asd_mm", "hd95_vox", "asd_vox")


@dataclass
class BenchSettings:
    data: Path
    name: str
    methods: list[str]
    seeds: list[int]
    profile: str = "cpu-lite"
    out: Path | None = None  # the report goes to OUT/NAME; None: NAME under the current folder
    workdir: Path | None = None  # None: OUT/NAME/runs
    device: str = "auto"
    iterations: int | None = None
    time_seconds: float | None = None  # --time: each run planned for this wall time (the profile's grid unused)
    lcc: bool = False
    tta: bool = False  # --tta: test-time mirroring when scoring (runs scored otherwise are scored again)
    options: dict | None = None
    overwrite: bool = False
    resume: bool = False
    progress: bool = True
    command: str = ""
    twins: bool = True
    peers: list[Path] | None = None  # JSON files written by `semiseg peer`
    pool_truth: Path | None = None  # labels of the unlabeled cases: the pseudo-label measurement only
    spacing: list[float] | None = None  # --spacing (x, y, z mm): the profile's, or kept as given by the planner
    patch: list[int] | None = None  # --patch (d, h, w): likewise
    score_pool: Path | None = None  # labels of the unlabeled cases: the final models' pool scores only
    val_every: int | None = None  # --val-every: the profile's (scaled to --iterations), or the planner's
    augment: str | None = None  # --augment: training augmentation for every run (None: train's default)

    def profile_settings(self) -> dict:
        if self.profile not in PROFILES:
            raise ConfigError(f"--profile {self.profile}: expected one of {', '.join(PROFILES)}")
        settings = dict(PROFILES[self.profile])
        if self.iterations:
            settings["iterations"] = self.iterations
            settings["val_every"] = max(1, min(settings["val_every"], self.iterations // 4 or 1))
        if self.val_every is not None:
            if self.val_every < 1:
                raise ConfigError(f"--val-every {self.val_every}: expected a positive number of iterations")
            settings["val_every"] = self.val_every
        settings["options"] = {**settings["options"], **(self.options or {})}
        if self.spacing:
            settings["spacing"] = list(self.spacing) * (3 if len(self.spacing) == 1 else 1)
        if self.patch:
            settings["patch"] = list(self.patch)
        if self.augment is not None:  # only when given, so that runs from before the flag keep their keys
            if self.augment not in AUGMENTATION_STRENGTHS:
                raise ConfigError(f"--augment {self.augment}: expected one of {', '.join(AUGMENTATION_STRENGTHS)}")
            settings["augment"] = self.augment
        return settings

    def given(self) -> set[str]:
        """With --time: the settings the planner keeps as given (as `train --time --spacing ...` does)."""
        flags = {"spacing": self.spacing, "patch": self.patch, "n_filters": (self.options or {}).get("n_filters"),
                 "val_every": self.val_every}
        return {k for k, v in flags.items() if v is not None}


def run_bench(args) -> Path:
    """Entry from the CLI (argparse namespace)."""
    from semiseg.plan import parse_duration
    if args.time and args.iterations:
        raise ConfigError("--time and --iterations: give one (with --time the planner chooses the iterations)")
    settings = BenchSettings(
        data=Path(args.data), name=args.name, methods=split_methods(args.methods),
        seeds=[int(s) for s in args.seeds.split(",") if s], profile=args.profile,
        out=Path(args.out) if args.out else None,
        workdir=Path(args.workdir) if args.workdir else None, device=args.device, iterations=args.iterations,
        time_seconds=parse_duration(args.time) if args.time else None, lcc=args.lcc, tta=args.tta,
        overwrite=args.overwrite,
        resume=args.resume, progress=not args.quiet,
        command="semiseg " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        options=parse_variant(":" + ",".join(args.option or []))[1], twins=not args.no_twins,
        peers=[Path(f) for f in args.peer or []], pool_truth=Path(args.pool_truth) if args.pool_truth else None,
        spacing=args.spacing, patch=args.patch, score_pool=Path(args.score_pool) if args.score_pool else None,
        val_every=args.val_every, augment=args.augment)
    return bench(settings)


def bench(s: BenchSettings) -> Path:
    p = s.profile_settings()
    report_dir = (s.out if s.out is not None else Path.cwd()) / s.name
    work = s.workdir or report_dir / "runs"
    for what, path, flag in (("the report", report_dir, s.out), ("the runs", work, s.workdir)):
        tree = source_tree(path)
        if flag is None and tree is not None:
            raise ConfigError(f"{path}: {what} would go inside the source tree {tree} by default; run the benchmark "
                              f"from another folder, or name the place on purpose with --out (report) and "
                              f"--workdir (models, checkpoints, predictions)")
    if report_dir.exists() and any(report_dir.iterdir()) and not s.overwrite and \
            not (s.resume and _earlier_report(report_dir, s.name)):
        raise ConfigError(f"{report_dir}: exists and is not empty (pass --overwrite or choose another --name)")
    if work.exists() and any(work.iterdir()) and not (s.overwrite or s.resume):
        raise ConfigError(f"{work}: exists and is not empty (pass --resume to reuse its finished runs, "
                          f"--overwrite to start again, or choose another --name)")
    device = resolve_device(s.device)
    s = replace(s, methods=with_twins(s.methods, add=s.twins))
    ds, _ = validate_dataset(s.data)  # check's rules, before any run
    if s.pool_truth is not None:
        with_pool_truth(ds.unlabeled, s.pool_truth)  # every pool case has its label, before any run
    pool = with_pool_truth(ds.unlabeled, s.score_pool, "--score-pool") if s.score_pool is not None else []
    if not any(c.label is not None for c in ds.test):
        raise ConfigError(f"{s.data}: the test split has no labels to evaluate against")
    peer_runs = [r for f in s.peers or [] for r in _read_peer(f)]  # read first: a bad file fails before training
    reported = reported_runs(report_dir) if s.resume else []
    todo = []
    for variant in s.methods:
        method, own = parse_variant(variant)
        cls = method_class(method)
        options = {**{k: v for k, v in p["options"].items() if k in cls.defaults}, **own}
        todo += [(variant, method, options, seed) for seed in s.seeds]
    if not todo:
        raise ConfigError("--methods: no method to run")
    clock = RunClock(len(todo))
    method_of = {}  # twin → the first method it serves (it runs after that one, and inherits its plan)
    for v in s.methods:
        if twin_of(v):
            method_of.setdefault(twin_of(v), v)
    done = _reusable(s, p, todo, method_of, device, work, report_dir, reported) if s.resume else {}
    if done:  # before any training, so that a benchmark stopped in its next run still reports these
        report = _write_report(s, p, ds, _in_order(done), peer_runs, len(todo), device, report_dir)
    for i, (variant, method, options, seed) in enumerate(todo):
        if s.progress:
            print(f"semiseg bench: {clock.line(f'{variant} seed {seed}')}", file=sys.stderr, flush=True)
        if i in done:
            clock.finished(0.0, True)
            if _rescored(s, p, ds, pool, done[i], variant, seed, device, work, report_dir):
                report = _write_report(s, p, ds, _in_order(done), peer_runs, len(todo), device, report_dir)
            continue
        run_start = time.perf_counter()
        inherited = _inherited(s, _in_order(done), method_of.get(variant), seed)
        run, reused = _cached_run(s, p, ds, variant, method, options, seed, device, work, inherited, report_dir,
                                  reported)
        rescored = _rescored(s, p, ds, pool, run, variant, seed, device, work, report_dir)
        clock.finished(time.perf_counter() - run_start, reused)
        done[i] = run
        if not reused or rescored or len(done) == len(todo):
            report = _write_report(s, p, ds, _in_order(done), peer_runs, len(todo), device, report_dir)
    return report


def _in_order(done: dict[int, dict]) -> list[dict]:
    return [done[i] for i in sorted(done)]


def _reusable(s, p, todo, method_of, device, work, report_dir, reported) -> dict[int, dict]:
    """Under --resume, the runs of `todo` (by position) that are finished already, in the work folder or the
    earlier report. Found before anything trains: the report rewritten after the next run must keep them, or a
    benchmark stopped before it reached them would drop them from its report, and a later --resume with them."""
    found: dict[int, dict] = {}
    for i, (variant, method, options, seed) in enumerate(todo):
        parent = method_of.get(variant)
        if parent is not None and s.time_seconds is not None and \
                not any(r["method"] == parent and r["seed"] == seed for r in found.values()):
            continue  # a twin's key holds its method's plan, unknown until that run is done
        inherited = _inherited(s, _in_order(found), parent, seed)
        key = run_key(s, p, method, options, seed, device, inherited, report_dir)
        run = finished_run(_record_path(work, variant, seed), key, reported)
        if run is not None:
            found[i] = run
    return found


def _rescored(s, p, ds, pool, run, variant, seed, device, work, report_dir) -> bool:
    """A finished run scored again where this bench's inference differs (semiseg.bench_score) and, with
    --score-pool, on the pool (semiseg.bench_segment_pool), kept in its record; True if its scores changed."""
    tag = f"{slug(variant)}-s{seed}"
    models = run_models(work, tag)
    changed = rescored(run, models, ds.test, s.data, device, work / "predictions" / tag, p["overlap"], s.lcc, s.tta)
    if pool:
        changed |= score_pool(run, models, pool, portable(s.score_pool, report_dir), ds.foreground_labels,
                              set(ds.labels.values()), device, work / "predictions" / tag, p["overlap"], s.lcc,
                              s.tta)
    if changed:
        save_record(_record_path(work, variant, seed), run)
    return changed


def _record_path(work: Path, variant: str, seed: int) -> Path:
    return work / "runs" / f"{slug(variant)}-s{seed}.json"


def _write_report(s, p, ds, runs, peer_runs, total_runs, device, report_dir) -> Path:
    """The report of the runs finished so far, rewritten after each run, so that a benchmark of hours can be read
    (and committed) while it goes on, and one that was stopped keeps what it finished."""
    done = [m for m in s.methods if any(r["method"] == m for r in runs)]
    s = replace(s, methods=[*done, *dict.fromkeys(r["method"] for r in peer_runs)])
    results = _aggregate(s, p, ds, runs + peer_runs, device, sum(map(_run_seconds, runs)))
    results["finished_runs"] = [len(runs), total_runs]
    report_dir.mkdir(parents=True, exist_ok=True)
    results["overlays"] = _figures(report_dir, ds, runs + peer_runs, s)
    with atomic_path(report_dir / "results.json", ".json") as tmp:
        tmp.write_text(json.dumps(_clean(results), indent=2) + "\n", encoding="utf-8")
    with atomic_path(report_dir / "report.md", ".md") as tmp:
        tmp.write_text(_report(results), encoding="utf-8")
    return report_dir / "report.md"


def _earlier_report(report_dir: Path, name: str) -> bool:
    """Whether the folder holds only an earlier report of this benchmark (what --resume may rewrite)."""
    try:
        results = json.loads((report_dir / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    ours = all(f.name in ("report.md", "results.json") or f.suffix == ".png" for f in report_dir.iterdir())
    return ours and isinstance(results, dict) and results.get("name") == name and "engine_version" in results


def source_tree(path: Path) -> Path | None:
    """The nearest folder at or above `path` that is a source checkout (holds .git or pyproject.toml)."""
    for folder in [Path(os.path.abspath(path)), *Path(os.path.abspath(path)).parents]:
        if (folder / ".git").exists() or (folder / "pyproject.toml").is_file():
            return folder
    return None


class RunClock:
    """Overall progress of a benchmark: which run is next and, from the runs trained so far, the time left."""

    def __init__(self, total: int):
        self.total, self.done, self.trained, self.trained_seconds = total, 0, 0, 0.0
        self.started = time.perf_counter()

    def finished(self, seconds: float, reused: bool) -> None:
        self.done += 1
        if not reused:  # a run reused under --resume says nothing about how long the others take
            self.trained += 1
            self.trained_seconds += seconds

    def eta_seconds(self) -> float | None:
        return None if not self.trained else self.trained_seconds / self.trained * (self.total - self.done)

    def line(self, what: str) -> str:
        spent = (time.perf_counter() - self.started) / 60
        eta = self.eta_seconds()
        left = "time left known after the first run" if eta is None else f"about {eta / 60:.1f} min left"
        return f"run {self.done + 1}/{self.total} ({what}); {spent:.1f} min so far, {left}"


def slug(variant: str) -> str:
    """A file-name-safe form of a method variant ('dual-contrast:released=true' → 'dual-contrast-released-true')."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in variant)


def split_methods(text: str) -> list[str]:
    """Methods separated by spaces; commas separate methods too unless they sit inside a variant's options."""
    out = []
    for word in text.split():
        if ":" in word:
            out.append(word)
        else:
            out += [m for m in word.split(",") if m]
    return out


def twin_of(variant: str) -> str | None:
    """The supervised twin of a variant ('mean-teacher' → 'mean-teacher:unlabeled=false'), None for a variant
    that learns from no unlabeled image (supervised, a twin, VerSemi with stage1_fraction=1) or is a peer tool."""
    method, own = parse_variant(variant)
    if method not in method_names() or own.get("unlabeled") is False or not method_class(method).learns_from(own):
        return None
    # Options that only shape unlabeled terms change nothing in the twin: variants differing only in them (or in a
    # recipe that sets only them) share one twin (mean-teacher:consistency=10 → mean-teacher:unlabeled=false).
    cls = method_class(method)
    ignored = cls.unlabeled_only | ({"recipe"} if set(cls.authors_recipe) <= cls.unlabeled_only else set())
    kept = [pair for pair in filter(None, variant.partition(":")[2].split(","))
            if pair.partition("=")[0] not in ignored]
    return f"{method}:{','.join([*kept, 'unlabeled=false'])}"


def with_twins(variants: list[str], add: bool = True) -> list[str]:
    """Plain supervised first, then each variant followed by its twin (each once); with `add` false, only the
    twins listed. A twin always runs after its method, even when listed before it: under --time it takes its
    method's planned grid, patch and batches."""
    twins = {twin_of(v) for v in variants}
    out = ["supervised"] if add and any(twins - {None}) else []
    for v in variants:
        if v in twins:
            continue  # placed right after its method
        out += [x for x in (v, twin_of(v)) if x and x not in out and (add or x in variants)]
    return out


def parse_variant(spec: str) -> tuple[str, dict]:
    """'dual-contrast:released=true,confidence=0.7' → ('dual-contrast', {'released': True, 'confidence': 0.7})."""
    method, _, rest = spec.partition(":")
    options = {}
    for pair in filter(None, rest.split(",")):
        key, eq, value = pair.partition("=")
        if not eq:
            raise ConfigError(f"--methods {spec!r}: options are key=value")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return method, options


def _inherited(s: BenchSettings, runs: list[dict], method_variant: str | None, seed: int) -> dict | None:
    """With --time, what a twin takes from its method's run of the same seed (which runs before it)."""
    if s.time_seconds is None or method_variant is None:
        return None
    run = next(r for r in runs if r["method"] == method_variant and r["seed"] == seed)
    return {k: run["plan"][k] for k in INHERITED}


def _cached_run(s, p, ds, variant, method, options, seed, device, work, inherited, report_dir,
                reported) -> tuple[dict, bool]:
    """A finished run of the same settings is reused under --resume, from the work folder or from the earlier
    report (semiseg.bench_resume); each run is recorded as soon as it ends, so an interrupted benchmark loses at
    most the run in progress."""
    key = run_key(s, p, method, options, seed, device, inherited, report_dir)
    record = _record_path(work, variant, seed)
    if s.resume and (run := finished_run(record, key, reported)) is not None:
        return run, True
    started = time.perf_counter()
    run = _run_one(s, p, ds, variant, method, options, seed, device, work, inherited)
    run.update(key=key, wall_seconds=time.perf_counter() - started, machine=machine_name(device))
    save_record(record, run)
    return run, False


def _machines(runs: list[dict], device: torch.device) -> str:
    """Where the runs ran: one machine, or each with its run count, since a benchmark resumed in another session
    may continue on another machine (runs recorded before the engine kept this: "not recorded")."""
    counts = Counter(r.get("machine", "not recorded") for r in runs)
    if len(counts) <= 1:
        return next(iter(counts), machine_name(device))
    return "; ".join(f"{name} ({n} run{'s' * (n != 1)})" for name, n in counts.items())


def _run_seconds(run: dict) -> float:
    """A run's own time, training and test predictions (the sum over runs counts every invocation of a resumed
    benchmark, and not the gaps between them); runs recorded before it was kept: training plus inference."""
    if "wall_seconds" in run:
        return run["wall_seconds"]
    return run["train_seconds"] + sum(c["infer_seconds_per_volume"] * len(c["cases"])
                                      for c in run["checkpoints"].values())


def _read_peer(path: Path) -> list[dict]:
    """Runs of a peer tool (`semiseg peer`), already scored with our metrics on the test split."""
    try:
        runs = json.loads(Path(path).read_text(encoding="utf-8"))["runs"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"--peer {path}: not a `semiseg peer` result ({exc})") from exc
    return runs


def _run_one(s, p, ds, variant, method, options, seed, device, work, inherited) -> dict:
    tag = f"{slug(variant)}-s{seed}"
    model = work / "models" / f"{tag}.semiseg"
    # Anything left by an unfinished run of this tag is ours to replace: it starts again from scratch.
    shutil.rmtree(work / "checkpoints" / tag, ignore_errors=True)
    for stale in (model, model.with_name(f"{tag}-last.semiseg"), work / "predictions" / tag):
        shutil.rmtree(stale, ignore_errors=True)
    (work / "logs" / f"{tag}.jsonl").unlink(missing_ok=True)
    cfg = TrainConfig(data=str(s.data), out=str(model), method=method, method_options=options,
                      iterations=p["iterations"], batch_labeled=p["batch_labeled"],
                      batch_unlabeled=p["batch_unlabeled"], patch=p["patch"], spacing=p["spacing"], seed=seed,
                      device=str(device), val_every=p["val_every"], augment=p.get("augment", "standard"),
                      checkpoint="best", export_other=True,
                      workdir=str(work / "checkpoints" / tag), events=str(work / "logs" / f"{tag}.jsonl"),
                      progress=s.progress, pool_truth=str(s.pool_truth) if s.pool_truth else None)
    if s.time_seconds is None:
        result = in_fresh_process(train, cfg)
    else:
        cfg, fixed = with_inherited(cfg, inherited)
        result = in_fresh_process(plan_and_train, cfg, s.time_seconds, fixed | s.given())
    run = {"method": variant, "seed": seed, "options": options, "train_seconds": result.seconds,
           "iterations": result.iterations,
           "iterations_per_second": result.iterations / max(result.step_seconds, 1e-9),
           "peak_memory_mb": result.peak_memory_mb, "best_iteration": result.best_iteration,
           "best_validation_dice": result.best_dice, "last_validation_dice": result.last_dice,
           "validation_curve": [(h["iteration"], h["dice"]) for h in result.history],
           "pool_curve": [(h["iteration"], h["dice"]) for h in result.pool_history], "checkpoints": {}}
    if s.time_seconds is not None:
        run["plan"] = planned_settings(result.model)
    models = {"best": result.models.get("best", result.model), "last": result.models["last"]}
    score_test(run, models, ds.test, s.data, device, work / "predictions" / tag, p["overlap"], s.lcc, s.tta)
    return run


def _aggregate(s, p, ds, runs, device, seconds) -> dict:
    table = {}
    for method in s.methods:
        mruns = [r for r in runs if r["method"] == method]
        row = {ckpt: {k: mean_std(seed_means(mruns, ckpt, k)) for k in METRICS} for ckpt in CHECKPOINTS}
        row["train_seconds"] = mean_std([r["train_seconds"] for r in mruns])
        row["iterations_per_second"] = mean_std([r["iterations_per_second"] for r in mruns])
        row["iterations"] = mean_std([r["iterations"] for r in mruns])
        row["peak_memory_mb"] = mean_std([r["peak_memory_mb"] for r in mruns])
        row["infer_seconds_per_volume"] = mean_std([r["checkpoints"]["best"]["infer_seconds_per_volume"]
                                                    for r in mruns])
        table[method] = row
    paired_rows = paired(_pairs(s.methods), s.methods, runs)
    pool_rows = paired(_pairs(s.methods), s.methods, runs, field="pool") if any("pool" in r for r in runs) else []
    n_val = max(1, round(0.2 * len(ds.training))) if len(ds.training) >= 3 else 0
    device_text = _machines([r for r in runs if "key" in r], device)
    return {
        "name": s.name, "engine_version": __version__, "command": s.command, "profile": s.profile,
        "dataset": {"path": str(s.data), "name": ds.name, "labeled": len(ds.training) - n_val, "validation": n_val,
                    "unlabeled": len(ds.unlabeled), "test": len(ds.test), "labels": ds.foreground_labels},
        "protocol": {**{k: v for k, v in p.items()}, "seeds": s.seeds, "lcc": s.lcc, "tta": s.tta,
                     "time_seconds": s.time_seconds,
                     "given": sorted(s.given()) if s.time_seconds else [],
                     "checkpoint_rule": "best = highest mean validation Dice on labeled cases held out from "
                                        "training (never the test split); last = final iteration",
                     "device": device_text, "torch": torch.__version__},
        "total_seconds": seconds, "methods": table, "paired": paired_rows, "pool_paired": pool_rows, "runs": runs,
    }


def _pairs(variants: list[str]) -> list[tuple[str, str]]:
    """(method, twin) for each variant whose twin is in the benchmark."""
    return [(v, twin_of(v)) for v in variants if twin_of(v) in variants]


def _paired_lines(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    return ["## Does the unlabeled pool help? Each method against its supervised twin", "",
            "The twin is the same method, network, options, optimiser, schedule, augmentation and budget with "
            "every unlabeled term off (`unlabeled=false`); gains are paired by seed (method − twin, in Dice "
            "points), with how many seeds improved.", "", *paired_table(rows), ""]


def _partial_lines(r: dict) -> list[str]:
    done, total = r.get("finished_runs", (0, 0))
    if done >= total:
        return []
    return [f"**Partial: {done} of {total} runs finished** (the benchmark is running or was stopped; the same "
            f"command with `--resume` continues it). Methods without runs yet are not in the tables.", ""]


def _settings_line(r: dict, spacing: str) -> str:
    p = r["protocol"]
    if p.get("time_seconds"):
        values = {"spacing": f"spacing {spacing}", "patch": f"patch {p['patch']}",
                  "n_filters": f"width {p['options'].get('n_filters')}",
                  "val_every": f"validation every {p['val_every']} iterations"}
        given = [text for k, text in values.items() if k in p.get("given", [])]
        kept = f"kept the given {', '.join(given)} and " if given else ""
        return (f"- Budget: every run is `semiseg train --time {_time_flag(p['time_seconds'])}` on this machine "
                f"(planning included): the planner {kept}chose each method's spacing, patch, batch, width, "
                f"iterations and validation interval{' otherwise' if given else ''}; each twin took its method's "
                f"spacing, patch, batch and width (same seed) and was planned only for iterations (the plans are "
                f"under Plans). Method options {p['options'] or 'defaults'}{_augment_text(p)}.")
    return (f"- Profile `{r['profile']}`: resampled to {spacing}; patch (d, h, w) {p['patch']}; {p['iterations']} "
            f"iterations, batch {p['batch_labeled']} labeled + {p['batch_unlabeled']} unlabeled; validation every "
            f"{p['val_every']} iterations; method options {p['options'] or 'defaults'}{_augment_text(p)}.")


def _augment_text(p: dict) -> str:
    return f"; training augmentation `{p['augment']}` (`--augment`)" if "augment" in p else ""


def _time_flag(seconds: float) -> str:
    """A budget as `--time` takes it: 600 → '10m', 90 → '90s'."""
    return f"{seconds / 60:g}m" if seconds % 60 == 0 else f"{seconds:g}s"


def _plan_lines(runs: list[dict]) -> list[str]:
    """With --time: what each run was planned with and what it did."""
    planned = [r for r in runs if r.get("plan")]
    if not planned:
        return []
    lines = ["## Plans", "", "| method | seed | spacing mm | patch | batch | width | iterations (planned) | "
             "s / step (probe) | training min |", "|---|---|---|---|---|---|---|---|---|"]
    for r in planned:
        q = r["plan"]
        spacing = "native" if q["spacing"] is None else "×".join(f"{v:.2g}" for v in q["spacing"])
        lines.append(f"| {r['method']} | {r['seed']} | {spacing} | {'×'.join(map(str, q['patch']))} | "
                     f"{q['batch_labeled']} + {q['batch_unlabeled']} | {q['n_filters'] or '-'} | {r['iterations']} "
                     f"({q['iterations']}) | {q['step_seconds']:.2f} | {r['train_seconds'] / 60:.1f} |")
    return lines + [""]


def _report(r: dict) -> str:
    d, p = r["dataset"], r["protocol"]
    spacing = "native" if p["spacing"] is None else " × ".join(f"{v:g}" for v in p["spacing"]) + " mm"
    lines = [
        f"# Benchmark: {r['name']}", "",
        f"Produced by `{r['command']}` (engine {r['engine_version']}, torch {p['torch']}), "
        f"{r['total_seconds'] / 60:.1f} min of runs in all.", "",
        *_partial_lines(r),
        *_paired_lines(r.get("paired", [])),
        *pool_score_lines(list(r["methods"]), r["runs"], r.get("pool_paired", [])),
        "## Protocol", "",
        f"- Data: `{d['path']}` ({d['name']}): {d['labeled']} labeled for training + {d['validation']} labeled "
        f"held out for validation, {d['unlabeled']} unlabeled, {d['test']} test cases; labels "
        f"{', '.join(d['labels'])}.",
        _settings_line(r, spacing),
        f"- Checkpoints: {p['checkpoint_rule']}.",
        f"- Inference: sliding window, overlap {p['overlap']}, Gaussian blending, on each image's own grid; "
        f"test-time mirroring: {'the 8 mirrorings of each window averaged (--tta)' if p.get('tta') else 'none'}; "
        f"post-processing: {'largest connected component' if p['lcc'] else 'none'}"
        f"{'; peer rows predict as their tool does by default (nnU-Net mirrors)' if _has_peers(r) else ''}.",
        f"- Seeds {p['seeds']}: every figure is the mean ± std over seeds of each seed's mean over the test cases.",
        f"- Device: {p['device']}.",
        "- Metrics: medpy-compatible (HD95 pooled 95th percentile; ASD directed prediction→truth), in mm and "
        "in voxels of the original grid; Dice and Jaccard in %.", "",
        "## Results", "",
        "| method | checkpoint | Dice % | Jaccard % | HD95 mm | ASD mm | HD95 vox | ASD vox |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, row in r["methods"].items():
        for ckpt in CHECKPOINTS:
            m = row[ckpt]
            lines.append(f"| {method} | {ckpt} | {_fmt(m['dice'], 100)} | {_fmt(m['jaccard'], 100)} | "
                         f"{_fmt(m['hd95_mm'])} | {_fmt(m['asd_mm'])} | {_fmt(m['hd95_vox'])} | "
                         f"{_fmt(m['asd_vox'])} |")
    lines += ["", "| method | training min | iterations | iterations / s | peak memory MB | inference s / volume |",
              "|---|---|---|---|---|---|"]
    for method, row in r["methods"].items():
        iterations = _fmt(row["iterations"], digits=0) if "iterations" in row else "n/a"
        lines.append(f"| {method} | {_fmt(row['train_seconds'], 1 / 60)} | {iterations} | "
                     f"{_fmt(row['iterations_per_second'], digits=2)} | {_fmt(row['peak_memory_mb'], digits=0)} | "
                     f"{_fmt(row['infer_seconds_per_volume'], digits=2)} |")
    lines += ["", "Training minutes include validation and checkpoints; iterations / s counts optimiser steps "
              "alone. Peak memory is the training process's peak resident memory on CPU (it includes the "
              "cached, preprocessed dataset) and the peak allocated GPU memory on CUDA.", "",
              *pool_lines(list(r["methods"]), r["runs"]),
              *_plan_lines(r["runs"]),
              "## Figures", "", "![per-case Dice](dice_boxplot.png)", "", "![validation Dice](validation_curves.png)",
              ""]
    for method in r["overlays"]:
        lines += [f"![{method}](overlay_{slug(method)}.png)", ""]
    lines += ["Raw numbers per run, checkpoint and case: `results.json`.", ""]
    return "\n".join(lines)


def _has_peers(r: dict) -> bool:
    return any("peer" in run.get("options", {}) for run in r["runs"])


def _figures(report_dir: Path, ds, runs: list[dict], s: BenchSettings) -> list[str]:
    """Draws the figures; returns the methods that have an overlay picture."""
    per_method = {m: [c["dice"] for r in runs if r["method"] == m
                      for c in r["checkpoints"]["best"]["cases"].values()] for m in s.methods}
    dice_boxplot(per_method, report_dir / "dice_boxplot.png",
                 title=f"Per-case test Dice, best checkpoint, {len(s.seeds)} seed(s)")
    validation_curves({m: [r["validation_curve"] for r in runs if r["method"] == m] for m in s.methods},
                      report_dir / "validation_curves.png")
    pool_figure(report_dir, s.methods, runs)
    case = ds.test[0]
    image, truth = read_volume(case.image), read_label(case.label)
    names = {value: name for name, value in ds.foreground_labels.items()}
    overlays = []
    for method in s.methods:
        picture = report_dir / f"overlay_{slug(method)}.png"
        # A run read back from the report on another machine has no predictions here: the picture an earlier
        # invocation drew of it stays.
        run = next((r for r in runs if r["method"] == method and _prediction(r, case).is_file()), None)
        if run is not None:
            overlay_planes(image.array, picture, names,
                           {f"{method} (seed {run['seed']})": read_label(_prediction(run, case)).array},
                           truth=truth.array, spacing_zyx=image.spacing_zyx,
                           title=f"{case.id}: truth (solid outline), {method} seed {run['seed']} (filled)")
        if picture.is_file():
            overlays.append(method)
    return overlays


def _prediction(run: dict, case) -> Path:
    """Where a run's best checkpoint wrote its prediction of a test case."""
    return Path(run["checkpoints"]["best"]["predictions"]) / prediction_name(case.id, case.image)
