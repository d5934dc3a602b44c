"""Where `semiseg bench` writes by default (./NAME/, never a source tree by accident) and its overall ETA."""

from __future__ import annotations

import pytest

from semiseg.bench import BenchSettings, RunClock, bench, source_tree
from semiseg.errors import ConfigError


def settings(data, **kw) -> BenchSettings:
    return BenchSettings(data=data, name="tiny", methods=["supervised"], seeds=[0], profile="smoke", device="cpu",
                         progress=True, **kw)


def test_default_folder_is_the_benchmark_name_under_the_current_folder(tiny_dataset, tmp_path, monkeypatch,
                                                                        capsys):
    monkeypatch.chdir(tmp_path)
    report = bench(settings(tiny_dataset))
    assert report == tmp_path / "tiny" / "report.md"
    assert (tmp_path / "tiny" / "runs" / "models").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]  # no docs/ or runs/ beside it
    assert "run 1/1 (supervised seed 0)" in capsys.readouterr().err


def test_a_source_tree_is_refused_unless_named(tiny_dataset, tmp_path, monkeypatch):
    checkout = tmp_path / "checkout"
    (checkout / "docs").mkdir(parents=True)
    (checkout / "pyproject.toml").write_text("[project]\n", encoding="utf-8")
    monkeypatch.chdir(checkout / "docs")
    assert source_tree(checkout / "docs") == checkout
    with pytest.raises(ConfigError, match="inside the source tree .*--out"):
        bench(settings(tiny_dataset))
    with pytest.raises(ConfigError, match="the runs would go inside the source tree"):
        bench(settings(tiny_dataset, out=checkout / "docs"))  # report named, runs not
    assert sorted(p.name for p in (checkout / "docs").iterdir()) == []


def test_overall_eta_from_the_runs_trained_so_far(monkeypatch):
    clock = RunClock(4)
    assert "run 1/4" in clock.line("a") and "after the first run" in clock.line("a")
    clock.finished(0.01, reused=True)  # a reused run does not count
    assert clock.eta_seconds() is None
    clock.finished(120.0, reused=False)
    assert clock.eta_seconds() == pytest.approx(240.0)  # two runs left at 2 min each
    assert "run 3/4" in clock.line("b") and "about 4.0 min left" in clock.line("b")
