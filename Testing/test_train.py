"""The training loop: outputs and events, cancel + --resume reproducing an uninterrupted run, refusals."""

from __future__ import annotations

import json
import shutil
import signal
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from semiseg.datasets import load_dataset
from semiseg.errors import ConfigError
from semiseg.events import EventWriter, read_events
from semiseg.model import load_model
from semiseg.prepare import split_validation
from semiseg.train import Cancelled, TrainConfig, _Trainer, auto_patch, train

EVENT_FIELDS = {
    "start": {"total_iterations", "method", "device"},
    "iteration": {"iteration", "total_iterations", "losses", "lr", "eta_seconds"},
    "validation": {"iteration", "dice", "per_label"},
    "checkpoint": {"iteration", "path", "kind"},
    "done": {"model", "seconds"},
}


def config(data, tmp_path: Path, name: str = "m", **changes) -> TrainConfig:
    base = TrainConfig(data=str(data), out=str(tmp_path / f"{name}.semiseg"), method="supervised",
                       method_options={"n_filters": 4}, iterations=4, patch=[32, 32, 32], device="cpu",
                       progress=False, val_every=2, val_cases=1, event_seconds=0.0)
    return replace(base, **changes)


def strict_json(line: str):
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")
    return json.loads(line, parse_constant=refuse)


# ---- one run's outputs -------------------------------------------------------------------------------
def test_run_writes_package_checkpoints_and_events(tiny_run):
    assert (tiny_run.model / "model.json").is_file() and (tiny_run.model / "weights.safetensors").is_file()
    assert (tiny_run.workdir / "last.pt").is_file() and (tiny_run.workdir / "best.pt").is_file()
    assert not list(tiny_run.workdir.glob(".*")), "temporary files left in the workdir"
    net, manifest = load_model(tiny_run.model)
    assert manifest["training"]["iterations"] == 4
    # The package holds the last weights (nnU-Net's final checkpoint); the card also names the best validation.
    assert manifest["metrics"]["checkpoint"] == "last" and tiny_run.result.models == {"last": tiny_run.model}
    assert manifest["metrics"]["validation"] == manifest["metrics"]["last"]
    assert manifest["metrics"]["validation"]["iteration"] == 4
    assert manifest["metrics"]["best"]["iteration"] == tiny_run.result.best_iteration
    # The model card carries the measured cost the Slicer module shows (sliding window on validation cases).
    assert manifest["inference"]["seconds_per_volume"] > 0 and manifest["inference"]["device"] == "cpu"
    assert manifest["training"]["seconds"] > 0 and manifest["training"]["peak_memory_mb"] > 0

    lines = tiny_run.events.read_text(encoding="utf-8").splitlines()
    events = [strict_json(line) for line in lines]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert set(kinds) == set(EVENT_FIELDS)
    for e in events:
        assert EVENT_FIELDS[e["event"]] <= set(e), e
        assert isinstance(e["time"], float | int) and e["time"] > 1.6e9
    # start, then iterations; each validation follows its iteration; a checkpoint follows; done last.
    assert kinds.index("iteration") < kinds.index("validation") < kinds.index("checkpoint") < kinds.index("done")
    iterations = [e["iteration"] for e in events if e["event"] == "iteration"]
    assert iterations == [1, 2, 3, 4]
    for e in events:
        if e["event"] == "iteration":
            assert e["total_iterations"] == 4 and e["lr"] > 0 and e["eta_seconds"] >= 0
            assert "total" in e["losses"] and all(isinstance(v, float) for v in e["losses"].values())
        if e["event"] == "validation":
            assert e["iteration"] in (2, 4) and 0 <= e["dice"] <= 1
            assert set(e["per_label"]) == {"organ", "vessel", "lesion"}
        if e["event"] == "checkpoint":
            assert e["kind"] in ("last", "best")
            assert Path(e["path"]) == tiny_run.workdir / f"{e['kind']}.pt"
    validations = [i for i, k in enumerate(kinds) if k == "validation"]
    assert [events[i]["iteration"] for i in validations] == [2, 4]
    last = [e["iteration"] for e in events if e["event"] == "checkpoint" and e["kind"] == "last"]
    assert last == [2, 4]
    start, done = events[0], events[-1]
    assert start["total_iterations"] == 4 and start["method"] == "supervised" and start["device"] == "cpu"
    assert done["model"] == str(tiny_run.model) and done["seconds"] > 0
    assert read_events(tiny_run.events) == events


def _weights(package: Path) -> dict:
    return load_model(package)[0].state_dict()


def test_checkpoint_best_ships_the_selected_weights_and_export_both_writes_the_last_beside(tiny_dataset, tmp_path,
                                                                                           monkeypatch):
    import itertools

    from semiseg.training import validation
    scores = itertools.count()
    monkeypatch.setattr(validation, "dice", lambda pred, gt: 1.0 / (1 + next(scores)))  # the first validation wins
    cfg = config(tiny_dataset, tmp_path, checkpoint="best", export_other=True)
    result = train(cfg)
    best, last = Path(cfg.out), tmp_path / "m-last.semiseg"
    assert result.models == {"best": best, "last": last} and result.best_iteration == 2
    assert {k: load_model(p)[1]["metrics"]["checkpoint"] for k, p in result.models.items()} == {"best": "best",
                                                                                                 "last": "last"}
    assert load_model(best)[1]["metrics"]["validation"]["iteration"] == 2
    saved_best = torch.load(cfg.workdir_path() / "best.pt", map_location="cpu", weights_only=True)["inference"]
    saved_last = {k.removeprefix("net."): v for k, v in _last_state(cfg.workdir_path())["method"].items()}
    for package, saved in ((best, saved_best), (last, saved_last)):
        weights = _weights(package)
        assert all(torch.equal(weights[k], saved[k]) for k in weights)
    assert any(not torch.equal(saved_best[k], saved_last[k]) for k in saved_best)  # two different packages


def test_without_validation_cases_the_package_holds_the_last_weights_whatever_was_asked(tiny_dataset, tmp_path):
    cfg = config(tiny_dataset, tmp_path, val_cases=0, checkpoint="best", export_other=True)
    result = train(cfg)
    assert result.models == {"last": Path(cfg.out)} and not (tmp_path / "m-last.semiseg").exists()
    assert load_model(cfg.out)[1]["metrics"]["checkpoint"] == "last"


# ---- cancel and resume -------------------------------------------------------------------------------
def _last_state(workdir: Path) -> dict:
    return torch.load(workdir / "last.pt", map_location="cpu", weights_only=True)


def test_cancel_then_resume_matches_an_uninterrupted_run(tiny_dataset, tmp_path, monkeypatch):
    common = dict(iterations=6, checkpoint_every=3, val_every=3, batch_labeled=2)
    # The uninterrupted run.
    full = config(tiny_dataset, tmp_path, "full", events=str(tmp_path / "full.jsonl"), **common)
    train(full)
    full_state = _last_state(full.workdir_path())
    assert full_state["iteration"] == 6

    # The same run, cancelled (as by SIGTERM) during iteration 3: it finishes it, checkpoints, raises Cancelled.
    original_step = _Trainer._step

    def step_then_signal(self, it):
        losses = original_step(self, it)
        if it == 2:
            handler = signal.getsignal(signal.SIGTERM)
            assert getattr(handler, "__func__", None) is _Trainer._on_signal  # the loop's handler is installed
            handler(signal.SIGTERM, None)
        return losses

    monkeypatch.setattr(_Trainer, "_step", step_then_signal)
    cut = config(tiny_dataset, tmp_path, "cut", events=str(tmp_path / "cut.jsonl"), **common)
    handlers_before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(Cancelled, match="iteration 3"):
        train(cut)
    monkeypatch.undo()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers_before
    assert not Path(cut.out).exists()
    cut_events = read_events(cut.events)
    assert [e["event"] for e in cut_events][-2:] == ["checkpoint", "error"]
    assert _last_state(cut.workdir_path())["iteration"] == 3

    # Resume from a copy of the killed run's workdir.
    workdir = tmp_path / "copied.work"
    shutil.copytree(cut.workdir_path(), workdir)
    resumed = replace(cut, out=str(tmp_path / "resumed.semiseg"), workdir=str(workdir), resume=True,
                      events=str(tmp_path / "resumed.jsonl"))
    result = train(resumed)
    assert result.iterations == 6 and Path(resumed.out).is_dir()
    events = read_events(resumed.events)
    assert events[0]["event"] == "start" and events[0]["start_iteration"] == 3 and events[0]["resumed"] is True
    assert [e["iteration"] for e in events if e["event"] == "iteration"] == [4, 5, 6]

    state = _last_state(workdir)
    assert state["iteration"] == 6
    assert state["scheduler"]["last_epoch"] == full_state["scheduler"]["last_epoch"] == 6
    assert state["optimizer"]["param_groups"][0]["lr"] == full_state["optimizer"]["param_groups"][0]["lr"]
    assert state["streams"] == full_state["streams"]
    assert state["method"].keys() == full_state["method"].keys()
    for key, value in full_state["method"].items():
        assert torch.allclose(state["method"][key].float(), value.float(), rtol=1e-5, atol=1e-6), key
    for a, b in zip(state["optimizer"]["state"].values(), full_state["optimizer"]["state"].values()):
        assert torch.allclose(a["momentum_buffer"], b["momentum_buffer"], rtol=1e-5, atol=1e-6)
    # The same validation history, so the same best checkpoint and the same model package.
    assert [h["iteration"] for h in state["history"]] == [3, 6]
    for h_resumed, h_full in zip(state["history"], full_state["history"]):
        assert h_resumed["dice"] == pytest.approx(h_full["dice"], abs=1e-6)
    full_net, _ = load_model(full.out)
    resumed_net, _ = load_model(resumed.out)
    for key, value in full_net.state_dict().items():
        assert torch.allclose(resumed_net.state_dict()[key].float(), value.float(), rtol=1e-5, atol=1e-6), key


def test_resume_needs_the_same_method(tiny_run, tmp_path):
    workdir = tmp_path / "w"
    shutil.copytree(tiny_run.workdir, workdir)
    cfg = config(tiny_run.dataset, tmp_path, method="mean-teacher", workdir=str(workdir), resume=True)
    with pytest.raises(ConfigError, match="supervised"):
        train(cfg)


# ---- refusals ------------------------------------------------------------------------------------------
def test_fresh_run_into_a_workdir_with_a_checkpoint_is_refused(tiny_run, tmp_path):
    before = (tiny_run.workdir / "last.pt").read_bytes()
    cfg = config(tiny_run.dataset, tmp_path, workdir=str(tiny_run.workdir))
    with pytest.raises(ConfigError, match="--resume") as info:
        train(cfg)
    assert str(tiny_run.workdir) in str(info.value)
    assert (tiny_run.workdir / "last.pt").read_bytes() == before
    assert not Path(cfg.out).exists()


def test_resume_without_a_checkpoint_is_refused(tiny_dataset, tmp_path):
    cfg = config(tiny_dataset, tmp_path, resume=True, events=str(tmp_path / "ev.jsonl"))
    with pytest.raises(ConfigError, match="no checkpoint"):
        train(cfg)
    assert not Path(cfg.out).exists()
    assert read_events(tmp_path / "ev.jsonl")[-1]["event"] == "error"


def test_existing_out_is_refused_unless_overwrite(tiny_run, tmp_path):
    before = (tiny_run.model / "model.json").read_text(encoding="utf-8")
    cfg = config(tiny_run.dataset, tmp_path, workdir=str(tmp_path / "w"))
    cfg.out = str(tiny_run.model)
    with pytest.raises(ConfigError, match="--overwrite") as info:
        train(cfg)
    assert str(tiny_run.model) in str(info.value)
    assert (tiny_run.model / "model.json").read_text(encoding="utf-8") == before
    # With overwrite the run is accepted (built, not run: the shared model stays as it is).
    _Trainer(replace(cfg, overwrite=True), EventWriter(None))
    assert (tiny_run.model / "model.json").read_text(encoding="utf-8") == before


def test_validation_never_uses_test_cases(tiny_run, tmp_path, monkeypatch):
    ds = load_dataset(tiny_run.dataset)
    train_ids, test_ids = {c.id for c in ds.training}, {c.id for c in ds.test}
    assert train_ids and test_ids and not train_ids & test_ids
    fit, held_out = split_validation(ds.training, None)
    assert [c.id for c in held_out] == [ds.training[-1].id]
    assert {c.id for c in fit} | {c.id for c in held_out} == train_ids
    start = read_events(tiny_run.events)[0]
    assert (start["labeled"], start["validation"], start["unlabeled"]) == (3, 1, 4)
    # The cases the loop actually prepares: validation from the training split, the test split never read.
    import semiseg.training.data as data_module
    prepared = []
    real = data_module.prepare_case

    def spy(case, *args):
        prepared.append(case.id)
        return real(case, *args)

    monkeypatch.setattr(data_module, "prepare_case", spy)
    trainer = _Trainer(config(tiny_run.dataset, tmp_path), EventWriter(None))
    assert {c.id for c in trainer.val_cases} == {c.id for c in held_out}
    assert {c.id for c in trainer.val_cases} <= train_ids
    assert not set(prepared) & test_ids
    with pytest.raises(ConfigError):
        split_validation(ds.training, 4)


def test_every_labeled_case_trains_unless_cases_are_held_out(tiny_dataset, tmp_path):
    # The package ships the last weights, so by default no case is held out; --checkpoint best needs cases to
    # select on (a fifth); --val-cases is obeyed either way.
    cfg = config(tiny_dataset, tmp_path, val_cases=None)
    assert cfg.validation_cases() == 0
    assert replace(cfg, checkpoint="best").validation_cases() is None  # split_validation's fifth
    assert replace(cfg, val_cases=2).validation_cases() == replace(cfg, val_cases=2, checkpoint="best") \
        .validation_cases() == 2
    trainer = _Trainer(cfg, EventWriter(None))
    labeled = load_dataset(tiny_dataset).training
    assert trainer.val_cases == [] and len(trainer.data.train_cases) == len(labeled)
    best = _Trainer(replace(cfg, checkpoint="best", out=str(tmp_path / "b.semiseg")), EventWriter(None))
    assert [c.id for c in best.val_cases] == [labeled[-1].id]
    # Trained so: no validation, and the card still says what a prediction costs (on the first labeled case).
    result = train(replace(cfg, iterations=2, events=str(tmp_path / "events.jsonl")))
    assert result.history == [] and "validation" not in [e["event"] for e in read_events(tmp_path / "events.jsonl")]
    card = load_model(result.model)[1]
    assert card["data"]["labeled"] == len(labeled) and card["data"]["validation"] == 0
    assert card["inference"]["prediction_seconds"] > 0 and card["inference"]["peak_memory_mb"] > 0
    assert "first labeled case" in card["inference"]["prediction_seconds_measures"]
    # The checkpoint records the resolved number, so a resume cannot silently train on other cases.
    from semiseg.resume_settings import run_settings
    assert run_settings(cfg, [32, 32, 32], {})["val_cases"] == 0
    assert run_settings(replace(cfg, checkpoint="best"), [32, 32, 32], {})["val_cases"] is None


def test_method_that_needs_unlabeled_data_on_a_dataset_without(tiny_dataset, tmp_path):
    root = tmp_path / "labeled-only"
    for sub in ("imagesTr", "labelsTr"):
        shutil.copytree(tiny_dataset / sub, root / sub)
    spec = json.loads((tiny_dataset / "dataset.json").read_text(encoding="utf-8"))
    spec.update(unlabeled=[], test=[], numUnlabeled=0, numTest=0)
    (root / "dataset.json").write_text(json.dumps(spec), encoding="utf-8")
    cfg = config(root, tmp_path, method="mean-teacher")
    with pytest.raises(ConfigError, match="unlabeled"):
        train(cfg)
    # The supervised baseline is fine there.
    _Trainer(config(root, tmp_path, "sup"), EventWriter(None))


@pytest.mark.parametrize("changes, fragment", [
    (dict(patch=[32, 32, 24]), "--patch"),
    (dict(patch=[8, 16, 16]), "--patch"),
    (dict(patch=[32, 32]), "--patch"),
    (dict(optimizer="rmsprop"), "--optimizer"),
    (dict(schedule="cosine"), "--schedule"),
    (dict(iterations=0), "--iterations"),
    (dict(batch_labeled=0), "--batch-labeled"),
    (dict(device="tpu"), "--device"),
    (dict(method="no-such-method"), "no-such-method"),
    (dict(method_options={"n_filters": 4, "wings": 2}), "wings"),
], ids=["patch-24", "patch-8", "patch-2d", "optimizer", "schedule", "iterations", "batch", "device", "method",
        "option"])
def test_bad_settings(tiny_dataset, tmp_path, changes, fragment):
    cfg = config(tiny_dataset, tmp_path, **changes)
    with pytest.raises(ConfigError) as info:
        train(cfg)
    assert fragment in str(info.value)
    assert not Path(cfg.out).exists() and not (cfg.workdir_path() / "last.pt").exists()


def test_auto_patch():
    assert auto_patch([(40, 50, 130), (48, 70, 200), (30, 20, 10)]) == [32, 48, 128]
    assert auto_patch([(10, 12, 15)]) == [16, 16, 16]
    assert auto_patch([(300, 300, 300)], cap=96) == [96, 96, 96]
    assert auto_patch([(33, 45, 64), (35, 47, 64)]) == [32, 32, 64]
    assert all(p % 16 == 0 for p in auto_patch([(77, 91, 123), (81, 99, 117)]))
