"""Add as labeled: a corrected case moves from the pool to the labeled set, validation cases unchanged."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from helpers_data import make_label, make_volume
from semiseg.datasets import load_dataset
from semiseg.errors import SemiSegError
from semiseg.io import read_label, read_volume, write_volume
from semiseg.pool import add_labeled
from semiseg.prepare import split_validation


def _copy(tiny_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    return data


def test_add_labeled_moves_the_case_first_among_the_labeled(tiny_dataset, tmp_path):
    data = _copy(tiny_dataset, tmp_path)
    before = load_dataset(data)
    _, val_before = split_validation(before.training, None)
    case = before.unlabeled[1]
    image = read_volume(case.image)
    corrected = image.with_array((image.array > np.median(image.array)).astype(np.uint8))
    label_file = tmp_path / "corrected.nii.gz"
    write_volume(corrected, label_file)

    added = add_labeled(data, case.id, label_file)

    after = load_dataset(data)
    assert [c.id for c in after.training] == [case.id] + [c.id for c in before.training]
    assert case.id not in [c.id for c in after.unlabeled] and len(after.unlabeled) == len(before.unlabeled) - 1
    assert added.label == data / "labelsTr" / case.image.name
    np.testing.assert_array_equal(read_label(added.label).array, corrected.array)
    _, val_after = split_validation(after.training, None)
    assert [c.id for c in val_after] == [c.id for c in val_before]
    spec = json.loads((data / "dataset.json").read_text(encoding="utf-8"))
    assert spec["numTraining"] == len(after.training) and spec["numUnlabeled"] == len(after.unlabeled)


def test_add_labeled_on_a_folder_dataset_writes_its_dataset_json(tmp_path):
    data = tmp_path / "folder"
    for i, split in enumerate(["imagesTr", "imagesTr", "imagesUn", "imagesUn"]):
        image = make_volume(shape=(8, 8, 8), seed=i)
        write_volume(image, data / split / f"case{i}.nii.gz")
        if split == "imagesTr":
            write_volume(make_label(image), data / "labelsTr" / f"case{i}.nii.gz")
    image = read_volume(data / "imagesUn" / "case3.nii.gz")
    add_labeled(data, "case3", make_label(image))
    ds = load_dataset(data)
    assert (data / "dataset.json").is_file()
    assert [c.id for c in ds.training] == ["case3", "case0", "case1"] and [c.id for c in ds.unlabeled] == ["case2"]
    assert ds.foreground_labels == {"foreground": 1}


def test_add_labeled_refuses_bad_input(tiny_dataset, tmp_path):
    data = _copy(tiny_dataset, tmp_path)
    ds = load_dataset(data)
    case = ds.unlabeled[0]
    with pytest.raises(SemiSegError, match="no unlabeled case 'nope'"):
        add_labeled(data, "nope", tmp_path / "x.nii.gz")
    image = read_volume(case.image)
    wrong_grid = tmp_path / "wrong.nii.gz"
    write_volume(make_label(make_volume(shape=(4, 4, 4))), wrong_grid)
    with pytest.raises(SemiSegError):
        add_labeled(data, case.id, wrong_grid)
    with pytest.raises(SemiSegError, match=r"values \[9\]"):
        add_labeled(data, case.id, image.with_array(np.full(image.array.shape, 9, np.uint8)))
    assert load_dataset(data).unlabeled[0].id == case.id  # nothing moved
    assert not (data / "labelsTr" / case.image.name).exists()


def test_add_labeled_command(tiny_dataset, tmp_path, capsys):
    from semiseg.cli import main
    data = _copy(tiny_dataset, tmp_path)
    case = load_dataset(data).unlabeled[0]
    label = tmp_path / "fixed.nii.gz"
    write_volume(make_label(read_volume(case.image)), label)
    assert main(["add-labeled", "--data", str(data), "--case", case.id, "--label", str(label)]) == 0
    assert load_dataset(data).training[0].id == case.id and "is labeled now" in capsys.readouterr().out
    assert main(["add-labeled", "--data", str(data), "--case", case.id, "--label", str(label)]) == 2
    assert "no unlabeled case" in capsys.readouterr().err
