"""`bench --tta`: runs scored with test-time mirroring, and finished runs scored again from their models
instead of trained again."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

import semiseg.bench as bench_module
from semiseg.bench import BenchSettings, bench
from semiseg.errors import ConfigError
from semiseg.evaluate import evaluate_folder


pytestmark = pytest.mark.usefixtures("runs_in_this_process")


@pytest.fixture(scope="module")
def plain(tiny_dataset, tmp_path_factory, runs_in_this_process):
    """A finished benchmark scored without mirroring."""
    root = tmp_path_factory.mktemp("bench-tta")
    settings = BenchSettings(data=tiny_dataset, name="plain", methods=["supervised"], seeds=[0], profile="smoke",
                             out=root / "docs", workdir=root / "work", device="cpu", progress=False)
    return settings, _results(settings)


def _results(settings) -> dict:
    return json.loads((bench(settings).parent / "results.json").read_text(encoding="utf-8"))


def _no_training(monkeypatch):
    def refuse(*_):
        raise AssertionError("trained again")
    monkeypatch.setattr(bench_module, "train", refuse)
    monkeypatch.setattr(bench_module, "plan_and_train", refuse)


def test_resume_with_tta_scores_the_finished_runs_again_without_training(plain, tiny_dataset, monkeypatch):
    settings, before = plain
    _no_training(monkeypatch)
    tta = replace(settings, name="tta", resume=True, tta=True)
    after = _results(tta)
    run, earlier = after["runs"][0], before["runs"][0]
    assert run["tta"] is True and "tta" not in earlier and after["protocol"]["tta"] is True
    assert run["train_seconds"] == earlier["train_seconds"] and run["key"] == earlier["key"]
    for ckpt, scored in run["checkpoints"].items():  # the report's numbers are those of the mirrored predictions
        metrics = evaluate_folder(Path(scored["predictions"]), tiny_dataset, split="test")
        assert {c: m["mean"]["dice"] for c, m in metrics["cases"].items()} == \
            {c: m["dice"] for c, m in scored["cases"].items()}
    text = (tta.out / "tta" / "report.md").read_text(encoding="utf-8")
    assert "test-time mirroring: the 8 mirrorings of each window averaged (--tta)" in text

    import semiseg.bench_score as score
    monkeypatch.setattr(score, "score_test", lambda *_: pytest.fail("scored again with the same inference"))
    assert _results(replace(tta, name="tta-again"))["runs"][0]["tta"] is True
    monkeypatch.undo()
    _no_training(monkeypatch)
    back = _results(replace(tta, name="plain-again", tta=False))["runs"][0]  # and back, from the same models
    assert "tta" not in back and back["checkpoints"]["best"]["cases"] == earlier["checkpoints"]["best"]["cases"]


def test_a_run_whose_models_are_gone_is_refused_rather_than_mixed(plain, tmp_path, monkeypatch):
    settings, _ = plain
    _no_training(monkeypatch)
    work = tmp_path / "work"
    shutil.copytree(settings.workdir, work)
    shutil.rmtree(work / "models")
    with pytest.raises(ConfigError, match=r"supervised-s0\.semiseg: supervised seed 0 was scored without --tta"):
        bench(replace(settings, name="gone", workdir=work, resume=True, tta=True))
