"""Reliability, bad input: each wrong file or setting → the clear error it gets (exit 2, the file or setting
named, the problem said, no traceback), before any work. Read it as a list; each test is one probe.

Data: the shared 32³ phantom dataset (copied before it is broken) and tiny hand-made files.
"""

from __future__ import annotations

import gzip
import json
import struct
import time

import numpy as np
import pytest
import SimpleITK as sitk

from helpers_reliability import accepted, copy_dataset, dataset_json, refused, write_dataset_json
from semiseg.io import read_volume, write_volume
from semiseg.volume import Volume

TRAIN = ["--method", "supervised", "--iterations", "2", "--patch", "32,32,32", "--option", "n_filters=4",
         "--device", "cpu", "--quiet", "--val-every", "1"]


@pytest.fixture
def data(tiny_dataset, tmp_path):
    """A private copy of the phantom dataset, free to break."""
    return copy_dataset(tiny_dataset, tmp_path / "data")


def first_image(root):
    return root / dataset_json(root)["training"][0]["image"]


def first_label(root):
    return root / dataset_json(root)["training"][0]["label"]


def truncate(path, fraction=0.5):
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * fraction)])


def nifti_with(tmp_path, name, value):
    array = np.random.default_rng(0).normal(size=(8, 8, 8)).astype(np.float32)
    array[2, 3, 4] = value
    path = tmp_path / name
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    return path


# ---- broken image files ---------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["check", "train"])
def test_truncated_nii_gz_is_refused(capsys, data, tmp_path, command):
    truncate(first_image(data))  # SimpleITK reads this silently, half the voxels 0
    argv = ["check", data] if command == "check" else ["train", "--data", data, "--out", tmp_path / "m.semiseg",
                                                        *TRAIN]
    err = refused(capsys, argv, first_image(data))
    assert "truncated" in err


def test_truncated_uncompressed_nii_is_refused(capsys, tmp_path):
    path = write_volume(Volume(np.ones((8, 8, 8), np.float32)), tmp_path / "scan.nii")
    truncate(path, 0.8)
    with pytest.raises(Exception, match="truncated"):
        read_volume(path)


def test_truncated_label_is_refused(capsys, data):
    truncate(first_label(data))
    refused(capsys, ["check", data], first_label(data), "truncated")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_nan_and_inf_voxels_are_refused_in_every_format(tmp_path, value, ext):
    # NIfTI: ITK's reader turns them into 0, so the check has to look at the file itself.
    path = nifti_with(tmp_path, f"scan{ext}", value)
    with pytest.raises(Exception, match="NaN or infinite") as info:
        read_volume(path)
    assert str(path) in str(info.value)


def test_check_refuses_a_nan_image_in_the_dataset(capsys, data):
    image = first_image(data)
    volume = read_volume(image)
    volume.array[0, 0, 0] = np.nan
    write_volume(volume, image, overwrite=True)
    refused(capsys, ["check", data], image, "NaN")


def test_predict_refuses_a_nan_scan(capsys, tiny_model, tmp_path):
    scan = nifti_with(tmp_path, "scan.nii.gz", np.nan)
    refused(capsys, ["predict", "--model", tiny_model, "--input", scan, "--output", tmp_path / "out.nii.gz",
                     "--device", "cpu"], scan, "NaN")
    assert not (tmp_path / "out.nii.gz").exists()


def _huge_nifti(path, size):
    """A NIfTI-1 header announcing size³ float32 voxels followed by a few bytes of data."""
    image = sitk.Image([2, 2, 2], sitk.sitkFloat32)
    sitk.WriteImage(image, str(path))
    raw = bytearray(gzip.open(path).read())
    raw[40:56] = struct.pack("<8h", 3, size, size, size, 1, 1, 1, 1)
    path.write_bytes(gzip.compress(bytes(raw)))
    return path


def test_huge_header_with_truncated_data_is_refused_fast(tmp_path):
    path = _huge_nifti(tmp_path / "huge.nii.gz", 1300)  # 8.8 GB announced, 32 bytes there
    start = time.perf_counter()
    with pytest.raises(Exception, match="truncated|GiB") as info:
        read_volume(path)
    assert str(path) in str(info.value)
    assert time.perf_counter() - start < 30  # not a benchmark: nothing of 8.8 GB was allocated or read


def test_size_that_cannot_fit_in_memory_is_refused_from_the_header(tmp_path, monkeypatch):
    import semiseg.io as io
    path = write_volume(Volume(np.zeros((16, 16, 16), np.float32)), tmp_path / "scan.nii.gz")
    monkeypatch.setattr(io, "available_memory_bytes", lambda: 10_000)
    with pytest.raises(Exception, match="GiB") as info:
        read_volume(path)
    assert str(path) in str(info.value)


# ---- labels that train used to crash on, or learn nothing from ------------------------------------------
@pytest.mark.parametrize("value", [7, 255])
def test_train_refuses_undeclared_label_values(capsys, data, tmp_path, value):
    label = first_label(data)
    volume = read_volume(label)
    volume.array[0, 0, 0] = value  # not in dataset.json's labels: an IndexError deep in training before
    write_volume(volume, label, overwrite=True)
    refused(capsys, ["train", "--data", data, "--out", tmp_path / "m.semiseg", *TRAIN], label, str(value))
    assert not (tmp_path / "m.semiseg").exists()


def test_train_refuses_all_empty_labels(capsys, data, tmp_path):
    for case in dataset_json(data)["training"]:
        volume = read_volume(data / case["label"])
        write_volume(volume.with_array(np.zeros_like(volume.array)), data / case["label"], overwrite=True)
    refused(capsys, ["train", "--data", data, "--out", tmp_path / "m.semiseg", *TRAIN], "no foreground")


def test_bench_applies_checks_rules_before_any_run(capsys, data, tmp_path):
    label = first_label(data)
    volume = read_volume(label)
    volume.array[0, 0, 0] = 9
    write_volume(volume, label, overwrite=True)
    refused(capsys, ["bench", "--data", data, "--name", "x", "--profile", "smoke", "--out", tmp_path / "reports",
                     "--workdir", tmp_path / "work", "--quiet"], label, "9")
    assert not (tmp_path / "work" / "models").exists()


# ---- leakage between splits -----------------------------------------------------------------------------
def test_a_case_listed_twice_in_training_is_refused(capsys, data):
    spec = dataset_json(data)
    spec["training"].append(dict(spec["training"][0]))
    write_dataset_json(data, spec)
    refused(capsys, ["check", data], first_image(data), "listed 2 times")


def test_a_training_scan_copied_into_test_is_refused(capsys, data):
    spec = dataset_json(data)
    copy = data / "imagesTs" / "copy.nii.gz"
    copy.write_bytes(first_image(data).read_bytes())
    (data / "labelsTs" / "copy.nii.gz").write_bytes(first_label(data).read_bytes())
    spec["test"].append({"image": "imagesTs/copy.nii.gz", "label": "labelsTs/copy.nii.gz"})
    write_dataset_json(data, spec)
    refused(capsys, ["check", data], copy, "identical images")


# ---- prediction settings --------------------------------------------------------------------------------
@pytest.mark.parametrize("option", [["--overlap", "1.0"], ["--overlap", "-0.5"], ["--overlap", "nan"],
                                    ["--sw-batch-size", "0"]])
def test_predict_refuses_impossible_window_settings(capsys, tiny_model, tiny_dataset, tmp_path, option):
    image = first_image(tiny_dataset)
    refused(capsys, ["predict", "--model", tiny_model, "--input", image, "--output", tmp_path / "o.nii.gz",
                     "--device", "cpu", *option], option[0])


def test_predict_refuses_an_output_under_a_file(capsys, tiny_model, tiny_dataset, tmp_path):
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    refused(capsys, ["predict", "--model", tiny_model, "--input", first_image(tiny_dataset), "--output",
                     tmp_path / "afile" / "o.nii.gz", "--device", "cpu"], tmp_path / "afile", "is a file")


def test_evaluate_refuses_an_out_in_a_missing_folder_before_the_work(capsys, tiny_dataset, tmp_path):
    refused(capsys, ["evaluate", "--pred", tmp_path / "nopreds", "--data", tiny_dataset, "--out",
                     tmp_path / "missing" / "m.json"], tmp_path / "missing")


# ---- evaluate never chooses silently --------------------------------------------------------------------
@pytest.fixture
def predictions(tiny_dataset, tmp_path):
    """Perfect 'predictions': the test labels themselves, named like the images."""
    folder = tmp_path / "preds"
    for case in dataset_json(tiny_dataset)["test"]:
        target = folder / case["image"].split("/")[-1]
        target.parent.mkdir(exist_ok=True)
        target.write_bytes((tiny_dataset / case["label"]).read_bytes())
    return folder


def test_evaluate_refuses_two_predictions_for_one_case(capsys, tiny_dataset, predictions):
    first = sorted(predictions.iterdir())[0]
    empty = read_volume(first)
    write_volume(empty.with_array(np.zeros_like(empty.array)), first.with_name(first.name.replace(".nii.gz", ".nrrd")))
    refused(capsys, ["evaluate", "--pred", predictions, "--data", tiny_dataset], "two predictions", first.name)


def test_evaluate_refuses_an_undeclared_value_in_a_prediction(capsys, tiny_dataset, predictions):
    first = sorted(predictions.iterdir())[0]
    volume = read_volume(first)
    volume.array[0, 0, 0] = 42
    write_volume(volume, first, overwrite=True)
    refused(capsys, ["evaluate", "--pred", predictions, "--data", tiny_dataset], first, "42")


# ---- training settings ----------------------------------------------------------------------------------
@pytest.mark.parametrize("option", [["--val-every", "0"], ["--lr", "-1"], ["--lr", "nan"], ["--lr", "0"],
                                    ["--weight-decay", "inf"], ["--fg-ratio", "1.5"],
                                    ["--option", "n_filters=0"], ["--option", "norm=bogus"],
                                    ["--option", "n_filters=-4"]])
def test_train_refuses_bad_settings(capsys, tiny_dataset, tmp_path, option):
    err = refused(capsys, ["train", "--data", tiny_dataset, "--out", tmp_path / "m.semiseg", *TRAIN, *option])
    assert option[1].split("=")[0] in err or option[0] in err
    assert not (tmp_path / "m.semiseg").exists()


# ---- a model card that does not describe its network ----------------------------------------------------
def _edited_model(tiny_model, tmp_path, edit):
    import shutil
    target = tmp_path / "edited.semiseg"
    shutil.copytree(tiny_model, target)
    manifest = json.loads((target / "model.json").read_text(encoding="utf-8"))
    edit(manifest)
    (target / "model.json").write_text(json.dumps(manifest), encoding="utf-8")
    return target


MODEL_EDITS = {
    "negative n_filters": lambda m: m["architecture"]["args"].update(n_filters=-4),
    "unknown norm": lambda m: m["architecture"]["args"].update(norm="bogus"),
    "fewer labels than classes": lambda m: m.update(labels=m["labels"][:1]),
    "patch not a multiple of 16": lambda m: m.update(patch_size=[20, 32, 32]),
    "prompted plain V-Net": lambda m: m.update(prompted=True),
    "bad preprocessing": lambda m: m["preprocessing"].update(intensity="loud"),
}


@pytest.mark.parametrize("edit", MODEL_EDITS.values(), ids=MODEL_EDITS.keys())
def test_predict_refuses_an_inconsistent_model_json(capsys, tiny_model, tiny_dataset, tmp_path, edit):
    model = _edited_model(tiny_model, tmp_path, edit)
    refused(capsys, ["predict", "--model", model, "--input", first_image(tiny_dataset), "--output",
                     tmp_path / "o.nii.gz", "--device", "cpu"], model / "model.json")


# ---- what used to crash and now works -------------------------------------------------------------------
def test_default_augmentation_trains_on_patches_whose_height_and_width_differ(capsys, tmp_path):
    accepted(capsys, ["synthetic", tmp_path / "rect", "--shape", "32,64,48", "--labeled", "3", "--unlabeled", "0",
                      "--test", "0"])
    # No --patch: chosen from the data (32, 64, 48); default augmentation turns the axial plane.
    accepted(capsys, ["train", "--data", tmp_path / "rect", "--out", tmp_path / "rect.semiseg", "--method",
                      "supervised", "--iterations", "6", "--option", "n_filters=2", "--device", "cpu", "--quiet",
                      "--val-every", "6", "--batch-labeled", "4"])
