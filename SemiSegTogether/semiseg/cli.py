"""`semiseg` command line: demo | check | convert | train | plan | predict | suggest | add-labeled | evaluate |
methods | bench."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from semiseg import __version__
from semiseg.errors import INTERRUPTED_EXIT_CODE, Interrupted, SemiSegError


def _csv_ints(text: str) -> list[int]:
    return [int(v) for v in text.replace("x", ",").split(",") if v.strip()]


def _spacing_mm(text: str) -> list[float]:
    """--spacing (train, plan, bench): x,y,z in mm, or one value for an isotropic grid."""
    values = [float(v) for v in text.split(",") if v.strip()]
    return values * 3 if len(values) == 1 else values


def _options(pairs: list[str] | None) -> dict:
    """--option key=value (value parsed as JSON when it parses, else kept as text)."""
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise SemiSegError(f"--option {pair!r}: expected key=value")
        key, value = pair.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


# ---- subcommands ---------------------------------------------------------------------------------------
def cmd_check(args) -> int:
    from semiseg.datasets import check_dataset, load_dataset
    report = check_dataset(load_dataset(Path(args.data)))
    print(report.format())
    return 0


def _tasks(text: str | None) -> dict | None:
    """'organs=organ,vessel;lesions=lesion' → {"organs": ["organ", "vessel"], "lesions": ["lesion"]}."""
    if not text:
        return None
    tasks = {}
    for part in filter(None, text.split(";")):
        name, eq, labels = part.partition("=")
        if not eq:
            raise SemiSegError(f"--tasks {text!r}: expected task=label,label;task=label")
        tasks[name.strip()] = [v.strip() for v in labels.split(",") if v.strip()]
    return tasks


def cmd_synthetic(args) -> int:
    from semiseg.synthetic import make_dataset
    split = lambda text: tuple(v for v in (text or "").split(",") if v) or None  # noqa: E731
    out = make_dataset(Path(args.out), n_labeled=args.labeled, n_unlabeled=args.unlabeled, n_test=args.test,
                       shape=tuple(args.shape), seed=args.seed,
                       labeled_domains=split(args.labeled_domains) or ("scanner-a",),
                       unlabeled_domains=split(args.unlabeled_domains), test_domains=split(args.test_domains),
                       tasks=_tasks(args.tasks), overwrite=args.overwrite, unlabeled_truth=args.unlabeled_truth)
    print(f"wrote {out}")
    return 0


def cmd_convert(args) -> int:
    from semiseg.convert import convert_la_h5
    out = convert_la_h5(Path(args.src), Path(args.dst), n_labeled=args.labeled, overwrite=args.overwrite,
                        progress=not args.quiet)
    print(f"wrote {out}")
    return 0


DEFAULT_ITERATIONS = 6000  # TrainConfig's; SemiSegTrainer shows the same in Advanced


def add_fast_path_arguments(p: argparse.ArgumentParser) -> None:
    """The CUDA fast paths (semiseg.fastpaths), shared by train and predict; each can be switched."""
    p.add_argument("--no-amp", action="store_true", help="no mixed precision (same as --precision fp32)")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"],
                   help="mixed precision on CUDA (default auto: bf16 where the GPU supports it, else fp16 with "
                        "a loss scaler); a CPU always computes in fp32")
    p.add_argument("--channels-last", action="store_true", help="channels_last_3d memory format for the network")
    p.add_argument("--no-cudnn-benchmark", action="store_true", help="do not let cuDNN time and pick its "
                                                                     "convolution algorithms (on by default)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (takes a while to compile; "
                                                          "see docs/benchmarks/gpu for when it pays)")


def _fast_paths(args):
    from semiseg.fastpaths import FastPaths
    return FastPaths(precision="fp32" if args.no_amp else args.precision, channels_last=args.channels_last,
                     cudnn_benchmark=not args.no_cudnn_benchmark, compile=args.compile)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The training settings of `semiseg train`."""
    p.add_argument("--time", help="time budget, e.g. 30m, 1h30m, 90s: the planner (`semiseg plan`) picks spacing, "
                                  "patch, batch, width, iterations and validation interval to finish within it; "
                                  "the flags below that you give are kept")
    p.add_argument("--memory", help="with --time: memory the run may use, e.g. 8G (default 80%% of what is free)")
    p.add_argument("--threads", type=int, help="CPU threads (default: PyTorch's; with --time the planner measures "
                                               "1 against all and keeps the faster)")
    p.add_argument("--iterations", type=int, help=f"optimiser steps (default {DEFAULT_ITERATIONS}, as UA-MT; "
                                                  f"with --time: planned)")
    p.add_argument("--batch-labeled", type=int, help="labeled patches per step (default 2)")
    p.add_argument("--batch-unlabeled", type=int, help="unlabeled patches per step (default 2)")
    p.add_argument("--patch", type=_csv_ints, help="patch size d,h,w (array order, multiples of 16; "
                                                   "default: the median case size, at most 128)")
    p.add_argument("--spacing", type=_spacing_mm, help="resample to this spacing x,y,z in mm, or one value for all "
                   "three (default: native)")
    p.add_argument("--intensity", choices=["zscore", "ct", "percentile", "none"],
                   help="intensity normalisation: MR z-score (default, or the --init model's), CT window, "
                        "percentile clip, none")
    p.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], help="default: the method's authors' choice")
    p.add_argument("--lr", type=float, help="learning rate (default: the method's; SGD 0.01)")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--schedule", choices=["poly", "constant", "step"], help="LR schedule (default poly 0.9)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present) | cpu | cuda | cuda:N | mps")
    p.add_argument("--val-every", type=int, help="validate every N iterations (default 200; with --time: planned)")
    p.add_argument("--val-cases", type=int, help="labeled cases held out for validation (default: none, every "
                                                 "labeled case trains; with --checkpoint best a fifth, at least 1, "
                                                 "when ≥3 labeled)")
    p.add_argument("--checkpoint", default="last", choices=["last", "best"],
                   help="what the package holds: the last weights (default, as nnU-Net ships its final "
                        "checkpoint; with a few held-out cases the best one is picked by noise) or the best on "
                        "the validation cases")
    p.add_argument("--export-both", action="store_true", help="also write the other checkpoint beside --out, as "
                   "NAME-best.semiseg or NAME-last.semiseg")
    p.add_argument("--fg-ratio", type=float, default=0.33, help="share of labeled patches centred on a foreground "
                   "voxel of a random class, as nnU-Net oversamples (default 0.33)")
    p.add_argument("--augment", default="standard", choices=["none", "light", "standard", "strong"],
                   help="augmentation: light = flips, axial 90° turns, mild intensity; standard (default) adds a "
                        "small affine; strong = larger and more often; none")
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="method option (repeatable); `semiseg methods` lists them")
    add_fast_path_arguments(p)


def _train_config(args, **overrides):
    from semiseg.train import TrainConfig
    given = {k: v for k, v in (("iterations", args.iterations), ("batch_labeled", args.batch_labeled),
                               ("batch_unlabeled", args.batch_unlabeled), ("val_every", args.val_every))
             if v is not None}  # the rest keep TrainConfig's defaults, which the help texts state
    return TrainConfig(
        data=args.data, out=args.out, method=args.method,
        method_options=_options(args.option), patch=args.patch, spacing=args.spacing, intensity=args.intensity,
        optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay, schedule=args.schedule,
        device=args.device, fast=_fast_paths(args), val_cases=args.val_cases, threads=args.threads,
        fg_ratio=args.fg_ratio, augment=args.augment, checkpoint=args.checkpoint, export_other=args.export_both,
        **given, **overrides)


def _given_settings(args) -> set[str]:
    """The planned settings the user chose on the command line (the plan keeps them)."""
    flags = {"spacing": args.spacing, "patch": args.patch, "batch_labeled": args.batch_labeled,
             "batch_unlabeled": args.batch_unlabeled, "iterations": args.iterations, "val_every": args.val_every}
    given = {k for k, v in flags.items() if v is not None}
    if "n_filters" in _options(args.option):
        given.add("n_filters")
    return given


def _planned(cfg, args):
    """With --time: the plan for `cfg` (printed to stderr) and the config it gives; a clear error when the budget
    cannot be met."""
    from semiseg.plan import make_plan, parse_duration, parse_memory
    from semiseg.process import seconds_spent
    _check_before_probing(cfg)
    fixed = _given_settings(args)
    inherited = set()
    if cfg.init:  # a fine-tune keeps its parent's grid, patch and width (its weights fit only those): plan the rest
        from semiseg.finetune import read_parent, with_parent_settings
        cfg = with_parent_settings(cfg, read_parent(cfg.init)[1])
        inherited = {"spacing", "patch", "n_filters"} - fixed
        fixed |= inherited
    plan = make_plan(cfg, parse_duration(args.time), memory_mb=parse_memory(args.memory),
                     fixed=fixed, spent_seconds=seconds_spent())
    plan.reasons.update({key: "the --init model's" for key in inherited})
    return plan, plan.apply(cfg)


def _check_before_probing(cfg) -> None:
    """A plan or an estimate runs a probe step on the data: the settings and the dataset pass train's own checks
    first, so that a bad file is named rather than crashing the probe (train checks them again, from a cache)."""
    from semiseg.datasets import validate_dataset
    from semiseg.train_checks import check_train_settings
    from semiseg.training.config import validate_config
    check_train_settings(cfg)
    validate_config(cfg)
    validate_dataset(cfg.data)


def _with_estimate(cfg):
    """Before a run without --time: its predicted time (one probe step of exactly these settings), printed and
    recorded, so that a 100-hour run does not start unannounced."""
    from dataclasses import replace

    from semiseg.plan import estimate
    from semiseg.process import seconds_spent
    from semiseg.training.progress import format_duration
    _check_before_probing(cfg)
    try:
        est = estimate(cfg, spent_seconds=seconds_spent())
    except (SemiSegError, ValueError, RuntimeError) as exc:  # the run itself reports bad settings clearly
        print(f"semiseg train: no time estimate ({exc})", file=sys.stderr)
        return cfg
    p = est.predicted
    print(f"semiseg train: predicted {format_duration(p['total'])} ({cfg.iterations} iterations x "
          f"{p['step_seconds']:.2f} s, {p['validations']} validations, on {est.device['name']}); "
          f"--time gives a plan that fits the time you have", file=sys.stderr)
    return replace(cfg, plan=est.to_dict())


def cmd_plan(args) -> int:
    if not args.time:
        raise SemiSegError("--time is required: the budget to plan for, e.g. --time 30m")
    cfg = _train_config(args)
    plan, _ = _planned(cfg, args)
    print(json.dumps(plan.to_dict(), indent=2) if args.json else plan.format())
    return 0


DDP_HELP = """\
Several GPUs (DistributedDataParallel, PyTorch's own engine):
  semiseg train --gpus N ...                 one machine, N processes (runs torchrun --standalone)
  torchrun --nproc_per_node N [--nnodes M --rdzv-backend c10d --rdzv-endpoint HOST:PORT] -m semiseg train ...
NCCL on CUDA (one GPU per process), gloo on CPU. --batch-labeled and --batch-unlabeled are per process:
the global batch is N x these. The learning rate is not scaled for you: to keep a single-GPU recipe, divide
the per-process batch by N (same global batch, same --lr); if you keep the per-process batch, the global
batch grows N-fold -- raise --lr by up to N (linear rule; SGD) or sqrt(N) (Adam), or keep it and accept
slower-moving training. --iterations counts optimiser steps, whatever N. Validation, checkpoints, events
and the model package come from rank 0; --resume needs the same N. See docs/distributed.md.
"""


def _launch_torchrun(args) -> int:
    """`semiseg train --gpus N ...` → `python -m torch.distributed.run --standalone --nproc_per_node N -m semiseg
    train <the same arguments without --gpus>`; forwards SIGINT/SIGTERM (cancel) to it and returns its exit code."""
    import signal
    import subprocess
    argv = list(getattr(args, "raw_argv", None) or sys.argv[1:])
    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--gpus":
            skip = True
        elif not a.startswith("--gpus="):
            rest.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.gpus}",
           "-m", "semiseg", *rest]
    proc = subprocess.Popen(cmd)
    previous = {}

    def forward(signum, frame):
        if proc.poll() is None:
            proc.send_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, forward)
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code != 0:
        print(f"semiseg train: the distributed run ({args.gpus} processes) failed with exit code {code}; the "
              f"failing rank's error is above (torchrun stops the other ranks)", file=sys.stderr)
    return 2 if code != 0 else 0


def cmd_train(args) -> int:
    from semiseg import distributed
    if args.time and not args.resume and (distributed.launched_by_torchrun() or (args.gpus or 1) > 1):
        # Every process would time its own probe and could choose other settings than the rest.
        raise SemiSegError("--time plans for one process; with several, plan once (`semiseg plan DATA --time ... "
                           "--json`) and pass its spacing, patch, batch sizes, iterations and n_filters as flags")
    if args.gpus is not None:
        if args.gpus < 1:
            raise SemiSegError("--gpus must be at least 1")
        if distributed.launched_by_torchrun():
            raise SemiSegError("--gpus: already running under torchrun; leave --gpus out (torchrun's "
                               "--nproc_per_node sets the process count)")
        if args.gpus > 1:
            return _launch_torchrun(args)
    from semiseg.train import train
    cfg = _train_config(args, seed=args.seed, workdir=args.workdir, resume=args.resume, init=args.init,
                        events=args.events, label_info=args.label_info, name=args.name, modality=args.modality,
                        overwrite=args.overwrite,
                        progress=not args.quiet, sync_bn=args.sync_bn, dist_timeout=args.dist_timeout)
    if args.time:
        if args.resume:
            from semiseg.plan import resumed_plan
            plan, cfg = resumed_plan(cfg)
        else:
            plan, cfg = _planned(cfg, args)
        if distributed.launch_rank() == 0:
            print(("Resuming the run planned as:\n" if args.resume else "") + plan.format(), file=sys.stderr)
        if plan.iterations < 1:
            raise SemiSegError(plan.message)  # not one step fits: nothing to train
    elif not args.resume and not distributed.launched_by_torchrun():
        cfg = _with_estimate(cfg)
    result = train(cfg)
    if distributed.launch_rank() != 0:
        return 0  # rank 0 reports
    shipped = next(k for k, path in result.models.items() if path == result.model)
    dice = ("no validation cases" if result.best_dice is None else f"validation Dice {_dice(result.last_dice)} last, "
            f"{_dice(result.best_dice)} best at {result.best_iteration}")
    others = [str(path) for path in result.models.values() if path != result.model]
    from semiseg.training.curves import curves_path
    print(f"wrote {result.model} (the {shipped} checkpoint; {result.iterations} iterations, {result.seconds:.0f} s, "
          f"{dice}){'; also ' + ', '.join(others) if others else ''}; curves "
          f"{curves_path(result.model)}")
    return 0


def _dice(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"  # the last iteration of a resumed, finished run: not validated


def cmd_predict(args) -> int:
    from semiseg.predict_command import run_predict
    return run_predict(args, started=args.started)


def cmd_suggest(args) -> int:
    from semiseg.atomic import atomic_path
    from semiseg.events import EventWriter
    from semiseg.suggest import format_suggestions, suggest
    if args.out and Path(args.out).exists() and not args.overwrite:
        raise SemiSegError(f"{args.out}: already exists (choose another --out or pass --overwrite)")
    with EventWriter(args.events) as events:
        try:
            events.emit("start", model=str(args.model), data=str(args.data))

            def progress(done: int, total: int, case: str) -> None:
                events.emit("progress", fraction=round(done / max(total, 1), 4), case=case)

            rows = suggest(Path(args.model), Path(args.data), n=args.n, device=args.device, strategy=args.strategy,
                           progress=progress)
            ranking = {"model": str(args.model), "data": str(args.data), "suggestions": [r.to_dict() for r in rows]}
            if args.out:
                with atomic_path(Path(args.out), ".json") as tmp:
                    tmp.write_text(json.dumps(ranking, indent=2) + "\n", encoding="utf-8")
            events.emit("done", out=args.out, suggestions=ranking["suggestions"])
        except Exception as exc:
            events.emit("error", message=f"{exc}")
            raise
    print(json.dumps(ranking, indent=2) if args.json else format_suggestions(rows))
    return 0


def cmd_add_labeled(args) -> int:
    from semiseg.pool import add_labeled
    case = add_labeled(Path(args.data), args.case, Path(args.label), overwrite=args.overwrite)
    print(f"{case.id} is labeled now ({case.label}); it is listed first, so the validation cases stay the same")
    return 0


def cmd_evaluate(args) -> int:
    from semiseg.atomic import atomic_path
    from semiseg.evaluate import evaluate_folder, format_summary
    from semiseg.events import _clean
    from semiseg.ownership import check_new_file
    if args.out:  # before the work, not after it
        check_new_file(args.out, args.overwrite, "--out")
        if not Path(args.out).parent.is_dir():
            raise SemiSegError(f"--out {args.out}: folder {Path(args.out).parent} does not exist")
    result = evaluate_folder(Path(args.pred), Path(args.data), split=args.split)
    print(format_summary(result))
    if args.out:
        # Undefined distances (one mask empty) are NaN: written as null, since strict JSON has no NaN.
        with atomic_path(args.out, ".json") as tmp:
            tmp.write_text(json.dumps(_clean(result), indent=2, allow_nan=False) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


def cmd_methods(args) -> int:
    from semiseg.methods import describe_methods
    methods = describe_methods()
    if args.json:
        print(json.dumps(methods, indent=2))
        return 0
    for m in methods:
        print(f"{m['name']:<16} {m['description']}")
        print(f"    defaults: {_recipe_line(m)}")
        for key, opt in m["options"].items():
            print(f"    {key} = {json.dumps(opt['default'])}  {opt['help']}")
    return 0


def _recipe_line(m: dict) -> str:
    """Which recipe a method's defaults are: the authors', or theirs but for the options named."""
    if not m["authors_recipe"]:
        return "the authors' recipe"
    changed = ", ".join(f"{k} = {json.dumps(m['options'][k]['default'])} (authors: {json.dumps(v)})"
                        for k, v in m["authors_recipe"].items())
    return f"the authors' recipe but {changed}; recipe=authors gives theirs"


def cmd_demo(args) -> int:
    from semiseg.demo import run_demo
    report = run_demo(Path(args.out), iterations=args.iterations, device=args.device, overwrite=args.overwrite)
    print(f"wrote {report}")
    return 0


def cmd_peer(args) -> int:
    from semiseg.peer_nnunet import run_peer_nnunet
    run_peer_nnunet(args)
    return 0


def cmd_bench(args) -> int:
    from semiseg.bench import run_bench
    report = run_bench(args)
    print(f"wrote {report}")
    return 0


def cmd_gain(args) -> int:
    from semiseg.bench_gain import write_gain
    print(f"wrote {write_gain([Path(r) for r in args.reports], Path(args.out), args.overwrite, args.checkpoint)}")
    return 0


# ---- parser ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semiseg", description="Semi-supervised 3D medical image segmentation: "
                                     "train on a few labeled scans plus an unlabeled pool, then segment new scans.",
                                     epilog="Exit codes: 0 done; 2 an error the message explains (bad input, "
                                            "setting or model); 130 interrupted (Ctrl-C or SIGTERM; train first "
                                            "writes a checkpoint that --resume continues).")
    parser.add_argument("--version", action="version", version=f"semiseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="synthetic data → train → predict → evaluate → demo-output/report.md")
    p.add_argument("--out", default="demo-output", help="output folder (default demo-output)")
    p.add_argument("--iterations", type=int, default=300, help="iterations per method (default 300)")
    p.add_argument("--device", default="auto", help="auto (default: CUDA if present, else CPU) | cpu | cuda | "
                                                    "cuda:N | mps")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("synthetic", help="generate a phantom dataset (tasks and scanner domains optional)")
    p.add_argument("out", help="new dataset folder")
    p.add_argument("--labeled", type=int, default=4, help="labeled training cases (default 4)")
    p.add_argument("--unlabeled", type=int, default=8, help="unlabeled pool cases (default 8)")
    p.add_argument("--test", type=int, default=4, help="labeled test cases (default 4)")
    p.add_argument("--shape", type=_csv_ints, default=[48, 48, 48], help="d,h,w (default 48,48,48)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the phantoms (default 0)")
    p.add_argument("--tasks", help="label subsets per task, e.g. 'organs=organ,vessel;lesions=lesion' "
                                   "(each labeled case is annotated for one task only)")
    p.add_argument("--labeled-domains", help="scanner domains of labeled cases (scanner-a, scanner-b, scanner-c)")
    p.add_argument("--unlabeled-domains", help="scanner domains of unlabeled cases (default: the labeled ones)")
    p.add_argument("--test-domains", help="scanner domains of test cases (default: the labeled ones)")
    p.add_argument("--unlabeled-truth", action="store_true",
                   help="also write the unlabeled cases' labels to labelsUn_truth/ (for bench --pool-truth)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_synthetic)

    p = sub.add_parser("check", help="validate a dataset (folder or dataset.json) and print a summary")
    p.add_argument("data", help="dataset folder or dataset.json")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("convert", help="convert public benchmark data into SemiSeg's dataset layout")
    p.add_argument("format", choices=["la-h5"], help="la-h5: the UA-MT LA mri_norm2.h5 files")
    p.add_argument("src", help="folder with train.list, test.list and the h5 files")
    p.add_argument("dst", help="new dataset folder")
    p.add_argument("--labeled", type=int, default=8, help="first N of train.list are labeled (default 8)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar over the cases")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("train", help="train a model; writes a NAME.semiseg model package", epilog=DDP_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="dataset folder or dataset.json")
    p.add_argument("--method", default="mean-teacher", help="training method (see `semiseg methods`)")
    p.add_argument("--out", required=True, help="model package to write, e.g. models/la.semiseg")
    p.add_argument("--seed", type=int, default=0, help="seeds weights, sampling and augmentation (default 0); "
                   "the validation split does not depend on it")
    p.add_argument("--workdir", help="checkpoints folder (default OUT.work)")
    p.add_argument("--resume", action="store_true", help="continue from WORKDIR/last.pt at the same iteration")
    p.add_argument("--init", metavar="MODEL.semiseg", help="fine-tune: start from this model package's weights, "
                   "preprocessing, patch and network width (options given here win); structures are matched by "
                   "name, a new one gets a new output channel; model.json records the parent")
    p.add_argument("--events", help="write JSON-lines progress events to FILE, or - for stdout")
    p.add_argument("--label-info", help="JSON {label: {color: [r,g,b], terminology: {...}}} for the model card")
    p.add_argument("--name", help="model name in the model card")
    p.add_argument("--modality", help="imaging modality for the model card (e.g. MR, CT) when the dataset does not "
                                      "say (Decathlon 'modality', nnU-Net 'channel_names'); default: the dataset's")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model package")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--gpus", type=int, metavar="N", help="train with N processes on this machine (DDP via "
                   "torchrun --standalone; N GPUs on CUDA, else N CPU processes with gloo). Batch sizes are per "
                   "process: global batch = N x --batch-labeled / --batch-unlabeled; the learning rate is not "
                   "scaled (see below)")
    p.add_argument("--sync-bn", action="store_true", help="distributed on CUDA: SyncBatchNorm, BatchNorm "
                   "statistics over the global batch (advised when a GPU holds only 1-2 3D patches)")
    p.add_argument("--dist-timeout", type=float, default=1800.0, metavar="SECONDS",
                   help="distributed: how long a rank waits for the others in a collective before the run fails "
                        "with an error (default 1800; must exceed the longest validation)")
    add_train_arguments(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("plan", help="plan a training run for a time budget: spacing, patch, batch, width, "
                                    "iterations; predicted time, peak memory and the reason for each choice")
    p.add_argument("data", help="dataset folder or dataset.json")
    p.add_argument("--method", default="mean-teacher", help="training method (see `semiseg methods`)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON (for programs)")
    add_train_arguments(p)
    p.set_defaults(func=cmd_plan, out="planned.semiseg")  # a run's --out, never written by `plan`

    p = sub.add_parser("predict", help="segment an image with a model package")
    p.add_argument("--model", required=True, help="NAME.semiseg model package")
    p.add_argument("--input", required=True, nargs="+", metavar="PATH",
                   help="image file (NIfTI, NRRD, MHA) or DICOM series folder; or a folder of images, or several "
                        "paths: then every case is predicted with the model loaded once (nnU-Net channel files "
                        "CASE_0000, CASE_0001 ... are one case)")
    p.add_argument("--output", required=True, help="label map to write (on exactly the input's grid); with "
                   "several cases a folder, each case's map named as nnU-Net names it (CASE.nii.gz, the input's "
                   "extension); a NAME.seg.nrrd also keeps each structure's name, colour and terminology, as Slicer "
                        "saves it")
    p.add_argument("--preview", action="store_true", help="also write OUTPUT_preview.png next to each label map: "
                   "the prediction over the image in three planes, three slices each, with a legend")
    p.add_argument("--skip-existing", action="store_true", help="several cases: keep label maps that already exist "
                   "and predict only the others (default: refuse, listing them)")
    p.add_argument("--quiet", action="store_true", help="no progress bar over the cases")
    p.add_argument("--prompts", help="comma-separated structure names to segment (default: all the model knows)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap (default 0.5)")
    p.add_argument("--sw-batch-size", default="auto", help="windows per forward pass: a number, or auto "
                   "(default: what half the free GPU memory holds, at most 16; 1 on a CPU)")
    p.add_argument("--cpu-preprocessing", action="store_true", help="resample and normalise the image on the CPU "
                                                                    "(default: on the --device)")
    p.add_argument("--blend", default="gaussian", choices=["gaussian", "constant"],
                   help="how overlapping windows are averaged: gaussian (default, centre weighted) or constant")
    p.add_argument("--lcc", action="store_true", help="keep the largest connected component of each label")
    p.add_argument("--tta", action="store_true", help="test-time mirroring: average each window's prediction over "
                   "its 8 mirrorings, as nnU-Net predicts by default (8x the inference time; on la-dev +2.6 Dice "
                   "points on average, docs/cli.md)")
    p.add_argument("--surface", help="also write a smoothed surface per label (.vtp or .stl); with several cases "
                   "just the format (.vtp or .stl): CASE.vtp next to each label map")
    add_fast_path_arguments(p)
    p.add_argument("--events", help="JSON-lines progress events to FILE, or - for stdout")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("suggest", help="rank the unlabeled cases by how much annotating each would help")
    p.add_argument("--model", required=True, help="NAME.semiseg model package (the current model)")
    p.add_argument("--data", required=True, help="dataset folder or dataset.json; its unlabeled cases are ranked")
    p.add_argument("-n", type=int, help="how many cases to list (default: the whole pool, ranked)")
    p.add_argument("--strategy", default="typical", choices=("typical", "uncertain", "typiclust"),
                   help="rank by typicality (default: best while few cases are labeled) or by the model's "
                        "uncertainty, each times novelty; or typiclust: the most typical case of each "
                        "cluster the labeled cases leave uncovered (TypiClust)")
    p.add_argument("--json", action="store_true", help="print the ranking as JSON")
    p.add_argument("--out", help="also write the ranking as JSON to this file")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--events", help="JSON-lines progress events to FILE, or - for stdout")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=cmd_suggest)

    p = sub.add_parser("add-labeled", help="move a corrected unlabeled case into the labeled set")
    p.add_argument("--data", required=True, help="dataset folder (its dataset.json is updated or written)")
    p.add_argument("--case", required=True, help="id of the unlabeled case (as `semiseg suggest` lists it)")
    p.add_argument("--label", required=True, help="its corrected label map, on the image's grid")
    p.add_argument("--overwrite", action="store_true", help="replace an existing labelsTr/ file of that name")
    p.set_defaults(func=cmd_add_labeled)

    p = sub.add_parser("evaluate", help="Dice, Jaccard, HD95, ASD (mm and voxels) of predictions against labels")
    p.add_argument("--pred", required=True, help="folder of predicted label maps named like the images")
    p.add_argument("--data", required=True, help="dataset folder or dataset.json")
    p.add_argument("--split", default="test", choices=["test", "training"])
    p.add_argument("--out", help="write all metrics as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("bench", help="benchmark methods × seeds on one dataset; writes ./NAME/ (report, figures, "
                                     "runs/)")
    p.add_argument("--data", required=True, help="dataset folder or dataset.json (needs a labeled test split)")
    p.add_argument("--name", required=True, help="benchmark name: the report goes to OUT/NAME/")
    p.add_argument("--methods", default="supervised,mean-teacher",
                   help="space- or comma-separated methods; a variant adds options after a colon, e.g. "
                        "'supervised mean-teacher dual-contrast:released=true'")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--profile", default="cpu-lite", choices=["cpu-lite", "paper", "synthetic", "smoke"],
                   help="cpu-lite: coarse spacing, small patch, 2 CPU cores; paper: the LA protocol, for a GPU; "
                        "synthetic: the built-in phantoms on a CPU; smoke: a few iterations, for tests")
    p.add_argument("--iterations", type=int, help="override the profile's iterations")
    p.add_argument("--time", help="a wall-time budget per run, e.g. 10m: each run trains as `train --time` does "
                                  "(planned on this machine) and each twin on its method's spacing, patch, batch "
                                  "and width; replaces the profile's grid and iterations")
    p.add_argument("--spacing", type=_spacing_mm, metavar="MM",
                   help="target spacing x,y,z (or one value) in mm for every run, instead of the profile's; with "
                        "--time the planner keeps it, as `train --time --spacing` does")
    p.add_argument("--patch", type=_csv_ints, metavar="D,H,W",
                   help="patch size for every run, instead of the profile's; with --time the planner keeps it")
    p.add_argument("--device", default="auto")
    p.add_argument("--lcc", action="store_true", help="largest-connected-component post-processing")
    p.add_argument("--tta", action="store_true", help="score with test-time mirroring (`predict --tta`): runs finished "
                   "without it are scored again from their models in --workdir, without training")
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="a method option for every method that has it (repeatable), e.g. dropout=0 for equal "
                        "dropout; a variant's own options win; with --time, n_filters=N is kept by the planner")
    p.add_argument("--peer", action="append", metavar="FILE",
                   help="runs of a peer tool from `semiseg peer` (repeatable), reported beside the methods")
    p.add_argument("--pool-truth", metavar="DIR",
                   help="labels of the unlabeled cases (CASE.nii.gz), read only to measure each method's "
                        "pseudo-labels on the pool at every validation, never to train (costs a prediction per "
                        "pool case per validation)")
    p.add_argument("--val-every", type=int, metavar="N",
                   help="validate (and measure --pool-truth) every N iterations, instead of the profile's or, with "
                        "--time, the planner's (which then plans for it)")
    p.add_argument("--augment", choices=["none", "light", "standard", "strong"],
                   help="training augmentation for every run, as `train --augment` (default: train's, standard)")
    p.add_argument("--score-pool", metavar="DIR",
                   help="labels of the unlabeled cases (CASE.nii.gz), read only to score each run's best and last "
                        "models on the pool after training: what a user gets on the scans they did not label "
                        "(no training time; added under --resume to finished runs whose models are in --workdir)")
    p.add_argument("--no-twins", action="store_true",
                   help="do not add each method's supervised twin (unlabeled=false) and plain supervised")
    p.add_argument("--out", help="folder that receives NAME/ (default: the current folder, so ./NAME/); by default "
                                 "nothing is written inside a source checkout (a folder with .git or pyproject.toml)")
    p.add_argument("--workdir", help="models, checkpoints and predictions (default OUT/NAME/runs)")
    p.add_argument("--resume", action="store_true", help="reuse the finished runs whose settings match, from "
                                                         "--workdir or from the earlier report in OUT/NAME; rerun "
                                                         "the rest")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("gain", help="paired gain against budget from several `bench --time` reports: OUT/gain.md "
                                    "and OUT/gain.png")
    p.add_argument("reports", nargs="+", help="bench report folders (or their results.json), one per budget")
    p.add_argument("--out", required=True, help="folder that receives gain.md and gain.png")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"])
    p.add_argument("--overwrite", action="store_true", help="replace an earlier gain.md and gain.png")
    p.set_defaults(func=cmd_gain)

    p = sub.add_parser("peer", help="train and score a peer tool (nnU-Net v2) on the same cases, for a bench row")
    p.add_argument("tool", choices=["nnunet"])
    p.add_argument("--data", required=True, help="dataset folder or dataset.json (needs a labeled test split)")
    p.add_argument("--work", required=True, help="folder for nnU-Net's raw, preprocessed and results folders")
    p.add_argument("--out", required=True, help="JSON file of runs for `semiseg bench --peer`")
    p.add_argument("--epochs", type=int, default=1,
                   help="nnU-Net trainer length in epochs of 250 iterations: 1, 5, 10, 20, 50, 100, 250, 500, 750 or "
                        "1000 (its default); pick the one whose time matches the methods' (default 1)")
    p.add_argument("--iterations", type=int, metavar="N",
                   help="instead of --epochs: one epoch of N iterations (nnU-Net's default trainer otherwise), to "
                        "match a wall time between its fixed lengths")
    p.add_argument("--configuration", default="3d_fullres", help="nnU-Net configuration (default 3d_fullres)")
    p.add_argument("--target-spacing", type=float, metavar="MM",
                   help="nnU-Net's own -overwrite_target_spacing, isotropic, under plans of their own (default: the "
                        "spacing nnU-Net plans; bench's CPU plans use 2-3 mm)")
    p.add_argument("--dataset-id", type=int, default=501, help="nnU-Net dataset id, 1-999 (default 501)")
    p.add_argument("--seeds", default="0", help="independent repeats, named like bench seeds (default 0)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "mps"])
    p.add_argument("--workers", type=int, default=2, help="nnU-Net preprocessing and augmentation processes")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_peer)

    p = sub.add_parser("methods", help="list training methods and their options")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_methods)
    return parser


def _tolerate_narrow_terminals() -> None:
    """Under an ASCII locale (LC_ALL=C with UTF-8 mode off, a Windows code page) a report's "±" or "×" would
    raise UnicodeEncodeError mid-run: such characters are written escaped instead."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure") and (stream.encoding or "").lower().replace("-", "") != "utf8":
            stream.reconfigure(errors="backslashreplace")


def main(argv: list[str] | None = None) -> int:
    import time
    from semiseg.process import mark_command_start
    started = time.perf_counter()  # what `predict` reports as wall time: start-up included
    mark_command_start()
    _tolerate_narrow_terminals()
    parser = build_parser()
    args = parser.parse_args(argv)
    args.raw_argv = list(argv) if argv is not None else sys.argv[1:]
    args.started = started
    try:
        return args.func(args) or 0
    except Interrupted as exc:  # train's own Ctrl-C handling: it stopped after writing a checkpoint
        print(f"semiseg {args.command}: interrupted: {exc}", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
    except SemiSegError as exc:
        print(f"semiseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"semiseg {args.command}: interrupted (Ctrl-C)", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE


if __name__ == "__main__":
    raise SystemExit(main())
