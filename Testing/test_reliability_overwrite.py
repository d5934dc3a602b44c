"""Reliability, overwrites: what is refused. `--overwrite` replaces only what the engine itself made (a model
package, a dataset or demo folder it generated: they carry a marker), never the input, never a user's file,
and nothing that exists is replaced without it. Each test is one probe; every refusal leaves the files as
they were.
"""

from __future__ import annotations

import json

from helpers_reliability import accepted, copy_dataset, dataset_json, refused, tree

TRAIN = ["--method", "supervised", "--iterations", "2", "--patch", "32,32,32", "--option", "n_filters=4",
         "--device", "cpu", "--quiet", "--val-every", "1"]


def first_image(root):
    return root / dataset_json(root)["training"][0]["image"]


# ---- train --out ----------------------------------------------------------------------------------------
def test_train_overwrite_never_deletes_a_folder_that_is_not_a_model_package(capsys, tiny_dataset, tmp_path):
    folder = tmp_path / "myfolder"
    folder.mkdir()
    (folder / "thesis.docx").write_text("years of work", encoding="utf-8")
    refused(capsys, ["train", "--data", tiny_dataset, "--out", folder, "--overwrite", *TRAIN], folder,
            "not a SemiSeg model package")
    assert (folder / "thesis.docx").read_text(encoding="utf-8") == "years of work"


def test_train_overwrite_never_replaces_a_file(capsys, tiny_dataset, tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("mine", encoding="utf-8")
    refused(capsys, ["train", "--data", tiny_dataset, "--out", target, "--overwrite", *TRAIN], target, "a file")
    assert target.read_text(encoding="utf-8") == "mine"
    assert not (tmp_path / ".notes.txt.old").exists()


def test_train_refuses_the_dataset_as_out(capsys, tiny_dataset, tmp_path):
    data = copy_dataset(tiny_dataset, tmp_path / "data")
    before = tree(data)
    refused(capsys, ["train", "--data", data, "--out", data, "--overwrite", *TRAIN], data)
    assert tree(data) == before


def test_train_overwrite_replaces_a_model_package(capsys, tiny_model, tiny_dataset, tmp_path):
    import shutil
    model = tmp_path / "m.semiseg"
    shutil.copytree(tiny_model, model)
    refused(capsys, ["train", "--data", tiny_dataset, "--out", model, *TRAIN], model, "--overwrite")
    accepted(capsys, ["train", "--data", tiny_dataset, "--out", model, "--overwrite", *TRAIN])
    assert json.loads((model / "model.json").read_text(encoding="utf-8"))["format"] == "semiseg-model"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".m.semiseg")]


# ---- generated datasets and the demo folder ---------------------------------------------------------------
def test_synthetic_overwrite_never_deletes_a_real_dataset(capsys, tiny_dataset, tmp_path):
    from semiseg.ownership import GENERATED_MARKER
    real = copy_dataset(tiny_dataset, tmp_path / "real")
    (real / GENERATED_MARKER).unlink()  # a dataset semiseg did not generate
    (real / "imagesTr" / "my_scan.nii.gz").write_bytes(b"user data")
    before = tree(real)
    refused(capsys, ["synthetic", real, "--overwrite"], real, "not made by semiseg")
    assert tree(real) == before


def test_synthetic_overwrite_replaces_its_own_dataset_and_keeps_the_users_files(capsys, tmp_path):
    out = tmp_path / "ds"
    accepted(capsys, ["synthetic", out, "--labeled", "2", "--unlabeled", "0", "--test", "0", "--shape", "16,16,16"])
    (out / "imagesTr" / "mine.txt").write_text("keep", encoding="utf-8")
    (out / "README").write_text("keep too", encoding="utf-8")
    refused(capsys, ["synthetic", out, "--shape", "16,16,16"], out, "not empty")
    accepted(capsys, ["synthetic", out, "--labeled", "1", "--unlabeled", "0", "--test", "0", "--shape", "16,16,16",
                      "--overwrite"])
    assert len(dataset_json(out)["training"]) == 1
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == ["mine.txt", "phantom_000.nii.gz"]
    assert (out / "README").read_text(encoding="utf-8") == "keep too"


def test_demo_overwrite_refuses_a_folder_it_did_not_make(capsys, tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "paper.tex").write_text("draft", encoding="utf-8")
    refused(capsys, ["demo", "--out", folder, "--overwrite", "--iterations", "1", "--device", "cpu"], folder,
            "not made by semiseg")
    assert (folder / "paper.tex").read_text(encoding="utf-8") == "draft"


def test_demo_overwrite_removes_only_the_demos_outputs(tmp_path):
    from semiseg.demo import run_demo
    out = tmp_path / "demo"
    small = dict(iterations=1, device="cpu", methods=("supervised",), shape=(32, 32, 32), n_filters=2,
                 n_labeled=2, n_unlabeled=0, n_test=1, progress=False)
    run_demo(out, **small)
    (out / "my-notes.md").write_text("keep", encoding="utf-8")
    run_demo(out, overwrite=True, **small)
    assert (out / "my-notes.md").read_text(encoding="utf-8") == "keep"
    assert (out / "report.md").exists()


# ---- predict --------------------------------------------------------------------------------------------
def test_predict_never_replaces_its_input(capsys, tiny_model, tiny_dataset, tmp_path):
    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes(first_image(tiny_dataset).read_bytes())
    before = scan.read_bytes()
    refused(capsys, ["predict", "--model", tiny_model, "--input", scan, "--output", scan, "--overwrite",
                     "--device", "cpu"], scan, "is the input")
    assert scan.read_bytes() == before


def test_predict_refuses_an_existing_events_file(capsys, tiny_model, tiny_dataset, tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_text("my log\n", encoding="utf-8")
    refused(capsys, ["predict", "--model", tiny_model, "--input", first_image(tiny_dataset), "--output",
                     tmp_path / "o.nii.gz", "--events", events, "--device", "cpu"], events, "already exists")
    assert events.read_text(encoding="utf-8") == "my log\n"


# ---- train --events, --workdir; evaluate --out ------------------------------------------------------------
def test_train_refuses_an_existing_events_file(capsys, tiny_dataset, tmp_path):
    events = tmp_path / "log.jsonl"
    events.write_text("my log\n", encoding="utf-8")
    refused(capsys, ["train", "--data", tiny_dataset, "--out", tmp_path / "m.semiseg", "--events", events, *TRAIN],
            events, "already exists")
    assert events.read_text(encoding="utf-8") == "my log\n"


def test_train_refuses_a_users_best_pt_in_the_workdir(capsys, tiny_dataset, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "best.pt").write_bytes(b"my checkpoint")
    refused(capsys, ["train", "--data", tiny_dataset, "--out", tmp_path / "m.semiseg", "--workdir", work, *TRAIN],
            work / "best.pt")
    assert (work / "best.pt").read_bytes() == b"my checkpoint"


def test_evaluate_refuses_an_existing_out_file(capsys, tiny_dataset, tmp_path):
    out = tmp_path / "metrics.json"
    out.write_text("{}", encoding="utf-8")
    refused(capsys, ["evaluate", "--pred", tmp_path, "--data", tiny_dataset, "--out", out], out, "already exists")
    assert out.read_text(encoding="utf-8") == "{}"


def test_generated_dataset_marker_lists_what_was_written(tmp_path, capsys):
    from semiseg.ownership import GENERATED_MARKER
    out = tmp_path / "ds"
    accepted(capsys, ["synthetic", out, "--labeled", "1", "--unlabeled", "1", "--test", "0", "--shape", "16,16,16"])
    marker = json.loads((out / GENERATED_MARKER).read_text(encoding="utf-8"))
    assert marker["kind"] == "dataset"
    assert set(marker["entries"]) == {"dataset.json", "imagesTr/phantom_000.nii.gz", "labelsTr/phantom_000.nii.gz",
                                      "imagesUn/phantom_001.nii.gz"}
