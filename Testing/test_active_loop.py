"""The active-loop simulation's pieces: the simulated annotator and the report (not the benchmark itself)."""

from __future__ import annotations

import json
import shutil

from helpers_data import make_label
from semiseg.active_loop import annotate, round_dataset
from semiseg.active_loop_report import goals, summarise, write_report
from semiseg.datasets import load_dataset
from semiseg.io import read_volume, write_volume


def test_the_annotator_labels_the_picks_from_the_truth_folder(tiny_dataset, tmp_path):
    start = round_dataset(tiny_dataset, tmp_path / "round0")
    truth = tmp_path / "truth"
    pool = load_dataset(start).unlabeled
    for case in pool:
        write_volume(make_label(read_volume(case.image), values=(1, 2)), truth / case.image.name)
    picks = [pool[2].id, pool[0].id]
    after = load_dataset(annotate(start, tmp_path / "round1", picks, truth))
    assert [c.id for c in after.training[:2]] == picks[::-1]  # each added case goes first
    assert {c.id for c in after.unlabeled} == {c.id for c in pool} - set(picks)
    assert len(load_dataset(start).unlabeled) == len(pool)  # the previous round is left as it was
    for case in after.training[:2]:
        assert case.label.parent == tmp_path / "round1" / "labelsTr"


def _runs(suggest_gain: float, finetune_seconds: float) -> list[dict]:
    runs = []
    for seed in range(3):
        runs.append({"seed": seed, "strategy": "round 0", "round": 0, "labeled": 4, "mean_test_dice": 0.6,
                     "round_seconds": 100.0, "train_seconds": 100.0})
        for k in (1, 2):
            base = 0.6 + 0.05 * k + 0.01 * seed
            runs += [{"seed": seed, "strategy": "suggest + fine-tune", "round": k, "labeled": 4 + 2 * k,
                      "mean_test_dice": base + suggest_gain, "round_seconds": finetune_seconds + 30,
                      "train_seconds": finetune_seconds},
                     {"seed": seed, "strategy": "random + fine-tune", "round": k, "labeled": 4 + 2 * k,
                      "mean_test_dice": base, "round_seconds": finetune_seconds, "train_seconds": finetune_seconds},
                     {"seed": seed, "strategy": "suggest + scratch", "round": k, "labeled": 4 + 2 * k,
                      "mean_test_dice": base + suggest_gain / 2, "round_seconds": 100.0, "train_seconds": 100.0}]
    return runs


def test_goals_are_read_off_the_rounds():
    met = goals(summarise(_runs(suggest_gain=0.02, finetune_seconds=45.0)))
    assert "goal (every round) met" in met[0] and "at most half the time) met" in met[1]
    assert "0.45x the training time" in met[1] and "iterations" not in met[1]  # runs without a count
    for run in (runs := _runs(suggest_gain=0.02, finetune_seconds=45.0)):
        run["iterations"] = 100 if run["strategy"].endswith("fine-tune") else 200
    assert "0.45x the training time and 0.50x the iterations" in goals(summarise(runs))[1]
    # CPU time decides when every run has it: here the wall time alone would miss the goal.
    for run in runs:
        run["train_cpu_seconds"] = run["train_seconds"]
        run["train_seconds"] *= 2.0 if run["strategy"].endswith("fine-tune") else 1.0
    assert "0.45x the training CPU time (0.90x the wall time)" in goals(summarise(runs))[1]
    # A short fine-tune that reaches the scratch Dice in time meets a round the full one misses.
    slow = [dict(r, train_cpu_seconds=80.0) if r["strategy"] == "suggest + fine-tune" else r for r in runs]
    assert "NOT met" in goals(summarise(slow))[1]
    short = [dict(r, strategy="suggest + short fine-tune", train_cpu_seconds=30.0, mean_test_dice=r["mean_test_dice"])
             for r in slow if r["strategy"] == "suggest + fine-tune"]
    line = goals(summarise(slow + short))[1]
    assert "at most half the time) met" in line and "short fine-tune 68.0 vs 67.0 Dice in 0.30x" in line
    assert "at most half the time) met" in goals(summarise(runs))[1]
    del runs[-1]["train_cpu_seconds"]  # a round-2 scratch run without it: that round is judged on wall time
    line = goals(summarise(runs))[1]
    assert "NOT met" in line and "round 2: fine-tune 73.0 vs 72.0 Dice in 0.90x the training time" in line
    missed = goals(summarise(_runs(suggest_gain=-0.02, finetune_seconds=60.0)))
    assert "NOT met" in missed[0] and "NOT met" in missed[1]


def test_the_last_checkpoints_are_judged_beside_the_selected_ones(tmp_path):
    # Selected checkpoints favour suggest; the last ones favour random: both readings are reported.
    runs = [dict(r, mean_last_test_dice=r["mean_test_dice"] - (0.03 if r["strategy"] == "suggest + fine-tune"
                                                               else 0.0)) for r in _runs(0.02, 45.0)]
    picks_best, picks_last, scratch_best, scratch_last = goals(summarise(runs))
    assert "selected checkpoints in 2 of 2" in picks_best and "goal (every round) met" in picks_best
    assert "the last checkpoints in 0 of 2" in picks_last and "round 1: 65.0 vs 66.0" in picks_last
    assert "NOT met" in picks_last
    assert "selected checkpoints" in scratch_best and "half the time) met" in scratch_best
    assert "last checkpoints" in scratch_last and "NOT met" in scratch_last  # 65.0 against scratch 67.0
    text = write_report(runs, tmp_path / "report", {"data": "la-dev"}).read_text(encoding="utf-8")
    assert "| 1 | 6 | suggest + fine-tune | 68.0 ± 0.8 (3) | 65.0 ± 0.8 | 75 |" in text
    # A round where a run lacks the last checkpoint's Dice (an older run) is left out, not averaged partly.
    del runs[-1]["mean_last_test_dice"]  # round 2's scratch, seed 2
    scratch_last = goals(summarise(runs))[3]
    assert "round 1:" in scratch_last and "round 2:" not in scratch_last


def test_report_has_table_figure_and_no_machine_paths(tmp_path):
    runs = _runs(0.02, 45.0)
    settings = {"seeds": "0,1,2", "method": "mean-teacher", "iterations": 200, "finetune_iterations": 100,
                "val_every": 50, "per_round": 2, "rounds": 2, "data": "la-dev"}
    readme = write_report(runs, tmp_path / "report", settings)
    text = readme.read_text(encoding="utf-8")
    assert "| 1 | 6 | suggest + fine-tune | 68.0 ± 0.8 (3) | – | 75 |" in text  # picking (30 s) + training
    assert (tmp_path / "report" / "rounds.png").stat().st_size > 0
    saved = json.loads((tmp_path / "report" / "results.json").read_text(encoding="utf-8"))
    assert saved["settings"] == settings and len(saved["runs"]) == len(runs)
    shutil.rmtree(tmp_path / "report")
    report = write_report([], tmp_path / "report", settings).read_text(encoding="utf-8")
    assert report.count("Not enough finished rounds") == 1


def test_report_only_keeps_the_machine_the_runs_ran_on(tmp_path):
    from semiseg.active_loop import main
    out, work = tmp_path / "report", tmp_path / "work"
    (work / "seed0" / "round0").mkdir(parents=True)
    (work / "seed0" / "round0" / "result.json").write_text(json.dumps(_runs(0.02, 45.0)[0]), encoding="utf-8")
    out.mkdir()
    (out / "results.json").write_text(json.dumps({"settings": {"machine": "Machine: the one it ran on."}}),
                                      encoding="utf-8")
    assert main(["--data", str(tmp_path / "la-dev"), "--truth", str(tmp_path), "--out", str(out),
                 "--workdir", str(work), "--seeds", "0", "--report-only"]) == 0
    text = (out / "README.md").read_text(encoding="utf-8")
    assert "Machine: the one it ran on." in text and "on la-dev" in text and str(tmp_path) not in text


def test_arms_choose_what_runs_and_an_unknown_arm_exits_2(tmp_path, capsys):
    import argparse

    import pytest

    from semiseg.active_loop import arms, main
    settings = argparse.Namespace(arms=None, short_finetune_iterations=None)
    assert arms(settings) == ["suggest + fine-tune", "random + fine-tune", "suggest + scratch"]
    settings.short_finetune_iterations = 100
    assert arms(settings)[-1] == "suggest + short fine-tune"
    settings.arms = "suggest-fine-tune, suggest-short-fine-tune"
    assert arms(settings) == ["suggest + fine-tune", "suggest + short fine-tune"]
    with pytest.raises(SystemExit) as exit_:
        main(["--data", str(tmp_path), "--truth", str(tmp_path), "--arms", "suggest-typical"])
    assert exit_.value.code == 2 and "--arms: unknown suggest-typical" in capsys.readouterr().err


def test_carry_chooses_the_checkpoint_each_chain_carries_on(tmp_path):
    import argparse

    from semiseg.active_loop import carried_model
    assert carried_model(argparse.Namespace(carry="best", val_cases=1)) == "model.semiseg"
    assert carried_model(argparse.Namespace(carry="last", val_cases=1)) == "model-last.semiseg"
    assert carried_model(argparse.Namespace(carry="last", val_cases=0)) == "model.semiseg"  # the last, unselected
    text = write_report(_runs(0.02, 45.0), tmp_path / "r", {"carry": "last"}).read_text(encoding="utf-8")
    assert "carries the last one on" in text
    text = write_report(_runs(0.02, 45.0), tmp_path / "r", {}).read_text(encoding="utf-8")
    assert "carries the selected one on" in text


def test_without_validation_the_one_package_is_the_last_and_judged_once(tiny_dataset, tmp_path, monkeypatch):
    import argparse

    from semiseg import active_loop
    here = tmp_path / "round1"
    here.mkdir()
    tested = []
    monkeypatch.setattr(active_loop, "test_dice", lambda model, *a: tested.append(model.name) or {"a": 0.7})
    result = active_loop.record_round(argparse.Namespace(device="cpu"), here, tiny_dataset,
                                      {"pick_seconds": 1.0, "train_seconds": 2.0})
    assert tested == ["model.semiseg"]  # no model-last.semiseg beside it: model.semiseg holds the last weights
    assert result["mean_test_dice"] == result["mean_last_test_dice"] == 0.7
    runs = [dict(r, mean_last_test_dice=r["mean_test_dice"]) for r in _runs(0.02, 45.0)]
    text = write_report(runs, tmp_path / "report", {"data": "la-dev", "val_cases": 0}).read_text(encoding="utf-8")
    assert "every annotated case trained on" in text and "held-out" not in text
    assert "selected checkpoints" not in text and text.count("last checkpoints") == 2  # one line per goal
