"""`semiseg bench` on tiny synthetic data: the report's structure, and its numbers equal a separate
evaluation of the predictions it saved."""

import json
from pathlib import Path

import numpy as np
import pytest

from semiseg.bench import BenchSettings, bench
from semiseg.errors import ConfigError
from semiseg.evaluate import evaluate_folder


@pytest.fixture(scope="module")
def bench_run(tiny_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    settings = BenchSettings(data=tiny_dataset, name="tiny", methods=["supervised", "mean-teacher"], seeds=[0, 1],
                             profile="smoke", out=root / "docs", workdir=root / "work", device="cpu",
                             progress=False, command="semiseg bench --profile smoke")
    report = bench(settings)
    return settings, report, json.loads((report.parent / "results.json").read_text())


def test_report_structure(bench_run):
    settings, report, results = bench_run
    text = report.read_text()
    for heading in ("## Protocol", "## Results", "## Figures", "semiseg bench --profile smoke"):
        assert heading in text
    for method in settings.methods:
        assert f"| {method} | best |" in text and f"| {method} | last |" in text
        assert (report.parent / f"overlay_{method}.png").stat().st_size > 1000
    for figure in ("dice_boxplot.png", "validation_curves.png"):
        assert (report.parent / figure).stat().st_size > 1000
    assert len(results["runs"]) == 4
    assert results["dataset"]["validation"] == 1 and results["dataset"]["test"] == 2
    assert "never the test split" in results["protocol"]["checkpoint_rule"]


def test_numbers_equal_a_separate_evaluation(bench_run, tiny_dataset):
    settings, _, results = bench_run
    for method in settings.methods:
        for ckpt in ("best", "last"):
            seed_means = []
            for run in [r for r in results["runs"] if r["method"] == method]:
                pred_dir = Path(run["checkpoints"][ckpt]["predictions"])
                again = evaluate_folder(pred_dir, tiny_dataset, split="test")
                per_case = [again["cases"][cid]["mean"]["dice"] for cid in sorted(again["cases"])]
                recorded = [run["checkpoints"][ckpt]["cases"][cid]["dice"] for cid in sorted(again["cases"])]
                np.testing.assert_allclose(recorded, per_case, rtol=1e-9)
                seed_means.append(np.mean(per_case))
            summary = results["methods"][method][ckpt]["dice"]
            assert summary["mean"] == pytest.approx(np.mean(seed_means), rel=1e-9)
            assert summary["std"] == pytest.approx(np.std(seed_means), rel=1e-9, abs=1e-12)


def test_validation_never_uses_the_test_split(bench_run):
    _, _, results = bench_run
    for run in results["runs"]:
        assert run["best_iteration"] is not None
        assert set(run["checkpoints"]["best"]["cases"]) == {"phantom_008", "phantom_009"}


def test_refuses_to_overwrite_an_existing_report(bench_run):
    settings, _, _ = bench_run
    with pytest.raises(ConfigError, match="not empty"):
        bench(settings)


def test_resume_reuses_finished_runs_with_the_same_settings(bench_run, tmp_path):
    settings, _, results = bench_run
    from dataclasses import replace
    again = replace(settings, out=tmp_path / "docs", resume=True, methods=["supervised"])
    report = bench(again)
    rerun = json.loads((report.parent / "results.json").read_text())
    assert [r["train_seconds"] for r in rerun["runs"]] == \
        [r["train_seconds"] for r in results["runs"] if r["method"] == "supervised"]
    changed = replace(again, out=tmp_path / "docs2", seeds=[0], iterations=2)
    rerun = json.loads((bench(changed).parent / "results.json").read_text())
    assert rerun["runs"][0]["iterations"] == 2  # different settings: trained again, not reused


def test_paper_profile_is_the_la_protocol():
    # UA-MT's LA protocol (code/train_LA_meanteacher_certainty_unlabel.py:29-30, 61): native 0.625 mm, patch
    # 112×112×80 (x, y, z → d, h, w = 80, 112, 112), batch 2 + 2; the 15k-iteration budget of MC-Net onward.
    from semiseg.bench import PROFILES
    paper = PROFILES["paper"]
    assert paper["spacing"] is None and paper["patch"] == [80, 112, 112]
    assert (paper["batch_labeled"], paper["batch_unlabeled"], paper["iterations"]) == (2, 2, 15000)
    assert all(p % 16 == 0 for profile in PROFILES.values() for p in profile["patch"])
