"""`semiseg bench --time`: every run is planned for the budget, and each twin trains its method's plan.

The planner's probe is replaced by the deterministic one of test_plan (slow fake steps, so that the plans are a
few iterations) and the runs are made in this process, so that the fake reaches them; no wall time is asserted.
"""

from __future__ import annotations

import json

import pytest

from semiseg import bench as bench_module
from semiseg import plan as plan_module
from semiseg.bench import BenchSettings, bench
from semiseg.bench_budget import INHERITED
from semiseg.cli import main
from semiseg.probe import StepTiming


def slow_fake_probe(method, context, patch, batch_labeled, batch_unlabeled, device, settings, steps=2):
    width = context.options.get("n_filters", 16)
    # A quarter of an hour per fake step, so that an hour's plan is a few real iterations; a labeled-only step
    # (the twin's) is half the work, so the twin affords more iterations in the same time.
    uses_unlabeled = context.options.get("unlabeled", True)
    patches = batch_labeled + (batch_unlabeled if uses_unlabeled else 0)
    step = 900.0 * patches / 2 * (width / 8) ** 2
    return StepTiming(first_seconds=step, step_seconds=step, window_seconds=1.0, peak_mb=50.0,
                      parameters=1000 * width ** 2, uses_unlabeled=uses_unlabeled)


@pytest.fixture(scope="module")
def budget_run(tiny_dataset, tmp_path_factory):
    patch = pytest.MonkeyPatch()
    patch.setattr(plan_module, "probe", slow_fake_probe)
    patch.setattr(bench_module, "in_fresh_process", lambda fn, *args: fn(*args))
    root = tmp_path_factory.mktemp("bench-budget")
    settings = BenchSettings(data=tiny_dataset, name="budget", methods=["mean-teacher"], seeds=[0], profile="smoke",
                             out=root / "docs", workdir=root / "work", device="cpu", progress=False,
                             time_seconds=3600.0, command="semiseg bench --time 60m")
    report = bench(settings)
    yield settings, report, json.loads((report.parent / "results.json").read_text(encoding="utf-8"))
    patch.undo()


def test_each_run_is_planned_and_the_twin_trains_its_methods_plan(budget_run):
    _, report, results = budget_run
    runs = {r["method"]: r for r in results["runs"]}
    assert set(runs) == {"supervised", "mean-teacher", "mean-teacher:unlabeled=false"}
    method, twin = runs["mean-teacher"], runs["mean-teacher:unlabeled=false"]
    assert {k: twin["plan"][k] for k in INHERITED} == {k: method["plan"][k] for k in INHERITED}
    # Only the iterations are planned for the twin's own step: without the unlabeled half it affords more.
    assert twin["plan"]["iterations"] > method["plan"]["iterations"] >= 1
    assert all(r["iterations"] == r["plan"]["iterations"] for r in results["runs"])  # the fake's steps are slow
    text = report.read_text(encoding="utf-8")
    assert "`semiseg train --time 60m`" in text and "## Plans" in text
    assert "| mean-teacher:unlabeled=false | 0 |" in text


def test_resume_reuses_runs_of_the_same_budget_only(budget_run, tmp_path):
    from dataclasses import replace
    settings, _, results = budget_run
    again = json.loads((bench(replace(settings, out=tmp_path / "a", resume=True)).parent / "results.json")
                       .read_text(encoding="utf-8"))
    assert [r["train_seconds"] for r in again["runs"]] == [r["train_seconds"] for r in results["runs"]]
    other = replace(settings, out=tmp_path / "b", resume=True, methods=["supervised"], twins=False,
                    time_seconds=3000.0)
    rerun = json.loads((bench(other).parent / "results.json").read_text(encoding="utf-8"))["runs"][0]
    assert rerun["train_seconds"] != next(r for r in results["runs"] if r["method"] == "supervised")["train_seconds"]


def test_time_and_iterations_together_are_refused(tiny_dataset, tmp_path, capsys):
    code = main(["bench", "--data", str(tiny_dataset), "--name", "x", "--out", str(tmp_path), "--time", "5m",
                 "--iterations", "10"])
    assert code == 2 and "--time and --iterations" in capsys.readouterr().err


def test_a_given_grid_patch_and_width_are_kept_by_every_runs_plan(tiny_dataset, tmp_path, monkeypatch):
    """`bench --time T --spacing --patch --option n_filters=`: the planner's grid rule put aside, so that one
    method's result at fixed grids can be compared under the same budget."""
    monkeypatch.setattr(plan_module, "probe", slow_fake_probe)
    monkeypatch.setattr(bench_module, "in_fresh_process", lambda fn, *args: fn(*args))
    settings = BenchSettings(data=tiny_dataset, name="grid", methods=["supervised"], seeds=[0], profile="smoke",
                             out=tmp_path / "docs", workdir=tmp_path / "work", device="cpu", progress=False,
                             time_seconds=3600.0, twins=False, spacing=[1.25], patch=[16, 32, 32],
                             options={"n_filters": 8}, command="semiseg bench --time 60m --spacing 1.25")
    report = bench(settings)
    run = json.loads((report.parent / "results.json").read_text(encoding="utf-8"))["runs"][0]
    assert run["plan"]["spacing"] == [1.25, 1.25, 1.25] and run["plan"]["patch"] == [16, 32, 32]
    assert run["plan"]["n_filters"] == 8 and run["key"]["profile"]["spacing"] == [1.25, 1.25, 1.25]
    assert "the planner kept the given spacing 1.25 × 1.25 × 1.25 mm, patch [16, 32, 32], width 8" in \
        report.read_text(encoding="utf-8")
