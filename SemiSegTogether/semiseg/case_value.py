"""What is one annotated case worth? The measurement that `suggest` is a guess at.

    python -m semiseg.case_value --data LA-DEV --truth LA-DEV/labelsUn_truth --out docs/benchmarks/case-value

Per seed, round 0 of `semiseg.active_loop` (the same settings give the same models); then, for every unlabeled
case in turn, that case alone is labeled from the truth folder (the simulated annotator) and round 0's model is
fine-tuned on the labeled cases plus it. A control fine-tunes on the labeled cases alone for as long, so that a
case's value is its test Dice less the control's: what annotating it adds beyond more training. Beside each
value, what `suggest` saw with round 0's model (typicality, uncertainty, ranks and each strategy's picks) and
what it could not (round 0's Dice on the case and the atrium's size, from the truth), with their rank
correlations to the value; and how far the value of a case agrees between seeds, which bounds how well any
ranking can do.

Each (seed, case) writes its result JSON as soon as it ends and is skipped when found (stop and start again
freely); the report is rewritten after each run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from semiseg.active_loop import (annotate, carried_model, load_results, record_round, round_zero, run_seeds,
                                 study_parser, study_settings, train_round, truth_file)
from semiseg.atomic import atomic_path
from semiseg.datasets import load_dataset

CONTROL = "none"  # the control's "case": no case added
SUGGEST_STRATEGIES = ("typical", "uncertain", "typiclust")
RANKED = ("typical", "uncertain")  # greedy rankings: their first n are `suggest -n n`'s picks


def pool_features(args, model: Path, data: Path) -> dict[str, dict]:
    """{"cases": {case id: what `suggest` measured with `model` (typicality, uncertainty, rank by `typical` and
    `uncertain`) and, from the truth, `model`'s Dice on the case and the foreground's volume in ml}, "picks":
    {strategy: the first --per-round cases `suggest` picks}}. Typiclust's ranking depends on how many it picks
    (one cluster per pick), so only its picks at --per-round are kept."""
    from semiseg.devices import resolve_device
    from semiseg.infer import predict_volume
    from semiseg.io import read_label, read_volume
    from semiseg.model import load_model
    from semiseg.suggest import suggest
    from semiseg.training.validation import dice
    features: dict[str, dict] = {}
    picks = {}
    for strategy in SUGGEST_STRATEGIES:
        rows = suggest(model, data, n=None if strategy in RANKED else args.per_round, device=args.device,
                       strategy=strategy)
        picks[strategy] = [r.id for r in rows[:args.per_round]]
        for row in rows if strategy in RANKED else []:
            case = features.setdefault(row.id, {"typicality": row.typicality, "uncertainty": row.uncertainty})
            case[f"rank_{strategy}"] = row.rank
    dev = resolve_device(args.device)
    net, manifest = load_model(model, dev)
    for case in load_dataset(data).unlabeled:
        image = read_volume(case.image)
        truth = read_label(truth_file(Path(args.truth), case.id), reference=image).array > 0
        predicted = predict_volume(net, manifest, image, dev, overlap=0.5)[0].array > 0
        features[case.id].update(model_dice=dice(predicted, truth),
                                 volume_ml=float(truth.sum() * np.prod(image.spacing) / 1000))
    return {"cases": features, "picks": picks}


def value_seed(args, seed: int, report) -> None:
    start, data = round_zero(args, seed, report)
    parent = start / carried_model(args)
    root = Path(args.workdir) / f"seed{seed}" / "case-value"
    features = root / "features.json"
    if not features.exists():
        with atomic_path(features, ".json") as tmp:
            tmp.write_text(json.dumps(pool_features(args, parent, data), indent=2) + "\n", encoding="utf-8")
    for case_id in [CONTROL] + sorted(c.id for c in load_dataset(data).unlabeled):
        here = root / case_id
        if (here / "result.json").exists():
            continue
        labeled = annotate(data, here / "data", [] if case_id == CONTROL else [case_id], Path(args.truth))
        trained = train_round(args, labeled, here / "model.semiseg", seed, parent, args.finetune_iterations)
        record_round(args, here, labeled, {"seed": seed, "strategy": "case value", "case": case_id,
                                           "round": 1, "picks": [], "pick_seconds": 0.0, **trained})
        report()


def main(argv: list[str] | None = None) -> int:
    p = study_parser("semiseg.case_value", __doc__, "case-value")
    p.add_argument("--method", default="supervised")
    p.add_argument("--iterations", type=int, default=400, help="round 0's iterations, from scratch")
    p.add_argument("--finetune-iterations", type=int, default=200)
    p.add_argument("--per-round", type=int, default=2, help="cases annotated per round: how many each strategy's "
                   "picks are compared with random ones")
    p.add_argument("--carry", choices=("best", "last"), default="last", help="round 0's checkpoint that is "
                   "fine-tuned and ranks the pool: the best on the held-out case, or the last")
    args = p.parse_args(argv)
    from semiseg.case_value_report import write_report

    seeds = args.planned_seeds or args.seeds
    settings = study_settings(args, (
        f"--data DATA --truth TRUTH{f' --resample {args.resample:g}' if args.resample else ''} --seeds {seeds} "
        f"--method {args.method} --iterations {args.iterations} --finetune-iterations {args.finetune_iterations} "
        f"--per-round {args.per_round} --carry {args.carry} --val-every {args.val_every} "
        f"--n-filters {args.n_filters}"))
    workdir = Path(args.workdir)

    def report() -> None:
        features = {int(f.parent.parent.name[4:]): json.loads(f.read_text(encoding="utf-8"))
                    for f in sorted(workdir.glob("seed*/case-value/features.json"))}
        write_report(load_results(workdir), features, Path(args.out), settings)

    run_seeds(args, value_seed, report)
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
