"""Multi-channel nnU-Net cases (CASE_0000, CASE_0001) train a network with as many input channels and
predict from as many files."""

from __future__ import annotations

import json

import numpy as np

from helpers_data import write_nnunet_dataset
from semiseg.cli import main
from semiseg.datasets import load_dataset
from semiseg.io import read_volume
from semiseg.prepare import LabelSpace, prepare_case
from semiseg.transforms import Preprocessing


def test_prepared_case_stacks_its_channels(tmp_path):
    root = write_nnunet_dataset(tmp_path / "Dataset007_Two", channels=("T2", "ADC"), n_train=2, shape=(8, 10, 12))
    ds = load_dataset(root)
    case = prepare_case(ds.training[0], Preprocessing(), LabelSpace.from_dataset(ds), True)
    assert case.image.shape == (2, 8, 10, 12) and case.label.shape == (8, 10, 12)
    # channel 1 is channel 0 + 1 (helpers_data): z-scored each on its own, they become equal
    assert np.allclose(case.image[0], case.image[1], atol=1e-5)


def test_two_channel_dataset_trains_and_predicts_a_folder(tmp_path, capsys):
    root = write_nnunet_dataset(tmp_path / "Dataset007_Two", channels=("T2", "ADC"), n_train=3, n_test=2,
                                n_unlabeled=1, shape=(16, 16, 16))
    model = tmp_path / "two.semiseg"
    code = main(["train", "--data", str(root), "--method", "mean-teacher", "--out", str(model), "--iterations", "2",
                 "--patch", "16,16,16", "--device", "cpu", "--option", "n_filters=4", "--quiet", "--val-every", "1"])
    assert code == 0, capsys.readouterr().err
    manifest = json.loads((model / "model.json").read_text(encoding="utf-8"))
    assert manifest["channels"] == ["T2", "ADC"] and manifest["architecture"]["args"]["in_channels"] == 2
    out = tmp_path / "pred"
    code = main(["predict", "--model", str(model), "--input", str(root / "imagesTs"), "--output", str(out),
                 "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["test_000.nii.gz", "test_001.nii.gz"]
    assert read_volume(out / "test_000.nii.gz").array.shape == (16, 16, 16)
    one = tmp_path / "one.nii.gz"  # naming channel 0 finds the others beside it
    code = main(["predict", "--model", str(model), "--input", str(root / "imagesTs" / "test_000_0000.nii.gz"),
                 "--output", str(one), "--device", "cpu"])
    assert code == 0 and one.is_file(), capsys.readouterr().err
    (root / "imagesTs" / "test_001_0001.nii.gz").unlink()
    code = main(["predict", "--model", str(model), "--input", str(root / "imagesTs" / "test_001_0000.nii.gz"),
                 "--output", str(tmp_path / "two.nii.gz"), "--device", "cpu"])
    assert code == 2 and "reads channels _0000 ... _0001, found _0000" in capsys.readouterr().err
