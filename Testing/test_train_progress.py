"""Training progress: iteration events at a steady rate in time, an ETA from the measured speed (validation and
export included), the latest validation Dice in the events and on the console."""

from __future__ import annotations

import pytest

from semiseg.training import progress as progress_module
from semiseg.training.progress import Progress, format_duration


class Recorder:
    def __init__(self):
        self.events = []

    def emit(self, event, **fields):
        self.events.append({"event": event, **fields})


def run(monkeypatch, total=50, val_every=25, event_seconds=10.0, show=False, step_seconds=1.0):
    clock = [0.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    rec = Recorder()
    prog = Progress(rec, total, 0, val_every, True, event_seconds, show, "m", export_seconds=3.0, planned_eta=99.0)
    assert prog.eta_seconds(0) == 99.0  # before the first step: the plan's
    for done in range(1, total + 1):
        clock[0] += step_seconds
        validating = done % val_every == 0 or done == total
        prog.stepped(done, 2.0, {"total": 0.5}, 0.01, validating)
        if validating:
            prog.validated(0.25 * done / val_every, 5.0)
    prog.close()
    return [e for e in rec.events if e["event"] == "iteration"], prog


def test_events_come_at_a_steady_rate_in_time(monkeypatch):
    events, _ = run(monkeypatch)
    its = [e["iteration"] for e in events]
    # the first, then one 10 s (of fake time) after the one before, each validated one, the last: not one per
    # iteration
    assert its == [1, 11, 21, 25, 35, 45, 50]
    fast, _ = run(monkeypatch, event_seconds=0.0)
    assert [e["iteration"] for e in fast] == list(range(1, 51))


def test_eta_counts_steps_validations_and_export(monkeypatch):
    events, prog = run(monkeypatch)
    at = {e["iteration"]: e for e in events}
    # at 11: 39 steps × 2 s + 2 validations to come; no validation measured yet, so 0 s each; + export 3 s
    assert at[11]["eta_seconds"] == pytest.approx(39 * 2 + 3)
    # at 35: 15 steps × 2 s + 1 validation × 5 s (measured) + export
    assert at[35]["eta_seconds"] == pytest.approx(15 * 2 + 5 + 3)
    assert at[50]["eta_seconds"] == pytest.approx(0.0)
    # the latest validation Dice travels with the events
    assert at[21]["validation_dice"] is None and at[35]["validation_dice"] == pytest.approx(0.25)
    assert prog.remaining_validations(0) == 2 and prog.remaining_validations(25) == 1


def test_console_shows_eta_and_validation_dice(monkeypatch, capsys):
    run(monkeypatch, show=True)
    err = capsys.readouterr().err
    assert "val Dice=0.250" in err and "ETA=1.6 min" in err  # the latest Dice; the plan's ETA first


def test_format_duration():
    assert format_duration(None) == "?" and format_duration(42) == "42 s"
    assert format_duration(600) == "10.0 min" and format_duration(3 * 3600) == "3.0 h"
