"""`bench --score-pool`: each run's final models segment the unlabeled pool against held-back labels, after
training, also for runs an earlier benchmark finished."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from semiseg.bench import BenchSettings, bench
from semiseg.errors import ConfigError
from semiseg.metrics import evaluate_predictions


pytestmark = pytest.mark.usefixtures("runs_in_this_process")


@pytest.fixture(scope="module")
def pool_data(tmp_path_factory):
    from semiseg.synthetic import make_dataset
    root = tmp_path_factory.mktemp("segment-pool") / "phantom"
    return make_dataset(root, n_labeled=3, n_unlabeled=2, n_test=1, shape=(32, 32, 32), seed=0, unlabeled_truth=True)


@pytest.fixture(scope="module")
def without_pool(pool_data, tmp_path_factory, runs_in_this_process):
    """A finished benchmark that did not score the pool."""
    root = tmp_path_factory.mktemp("bench-pool")
    settings = BenchSettings(data=pool_data, name="pool", methods=["mean-teacher"], seeds=[0], profile="smoke",
                             out=root / "docs", workdir=root / "work", device="cpu", progress=False)
    report = bench(settings)
    return settings, json.loads((report.parent / "results.json").read_text(encoding="utf-8"))


def _pool_ids(data) -> set[str]:
    from semiseg.datasets import load_dataset
    return {c.id for c in load_dataset(data).unlabeled}


def _results(settings):
    return json.loads((bench(settings).parent / "results.json").read_text(encoding="utf-8"))


def test_resume_scores_the_finished_runs_on_the_pool_without_training_them_again(without_pool, pool_data, tmp_path):
    settings, before = without_pool
    assert all("pool" not in r for r in before["runs"])
    peer = [{k: v for k, v in r.items() if k != "key"} | {"method": "nnunet-v2 (peer)"}
            for r in before["runs"] if r["method"] == "supervised"]  # as `semiseg peer` writes them: no key
    (tmp_path / "peer.json").write_text(json.dumps({"peer": "nnunetv2", "runs": peer}), encoding="utf-8")
    after = _results(replace(settings, resume=True, score_pool=pool_data / "labelsUn_truth",
                             peers=[tmp_path / "peer.json"]))
    after["runs"] = [r for r in after["runs"] if "key" in r]
    assert [r["train_seconds"] for r in after["runs"]] == [r["train_seconds"] for r in before["runs"]]
    for run in after["runs"]:
        assert run["pool"]["truth"].endswith("labelsUn_truth")
        assert set(run["pool"]["best"]["cases"]) == set(run["pool"]["last"]["cases"]) == _pool_ids(pool_data)
    text = (settings.out / settings.name / "report.md").read_text(encoding="utf-8")
    assert "## Segmenting the unlabeled pool" in text and "| mean-teacher | last | 1 |" in text
    assert "Paired by seed on the pool" in text and after["pool_paired"][0]["method"] == "mean-teacher"
    assert "not scored" not in text  # the peer tool's runs have no model of ours to score


def test_pool_scores_equal_a_separate_evaluation_of_the_saved_predictions(without_pool, pool_data):
    settings, _ = without_pool
    results = _results(replace(settings, resume=True, score_pool=pool_data / "labelsUn_truth"))
    run = next(r for r in results["runs"] if r["method"] == "mean-teacher")
    pred_dir = settings.workdir / "predictions" / "mean-teacher-s0" / "pool-last"
    pairs = [(cid, pred_dir / f"{cid}.nii.gz", pool_data / "labelsUn_truth" / f"{cid}.nii.gz")
             for cid in sorted(_pool_ids(pool_data))]
    from semiseg.datasets import load_dataset
    separate = evaluate_predictions(pairs, load_dataset(pool_data).foreground_labels)["cases"]
    for cid, metrics in separate.items():
        assert run["pool"]["last"]["cases"][cid]["dice"] == pytest.approx(metrics["mean"]["dice"])


def test_a_run_without_its_models_here_is_left_unscored(without_pool, pool_data, tmp_path):
    """Read back from the committed report on another machine: nothing to predict with, and scores against
    other labels than these are dropped, not shown as if they were of these."""
    import shutil
    settings, _ = without_pool
    _results(replace(settings, resume=True, score_pool=pool_data / "labelsUn_truth"))
    shutil.copytree(settings.out / settings.name, tmp_path / "docs" / settings.name)
    shutil.copytree(pool_data / "labelsUn_truth", tmp_path / "other-truth")
    elsewhere = replace(settings, out=tmp_path / "docs", workdir=tmp_path / "work", resume=True,
                        score_pool=tmp_path / "other-truth")
    results = _results(elsewhere)
    assert all("pool" not in r for r in results["runs"]) and not (tmp_path / "work" / "models").exists()
    assert "Segmenting the unlabeled pool" not in (tmp_path / "docs" / settings.name / "report.md").read_text()


def test_a_pool_folder_without_every_case_is_refused_before_any_run(without_pool, pool_data, tmp_path):
    settings, _ = without_pool
    partial = tmp_path / "truth"
    partial.mkdir()
    first, second = sorted(_pool_ids(pool_data))
    (partial / f"{first}.nii.gz").write_bytes((pool_data / "labelsUn_truth" / f"{first}.nii.gz").read_bytes())
    with pytest.raises(ConfigError, match=f"--score-pool .*{second}"):
        bench(replace(settings, out=tmp_path / "docs", workdir=tmp_path / "work", score_pool=partial))
    assert not (tmp_path / "work").exists()
