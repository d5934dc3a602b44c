"""semiseg.convert: UA-MT's LA h5 layout -> our NIfTI dataset layout."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import SimpleITK as sitk

from semiseg.convert import convert_la_h5
from semiseg.datasets import check_dataset, load_dataset
from semiseg.errors import ConfigError, DataError
from semiseg.io import read_label, read_volume

H5_SHAPE = (12, 10, 6)  # UA-MT axis order (x, y, z)
TRAIN_IDS = ["AAA1", "BBB2", "CCC3"]
TEST_IDS = ["TTT9"]


def fake_uamt(data: Path, nested: bool = True) -> Path:
    """A tiny UA-MT `data` folder; each case's image encodes its voxel coordinates."""
    data.mkdir(parents=True)
    (data / "train.list").write_text("\n".join(TRAIN_IDS) + "\n\n", encoding="utf-8")
    (data / "test.list").write_text("\n".join(TEST_IDS) + "\n", encoding="utf-8")
    x, y, z = np.meshgrid(*[np.arange(n) for n in H5_SHAPE], indexing="ij")
    for i, case in enumerate(TRAIN_IDS + TEST_IDS):
        folder = data / "2018LA_Seg_Training Set" / case if nested else data / case
        folder.mkdir(parents=True)
        label = np.zeros(H5_SHAPE, np.uint8)
        label[3:7, 2:6, 1 + i % 3 : 4] = 1
        with h5py.File(folder / "mri_norm2.h5", "w") as f:
            f["image"] = (100 * x + 10 * y + z + 1000 * i).astype(np.float32)
            f["label"] = label
    return data


def test_convert_layout_orientation_and_loading(tmp_path):
    src = fake_uamt(tmp_path / "UA-MT" / "data")
    out = convert_la_h5(tmp_path / "UA-MT", tmp_path / "la", n_labeled=2)  # the repo root also works
    root = tmp_path / "la"
    assert out == root / "dataset.json"
    assert sorted(p.name for p in (root / "imagesTr").iterdir()) == ["la_AAA1.nii.gz", "la_BBB2.nii.gz"]
    assert sorted(p.name for p in (root / "labelsTr").iterdir()) == ["la_AAA1.nii.gz", "la_BBB2.nii.gz"]
    assert [p.name for p in (root / "imagesUn").iterdir()] == ["la_CCC3.nii.gz"]
    assert [p.name for p in (root / "imagesTs").iterdir()] == ["la_TTT9.nii.gz"]
    assert [p.name for p in (root / "labelsTs").iterdir()] == ["la_TTT9.nii.gz"]
    assert not (root / "labelsUn").exists()

    # The NIfTI size (x, y, z) is the h5 shape; voxel (x, y, z) keeps its value.
    nifti = sitk.ReadImage(str(root / "imagesTr" / "la_BBB2.nii.gz"))
    assert nifti.GetSize() == H5_SHAPE
    assert nifti.GetSpacing() == pytest.approx((0.625, 0.625, 0.625))
    assert nifti.GetPixel(5, 3, 2) == 100 * 5 + 10 * 3 + 2 + 1000
    image = read_volume(root / "imagesTr" / "la_BBB2.nii.gz")
    assert image.array.shape == H5_SHAPE[::-1]
    with h5py.File(src / "2018LA_Seg_Training Set" / "BBB2" / "mri_norm2.h5") as f:
        np.testing.assert_array_equal(image.array, f["image"][()].transpose(2, 1, 0))
        label = read_label(root / "labelsTr" / "la_BBB2.nii.gz", reference=image)
        np.testing.assert_array_equal(label.array, f["label"][()].transpose(2, 1, 0))
    assert label.array.dtype == np.uint8

    spec = json.loads(out.read_text(encoding="utf-8"))
    assert spec["name"] == "LA2018" and spec["modality"] == "MR"
    assert spec["labels"] == {"background": 0, "left atrium": 1}
    ds = load_dataset(root)
    report = check_dataset(ds)
    assert report.counts == {"training": 2, "unlabeled": 1, "test": 1}
    assert [c.id for c in ds.training] == ["la_AAA1", "la_BBB2"]


def test_flat_layout_and_overwrite(tmp_path):
    src = fake_uamt(tmp_path / "data", nested=False)
    dst = tmp_path / "la"
    convert_la_h5(src, dst, n_labeled=2)
    with pytest.raises(DataError, match="not empty") as err:
        convert_la_h5(src, dst, n_labeled=1)
    assert str(dst) in str(err.value)
    convert_la_h5(src, dst, n_labeled=1, overwrite=True)
    assert [p.name for p in (dst / "imagesTr").iterdir()] == ["la_AAA1.nii.gz"]  # no stale case left
    assert load_dataset(dst).training[0].id == "la_AAA1"


def test_missing_h5_is_named(tmp_path):
    src = fake_uamt(tmp_path / "data")
    missing = src / "2018LA_Seg_Training Set" / "CCC3" / "mri_norm2.h5"
    missing.unlink()
    with pytest.raises(DataError, match="not found") as err:
        convert_la_h5(src, tmp_path / "la", n_labeled=2)
    assert str(missing) in str(err.value)
    assert not (tmp_path / "la").exists()  # nothing written before the check


def test_bad_source_and_n_labeled(tmp_path):
    with pytest.raises(DataError, match="train.list"):
        convert_la_h5(tmp_path, tmp_path / "la")
    src = fake_uamt(tmp_path / "data")
    with pytest.raises(ConfigError, match="n_labeled=4"):
        convert_la_h5(src, tmp_path / "la", n_labeled=4)


def test_convert_command_shows_progress_over_the_cases(tmp_path, capsys):
    from semiseg.cli import main
    src = fake_uamt(tmp_path / "data")
    assert main(["convert", "la-h5", str(src), str(tmp_path / "la"), "--labeled", "2"]) == 0
    err = capsys.readouterr().err
    assert "convert la-h5" in err and "4/4" in err  # 3 training + 1 test case
    assert main(["convert", "la-h5", str(src), str(tmp_path / "la2"), "--labeled", "2", "--quiet"]) == 0
    assert "4/4" not in capsys.readouterr().err
