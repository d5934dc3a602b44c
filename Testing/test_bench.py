"""`semiseg bench` on tiny synthetic data: the report's structure, and its numbers equal a separate
evaluation of the predictions it saved."""

import json
from pathlib import Path

import numpy as np
import pytest

from semiseg.bench import BenchSettings, bench
from semiseg.errors import ConfigError
from semiseg.evaluate import evaluate_folder


pytestmark = pytest.mark.usefixtures("runs_in_this_process")


@pytest.fixture(scope="module")
def bench_run(tiny_dataset, tmp_path_factory, runs_in_this_process):
    root = tmp_path_factory.mktemp("bench")
    settings = BenchSettings(data=tiny_dataset, name="tiny", methods=["supervised", "mean-teacher"], seeds=[0, 1],
                             profile="smoke", out=root / "docs", workdir=root / "work", device="cpu",
                             progress=False, command="semiseg bench --profile smoke")
    report = bench(settings)
    return settings, report, json.loads((report.parent / "results.json").read_text(encoding="utf-8"))


def test_report_structure(bench_run):
    settings, report, results = bench_run
    text = report.read_text(encoding="utf-8")
    for heading in ("## Protocol", "## Results", "## Figures", "semiseg bench --profile smoke"):
        assert heading in text
    for method in settings.methods:
        assert f"| {method} | best |" in text and f"| {method} | last |" in text
        assert (report.parent / f"overlay_{method}.png").stat().st_size > 1000
    for figure in ("dice_boxplot.png", "validation_curves.png"):
        assert (report.parent / figure).stat().st_size > 1000
    assert len(results["runs"]) == 6  # supervised, mean-teacher and its twin, 2 seeds each
    assert results["dataset"]["validation"] == 1 and results["dataset"]["test"] == 2
    assert "never the test split" in results["protocol"]["checkpoint_rule"]


def test_the_report_names_the_machine_of_every_run(bench_run):
    """A CPU's model, not "x86_64": two 2-core machines of the same architecture differ 2x in step time, and a
    benchmark resumed in another session may finish on another machine."""
    import torch

    from semiseg.bench import _machines
    from semiseg.devices import cpu_model, machine_name
    _, report, results = bench_run
    here = machine_name(torch.device("cpu"))
    assert cpu_model() in here and {r["machine"] for r in results["runs"]} == {here}
    assert f"- Device: {here}." in report.read_text(encoding="utf-8")
    runs = [{"machine": "CPU A, 2 threads"}] * 2 + [{"machine": "CPU B, 2 threads"}, {}]
    assert _machines(runs[:2], torch.device("cpu")) == "CPU A, 2 threads"
    assert _machines(runs, torch.device("cpu")) == \
        "CPU A, 2 threads (2 runs); CPU B, 2 threads (1 run); not recorded (1 run)"


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


def test_report_opens_with_the_paired_gain_over_the_twin(bench_run):
    _, report, results = bench_run
    text = report.read_text(encoding="utf-8")
    assert text.index("## Does the unlabeled pool help?") < text.index("## Protocol")
    twin = "mean-teacher:unlabeled=false"
    assert [r["method"] for r in results["runs"]].count(twin) == 2
    assert all(r["options"]["unlabeled"] is False for r in results["runs"] if r["method"] == twin)
    (row,) = results["paired"]
    assert (row["method"], row["twin"]) == ("mean-teacher", twin)
    for ckpt in ("best", "last"):
        def per_seed(variant):
            return {r["seed"]: np.mean([c["dice"] for c in r["checkpoints"][ckpt]["cases"].values()])
                    for r in results["runs"] if r["method"] == variant}
        ours, theirs, sup = per_seed("mean-teacher"), per_seed(twin), per_seed("supervised")
        gain = row[ckpt]["gain_over_twin"]
        diffs = [ours[s] - theirs[s] for s in (0, 1)]
        np.testing.assert_allclose(gain["per_seed"], diffs, rtol=1e-9)
        assert gain["mean"] == pytest.approx(np.mean(diffs)) and gain["n"] == 2
        assert gain["improved"] == sum(d > 0 for d in diffs)
        assert row[ckpt]["gain_over_supervised"]["mean"] == pytest.approx(np.mean([ours[s] - sup[s] for s in (0, 1)]))
        cells = f"| mean-teacher | {ckpt} | {100 * np.mean(list(ours.values())):.1f} ± "
        assert cells in text and f"| {gain['improved']}/2 |" in text


def test_twins_are_added_once_and_only_where_there_is_an_unlabeled_term():
    from semiseg.bench import twin_of, with_twins
    assert with_twins(["mean-teacher", "dual-contrast:released=true"]) == [
        "supervised", "mean-teacher", "mean-teacher:unlabeled=false", "dual-contrast:released=true",
        "dual-contrast:released=true,unlabeled=false"]
    assert with_twins(["supervised"]) == ["supervised"]
    assert twin_of("versemi:stage1_fraction=1.0") is None and twin_of("mean-teacher:unlabeled=false") is None
    assert with_twins(["versemi", "versemi:unlabeled=false", "supervised"]) == [
        "supervised", "versemi", "versemi:unlabeled=false"]
    assert with_twins(["mean-teacher:unlabeled=false", "mean-teacher"]) == [
        "supervised", "mean-teacher", "mean-teacher:unlabeled=false"]
    assert with_twins(["mean-teacher:unlabeled=false", "supervised", "mean-teacher", "ad"], add=False) == [
        "supervised", "mean-teacher", "mean-teacher:unlabeled=false", "ad"]
    # Variants differing only in options the twin ignores share it; any other option stays in the twin.
    assert twin_of("mean-teacher:consistency=10") == "mean-teacher:unlabeled=false"
    assert twin_of("mean-teacher:consistency=10,dropout=0.1") == "mean-teacher:dropout=0.1,unlabeled=false"
    assert with_twins(["mean-teacher", "mean-teacher:consistency=10"]) == [
        "supervised", "mean-teacher", "mean-teacher:unlabeled=false", "mean-teacher:consistency=10"]
    # Mean Teacher's authors' recipe sets only the consistency weight: it shares the twin too. VerSemi's authors'
    # recipe is its default, so naming it changes nothing either.
    assert twin_of("mean-teacher:recipe=authors") == "mean-teacher:unlabeled=false"
    assert twin_of("versemi:recipe=authors") == "versemi:unlabeled=false"


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
    rerun = json.loads((report.parent / "results.json").read_text(encoding="utf-8"))
    assert [r["train_seconds"] for r in rerun["runs"]] == \
        [r["train_seconds"] for r in results["runs"] if r["method"] == "supervised"]
    changed = replace(again, out=tmp_path / "docs2", seeds=[0], iterations=2)
    rerun = json.loads((bench(changed).parent / "results.json").read_text(encoding="utf-8"))
    assert rerun["runs"][0]["iterations"] == 2  # different settings: trained again, not reused


def test_paper_profile_is_the_la_protocol():
    # UA-MT's LA protocol (code/train_LA_meanteacher_certainty_unlabel.py:29-30, 61): native 0.625 mm, patch
    # 112×112×80 (x, y, z → d, h, w = 80, 112, 112), batch 2 + 2; the 15k-iteration budget of MC-Net onward.
    from semiseg.bench import PROFILES
    paper = PROFILES["paper"]
    assert paper["spacing"] is None and paper["patch"] == [80, 112, 112]
    assert (paper["batch_labeled"], paper["batch_unlabeled"], paper["iterations"]) == (2, 2, 15000)
    assert all(p % 16 == 0 for profile in PROFILES.values() for p in profile["patch"])


def test_peer_runs_are_reported_beside_the_methods(bench_run, tmp_path):
    from dataclasses import replace
    settings, _, results = bench_run
    peer = [dict(r, method="nnunet-v2 (peer)", options={"peer": "nnunetv2"}) for r in results["runs"]
            if r["method"] == "supervised"]
    (tmp_path / "peer.json").write_text(json.dumps({"peer": "nnunetv2", "runs": peer}), encoding="utf-8")
    report = bench(replace(settings, out=tmp_path / "docs", resume=True, methods=["supervised"],
                           peers=[tmp_path / "peer.json"]))
    text = report.read_text(encoding="utf-8")
    assert "| nnunet-v2 (peer) | last |" in text
    assert "peer rows predict as their tool does by default (nnU-Net mirrors)" in text
    assert "peer rows" not in (settings.out / settings.name / "report.md").read_text(encoding="utf-8")
    again = json.loads((report.parent / "results.json").read_text(encoding="utf-8"))
    assert again["methods"]["nnunet-v2 (peer)"]["last"]["dice"] == results["methods"]["supervised"]["last"]["dice"]
    (tmp_path / "bad.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ConfigError, match="not a `semiseg peer` result"):
        bench(replace(settings, out=tmp_path / "docs2", resume=True, methods=["supervised"],
                      peers=[tmp_path / "bad.json"]))


def stop_at_seed_5(monkeypatch):
    """Runs train as usual, except that seed 5 stops the benchmark as Ctrl-C would."""
    import semiseg.bench as bench_module
    real = bench_module._run_one

    def stopped_at_seed_5(s, p, ds, variant, method, options, seed, *rest):
        if seed == 5:
            raise KeyboardInterrupt
        return real(s, p, ds, variant, method, options, seed, *rest)

    monkeypatch.setattr(bench_module, "_run_one", stopped_at_seed_5)


def test_a_stopped_benchmark_keeps_a_partial_report_that_resume_completes(tiny_dataset, tmp_path, monkeypatch):
    from dataclasses import replace

    stop_at_seed_5(monkeypatch)
    settings = BenchSettings(data=tiny_dataset, name="partial", methods=["supervised"], seeds=[0, 5], profile="smoke",
                             out=tmp_path / "docs", workdir=tmp_path / "work", device="cpu", progress=False)
    with pytest.raises(KeyboardInterrupt):
        bench(settings)
    report = tmp_path / "docs" / "partial" / "report.md"
    assert "**Partial: 1 of 2 runs finished**" in report.read_text(encoding="utf-8")
    # --resume may rewrite its own earlier report (no --overwrite needed) and reuses the finished run.
    done = bench(replace(settings, seeds=[0], resume=True))
    assert "Partial" not in done.read_text(encoding="utf-8")
    assert json.loads((done.parent / "results.json").read_text(encoding="utf-8"))["finished_runs"] == [1, 1]
    (done.parent / "notes.txt").write_text("the user's own file", encoding="utf-8")
    with pytest.raises(ConfigError, match="not empty"):
        bench(replace(settings, seeds=[0], resume=True))


def test_a_stopped_resume_keeps_the_runs_it_had_not_reached_yet(tiny_dataset, tmp_path, monkeypatch):
    """The report rewritten after a run holds every run --resume can reuse, also those listed after the runs
    that train: stopped before it reaches them, the benchmark must not drop them (nor a later --resume)."""
    from dataclasses import replace

    settings = BenchSettings(data=tiny_dataset, name="order", methods=["supervised"], seeds=[0], profile="smoke",
                             out=tmp_path / "docs", workdir=tmp_path / "work", device="cpu", progress=False,
                             twins=False)
    bench(settings)
    stop_at_seed_5(monkeypatch)
    with pytest.raises(KeyboardInterrupt):  # trains mean-teacher seed 0, stops at its seed 5
        bench(replace(settings, methods=["mean-teacher", "supervised"], seeds=[0, 5], resume=True))
    results = json.loads((tmp_path / "docs" / "order" / "results.json").read_text(encoding="utf-8"))
    assert [(r["method"], r["seed"]) for r in results["runs"]] == [("mean-teacher", 0), ("supervised", 0)]
    assert results["finished_runs"] == [2, 4]


def test_a_method_whose_revision_changed_trains_again(bench_run, tmp_path, monkeypatch):
    import shutil
    from dataclasses import replace

    from semiseg.methods.mean_teacher import MeanTeacher
    settings, report, _ = bench_run
    docs = tmp_path / "docs"
    shutil.copytree(report.parent, docs / settings.name)
    monkeypatch.setattr(MeanTeacher, "revision", MeanTeacher.revision + 1)
    bench(replace(settings, out=docs, workdir=tmp_path / "work", resume=True, seeds=[0]))
    trained = sorted(f.name for f in (tmp_path / "work" / "runs").iterdir())
    assert trained == ["mean-teacher-s0.json", "mean-teacher-unlabeled-false-s0.json"]  # not supervised


def test_missing_distances_are_left_out_also_when_read_back_from_json():
    """A missed structure has no HD95: NaN in a fresh run, null in one --resume reads back from its record."""
    from semiseg.bench_paired import seed_means as _seed_means
    runs = [{"checkpoints": {"last": {"cases": {"a": {"hd95_mm": 4.0}, "b": {"hd95_mm": None},
                                                "c": {"hd95_mm": float("nan")}}}}},
            {"checkpoints": {"last": {"cases": {"a": {"hd95_mm": None}}}}}]
    means = _seed_means(runs, "last", "hd95_mm")
    assert means[0] == 4.0 and means[1] != means[1]


def test_resume_continues_from_the_committed_report_alone(bench_run, tmp_path):
    """On another machine the work folder is gone: the finished runs are read back from the report's
    results.json (their keys), its pictures stay, and only a run with other settings trains."""
    import shutil
    from dataclasses import replace
    settings, report, results = bench_run
    docs = tmp_path / "docs"
    shutil.copytree(report.parent, docs / settings.name)
    elsewhere = replace(settings, out=docs, workdir=tmp_path / "new-work", resume=True)
    again = json.loads((bench(elsewhere).parent / "results.json").read_text(encoding="utf-8"))
    assert [r["train_seconds"] for r in again["runs"]] == [r["train_seconds"] for r in results["runs"]]
    assert not (tmp_path / "new-work").exists()  # nothing trained
    assert again["overlays"] == results["overlays"] and again["total_seconds"] == results["total_seconds"]
    assert "![supervised](overlay_supervised.png)" in (docs / settings.name / "report.md").read_text(encoding="utf-8")
    more = json.loads((bench(replace(elsewhere, seeds=[0, 1, 2])).parent / "results.json").read_text(
        encoding="utf-8"))
    assert [r["seed"] for r in more["runs"] if r["method"] == "supervised"] == [0, 1, 2]
    assert (tmp_path / "new-work" / "runs" / "supervised-s2.json").is_file()  # only the new seed trained
    assert not (tmp_path / "new-work" / "runs" / "supervised-s0.json").exists()


def test_a_given_validation_interval_replaces_the_profiles(tiny_dataset, tmp_path):
    """`--val-every`: how often a run validates (and measures --pool-truth), for every run."""
    settings = BenchSettings(data=tiny_dataset, name="every3", methods=["supervised"], seeds=[0], profile="smoke",
                             iterations=6, val_every=3, out=tmp_path / "docs", workdir=tmp_path / "work",
                             device="cpu", progress=False)
    results = json.loads((bench(settings).parent / "results.json").read_text(encoding="utf-8"))
    assert [it for it, _ in results["runs"][0]["validation_curve"]] == [3, 6]
    from dataclasses import replace
    with pytest.raises(ConfigError, match="--val-every 0"):
        bench(replace(settings, val_every=0, out=tmp_path / "docs0"))


def test_a_given_augmentation_trains_every_run_and_enters_its_key(tiny_dataset, tmp_path):
    """`--augment`: every run trains with it (its model card says so), its key and report name it; absent, the
    key is as before the flag, so that earlier runs are still reused under --resume."""
    settings = BenchSettings(data=tiny_dataset, name="plain", methods=["supervised"], seeds=[0], profile="smoke",
                             augment="none", out=tmp_path / "docs", workdir=tmp_path / "work", device="cpu",
                             progress=False)
    report = bench(settings)
    run = json.loads((report.parent / "results.json").read_text(encoding="utf-8"))["runs"][0]
    assert run["key"]["profile"]["augment"] == "none"
    card = json.loads((tmp_path / "work" / "models" / "supervised-s0.semiseg" / "model.json").read_text(
        encoding="utf-8"))
    assert card["training"]["augment"] == "none"
    assert "training augmentation `none`" in report.read_text(encoding="utf-8")
    from dataclasses import replace
    assert "augment" not in replace(settings, augment=None).profile_settings()
    with pytest.raises(ConfigError, match="--augment heavy"):
        replace(settings, augment="heavy").profile_settings()


def test_paired_table_leaves_out_supervised_columns_only_without_supervised_runs():
    from semiseg.bench_paired import paired, paired_table

    def run(method, seed, dice):
        return {"method": method, "seed": seed,
                "checkpoints": {c: {"cases": {"a": {"dice": dice}}} for c in ("best", "last")}}
    runs = [run("mean-teacher", 0, 0.8), run("mean-teacher:unlabeled=false", 0, 0.7), run("supervised", 0, 0.75)]
    pairs = [("mean-teacher", "mean-teacher:unlabeled=false")]
    alone = paired_table(paired(pairs, ["mean-teacher", "mean-teacher:unlabeled=false"], runs))
    assert alone[:3] == ["| method | checkpoint | method Dice % | twin Dice % | gain over twin | seeds improved |",
                         "|---|---|---|---|---|---|", "| mean-teacher | best | 80.0 ± 0.0 | 70.0 ± 0.0 | 10.0 ± 0.0 | 1/1 |"]
    full = paired_table(paired(pairs, ["supervised", "mean-teacher", "mean-teacher:unlabeled=false"], runs))
    assert full[2] == "| mean-teacher | best | 80.0 ± 0.0 | 70.0 ± 0.0 | 75.0 ± 0.0 | 10.0 ± 0.0 | 1/1 | 5.0 ± 0.0 | 1/1 |"
