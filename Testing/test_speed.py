"""The iteration profiler (`python -m semiseg.speed`) on a tiny network: every phase timed, the network's share
and FLOPs counted, and `--compare` writing the before/after report. No time is asserted."""

from __future__ import annotations

import json

from semiseg.speed import main, profile_method

PHASES = {"sampling", "augmentation", "forward", "backward", "optimizer", "teacher/EMA"}


def test_profile_times_every_phase_and_counts_the_networks_flops():
    row = profile_method("mean-teacher", [16, 16, 16], width=4, iterations=1, val_shape=[16, 20, 24])
    assert set(row["phases"]) == PHASES and all(v >= 0 for v in row["phases"].values())
    assert row["phases"]["forward"] > 0 and row["phases"]["teacher/EMA"] > 0
    assert 0 < row["network_share"] <= 1 and abs(row["network_share"] + row["overhead_share"] - 1) < 1e-9
    assert row["flops_per_step"] > 0 and row["validation_seconds_per_case"] > 0 and row["variant"] == "after"


def test_compare_writes_each_method_before_and_after(tmp_path):
    assert main(["--methods", "supervised", "--patch", "16,16,16", "--width", "4", "--iterations", "1",
                 "--val-shape", "", "--compare", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))["rows"]
    assert [(r["method"], r["variant"]) for r in rows] == [("supervised", "before"), ("supervised", "after")]
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "| supervised | before |" in report and "| supervised | after |" in report and "GFLOP/s" in report
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md", "results.json"]  # no temporary files
