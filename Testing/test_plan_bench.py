"""The planner benchmark's report (`python -m semiseg.plan_bench`), from recorded runs: no training here."""

from __future__ import annotations

from semiseg.plan_bench import report


def _run(method: str, wall: float, stopped: dict | None = None, exit_code: int = 0) -> dict:
    plan = {"spacing": [3.125, 3.125, 3.125], "patch": [16, 32, 32], "batch_labeled": 2, "batch_unlabeled": 2,
            "options": {"n_filters": 8}, "iterations": 1000, "val_every": 100, "threads": 1,
            "predicted": {"total": 900.0, "step_seconds": 0.5}, "peak_memory_mb": 900.0}
    return {"method": method, "budget": "15m", "exit_code": exit_code, "wall_seconds": wall, "planned_seconds": 900.0,
            "load_samples": [1.0, 2.0, float("nan")], "plan": plan, "test": {"dice_mean": 0.7},
            "trained_iterations": stopped["iteration"] if stopped else 1000, "stopped_early": stopped,
            "stderr_tail": "semiseg train: error: boom" if exit_code else ""}


def test_report_rows_say_planned_against_actual_and_where_a_run_stopped_early():
    text = report([_run("supervised", 990.0), _run("ad", 880.0, {"iteration": 640, "planned_iterations": 1000}),
                   _run("versemi", 12.0, exit_code=2)], "Planner", "python -m semiseg.plan_bench ...")
    rows = [line for line in text.splitlines() if line.startswith("| 15m")]
    assert "| 1.10 | 70.0 |" in rows[0] and "| 1000 |" in rows[0] and "1.5, 2.0" in rows[0]
    assert "640 of 1000 (stopped at the budget)" in rows[1] and "| 0.98 |" in rows[1]
    assert "boom" in rows[2] and "`versemi` at 15m stopped (exit 2)" in text
