"""`semiseg train --init`: the settings a package brings, its weights in the trained model, the model card's
parent, and the errors (exit 2) when it does not fit."""

from __future__ import annotations

import json
import shutil

import torch

from semiseg.model import read_manifest


# ---- through `semiseg train` -------------------------------------------------------------------------------
def _train(tmp_path, data, *extra, out="child.semiseg"):
    from semiseg.cli import main
    return main(["train", "--data", str(data), "--out", str(tmp_path / out), "--iterations", "2", "--val-every", "2",
                 "--device", "cpu", "--quiet", *extra])


def test_train_init_takes_the_packages_settings_and_weights_and_records_the_parent(tmp_path, tiny_model,
                                                                                   tiny_dataset):
    # lr 1e-12: the convolutions cannot move visibly, so the fine-tuned package holds the parent's convolution weights.
    assert _train(tmp_path, tiny_dataset, "--method", "mean-teacher", "--init", str(tiny_model), "--lr", "1e-12",
                  "--weight-decay", "0", "--batch-unlabeled", "1") == 0
    child, parent = tmp_path / "child.semiseg", tiny_model
    card, parent_card = read_manifest(child), read_manifest(parent)
    assert card["patch_size"] == parent_card["patch_size"]
    assert card["preprocessing"] == parent_card["preprocessing"]
    assert card["architecture"] == parent_card["architecture"]  # n_filters 4 came from the package
    assert card["parent"]["path"] == str(parent) and card["parent"]["method"] == "supervised"
    assert card["parent"]["new_structures"] == [] and "teacher" in card["parent"]["initialised"]
    from safetensors.torch import load_file
    ours, theirs = load_file(str(child / "weights.safetensors")), load_file(str(parent / "weights.safetensors"))
    convs = [k for k in theirs if k.endswith("conv.weight") or ".0.weight" in k]
    assert convs and all(torch.allclose(ours[k], theirs[k], atol=1e-6) for k in convs)


def test_train_init_overrides_win(tmp_path, tiny_model, tiny_dataset):
    assert _train(tmp_path, tiny_dataset, "--method", "supervised", "--init", str(tiny_model),
                  "--patch", "16,16,16", "--spacing", "2,2,2") == 0
    card = read_manifest(tmp_path / "child.semiseg")
    assert card["patch_size"] == [16, 16, 16] and card["preprocessing"]["spacing"] == [2.0, 2.0, 2.0]


def test_train_init_errors_exit_2(tmp_path, tiny_model, tiny_dataset, capsys):
    assert _train(tmp_path, tiny_dataset, "--method", "dual-contrast", "--init", str(tiny_model)) == 2
    assert "holds a 'vnet' network" in capsys.readouterr().err
    assert _train(tmp_path, tiny_dataset, "--method", "supervised", "--init", str(tiny_model),
                  "--option", "n_filters=8") == 2
    assert "n_filters: package 4, this run 8" in capsys.readouterr().err
    assert _train(tmp_path, tiny_dataset, "--init", str(tmp_path / "missing.semiseg")) == 2
    assert "no such model package" in capsys.readouterr().err
    # A dataset without one of the model's structures.
    data = tmp_path / "fewer"
    shutil.copytree(tiny_dataset, data)
    spec = json.loads((data / "dataset.json").read_text(encoding="utf-8"))
    spec["labels"] = {"background": 0, "organ": 1, "vessel": 2, "tumour": 3}
    (data / "dataset.json").write_text(json.dumps(spec), encoding="utf-8")
    assert _train(tmp_path, data, "--method", "supervised", "--init", str(tiny_model)) == 2
    err = capsys.readouterr().err
    assert "segments lesion, which the data does not label" in err and "Traceback" not in err



def test_train_init_adds_a_structure_the_data_brings(tmp_path, tiny_model, tiny_dataset):
    from semiseg.model import save_model
    from semiseg.nets import build_network
    card = read_manifest(tiny_model)
    net = build_network("vnet", **{**card["architecture"]["args"], "n_classes": 3})
    parent = save_model(tmp_path / "two.semiseg", net, {**card, "labels": card["labels"][:2]})
    assert _train(tmp_path, tiny_dataset, "--method", "supervised", "--init", str(parent)) == 0
    child = read_manifest(tmp_path / "child.semiseg")
    assert child["parent"]["new_structures"] == ["lesion"] and child["parent"]["labels"] == ["organ", "vessel"]
    assert [lab["name"] for lab in child["labels"]] == ["organ", "vessel", "lesion"]
