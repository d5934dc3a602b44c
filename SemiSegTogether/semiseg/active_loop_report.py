"""The report of `semiseg.active_loop`: test Dice and wall time per round and strategy, the issue's two goals
checked against them, and the figure. Written from whatever runs have finished."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from semiseg.active_loop import STRATEGIES as ORDER
from semiseg.atomic import atomic_path

ROUND0 = "round 0"


def _stats(values: list[float]) -> tuple[float, float, int]:
    arr = np.array(values, dtype=float)
    return (float(arr.mean()), float(arr.std()), int(arr.size)) if arr.size else (float("nan"), float("nan"), 0)


def summarise(results: list[dict]) -> dict:
    """{strategy: {round: {"dice": (mean, std, n), "seconds": (...), "labeled": n, "seeds": [...]}}}; round 0 is
    every strategy's starting point."""
    table: dict[str, dict[int, dict]] = {}
    start = [r for r in results if r["strategy"] == ROUND0]
    for strategy in ORDER:
        rows = {0: start, **{k: [r for r in results if r["strategy"] == strategy and r["round"] == k]
                             for k in sorted({r["round"] for r in results if r["strategy"] == strategy})}}
        table[strategy] = {k: {"dice": _stats([r["mean_test_dice"] for r in rs]),
                               "last_dice": _stats(_every(rs, "mean_last_test_dice")),
                               "seconds": _stats([r["round_seconds"] for r in rs]),
                               "train_seconds": _stats([r["train_seconds"] for r in rs]),
                               "train_cpu_seconds": _stats(_every(rs, "train_cpu_seconds")),
                               "iterations": _stats([r["iterations"] for r in rs if "iterations" in r]),
                               "labeled": rs[0]["labeled"] if rs else None,
                               "seeds": sorted(r["seed"] for r in rs)}
                           for k, rs in rows.items() if rs}
    return table


def _every(rows: list[dict], key: str) -> list[float]:
    """`key` of every row, or none when a row lacks it (runs of an older study): a mean over some of the
    seeds would mislead."""
    return [r[key] for r in rows] if all(key in r for r in rows) else []


def goals(table: dict, selection: bool = True) -> list[str]:
    """The issue's goals, read off the rounds every compared strategy has at the same seeds; without `selection`
    (no validation case) on the last checkpoints alone."""
    lines = []
    checkpoints = [("dice", "selected"), ("last_dice", "last")][0 if selection else 1:]
    ours, rand, scratch, short = (table.get(s, {}) for s in ORDER)
    rounds = [k for k in ours if k > 0 and k in rand and ours[k]["seeds"] == rand[k]["seeds"]]
    for key, which in checkpoints:
        compared = [k for k in rounds if ours[k][key][2] and rand[k][key][2]]
        if not compared:
            continue
        wins = [ours[k][key][0] > rand[k][key][0] for k in compared]
        scores = ", ".join(f"round {k}: {100 * ours[k][key][0]:.1f} vs {100 * rand[k][key][0]:.1f}"
                           for k in compared)
        lines.append(f"- Suggested picks beat random picks on mean test Dice of the {which} checkpoints in "
                     f"{sum(wins)} of {len(compared)} round(s) ({scores}): goal (every round) "
                     f"{'met' if all(wins) else 'NOT met'}.")
    # A round meets the second goal when either fine-tune arm reaches the scratch Dice in at most half its time.
    rounds = [k for k in ours if k > 0 and k in scratch and ours[k]["seeds"] == scratch[k]["seeds"]]
    for key, which in checkpoints:
        compared = [k for k in rounds if scratch[k][key][2]]
        if not compared:
            continue
        parts, met = [], True
        for k in compared:
            arms = [(arm[k], name) for arm, name in ((ours, ""), (short, "short ")) if k in arm
                    and arm[k]["seeds"] == scratch[k]["seeds"] and arm[k][key][2]]
            results = [_against_scratch(row, scratch[k], key) for row, _ in arms]
            met &= any(ok for ok, _ in results)
            parts.append(f"round {k}: " + ", ".join(f"{name}fine-tune {text}"
                                                     for (_, name), (_, text) in zip(arms, results)))
        lines.append(f"- Fine-tuning against training from scratch on the same cases, {which} checkpoints "
                     f"({'; '.join(parts)}): goal (the scratch Dice in at most half the time) "
                     f"{'met' if met else 'NOT met'} at every round.")
    return lines


def _against_scratch(ours: dict, scratch: dict, key: str) -> tuple[bool, str]:
    """(reached the scratch Dice in at most half its time, the comparison in words) for one round.

    Training time only: the scratch arm reuses suggest's picks, so picking is not part of the comparison. Wall
    time depends on what else the cores run; a one-thread process's CPU time and the iterations do not. The
    goal is judged on CPU time when every run has it."""
    wall = ours["train_seconds"][0] / scratch["train_seconds"][0]
    cpu = (ours["train_cpu_seconds"][0] / scratch["train_cpu_seconds"][0]
           if ours["train_cpu_seconds"][2] and scratch["train_cpu_seconds"][2] else None)
    steps = ours["iterations"][0] / scratch["iterations"][0] if ours["iterations"][2] else None
    times = f"{wall:.2f}x the training time" if cpu is None else \
        f"{cpu:.2f}x the training CPU time ({wall:.2f}x the wall time)"
    text = (f"{100 * ours[key][0]:.1f} vs {100 * scratch[key][0]:.1f} Dice in {times}"
            + (f" and {steps:.2f}x the iterations" if steps else ""))
    return ours[key][0] >= scratch[key][0] and (wall if cpu is None else cpu) <= 0.5, text


def figure(table: dict, path: Path, selection: bool = True) -> Path:
    """Test Dice and wall time per round; the last checkpoints dashed beside the selected ones (without
    `selection` they are the same weights, drawn once)."""
    import matplotlib.pyplot as plt

    from semiseg.figures import save_figure  # sets the headless backend
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    for strategy, marker in zip(ORDER, "osd^"):
        rows = table.get(strategy, {})
        ks = sorted(rows)
        if not any(ks):  # only round 0, which every strategy shares: an arm that did not run
            continue
        mean = [100 * rows[k]["dice"][0] for k in ks]
        std = [100 * rows[k]["dice"][1] for k in ks]
        bar = left.errorbar(ks, mean, yerr=std, marker=marker, capsize=3, label=strategy)
        last = [k for k in ks if rows[k]["last_dice"][2]]
        if last and selection:
            left.plot(last, [100 * rows[k]["last_dice"][0] for k in last], marker=marker, linestyle="--",
                      color=bar.lines[0].get_color(), alpha=0.6, label=f"{strategy} (last)")
        right.plot(ks, [rows[k]["seconds"][0] for k in ks], marker=marker, label=strategy)
    left.set_xlabel("round (2 cases annotated per round)")
    left.set_ylabel("test Dice (%), mean (± std) over seeds")
    right.set_xlabel("round")
    right.set_ylabel("wall time of the round (s)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.set_xticks(sorted({k for rows in table.values() for k in rows}))
    if left.get_legend_handles_labels()[0]:  # round 0 alone has no arm to name
        left.legend(fontsize=8)
    return save_figure(fig, path)


def write_report(results: list[dict], out: Path, settings: dict) -> Path:
    table = summarise(results)
    out.mkdir(parents=True, exist_ok=True)
    selection = settings.get("val_cases", 1) != 0
    if results:
        figure(table, out / "rounds.png", selection)
    seeds = sorted({r["seed"] for r in results})
    lines = [f"# The annotate-then-fine-tune loop on {settings.get('data', 'the data')} (simulated annotator)", "",
             f"Seeds finished or in progress: {', '.join(map(str, seeds)) or 'none'} of {settings.get('seeds')}; "
             f"{len(results)} runs. Method {settings.get('method')} on the bench's cpu-lite grid (2 mm voxels, "
             f"patch 32x48x48, batch 2 labeled + 2 unlabeled for a semi-supervised method) with n_filters "
             f"{settings.get('n_filters')}, "
             f"{settings.get('iterations')} iterations from scratch, "
             f"{settings.get('finetune_iterations')} when fine-tuning, "
             + (f"validation on one held-out labeled case every {settings.get('val_every')}" if selection else
                "every annotated case trained on (no validation case; each run ships its last weights)")
             + f"; {settings.get('per_round')} cases annotated per round, "
             f"{settings.get('rounds')} rounds; `suggest` ranks by `{settings.get('suggest_strategy', 'uncertain')}`. "
             "Wall time of a round = picking (suggest) + training; test prediction is not counted. Training CPU "
             "time is the training process's CPU seconds: with one thread per process, its time on a core of its "
             "own, whatever else the machine ran.", "",
             f"Produced by `python -m semiseg.active_loop {settings.get('command', '')}`. "
             f"{settings.get('machine', '')}", "",
             ("Test Dice is given for the selected checkpoint (the best on the held-out case) and for the last "
              "one (dashed in the figure); each fine-tune chain carries the "
              f"{'last' if settings.get('carry') == 'last' else 'selected'} one on (ranks the pool with it and "
              "fine-tunes it)." if selection else "No case is held out, so no checkpoint is selected: both Dice "
              "columns are the last weights', which each fine-tune chain carries on (one line each in the "
              "figure)."), "",
             "| round | labeled | strategy | test Dice % (mean ± std, n seeds) | last checkpoint's | "
             "round wall time s | training CPU s |", "|---|---|---|---|---|---|---|"]
    for k in sorted({k for rows in table.values() for k in rows}):
        for strategy in ORDER if k else ORDER[:1]:
            row = table.get(strategy, {}).get(k)
            if row is None:
                continue
            (m, s, n), (lm, ls, ln) = row["dice"], row["last_dice"]
            (t, _, _), (c, _, nc) = row["seconds"], row["train_cpu_seconds"]
            name = "from scratch (all strategies start here)" if k == 0 else strategy
            lines.append(f"| {k} | {row['labeled']} | {name} | {100 * m:.1f} ± {100 * s:.1f} ({n}) | "
                         f"{f'{100 * lm:.1f} ± {100 * ls:.1f}' if ln else '–'} | {t:.0f} | "
                         f"{f'{c:.0f}' if nc else '–'} |")
    lines += ["", "## Goals", "", *(goals(table, selection) or ["- Not enough finished rounds to compare yet."]), "",
              "![test Dice and wall time per round](rounds.png)", "",
              "Picks per seed and round (suggest's and random's) are in `results.json`."]
    return write_study(out, lines, {"settings": settings, "runs": results})


def write_study(out: Path, lines: list[str], results: dict) -> Path:
    """A simulation's README.md (`lines`, then out/reading.md, the interpretation written by hand once runs are
    in) and its results.json (`results`), each written atomically."""
    reading = out / "reading.md"
    if reading.is_file():
        lines = [*lines, "", "## Reading", "", reading.read_text(encoding="utf-8").strip()]
    with atomic_path(out / "results.json", ".json") as tmp:
        tmp.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    with atomic_path(out / "README.md", ".md") as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out / "README.md"
