"""Our dataset in nnU-Net v2's raw layout (the peer run itself needs nnunetv2 and is never a test)."""

import json
import shutil

import numpy as np
import pytest

from semiseg.datasets import load_dataset
from semiseg.errors import ConfigError
from semiseg.io import read_label, read_volume, write_volume
from semiseg.peer_nnunet_layout import from_nnunet_predictions, nnunet_name, to_nnunet_raw
from semiseg.prepare import split_validation
from semiseg.synthetic import make_dataset


@pytest.fixture(scope="module")
def two_task(tmp_path_factory):
    root = tmp_path_factory.mktemp("two-task") / "phantoms"
    return make_dataset(root, n_labeled=4, n_unlabeled=1, n_test=2, shape=(32, 32, 32), seed=0,
                        tasks={"organs": ["organ", "vessel"], "lesions": ["lesion"]})


def test_layout_names_labels_and_cases(two_task, tmp_path):
    ds = load_dataset(two_task)
    folder = to_nnunet_raw(ds, tmp_path / "raw", 7)
    assert folder.name == nnunet_name(7, ds.name) and folder.name.startswith("Dataset007_")
    spec = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    train, held_out = split_validation(ds.training, None)
    assert spec["numTraining"] == len(train) and spec["file_ending"] == ".nii.gz"
    assert spec["labels"]["background"] == 0
    assert sorted(spec["labels"].values()) == list(range(len(ds.labels)))
    assert spec["channel_names"] == {"0": ds.modality or "MRI"}
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == sorted(f"{c.id}_0000.nii.gz" for c in train)
    assert not (folder / "labelsTr" / f"{held_out[0].id}.nii.gz").exists(), "bench's validation case left out"
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == sorted(f"{c.id}_0000.nii.gz" for c in ds.test)
    # Images unchanged; labels renumbered to consecutive values in our order.
    case = train[0]
    np.testing.assert_array_equal(read_volume(folder / "imagesTr" / f"{case.id}_0000.nii.gz").array,
                                  read_volume(case.image).array)
    ours = read_label(case.label).array
    theirs = read_label(folder / "labelsTr" / f"{case.id}.nii.gz").array
    values = [0, *sorted(ds.foreground_labels.values())]
    np.testing.assert_array_equal(np.array(values)[theirs], ours)
    with pytest.raises(ConfigError, match="not empty"):
        to_nnunet_raw(ds, tmp_path / "raw", 7)


def test_predictions_come_back_in_our_values_and_names(two_task, tmp_path):
    ds = load_dataset(two_task)
    values = [0, *sorted(ds.foreground_labels.values())]
    lut = {v: i for i, v in enumerate(values)}
    for case in ds.test:  # nnU-Net's prediction of a perfect model: the truth, renumbered
        truth = read_label(case.label)
        write_volume(truth.with_array(np.vectorize(lut.get)(truth.array).astype(np.uint8)),
                     tmp_path / "nn" / f"{case.id}.nii.gz")
    out = from_nnunet_predictions(ds, tmp_path / "nn", tmp_path / "ours")
    for case in ds.test:
        np.testing.assert_array_equal(read_label(out / case.image.name).array, read_label(case.label).array)
    (tmp_path / "nn" / f"{ds.test[0].id}.nii.gz").unlink()
    with pytest.raises(ConfigError, match="no prediction"):
        from_nnunet_predictions(ds, tmp_path / "nn", tmp_path / "again")


def test_dataset_id_range():
    with pytest.raises(ConfigError, match="1 to 999"):
        nnunet_name(1000, "x")


@pytest.mark.skipif(shutil.which("nnUNetv2_train") is not None, reason="nnU-Net v2 is installed here")
def test_peer_without_nnunet_is_a_clear_error(tiny_dataset, tmp_path, capsys):
    from semiseg.cli import main
    code = main(["peer", "nnunet", "--data", str(tiny_dataset), "--work", str(tmp_path / "w"),
                 "--out", str(tmp_path / "peer.json")])
    err = capsys.readouterr().err
    assert code == 2 and "pip install -e '.[peers]'" in err and "Traceback" not in err
    assert not (tmp_path / "w").exists()


def _peer_run(data, tmp_path, monkeypatch, **overrides):
    """The orchestration with nnU-Net's commands stood in for: a perfect 'prediction' (the truth) is written
    where nnU-Net's predict would write it, so the scoring path is the real one. Returns (commands, JSON)."""
    import argparse

    from semiseg import peer_nnunet

    ds = load_dataset(data)
    values = [0, *sorted(ds.foreground_labels.values())]
    lut = np.zeros(max(values) + 1, dtype=np.uint8)
    lut[values] = np.arange(len(values))
    commands = []

    def fake_run(command, env, log):
        commands.append(command)
        if "-o" in command:
            out = command[command.index("-o") + 1]
            for case in ds.test:
                truth = read_label(case.label)
                write_volume(truth.with_array(lut[truth.array]), f"{out}/{case.id}.nii.gz")
        return 1.0

    monkeypatch.setattr(shutil, "which", lambda name: f"/bin/{name}")
    monkeypatch.setattr(peer_nnunet, "_run", fake_run)
    args = argparse.Namespace(data=str(data), work=str(tmp_path / "w"), out=str(tmp_path / "peer.json"),
                              epochs=1, iterations=None, configuration="3d_fullres", dataset_id=9, seeds="0",
                              device="cpu", workers=1, overwrite=False, target_spacing=2.0)
    vars(args).update(overrides)
    return commands, json.loads(peer_nnunet.run_peer_nnunet(args).read_text(encoding="utf-8"))


def test_peer_run_passes_its_own_plans_to_every_nnunet_command(two_task, tmp_path, monkeypatch):
    from semiseg import peer_nnunet

    commands, result = _peer_run(two_task, tmp_path, monkeypatch)
    assert [c[0] for c in commands] == ["nnUNetv2_plan_and_preprocess", "nnUNetv2_train", "nnUNetv2_predict"]
    plan, train, predict = commands
    assert plan[plan.index("-overwrite_target_spacing") + 1:][:3] == ["2", "2", "2"]
    name = plan[plan.index("-overwrite_plans_name") + 1]
    assert train[train.index("-p") + 1] == name == predict[predict.index("-p") + 1]
    run = result["runs"][0]
    assert run["method"] == "nnunet-v2 (nnUNetTrainer_1epoch, 3d_fullres, 2 mm)"
    assert all(c["dice"] == 1.0 for c in run["checkpoints"]["last"]["cases"].values())
    # Without --target-spacing nnU-Net plans its own spacing and no plans name is passed.
    assert peer_nnunet.plans(None)[:2] == ([], [])
    with pytest.raises(ConfigError, match="target-spacing"):
        peer_nnunet.plans(0.0)


def test_peer_run_of_n_iterations_trains_and_predicts_through_the_runner(two_task, tmp_path, monkeypatch):
    """--iterations: nnU-Net's own commands with one more trainer, under the same plans, recorded by name."""
    import sys

    commands, result = _peer_run(two_task, tmp_path, monkeypatch, iterations=400)
    plan, train, predict = commands
    runner = [sys.executable, "-m", "semiseg.peer_nnunet_runner", "400"]
    assert train[:5] == [*runner, "train"] and predict[:5] == [*runner, "predict"]
    for command in (train, predict):
        assert command[command.index("-tr") + 1] == "nnUNetTrainer_400iters"
        assert command[command.index("-p") + 1] == plan[plan.index("-overwrite_plans_name") + 1]
    run = result["runs"][0]
    assert run["method"] == "nnunet-v2 (nnUNetTrainer_400iters, 3d_fullres, 2 mm)" and run["iterations"] == 400
    with pytest.raises(ConfigError, match="--iterations 0"):
        _peer_run(two_task, tmp_path, monkeypatch, iterations=0)


def test_the_runner_makes_nnunet_find_its_trainer_and_still_find_its_own():
    nnunetv2 = pytest.importorskip("nnunetv2", reason="nnU-Net v2 (the peers extra) is not installed here")
    import os

    import nnunetv2.inference.predict_from_raw_data as predict
    import nnunetv2.run.run_training as run_training

    from semiseg.peer_nnunet_runner import register

    trainer = register(400)
    folder = os.path.join(nnunetv2.__path__[0], "training", "nnUNetTrainer")
    module = "nnunetv2.training.nnUNetTrainer"
    for lookup in (run_training.recursive_find_python_class, predict.recursive_find_python_class):
        assert lookup(folder, "nnUNetTrainer_400iters", module) is trainer
        assert lookup(folder, "nnUNetTrainer_1epoch", module).__name__ == "nnUNetTrainer_1epoch"
