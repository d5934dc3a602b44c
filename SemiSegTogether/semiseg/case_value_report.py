"""The report of `semiseg.case_value`: each unlabeled case's value (test Dice when it alone is added, less the
control's), what `suggest` and the truth say about the case, how both agree with the value, and how far the
value itself agrees between seeds. Written from whatever runs have finished."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from semiseg.active_loop_report import write_study
from semiseg.case_value import CONTROL, RANKED, SUGGEST_STRATEGIES

# What `suggest` sees (higher = ranked first) and what only the truth knows, as the report names them.
FEATURES = {"typicality": "typicality", "uncertainty": "uncertainty",
            **{f"rank_{s}": f"`{s}` rank (first = 1)" for s in RANKED},
            "model_dice": "round 0's Dice on the case (truth)", "volume_ml": "atrium volume (truth)"}


def case_values(results: list[dict], key: str = "mean_last_test_dice") -> dict[int, dict[str, float]]:
    """{seed: {case: test Dice with the case added less the control's}}, for the seeds whose control is in."""
    runs = [r for r in results if r.get("strategy") == "case value"]
    control = {r["seed"]: r[key] for r in runs if r["case"] == CONTROL}
    values: dict[int, dict[str, float]] = {}
    for r in runs:
        if r["case"] != CONTROL and r["seed"] in control:
            values.setdefault(r["seed"], {})[r["case"]] = r[key] - control[r["seed"]]
    return values


def seed_agreement(values: dict[int, dict[str, float]]) -> list[tuple[int, int, float]]:
    """Spearman's rho between two seeds' values over the cases both have, for every pair of seeds."""
    out = []
    for a, b in combinations(sorted(values), 2):
        shared = sorted(set(values[a]) & set(values[b]))
        if len(shared) >= 3:
            rho = _rho([values[a][c] for c in shared], [values[b][c] for c in shared])
            if rho is not None:
                out.append((a, b, rho))
    return out


def _rho(x: list[float], y: list[float]) -> float | None:
    """Spearman's rho, or None where one side is constant (no ranking to compare)."""
    return None if len(set(x)) < 2 or len(set(y)) < 2 else float(spearmanr(x, y)[0])


def feature_correlations(values: dict[int, dict[str, float]], features: dict[int, dict]) -> dict[str, list[float]]:
    """{feature: [Spearman's rho between the feature and the value, per seed where the feature varies]}; ranks
    enter negated, so that a positive rho always means "what the feature puts first is worth more"."""
    out: dict[str, list[float]] = {}
    for seed, seed_values in sorted(values.items()):
        known = features.get(seed, {}).get("cases", {})
        cases = sorted(c for c in seed_values if c in known)
        if len(cases) < 3:
            continue
        for name in FEATURES:
            sign = -1 if name.startswith("rank_") else 1
            rho = _rho([sign * known[c][name] for c in cases], [seed_values[c] for c in cases])
            if rho is not None:
                out.setdefault(name, []).append(rho)
    return out


def pick_values(values: dict[int, dict[str, float]], features: dict[int, dict]) -> dict[str, list[float]]:
    """{how n cases are chosen: [mean value of its n cases, per seed]}: each strategy's n picks, a random n (the
    mean over all cases), the n best at that seed (the oracle) and the n best by the other seeds' values (how
    well one seed's values predict another's); n is how many the strategies picked."""
    out: dict[str, list[float]] = {}
    complete = {s: v for s, v in values.items() if s in features and len(v) == len(features[s]["cases"])}
    for seed, v in sorted(complete.items()):
        out.setdefault("random (the mean over cases)", []).append(float(np.mean(list(v.values()))))
        picks = features[seed]["picks"]
        for strategy, first in picks.items():
            out.setdefault(f"`{strategy}`'s picks", []).append(float(np.mean([v[c] for c in first])))
        n = max(map(len, picks.values()))
        out.setdefault(f"the {n} best at the seed (oracle)", []).append(float(np.mean(sorted(v.values())[-n:])))
        others = [w for s, w in complete.items() if s != seed]
        if others:
            pooled = {c: np.mean([w[c] for w in others]) for c in v}
            best = sorted(v, key=lambda c: pooled[c])[-n:]
            out.setdefault(f"the {n} best at the other seeds", []).append(float(np.mean([v[c] for c in best])))
    return out


def mean_values(values: dict[int, dict[str, float]]) -> dict[str, float]:
    """{case: its value averaged over the seeds that have it}."""
    cases = {c for v in values.values() for c in v}
    return {c: float(np.mean([v[c] for v in values.values() if c in v])) for c in cases}


def _pm(values: list[float], scale: float = 100) -> str:
    return f"{scale * np.mean(values):+.1f} ± {scale * np.std(values):.1f}" if values else "–"


def figure(values: dict[int, dict[str, float]], path: Path) -> Path:
    import matplotlib.pyplot as plt

    from semiseg.figures import save_figure  # sets the headless backend
    mean = mean_values(values)
    cases = sorted(mean, key=mean.get)
    fig, ax = plt.subplots(figsize=(9, 3.6))
    ax.bar(range(len(cases)), [100 * mean[c] for c in cases], color="0.8", label="mean over seeds")
    for (seed, v), marker in zip(sorted(values.items()), "osd^v"):
        xs = [i for i, c in enumerate(cases) if c in v]
        ax.plot(xs, [100 * v[cases[i]] for i in xs], marker, linestyle="none", label=f"seed {seed}")
    ax.axhline(0, color="k", linewidth=0.8)
    ax.set_xticks(range(len(cases)), [c.removeprefix("la_")[:8] for c in cases], rotation=45, ha="right",
                  fontsize=8)
    ax.set_ylabel("test Dice added (points)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def write_report(results: list[dict], features: dict[int, dict], out: Path, settings: dict) -> Path:
    values, selected = case_values(results), case_values(results, "mean_test_dice")
    out.mkdir(parents=True, exist_ok=True)
    if values:
        figure(values, out / "values.png")
    runs = [r for r in results if r.get("strategy") == "case value"]
    start = [r["mean_last_test_dice"] for r in results if r.get("strategy") == "round 0"]
    control = [r["mean_last_test_dice"] for r in runs if r["case"] == CONTROL]
    lines = [f"# What one annotated case is worth on {settings.get('data', 'the data')} (simulated annotator)", "",
             f"Seeds with a finished control: {', '.join(map(str, sorted(values))) or 'none'} of "
             f"{settings.get('seeds')}; {len(runs)} fine-tune runs. Method {settings.get('method')} on the bench's "
             f"cpu-lite grid with n_filters {settings.get('n_filters')}: round 0 trains {settings.get('iterations')} "
             f"iterations from scratch on the labeled cases; then, for each unlabeled case, its "
             f"{settings.get('carry')} checkpoint is fine-tuned {settings.get('finetune_iterations')} iterations "
             "on the labeled cases plus that one case, labeled from the truth. A control fine-tunes as long on "
             "the labeled cases alone. A case's value is the test Dice of the last checkpoint with it less the "
             "control's, at the same seed.", "",
             f"Produced by `python -m semiseg.case_value {settings.get('command', '')}`. "
             f"{settings.get('machine', '')}", "",
             f"Round 0 (last checkpoint): {_pm(start).lstrip('+')} test Dice; the control: {_pm(control).lstrip('+')}.",
             "", "| case | value, last checkpoint (mean ± std, points) | value, selected checkpoint | "
             "round 0's Dice on it | atrium ml | typicality | uncertainty | rank typical / uncertain (per seed) | "
             "picked by (seeds) |", "|---|---|---|---|---|---|---|---|---|"]
    mean_value = mean_values(values)
    cases = sorted(mean_value, key=mean_value.get, reverse=True)
    for c in cases:
        feats = [f["cases"][c] for f in features.values() if c in f["cases"]]
        mean = {k: np.mean([f[k] for f in feats]) if feats else float("nan") for k in FEATURES}
        ranks = " / ".join(",".join(str(f[f"rank_{s}"]) for f in feats) for s in RANKED)
        picked = {s: sum(c in f["picks"].get(s, []) for f in features.values()) for s in SUGGEST_STRATEGIES}
        lines.append(f"| {c} | {_pm([v[c] for v in values.values() if c in v])} | "
                     f"{_pm([v[c] for v in selected.values() if c in v])} | {100 * mean['model_dice']:.1f} | "
                     f"{mean['volume_ml']:.0f} | {mean['typicality']:.3f} | {mean['uncertainty']:.3f} | {ranks} | "
                     f"{', '.join(f'{s} {k}' for s, k in picked.items() if k) or '–'} |")
    lines += ["", "![each case's value per seed](values.png)", "", "## Does a case's value agree between seeds?", ""]
    agreement = seed_agreement(values)
    lines += [f"- seed {a} against seed {b}: Spearman's rho {rho:+.2f}" for a, b, rho in agreement] or \
        ["- Not enough seeds yet."]
    lines += ["", "## What predicts the value? (Spearman's rho per seed, mean ± std; positive = what the feature "
              "puts first is worth more)", ""]
    lines += [f"- {FEATURES[name]}: {_pm(rhos, 1)}" for name, rhos in feature_correlations(values, features).items()]
    lines += ["", f"## {settings.get('per_round')} cases chosen each way (mean value of a case, points, mean ± std "
              "over seeds)", ""]
    lines += [f"- {name}: {_pm(v)}" for name, v in pick_values(values, features).items()]
    return write_study(out, lines, {"settings": settings, "runs": results, "features": features})
