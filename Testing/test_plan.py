"""The time planner on tiny data: it keeps to the budget and the memory limit, keeps explicit settings, says
when a budget is too small; `semiseg plan` and `semiseg train --time`.

The planner's choices rest on a timing probe; most tests replace it with a deterministic one (time and memory
proportional to the work) so that they check the planning, not this machine's speed. No test asserts a
wall-clock time.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from semiseg import plan as plan_module
from semiseg.cli import main
from semiseg.errors import ConfigError
from semiseg.model import read_manifest
from semiseg.plan import MAX_ITERATIONS, make_plan, parse_duration, parse_memory
from semiseg.probe import StepTiming
from semiseg.train import TrainConfig

SECONDS_PER_UNIT = 2e-9  # fake step time per (voxel x patch x width²)


def fake_probe(method, context, patch, batch_labeled, batch_unlabeled, device, settings, steps=2):
    width = context.options.get("n_filters", 16)
    patches = batch_labeled + batch_unlabeled
    step = SECONDS_PER_UNIT * float(np.prod(patch)) * patches * width ** 2
    return StepTiming(first_seconds=step, step_seconds=step, window_seconds=step / patches,
                      peak_mb=float(np.prod(patch)) * patches * width * 4e-4, parameters=1000 * width ** 2,
                      uses_unlabeled=True)


@pytest.fixture()
def fake(monkeypatch):
    monkeypatch.setattr(plan_module, "probe", fake_probe)


@pytest.fixture(scope="module")
def planning_data(tmp_path_factory):
    """Phantoms 48³ at 1 mm: room for several spacings and patch sizes."""
    from semiseg.synthetic import make_dataset
    return make_dataset(tmp_path_factory.mktemp("plan") / "ds", n_labeled=4, n_unlabeled=2, n_test=1,
                        shape=(48, 48, 48), seed=0)


def config(data, **changes) -> TrainConfig:
    return replace(TrainConfig(data=str(data), out="unused.semiseg", method="mean-teacher", device="cpu"),
                   **changes)


def test_parse_duration_and_memory():
    assert parse_duration("30m") == 1800 and parse_duration("1h30m") == 5400 and parse_duration("90s") == 90
    assert parse_duration("1.5h") == 5400 and parse_duration("45") == 2700 and parse_duration("2min") == 120
    for bad in ("soon", "30x", "-5m", "0m"):
        with pytest.raises(ConfigError, match="--time"):
            parse_duration(bad)
    assert parse_memory("8G") == 8192 and parse_memory("512M") == 512 and parse_memory(None) is None
    with pytest.raises(ConfigError, match="--memory"):
        parse_memory("lots")


def test_plan_keeps_to_the_budget_and_buys_more_with_more_time(planning_data, fake):
    small = make_plan(config(planning_data), 120, memory_mb=1e5)
    large = make_plan(config(planning_data), 1200, memory_mb=1e5)
    for p in (small, large):
        assert p.feasible, p.message
        assert p.predicted["total"] <= p.budget_seconds
        parts = ("planning", "preparation", "training", "validation", "export")
        assert p.predicted["total"] == pytest.approx(sum(p.predicted[k] for k in parts), abs=0.5)
        assert 1 <= p.val_every <= p.iterations and p.iterations <= MAX_ITERATIONS
        assert all(v % 16 == 0 for v in p.patch)
        assert set(p.reasons) >= {"spacing", "patch", "n_filters", "batch", "memory"}
    cost = lambda p: np.prod(p.patch) * p.options["n_filters"] ** 2  # noqa: E731
    assert cost(large) >= cost(small)
    assert large.iterations * large.predicted["step_seconds"] > small.iterations * small.predicted["step_seconds"]
    # the plan, the budget and the fingerprint are one JSON object (what model.json records)
    record = json.loads(json.dumps(large.to_dict()))
    assert record["budget_seconds"] == 1200 and record["fingerprint"]["smallest"]["thickness_mm"] > 0


def test_a_budget_too_small_says_what_would_do(planning_data, monkeypatch):
    def slow(*args, **kwargs):
        t = fake_probe(*args, **kwargs)
        return replace(t, step_seconds=t.step_seconds * 1e5, first_seconds=t.first_seconds * 1e5)

    monkeypatch.setattr(plan_module, "probe", slow)
    p = make_plan(config(planning_data), 60, memory_mb=1e5)
    assert not p.feasible
    assert "too small" in p.message and "would do" in p.message
    # the cheapest setting was chosen: the coarsest spacing the thinnest structure allows, the narrowest width
    assert p.options["n_filters"] == plan_module.MIN_WIDTH and p.spacing is not None
    thinnest = p.fingerprint["smallest"]["thickness_mm"]
    native = p.fingerprint["median_spacing"]
    assert all(s <= max(n, thinnest / 3) + 1e-6 for s, n in zip(p.spacing, native))


def test_a_probe_that_disagrees_with_the_extrapolation_never_leaves_a_plan_short_of_its_goal(planning_data,
                                                                                           monkeypatch):
    """Real steps grow faster than the cost model's voxels x width² (caches, memory bandwidth): each probe then
    moves the choice, and the planner must end on a candidate whose own measurement affords the goal, without
    probing any candidate twice (it once stopped after three probes on a choice its last probe had refuted:
    484 of 1000 iterations on la-dev)."""
    probed = []

    def superlinear(method, context, patch, batch_labeled, batch_unlabeled, device, settings, steps=2):
        t = fake_probe(method, context, patch, batch_labeled, batch_unlabeled, device, settings, steps)
        units = float(np.prod(patch)) * (batch_labeled + batch_unlabeled) * context.options["n_filters"] ** 2
        step = t.step_seconds * (units / 1e6) ** 0.5
        probed.append((tuple(patch), context.options["n_filters"]))
        return replace(t, step_seconds=step, first_seconds=step)

    monkeypatch.setattr(plan_module, "probe", superlinear)
    for budget in (300, 600, 2400):
        probed.clear()
        p = make_plan(config(planning_data, threads=1), budget, memory_mb=1e5)
        assert p.feasible, p.message
        assert p.iterations >= plan_module.GOAL_ITERATIONS, (budget, p.iterations, probed)
        assert len(probed) == len(set(probed)), probed


def test_a_plan_gives_up_resolution_before_it_falls_short_of_the_goal(planning_data, fake):
    """la-dev, 30 min on 2 CPU cores: 1-1.25 mm grids at ~1,500 steps reached 64.7 % Dice, 2 mm at ~5,700 steps
    79.8 %. So where the native grid affords fewer than GOAL_ITERATIONS (here ~1,300), the planner takes a coarser
    one that affords them."""
    cfg = config(planning_data, method_options={"n_filters": 16})
    native = make_plan(cfg, 300, memory_mb=1e5, fixed={"spacing", "n_filters"})
    assert native.spacing is None and native.iterations < plan_module.GOAL_ITERATIONS
    chosen = make_plan(cfg, 300, memory_mb=1e5, fixed={"n_filters"})
    assert chosen.feasible, chosen.message
    assert chosen.spacing is not None and chosen.iterations >= plan_module.GOAL_ITERATIONS


def test_plan_fits_a_memory_limit(planning_data, fake):
    free = make_plan(config(planning_data), 1200, memory_mb=1e5)
    limit = free.peak_memory_mb - 0.5 * _step_mb(free)
    tight = make_plan(config(planning_data), 1200, memory_mb=limit)
    assert tight.feasible, tight.message
    assert tight.peak_memory_mb <= limit
    assert np.prod(tight.patch) * (tight.batch_labeled + tight.batch_unlabeled) * tight.options["n_filters"] < \
        np.prod(free.patch) * (free.batch_labeled + free.batch_unlabeled) * free.options["n_filters"]
    impossible = make_plan(config(planning_data), 1200, memory_mb=1.0)
    assert not impossible.feasible and "MB" in impossible.message


def _step_mb(p) -> float:
    return float(p.reasons["memory"].split("training step ")[1].split(" MB")[0])


def test_explicit_settings_override_the_plan(planning_data, fake):
    cfg = config(planning_data, patch=[16, 32, 32], iterations=37, method_options={"n_filters": 4}, val_every=5)
    p = make_plan(cfg, 600, memory_mb=1e5, fixed={"patch", "iterations", "n_filters", "val_every"})
    assert p.patch == [16, 32, 32] and p.iterations == 37 and p.options["n_filters"] == 4 and p.val_every == 5
    assert p.reasons["patch"] == "as given" and p.reasons["n_filters"] == "as given"
    applied = p.apply(cfg)
    assert (applied.patch, applied.iterations, applied.val_every) == ([16, 32, 32], 37, 5)
    assert applied.plan["fixed"] == ["iterations", "n_filters", "patch", "val_every"]
    with pytest.raises(ConfigError, match="lr"):
        make_plan(cfg, 600, fixed={"lr"})


def test_one_slow_step_after_the_warm_up_does_not_set_the_steady_step(monkeypatch):
    """A small patch's step is a tenth of a second and one of them is noisy: the probe times the steady step over
    at least STEADY_SECONDS or MAX_STEADY_STEPS steps, so a slow second step weighs one part in many."""
    import time

    import torch

    import semiseg.probe as probe_module
    from semiseg.methods import MethodContext
    durations = iter([0.05, 0.3] + [0.005] * 100)  # warm-up, a slow first steady step, then fast ones
    calls = []

    def step(*args):
        calls.append(args[-1])
        time.sleep(next(durations))

    monkeypatch.setattr(probe_module, "optimiser_step", step)
    context = MethodContext(task_classes=[[1]], options={"n_filters": 4})
    settings = TrainConfig(data="unused", out="unused.semiseg", method="supervised", device="cpu")
    timing = probe_module.probe("supervised", context, [16, 16, 16], 1, 1, torch.device("cpu"), settings, steps=1)
    assert calls == list(range(1 + probe_module.MAX_STEADY_STEPS))  # 0.3 + 19 x 0.005 s < STEADY_SECONDS
    assert timing.first_seconds >= 0.05 and timing.step_seconds < 0.3 / 4
    calls.clear()
    probe_module.probe("supervised", context, [16, 16, 16], 1, 1, torch.device("cpu"), settings, steps=0)
    assert calls == [0]  # an estimate times the warm-up step alone


def test_the_real_probe_on_tiny_data(tiny_dataset):
    """The real probe (the method's own training step on this machine): a complete, consistent plan."""
    p = make_plan(config(tiny_dataset, method="supervised", method_options={"n_filters": 4}), 300,
                  fixed={"n_filters"})
    assert p.probes and all(pr["step_seconds"] > 0 and pr["window_seconds"] > 0 for pr in p.probes)
    assert p.device["type"] == "cpu" and p.threads >= 1
    assert p.predicted["step_seconds"] > 0 and p.iterations >= 1
    text = p.format()
    assert "predicted time" in text and "peak memory" in text and "network width" in text


def test_cli_plan_json_and_train_with_a_time_budget(tiny_dataset, tmp_path, capsys):
    code = main(["plan", str(tiny_dataset), "--method", "supervised", "--time", "2m", "--option", "n_filters=4",
                 "--device", "cpu", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and isinstance(out["feasible"], bool)
    assert out["budget_seconds"] == 120 and out["fixed"] == ["n_filters"] and out["options"]["n_filters"] == 4
    # train --time with explicit iterations and patch: those are kept, the rest planned; model.json records it
    model = tmp_path / "m.semiseg"
    code = main(["train", "--data", str(tiny_dataset), "--out", str(model), "--method", "supervised",
                 "--time", "10m", "--iterations", "3", "--patch", "16,16,16", "--option", "n_filters=4",
                 "--device", "cpu", "--quiet"])
    assert code == 0
    err = capsys.readouterr().err
    assert "Plan for supervised" in err and "predicted time" in err
    card = read_manifest(model)
    assert card["training"]["iterations"] == 3 and card["patch_size"] == [16, 16, 16]
    assert card["plan"]["budget_seconds"] == 600 and card["plan"]["iterations"] == 3
    assert set(card["plan"]["fixed"]) == {"iterations", "patch", "n_filters"}


def test_cli_plan_needs_a_budget(tiny_dataset, capsys):
    assert main(["plan", str(tiny_dataset), "--method", "supervised"]) == 2
    assert "--time" in capsys.readouterr().err


def test_resume_with_a_time_budget_keeps_the_checkpoints_plan(tiny_dataset, tmp_path, capsys, fake):
    """A new plan would pick other settings, which --resume refuses: the run's own plan is taken instead."""
    run = ["--data", str(tiny_dataset), "--method", "supervised", "--iterations", "2", "--patch", "16,16,16",
           "--option", "n_filters=4", "--device", "cpu", "--quiet", "--workdir", str(tmp_path / "work"),
           "--val-cases", "1"]
    assert main(["train", "--out", str(tmp_path / "a.semiseg"), "--time", "10m", *run]) == 0
    first = read_manifest(tmp_path / "a.semiseg")["plan"]
    capsys.readouterr()
    # Another budget and no explicit settings at the resume: the checkpoint's plan decides all of them.
    assert main(["train", "--data", str(tiny_dataset), "--method", "supervised", "--device", "cpu", "--quiet",
                 "--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "b.semiseg"), "--time", "3m",
                 "--val-cases", "1", "--resume"]) == 0
    assert "Resuming the run planned as" in capsys.readouterr().err
    card = read_manifest(tmp_path / "b.semiseg")
    assert card["plan"] == first and card["training"]["iterations"] == 2 and card["patch_size"] == [16, 16, 16]
    # Nothing was left to train: the shipped last weights keep the validation of the first process.
    assert card["metrics"]["validation"]["dice"] is not None
    assert card["metrics"]["validation"] == read_manifest(tmp_path / "a.semiseg")["metrics"]["validation"]


def test_a_fine_tune_with_a_time_budget_keeps_its_parents_grid_patch_and_width(tiny_dataset, tmp_path, capsys,
                                                                                  fake):
    """The planner alone would widen the network and move the grid, and the parent's weights fit only its own:
    with --init it plans the steps and keeps the rest (the Trainer's Fine-tune runs exactly this)."""
    common = ["--data", str(tiny_dataset), "--method", "supervised", "--device", "cpu", "--quiet",
              "--iterations", "2"]
    assert main(["train", "--out", str(tmp_path / "parent.semiseg"), "--patch", "16,16,16", "--option",
                 "n_filters=4", "--spacing", "1.5,1.5,1.5", *common]) == 0
    parent = read_manifest(tmp_path / "parent.semiseg")
    assert main(["train", "--out", str(tmp_path / "child.semiseg"), "--time", "5m", "--init",
                 str(tmp_path / "parent.semiseg"), *common]) == 0
    child = read_manifest(tmp_path / "child.semiseg")
    assert child["architecture"] == parent["architecture"] and child["patch_size"] == [16, 16, 16]
    assert child["preprocessing"]["spacing"] == parent["preprocessing"]["spacing"]
    assert child["plan"]["reasons"]["n_filters"] == "the --init model's"
    assert child["parent"]["path"] == str(tmp_path / "parent.semiseg")


def test_resume_with_a_time_budget_refuses_a_run_without_one(tiny_dataset, tmp_path, capsys):
    run = ["--data", str(tiny_dataset), "--method", "supervised", "--iterations", "1", "--patch", "16,16,16",
           "--option", "n_filters=4", "--device", "cpu", "--quiet", "--workdir", str(tmp_path / "work")]
    assert main(["train", "--out", str(tmp_path / "a.semiseg"), *run]) == 0
    capsys.readouterr()
    assert main(["train", "--out", str(tmp_path / "b.semiseg"), "--time", "3m", "--resume", *run]) == 2
    assert "without --time" in capsys.readouterr().err


def test_a_time_budget_is_refused_for_several_processes(tiny_dataset, tmp_path, capsys, monkeypatch):
    """Each process would plan from its own probe, and the ranks could disagree on the settings."""
    run = ["train", "--data", str(tiny_dataset), "--out", str(tmp_path / "m.semiseg"), "--time", "5m"]
    assert main([*run, "--gpus", "2"]) == 2
    assert "plan once" in capsys.readouterr().err
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(run) == 2
    assert "plan once" in capsys.readouterr().err and not (tmp_path / "m.semiseg").exists()
