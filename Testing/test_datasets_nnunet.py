"""nnU-Net v2 raw datasets (DatasetNNN_Name/, v2 dataset.json, CASE_XXXX channels) next to Decathlon ones."""

from __future__ import annotations

import json

import pytest

from helpers_data import write_dataset, write_nnunet_dataset
from semiseg.cli import main
from semiseg.datasets import check_dataset, load_dataset
from semiseg.errors import DataError


def edit_spec(root, change) -> None:
    spec = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    change(spec)
    (root / "dataset.json").write_text(json.dumps(spec), encoding="utf-8")


def test_v2_dataset_json_loads_with_its_label_names(tmp_path):
    root = write_nnunet_dataset(tmp_path / "Dataset042_Heart", n_train=2, n_test=1, n_unlabeled=2)
    ds = load_dataset(root)
    assert ds.name == "Dataset042_Heart"
    assert ds.labels == {"background": 0, "left atrium": 1}  # not "foreground"
    assert [c.id for c in ds.training] == ["case_000", "case_001"]
    assert ds.training[0].image.name == "case_000_0000.nii.gz"
    assert ds.training[0].label.name == "case_000.nii.gz"
    assert [c.id for c in ds.test] == ["test_000"] and ds.test[0].label is None
    assert [c.id for c in ds.unlabeled] == ["pool_000", "pool_001"]
    assert ds.modality == "MRI" and ds.channels == ["MRI"]
    report = check_dataset(ds)
    assert report.counts == {"training": 2, "unlabeled": 2, "test": 1}


def test_v2_multi_channel_cases_group_their_channels(tmp_path):
    root = write_nnunet_dataset(tmp_path / "Dataset005_Prostate", channels=("T2", "ADC"), n_train=2)
    ds = load_dataset(root / "dataset.json")
    assert ds.channels == ["T2", "ADC"] and ds.modality == "T2, ADC"
    case = ds.training[0]
    assert [p.name for p in case.images] == ["case_000_0000.nii.gz", "case_000_0001.nii.gz"]
    assert "channels: 0: T2, 1: ADC" in check_dataset(ds).format()


def test_v2_missing_channel_is_named(tmp_path):
    root = write_nnunet_dataset(tmp_path / "Dataset005_Prostate", channels=("T2", "ADC"), n_train=2)
    (root / "imagesTr" / "case_001_0001.nii.gz").unlink()
    with pytest.raises(DataError, match=r"case 'case_001' .*missing case_001_0001"):
        load_dataset(root)


def test_v2_image_without_label_points_to_the_unlabeled_folder(tmp_path):
    root = write_nnunet_dataset(tmp_path / "Dataset001_X", n_train=2)
    (root / "labelsTr" / "case_001.nii.gz").unlink()
    with pytest.raises(DataError, match=r"no label for case\(s\) case_001 .*imagesUn/"):
        load_dataset(root)


def test_v2_num_training_must_match(tmp_path):
    root = write_nnunet_dataset(tmp_path / "Dataset001_X", n_train=2)
    edit_spec(root, lambda s: s.update(numTraining=5))
    with pytest.raises(DataError, match="numTraining is 5 but .* holds 2"):
        load_dataset(root)


@pytest.mark.parametrize("labels, message", [
    ({"background": 0, "whole tumor": [1, 2]}, "region-based labels"),
    ({"background": 0, "organ": 1, "ignore": 2}, "'ignore' label"),
])
def test_v2_regions_and_ignore_label_are_refused_clearly(tmp_path, labels, message):
    root = write_nnunet_dataset(tmp_path / "Dataset001_X", n_train=2, labels=labels)
    with pytest.raises(DataError, match=message):
        load_dataset(root)


def test_v2_bad_file_ending_and_channel_keys(tmp_path):
    root = write_nnunet_dataset(tmp_path / "Dataset001_X", n_train=2)
    edit_spec(root, lambda s: s.update(file_ending=".png"))
    with pytest.raises(DataError, match="'file_ending' must be one of"):
        load_dataset(root)
    edit_spec(root, lambda s: s.update(file_ending=".nii.gz", channel_names={"1": "MRI"}))
    with pytest.raises(DataError, match="'channel_names' keys must be 0..0"):
        load_dataset(root)


def test_v2_folder_without_json_groups_channels(tmp_path):
    root = write_nnunet_dataset(tmp_path / "raw", channels=("a", "b"), n_train=2, json_file=False)
    ds = load_dataset(root)
    assert [c.id for c in ds.training] == ["case_000", "case_001"]
    assert len(ds.training[0].images) == 2 and ds.channels == ["channel 0", "channel 1"]


def test_decathlon_names_ending_in_four_digits_stay_single_cases(tmp_path):
    """A Decathlon folder whose labels carry the full name (la_0001 ↔ la_0001) is not read as channels."""
    root = write_dataset(tmp_path, n_train=2, n_unlabeled=0, n_test=0, json_file=False)
    for sub in ("imagesTr", "labelsTr"):
        for i, path in enumerate(sorted((root / sub).iterdir())):
            path.rename(path.with_name(f"la_{i:04d}.nii.gz"))
    ds = load_dataset(root)
    assert [c.id for c in ds.training] == ["la_0000", "la_0001"] and ds.training[0].more_channels == ()


def test_check_command_reads_a_v2_dataset(tmp_path, capsys):
    root = write_nnunet_dataset(tmp_path / "Dataset042_Heart", n_train=2)
    assert main(["check", str(root)]) == 0
    assert "left atrium" in capsys.readouterr().out
