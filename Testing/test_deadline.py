"""`train --time` keeps its budget when the steps get slower than the plan's probe: training stops early, after
the last step that leaves time for the final validation and the export. Clocks are fakes: no wall time here."""

from __future__ import annotations

from semiseg import process
from semiseg.events import read_events
from semiseg.model import read_manifest
from semiseg.train import TrainConfig, _Trainer, train
from semiseg.training.deadline import Deadline


def test_the_next_step_fits_only_with_room_for_the_final_validation_and_the_export():
    now = [100.0]
    d = Deadline(budget_seconds=130, export_seconds=10, validation_seconds=5, clock=lambda: now[0])
    assert d.next_step_fits(mean_step_seconds=10, validation_seconds=None, validates=True)  # 100+10+5+10 = 125
    assert not d.next_step_fits(mean_step_seconds=10, validation_seconds=12, validates=True)  # measured: 132
    assert d.next_step_fits(mean_step_seconds=10, validation_seconds=12, validates=False)  # no validation cases
    d.spent_before = 10  # a resumed run: its earlier parts count against the budget
    assert not d.next_step_fits(mean_step_seconds=10, validation_seconds=None, validates=True)  # 135
    assert Deadline.from_plan(None) is None and Deadline.from_plan({"budget_seconds": None}) is None
    planned = Deadline.from_plan({"budget_seconds": 600, "predicted": {"export": 7, "validation": 30,
                                                                         "validations": 3}})
    assert (planned.budget, planned.export, planned.validation) == (600, 7, 10)


def test_a_slower_machine_than_planned_stops_at_the_budget_and_says_so(tiny_dataset, tmp_path, monkeypatch):
    steps = []  # every optimiser step takes "10 s"
    original = _Trainer._step
    monkeypatch.setattr(_Trainer, "_step", lambda self, it: (steps.append(it), original(self, it))[1])
    monkeypatch.setattr(process, "seconds_spent", lambda: 10.0 * (len(steps) - 1))
    plan = {"budget_seconds": 45, "predicted": {"export": 0, "validation": 0, "validations": 1}}
    cfg = TrainConfig(data=str(tiny_dataset), out=str(tmp_path / "m.semiseg"), method="supervised", iterations=20,
                      patch=[16, 16, 16], method_options={"n_filters": 4}, device="cpu", val_every=100,
                      val_cases=1, plan=plan, events=str(tmp_path / "events.jsonl"), workdir=str(tmp_path / "work"),
                      progress=False)
    result = train(cfg)
    # Checks at 0, 10, ..., 40 s leave room for one more step; at 50 s the next one would end past 45 s.
    assert result.iterations == 6
    training = read_manifest(tmp_path / "m.semiseg")["training"]
    assert training["iterations"] == 6
    assert training["stopped_early"]["iteration"] == 6 and training["stopped_early"]["planned_iterations"] == 20
    events = read_events(tmp_path / "events.jsonl")
    assert [e["iteration"] for e in events if e["event"] == "deadline"] == [6]
    assert [e["iteration"] for e in events if e["event"] == "validation"] == [6]  # the final validation ran
    # The ETA never promises more than the budget leaves: after step i, 45 s less the 10 (i - 1) s spent.
    etas = {e["iteration"]: e["eta_seconds"] for e in events if e["event"] == "iteration"}
    assert 1 in etas and all(eta <= max(0.0, 45 - 10 * (it - 1)) for it, eta in etas.items()), etas


def test_a_run_without_a_budget_never_stops_early(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(process, "seconds_spent", lambda: 1e9)  # "late", but there is no budget to be late for
    cfg = TrainConfig(data=str(tiny_dataset), out=str(tmp_path / "m.semiseg"), method="supervised", iterations=3,
                      patch=[16, 16, 16], method_options={"n_filters": 4}, device="cpu", progress=False,
                      plan={"budget_seconds": None, "predicted": {}}, workdir=str(tmp_path / "work"))
    assert train(cfg).iterations == 3
    assert "stopped_early" not in read_manifest(tmp_path / "m.semiseg")["training"]


def test_the_clock_fraction_runs_from_the_loop_start_to_the_last_moment_a_step_may_end():
    now = [20.0]  # 20 s of setup before the loop
    d = Deadline(budget_seconds=130, export_seconds=5, validation_seconds=5, clock=lambda: now[0])
    d.begin()
    assert d.run_fraction(None, validates=True) == 0.0
    now[0] = 70.0  # 50 of the 100 s between the loop's start and 130 - 5 - 5
    assert d.run_fraction(None, validates=True) == 0.5
    assert d.run_fraction(None, validates=False) == 50 / 105  # no final validation to leave time for
    now[0] = 200.0
    assert d.run_fraction(15, validates=True) == 1.0
    resumed = Deadline(budget_seconds=130, export_seconds=0, validation_seconds=0, spent_before=30,
                       clock=lambda: now[0])
    now[0] = 0.0
    resumed.begin(done_fraction=0.4)  # 40 % of the steps done in 30 s; 100 s are left for the other 60 %
    now[0] = 50.0
    assert abs(resumed.run_fraction(None, validates=True) - (0.4 + 0.6 * 0.5)) < 1e-12


def test_the_schedule_follows_the_clock_where_it_is_ahead_of_the_steps():
    from semiseg.training.optimisation import _lr_factor
    clock = [0.0]
    poly = _lr_factor("poly", 100, (0.4, 0.8), lambda: clock[0])
    assert poly(50) == 0.5 ** 0.9  # the steps lead
    clock[0] = 0.75
    assert poly(50) == 0.25 ** 0.9  # the clock leads
    clock[0] = 1.0
    assert abs(poly(50) - 0.01 ** 0.9) < 1e-12  # never quite 0, as at the last step
    step = _lr_factor("step", 100, (0.4, 0.8), lambda: clock[0])
    clock[0] = 0.5
    assert step(10) == 0.1 and step(85) == 0.1 ** 2
    assert _lr_factor("poly", 100, (0.4, 0.8))(50) == 0.5 ** 0.9  # without a budget: the steps alone


def test_a_run_cut_short_by_its_budget_still_anneals_its_learning_rate(tiny_dataset, tmp_path, monkeypatch):
    steps, lrs = [], []  # every optimiser step takes "10 s"; the learning rate each step trained with
    original = _Trainer._step

    def step(self, it):
        steps.append(it)
        lrs.append(self.optimisation.lr)
        return original(self, it)

    monkeypatch.setattr(_Trainer, "_step", step)
    monkeypatch.setattr(process, "seconds_spent", lambda: 10.0 * len(steps))
    plan = {"budget_seconds": 100, "predicted": {"export": 0, "validation": 0, "validations": 1}}
    cfg = TrainConfig(data=str(tiny_dataset), out=str(tmp_path / "m.semiseg"), method="supervised", iterations=40,
                      patch=[16, 16, 16], method_options={"n_filters": 4}, device="cpu", val_every=100, plan=plan,
                      workdir=str(tmp_path / "work"), progress=False)
    assert train(cfg).iterations == 10  # planned 40: the machine is 4 times slower than the plan
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    # Its last step trained at (1 - 0.8)^0.9 of the start (the clock read after step 8), not at (1 - 9/40)^0.9.
    assert abs(lrs[-1] / lrs[0] - 0.2 ** 0.9) < 1e-6, lrs
