"""semiseg.datasets: loading dataset.json / folder layouts, and check_dataset's problem reports."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from helpers_data import make_label, make_volume, write_dataset
from semiseg.datasets import Case, Dataset, check_dataset, load_dataset
from semiseg.errors import DataError
from semiseg.io import write_volume

LA_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "la-dev"


def edit_json(path: Path, change) -> None:
    spec = json.loads(path.read_text(encoding="utf-8"))
    change(spec)
    path.write_text(json.dumps(spec), encoding="utf-8")


# ---------------------------------------------------------------- la-dev


def test_la_dev_loads_and_checks():
    if not LA_DEV.is_dir():
        pytest.skip(f"{LA_DEV} not present (only in the development checkout)")
    start = time.perf_counter()
    ds = load_dataset(LA_DEV)
    report = check_dataset(ds)
    assert time.perf_counter() - start < 15
    assert ds.name == "LA2018"
    assert ds.labels == {"background": 0, "left atrium": 1}
    assert (len(ds.training), len(ds.unlabeled), len(ds.test)) == (4, 12, 4)
    assert report.counts == {"training": 4, "unlabeled": 12, "test": 4}
    assert report.labeled_counts == {"training": 4, "unlabeled": 0, "test": 4}
    assert ds.task_names == ["default"] and ds.domains == []
    assert all(c.spacing == (0.625, 0.625, 0.625) for c in report.cases)
    volumes = report.label_volumes("left atrium")
    assert len(volumes) == 8 and all(10 < v < 500 for v in volumes)  # a left atrium is tens of mL
    text = report.format()
    assert "LA2018" in text and "left atrium" in text and "unlabeled" in text


# ---------------------------------------------------------------- loading


def test_json_dataset_loads(tmp_path):
    json_path = write_dataset(tmp_path, n_train=2, n_unlabeled=1, n_test=1)
    for source in (json_path, tmp_path):
        ds = load_dataset(source)
        assert ds.root == tmp_path and ds.name == "tiny"
        assert [c.id for c in ds.training] == ["training_0", "training_1"]
        assert ds.training[0].image == tmp_path / "imagesTr" / "training_0.nii.gz"
        assert ds.training[0].label == tmp_path / "labelsTr" / "training_0.nii.gz"
        assert ds.unlabeled[0].label is None and ds.test[0].label is not None
        assert ds.foreground_labels == {"organ": 1}


def test_decathlon_style_labels_modality_and_plain_string_tests(tmp_path):
    json_path = write_dataset(tmp_path, n_test=1)

    def decathlon(spec):
        spec["labels"] = {"0": "background", "1": "liver", "2": "tumour"}
        spec["modality"] = {"0": "CT"}
        spec["test"] = [spec["test"][0]["image"]]

    edit_json(json_path, decathlon)
    ds = load_dataset(json_path)
    assert ds.labels == {"background": 0, "liver": 1, "tumour": 2}
    assert ds.modality == "CT"
    assert ds.test[0].label is None and ds.test[0].id == "test_0"


def test_tasks_and_domains(tmp_path):
    json_path = write_dataset(tmp_path, n_train=2, n_test=0, labels={"background": 0, "a": 1, "b": 2})

    def add_tasks(spec):
        spec["tasks"] = {"tb": ["b"], "ta": ["a"]}
        spec["training"][0].update(task="ta", domain="siteB")
        spec["training"][1].update(task="ta", domain="siteA")

    edit_json(json_path, add_tasks)
    ds = load_dataset(json_path)
    assert ds.task_names == ["ta", "tb"]
    assert ds.domains == ["siteA", "siteB"]
    report = check_dataset(ds)
    assert report.tasks == {"tb": ["b"], "ta": ["a"]}
    assert report.label_volumes("b") == []  # no case of task tb
    assert len(report.label_volumes("a")) == 2


def test_folder_layout_pairs_by_name(tmp_path):
    write_dataset(tmp_path, n_train=2, n_unlabeled=2, n_test=1, json_file=False)
    ds = load_dataset(tmp_path)
    assert ds.labels == {"background": 0, "foreground": 1}
    assert [c.id for c in ds.training] == ["training_0", "training_1"]
    assert [c.label.name for c in ds.training] == ["training_0.nii.gz", "training_1.nii.gz"]
    assert len(ds.unlabeled) == 2 and len(ds.test) == 1
    assert check_dataset(ds).counts == {"training": 2, "unlabeled": 2, "test": 1}


def test_folder_layout_names_extra_label_values(tmp_path):
    write_dataset(tmp_path, n_train=1, n_unlabeled=0, n_test=0, label_values=(1, 3), json_file=False,
                  ext=".seg.nrrd")
    ds = load_dataset(tmp_path)
    assert ds.labels == {"background": 0, "label_1": 1, "label_3": 3}
    assert ds.training[0].id == "training_0"


def test_folder_layout_missing_label(tmp_path):
    write_dataset(tmp_path, n_train=2, json_file=False)
    missing = tmp_path / "labelsTr" / "training_1.nii.gz"
    missing.unlink()
    with pytest.raises(DataError, match="no label") as err:
        load_dataset(tmp_path)
    assert "training_1.nii.gz" in str(err.value)


def test_not_a_dataset(tmp_path):
    with pytest.raises(DataError, match="neither a dataset.json") as err:
        load_dataset(tmp_path)
    assert str(tmp_path) in str(err.value)


@pytest.mark.parametrize(
    "content, problem",
    [("{ not json", "cannot read"), ("[1, 2]", "expected a JSON object"),
     ('{"training": []}', "missing 'labels'"), ('{"labels": {"background": 0, "x": 1}}', "missing 'training'")],
)
def test_bad_json(tmp_path, content, problem):
    path = tmp_path / "dataset.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=problem) as err:
        load_dataset(path)
    assert str(path) in str(err.value)


def test_listed_file_missing(tmp_path):
    json_path = write_dataset(tmp_path)
    (tmp_path / "imagesUn" / "unlabeled_0.nii.gz").unlink()
    with pytest.raises(DataError, match="does not exist") as err:
        load_dataset(json_path)
    assert str(json_path) in str(err.value) and "imagesUn/unlabeled_0.nii.gz" in str(err.value)


def test_task_not_declared(tmp_path):
    json_path = write_dataset(tmp_path)
    edit_json(json_path, lambda s: s["training"][0].update(task="heart"))
    with pytest.raises(DataError, match="task 'heart'") as err:
        load_dataset(json_path)
    assert str(json_path) in str(err.value)


def test_task_label_not_in_labels(tmp_path):
    json_path = write_dataset(tmp_path)
    edit_json(json_path, lambda s: s.update(tasks={"t": ["organ", "spleen"]}))
    with pytest.raises(DataError, match="spleen") as err:
        load_dataset(json_path)
    assert str(json_path) in str(err.value)


def test_no_labeled_case_in_json(tmp_path):
    json_path = write_dataset(tmp_path, n_train=0, n_unlabeled=2)
    with pytest.raises(DataError, match="no labeled case") as err:
        load_dataset(json_path)
    assert str(json_path) in str(err.value)


def test_no_labeled_case_in_check(tmp_path):
    ds = load_dataset(write_dataset(tmp_path, n_train=1))
    ds.unlabeled.append(Case("moved", ds.training[0].image))
    ds.training.clear()
    with pytest.raises(DataError, match="no labeled case") as err:
        check_dataset(ds)
    assert str(tmp_path) in str(err.value)


# ---------------------------------------------------------------- check_dataset problems


def _overwrite_label(path: Path, array_change) -> None:
    image = make_volume(seed=0)
    label = make_label(image)
    label.array = array_change(label.array)
    write_volume(label, path, overwrite=True)


def test_check_collects_every_problem(tmp_path):
    """Undeclared value, all-background label and a grid mismatch, all in one error."""
    json_path = write_dataset(tmp_path, n_train=3, n_test=1)
    undeclared = tmp_path / "labelsTr" / "training_0.nii.gz"
    empty = tmp_path / "labelsTr" / "training_1.nii.gz"
    shifted = tmp_path / "labelsTs" / "test_0.nii.gz"
    _overwrite_label(undeclared, lambda a: np.where(a == 1, 7, a).astype(np.uint8))
    _overwrite_label(empty, np.zeros_like)
    moved = make_label(make_volume(seed=0))
    moved.origin = (0.0, 0.0, 50.0)
    write_volume(moved, shifted, overwrite=True)
    with pytest.raises(DataError) as err:
        check_dataset(load_dataset(json_path))
    message = str(err.value)
    assert "3 problem(s)" in message
    assert f"{undeclared}: values [7] are not declared" in message
    assert f"{empty}: no foreground" in message
    assert str(shifted) in message and "differ in origin" in message
    assert "training_2" not in message  # the good case is not reported


def test_check_reports_image_problems(tmp_path):
    json_path = write_dataset(tmp_path, n_unlabeled=1)
    broken = tmp_path / "imagesUn" / "unlabeled_0.nii.gz"
    broken.write_bytes(b"garbage" * 50)
    with pytest.raises(DataError, match="cannot read") as err:
        check_dataset(load_dataset(json_path))
    assert str(broken) in str(err.value)


def test_check_task_label_outside_task(tmp_path):
    json_path = write_dataset(tmp_path, n_train=1, labels={"background": 0, "a": 1, "b": 2}, label_values=(1, 2))

    def one_task(spec):
        spec["tasks"] = {"ta": ["a"], "tb": ["b"]}
        spec["training"][0]["task"] = "ta"

    edit_json(json_path, one_task)
    with pytest.raises(DataError, match="outside|does not annotate") as err:
        check_dataset(load_dataset(json_path))
    message = str(err.value)
    assert str(tmp_path / "labelsTr" / "training_0.nii.gz") in message
    assert "contains b (values [2])" in message


def test_report_volumes_and_format(tmp_path):
    ds = load_dataset(write_dataset(tmp_path, n_train=2, n_test=1))
    report = check_dataset(ds)
    # make_label's box is 2x3x3 voxels of 0.8*1.1*2.5 mm^3 = 2.2 mm^3 each.
    assert report.label_volumes("organ") == pytest.approx([18 * 2.2 / 1000] * 3)
    assert report.cases[0].shape == (6, 8, 10) and report.cases[0].spacing == pytest.approx((0.8, 1.1, 2.5))
    text = report.format()
    assert "tiny" in text and "organ" in text and "size (x, y, z)" in text
    labels_only = check_dataset(ds, read_images=False)
    assert labels_only.counts == report.counts
    assert [c.split for c in labels_only.cases] == ["training", "training", "test"]  # unlabeled not read


def test_dataset_helpers():
    ds = Dataset(Path("."), "d", {"background": 0, "x": 1, "y": 2},
                 [Case("a", Path("a"), Path("la"), domain="s2")], [Case("b", Path("b"), domain="s1")], [],
                 {"t2": ["y"], "t1": ["x"]}, "MR", "")
    assert ds.foreground_labels == {"x": 1, "y": 2}
    assert ds.task_names == ["t1", "t2"]
    assert ds.domains == ["s1", "s2"]
