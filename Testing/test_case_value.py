"""The case-value study: its arithmetic on made-up runs, and one tiny run end to end."""

from __future__ import annotations

import json

import pytest

from helpers_data import make_label
from semiseg.case_value import CONTROL, main
from semiseg.case_value_report import case_values, feature_correlations, pick_values, seed_agreement
from semiseg.datasets import load_dataset
from semiseg.io import read_volume, write_volume

CASES = ["a", "b", "c", "d", "e"]
WORTH = {"a": 0.05, "b": 0.04, "c": 0.02, "d": 0.01, "e": -0.01}  # what adding each case gives


def _runs(noise: dict[int, dict[str, float]] | None = None) -> list[dict]:
    runs = []
    for seed in range(3):
        control = 0.70 + 0.01 * seed
        runs.append({"seed": seed, "strategy": "case value", "case": CONTROL, "mean_last_test_dice": control,
                     "mean_test_dice": control - 0.1})
        runs += [{"seed": seed, "strategy": "case value", "case": c,
                  "mean_last_test_dice": control + WORTH[c] + (noise or {}).get(seed, {}).get(c, 0.0),
                  "mean_test_dice": control} for c in CASES]
    return runs


def _features(first_by_typical: list[str]) -> dict[int, dict]:
    """Per seed: typicality ranks `first_by_typical` first; uncertain ranks the worst first; typiclust picks the
    best two."""
    by_worth = sorted(CASES, key=lambda c: -WORTH[c])
    cases = {c: {"typicality": 1.0 - first_by_typical.index(c) / 10, "uncertainty": WORTH[c],
                 "rank_typical": first_by_typical.index(c) + 1, "rank_uncertain": 5 - by_worth.index(c),
                 "model_dice": 0.8, "volume_ml": 50.0 + i} for i, c in enumerate(CASES)}
    picks = {"typical": first_by_typical[:2], "uncertain": by_worth[::-1][:2], "typiclust": by_worth[:2]}
    return {seed: {"cases": cases, "picks": picks} for seed in range(3)}


def test_a_case_is_worth_its_dice_above_the_control_at_the_same_seed():
    values = case_values(_runs())
    assert sorted(values) == [0, 1, 2]
    for seed in values:
        assert values[seed] == pytest.approx(WORTH)  # the seed's control level cancels
    assert case_values(_runs(), "mean_test_dice")[1]["a"] == pytest.approx(0.1)  # the selected checkpoints
    no_control = [r for r in _runs() if not (r["seed"] == 2 and r["case"] == CONTROL)]
    assert sorted(case_values(no_control)) == [0, 1]  # a seed without its control has no values yet


def test_seeds_that_rank_the_cases_alike_agree_and_noise_does_not():
    assert [rho for _, _, rho in seed_agreement(case_values(_runs()))] == pytest.approx([1.0, 1.0, 1.0])
    flipped = {1: {c: -2 * w for c, w in WORTH.items()}}  # seed 1 ranks the cases the other way round
    rhos = {(a, b): rho for a, b, rho in seed_agreement(case_values(_runs(flipped)))}
    assert rhos[(0, 2)] == pytest.approx(1.0) and rhos[(0, 1)] == pytest.approx(-1.0)


def test_features_correlate_with_the_sign_meaning_put_first_is_worth_more():
    rhos = feature_correlations(case_values(_runs()), _features(CASES))
    assert rhos["rank_uncertain"] == pytest.approx([-1.0] * 3)  # ranks the worst case first
    assert rhos["uncertainty"] == pytest.approx([1.0] * 3)
    assert rhos["typicality"] == pytest.approx([1.0] * 3)  # CASES is the order of worth


def test_picks_are_compared_with_random_and_the_oracles():
    picks = pick_values(case_values(_runs()), _features(list(reversed(CASES))))
    mean = sum(WORTH.values()) / len(WORTH)
    assert picks["random (the mean over cases)"] == pytest.approx([mean] * 3)
    assert picks["the 2 best at the seed (oracle)"] == pytest.approx([0.045] * 3)
    assert picks["the 2 best at the other seeds"] == pytest.approx([0.045] * 3)
    assert picks["`typiclust`'s picks"] == pytest.approx([0.045] * 3)
    assert picks["`typical`'s picks"] == pytest.approx([0.0] * 3)  # e and d
    assert picks["`uncertain`'s picks"] == pytest.approx([0.0] * 3)


def test_a_tiny_study_runs_end_to_end_and_its_report_names_no_machine_path(tiny_dataset, tmp_path):
    truth = tmp_path / "truth"
    for case in load_dataset(tiny_dataset).unlabeled:
        write_volume(make_label(read_volume(case.image), values=(1, 2)), truth / case.image.name)
    out, work = tmp_path / "report", tmp_path / "work"
    common = ["--data", str(tiny_dataset), "--truth", str(truth), "--out", str(out), "--workdir", str(work),
              "--seeds", "0", "--iterations", "2", "--finetune-iterations", "2", "--val-every", "1",
              "--n-filters", "4"]
    assert main(common) == 0
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    pool = sorted(c.id for c in load_dataset(tiny_dataset).unlabeled)
    assert sorted(r["case"] for r in results["runs"] if "case" in r) == sorted([CONTROL] + pool)
    features = results["features"]["0"]
    assert sorted(features["cases"]) == pool
    assert {features["cases"][c]["rank_uncertain"] for c in pool} == set(range(1, len(pool) + 1))
    assert {s: len(p) for s, p in features["picks"].items()} == {"typical": 2, "uncertain": 2, "typiclust": 2}
    text = (out / "README.md").read_text(encoding="utf-8")
    assert all(f"| {c} |" in text for c in pool) and (out / "values.png").is_file()
    assert str(tmp_path) not in text and str(tmp_path) not in json.dumps(results["settings"])
    modified = {p: p.stat().st_mtime_ns for p in work.rglob("result.json")}
    assert main(common) == 0  # a second start finds every run and trains nothing
    assert {p: p.stat().st_mtime_ns for p in work.rglob("result.json")} == modified
