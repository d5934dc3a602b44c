"""`semiseg predict` over a folder or a list: one model load, nnU-Net output names, existing outputs."""

from __future__ import annotations

import json
import shutil

import pytest

import semiseg.model
from semiseg.cli import main
from semiseg.datasets import load_dataset
from semiseg.errors import DataError
from semiseg.io import read_volume
from semiseg.predict_cases import collect_cases


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def nnunet_images(tiny_dataset, tmp_path):
    """imagesTs in nnU-Net's naming: CASE_0000.nii.gz."""
    folder = tmp_path / "imagesTs"
    folder.mkdir()
    for case in load_dataset(tiny_dataset).test:
        shutil.copy(case.image, folder / f"{case.id}_0000.nii.gz")
    return folder


def test_folder_is_predicted_with_one_model_load_and_nnunet_names(capsys, tiny_model, nnunet_images, tmp_path,
                                                                   monkeypatch):
    loads = []
    real = semiseg.model.load_model
    monkeypatch.setattr(semiseg.model, "load_model", lambda *a, **k: loads.append(a) or real(*a, **k))
    out = tmp_path / "pred"
    code, stdout, err = run(capsys, "predict", "--model", tiny_model, "--input", nnunet_images, "--output", out,
                            "--device", "cpu", "--events", tmp_path / "events.jsonl")
    assert code == 0, err
    assert len(loads) == 1
    ids = sorted(p.name.removesuffix("_0000.nii.gz") for p in nnunet_images.iterdir())
    assert sorted(p.name for p in out.iterdir()) == [f"{i}.nii.gz" for i in ids]  # CASE_0000 -> CASE, as nnU-Net
    assert read_volume(out / f"{ids[0]}.nii.gz").array.shape == \
        read_volume(nnunet_images / f"{ids[0]}_0000.nii.gz").array.shape
    assert "wrote 2 label map(s)" in err and "s wall time" in err and "per case" in err
    assert "2/2" in err  # the progress bar over the cases
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text(encoding="utf-8").splitlines()]
    assert events[0]["cases"] == 2 and events[-1]["event"] == "done" and len(events[-1]["files"]) == 2
    fractions = [e["fraction"] for e in events if e["event"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] <= 1.0


def test_existing_outputs_are_refused_before_any_work_or_skipped(capsys, tiny_model, nnunet_images, tmp_path):
    out = tmp_path / "pred"
    out.mkdir()
    kept, other = sorted(p.name.replace("_0000", "") for p in nnunet_images.iterdir())
    (out / kept).write_bytes(b"keep me")
    code, _, err = run(capsys, "predict", "--model", tiny_model, "--input", nnunet_images, "--output", out,
                       "--device", "cpu")
    assert code == 2 and f"1 label map(s) already exist ({kept})" in err and "--skip-existing" in err
    assert sorted(p.name for p in out.iterdir()) == [kept]
    code, _, err = run(capsys, "predict", "--model", tiny_model, "--input", nnunet_images, "--output", out,
                       "--device", "cpu", "--skip-existing")
    assert code == 0, err
    assert (out / kept).read_bytes() == b"keep me" and (out / other).is_file()
    assert "kept 1 existing" in err
    code, _, err = run(capsys, "predict", "--model", tiny_model, "--input", nnunet_images, "--output", out,
                       "--device", "cpu", "--skip-existing")
    assert code == 0 and "nothing to predict" in err


def test_a_list_of_files_and_the_single_file_form(capsys, tiny_model, tiny_dataset, tmp_path):
    cases = load_dataset(tiny_dataset).test
    out = tmp_path / "list"
    code, _, err = run(capsys, "predict", "--model", tiny_model, "--input", *[c.image for c in cases],
                       "--output", out, "--device", "cpu", "--quiet")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == sorted(c.image.name for c in cases)
    single = tmp_path / "one-seg.nrrd"
    code, _, err = run(capsys, "predict", "--model", tiny_model, "--input", cases[0].image, "--output", single,
                       "--device", "cpu")
    assert code == 0 and single.is_file() and f"wrote {single} in" in err and "wall time" in err


def test_numbered_cases_are_not_taken_for_channels(tmp_path):
    for i in range(3):
        (tmp_path / f"la_{i:04d}.nii.gz").write_bytes(b"")
    cases = collect_cases([tmp_path])
    assert [c for c, _ in cases] == ["la_0000", "la_0001", "la_0002"]


def test_two_inputs_of_one_case_name_are_refused(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "x.nii.gz").write_bytes(b"")
    with pytest.raises(DataError, match="both are case 'x'"):
        collect_cases([tmp_path / "a", tmp_path / "b"])


def test_multi_channel_model_needs_channel_names(tmp_path):
    (tmp_path / "x.nii.gz").write_bytes(b"")
    with pytest.raises(DataError, match="reads 2 channels per case"):
        collect_cases([tmp_path], n_channels=2)
    (tmp_path / "x.nii.gz").unlink()
    (tmp_path / "y_0000.nii.gz").write_bytes(b"")
    with pytest.raises(DataError, match="found _0000"):
        collect_cases([tmp_path], n_channels=2)
