"""`semiseg gain`: paired gain against budget, from several `semiseg bench --time` reports of one dataset.

A user asks whether the unlabeled scans pay for themselves in the time they have. One bench report answers
for one budget: each method against its supervised twin, seed by seed. This puts the budgets side by side,
in a table and a figure of two panels: the paired gain over the twin (with the zero line and the 3-point
line of the goal), and the test Dice of each method, its twin and plain supervised, with any peer tool (nnU-Net)
at the minutes it trained.
"""

from __future__ import annotations

import json
from pathlib import Path

from semiseg.atomic import atomic_path
from semiseg.errors import ConfigError
from semiseg.figures import COLORS, plt, save_figure
from semiseg.metrics import mean_std_text as _fmt

GOAL_POINTS = 3.0  # the gain a method must show over its twin and over supervised (issue: "≥ 3 Dice points")


def read_reports(paths: list[Path]) -> list[dict]:
    """The results of bench reports (a report folder or its results.json), by budget; each must have been made
    with --time, and all of one dataset."""
    reports = []
    for path in paths:
        file = Path(path) / "results.json" if Path(path).is_dir() else Path(path)
        try:
            results = json.loads(file.read_text(encoding="utf-8"))
            budget, dataset = results["protocol"]["time_seconds"], results["dataset"]["name"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{file}: not a `semiseg bench` results.json ({exc})") from exc
        if budget is None:
            raise ConfigError(f"{file}: made without --time, so it has no budget to plot against")
        reports.append(results)
    if len({r["dataset"]["name"] for r in reports}) > 1:
        raise ConfigError("the reports are of different datasets: "
                          + ", ".join(sorted({r["dataset"]["name"] for r in reports})))
    return sorted(reports, key=lambda r: r["protocol"]["time_seconds"])


def gain_rows(reports: list[dict], ckpt: str = "best") -> list[dict]:
    """Per method and budget: Dice of method, twin and supervised, and the paired gains, in Dice points. Where
    two reports measured a method at the same budget, the one given later replaces the other (a rerun) and its
    row says which it replaced."""
    rows: dict[tuple, dict] = {}
    for results in reports:  # by budget; at one budget in the order given
        for pair in results.get("paired", []):
            c = pair[ckpt]
            gains = {k: c[k] for k in ("gain_over_twin", "gain_over_supervised")}
            key = (pair["method"], results["protocol"]["time_seconds"] / 60)
            earlier = rows.get(key)
            rows[key] = {"method": key[0], "minutes": key[1], "report": results["name"],
                         "replaces": earlier["report"] if earlier else None,
                         "method_dice": _points(c["method"]), "twin": _points(c["twin"]),
                         "supervised": _points(c["supervised"]), **{k: _points(g) for k, g in gains.items()},
                         **{k.replace("gain", "improved"): f"{g['improved']}/{g['n']}" for k, g in gains.items()}}
    return list(rows.values())


def peer_points(reports: list[dict], ckpt: str = "best") -> list[dict]:
    """Peer tools' rows (runs of `semiseg peer`, whose options name the peer): Dice at the minutes they trained."""
    out = {}
    for results in reports:
        for run in results.get("runs", []):
            name = run["method"]
            if "peer" in run.get("options", {}) and name not in out:
                row = results["methods"][name]
                out[name] = {"method": name, "minutes": row["train_seconds"]["mean"] / 60,
                             "dice": _points(row[ckpt]["dice"])}
    return list(out.values())


def gain_table(rows: list[dict], peers: list[dict]) -> list[str]:
    lines = ["| method | budget min | method Dice % | twin Dice % | supervised Dice % | gain over twin | seeds "
             "improved | gain over supervised | seeds improved | report |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["method"], r["minutes"])):
        source = f"`{r['report']}`" + (f" (replaces `{r['replaces']}`)" if r["replaces"] else "")
        lines.append(f"| {r['method']} | {r['minutes']:g} | {_fmt(r['method_dice'])} | {_fmt(r['twin'])} | "
                     f"{_fmt(r['supervised'])} | {_fmt(r['gain_over_twin'], sign=True)} | {r['improved_over_twin']} "
                     f"| {_fmt(r['gain_over_supervised'], sign=True)} | {r['improved_over_supervised']} | {source} |")
    for p in peers:
        lines.append(f"| {p['method']} (peer, its own training time) | {p['minutes']:.1f} | {_fmt(p['dice'])} | "
                     f"| | | | | | |")
    return lines


def gain_figure(rows: list[dict], peers: list[dict], path: Path, ckpt: str = "best") -> Path:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, method in enumerate(dict.fromkeys(r["method"] for r in rows)):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["minutes"])
        color, x = COLORS[i % len(COLORS)], [r["minutes"] for r in mine]
        _errorbar(left, x, [r["gain_over_twin"] for r in mine], color, method)
        _errorbar(right, x, [r["method_dice"] for r in mine], color, method)
        _errorbar(right, x, [r["twin"] for r in mine], color, f"{method}'s twin", style="--")
    # Plain supervised of each report (two reports of one budget are two measurements of it).
    sup = sorted({(r["minutes"], r["report"]): r["supervised"] for r in rows}.items(), key=lambda kv: kv[0])
    if sup:
        _errorbar(right, [m for (m, _), _ in sup], [v for _, v in sup], "black", "supervised", style=":")
    for p in peers:
        right.errorbar([p["minutes"]], [p["dice"]["mean"]], yerr=[p["dice"]["std"]], fmt="*", color="grey",
                       markersize=11, label=p["method"])
    left.axhline(0, color="black", lw=0.8)
    left.axhline(GOAL_POINTS, color="grey", lw=0.8, ls=":", label=f"goal: +{GOAL_POINTS:g} points")
    left.set_ylabel("paired gain over twin (Dice points)")
    right.set_ylabel("test Dice (%)")
    for ax, title in ((left, "method − twin, seed by seed"), (right, "test Dice")):
        ax.set_xlabel("budget per run (min)")
        ax.set_xlim(left=0)
        ax.set_title(f"{title}, {ckpt} checkpoint", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def write_gain(report_paths: list[Path], out: Path, overwrite: bool = False, ckpt: str = "best") -> Path:
    """OUT/gain.md and OUT/gain.png from the reports; an existing gain.md or gain.png needs --overwrite."""
    reports = read_reports(report_paths)
    rows, peers = gain_rows(reports, ckpt), peer_points(reports, ckpt)
    if not rows:
        raise ConfigError("the reports have no method beside its supervised twin (bench without --no-twins)")
    out = Path(out)
    for name in ("gain.md", "gain.png"):
        if (out / name).exists() and not overwrite:
            raise ConfigError(f"{out / name}: exists (pass --overwrite to replace it)")
    gain_figure(rows, peers, out / "gain.png", ckpt)
    text = [f"# Paired gain against budget ({reports[0]['dataset']['name']}, {ckpt} checkpoint)", "",
            "From the bench reports " + ", ".join(f"`{r['name']}`" for r in reports) + ". Gains are method − twin "
            "and method − plain supervised, paired by seed, in Dice points (mean ± std over seeds); the twin is "
            f"the same method and budget with every unlabeled term off. The goal line is +{GOAL_POINTS:g}.", "",
            *gain_table(rows, peers), "", "![paired gain against budget](gain.png)", ""]
    with atomic_path(out / "gain.md", ".md") as tmp:
        tmp.write_text("\n".join(text), encoding="utf-8")
    return out / "gain.md"


def _points(ms: dict) -> dict:
    """A fraction's mean ± std in points; null (NaN written to JSON) stays NaN."""
    nan = float("nan")
    return {k: nan if ms[k] is None else 100 * ms[k] for k in ("mean", "std")} | {"n": ms["n"]}


def _errorbar(ax, x, values, color, label, style="-"):
    """Mean ± std over seeds; a dashed or dotted line (a twin, supervised) has hollow markers."""
    ax.errorbar(x, [v["mean"] for v in values], yerr=[v["std"] for v in values], color=color, ls=style,
                marker="o", capsize=3, label=label, markerfacecolor=color if style == "-" else "white")
