"""`semiseg suggest`: uncertainty from the model's views, diversity, the ranking and the command."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from semiseg.cli import main
from semiseg.errors import ConfigError
from semiseg.suggest import measure_uncertainty, suggest, view_probabilities
from semiseg.suggest_diversity import rank_pool, typicality


def _one_hot_views(masks: list[np.ndarray]) -> torch.Tensor:
    """Binary masks (d, h, w) per view → probabilities (V, 2, d, h, w), confident."""
    fg = torch.tensor(np.stack(masks), dtype=torch.float32) * 0.9 + 0.05
    return torch.stack([1 - fg, fg], 1)


def test_views_that_agree_are_certain_and_views_that_differ_are_not():
    mask = np.zeros((8, 8, 8), bool)
    mask[2:6, 2:6, 2:6] = True
    shifted = np.roll(mask, 2, axis=0)
    same = measure_uncertainty("a", [(["organ"], _one_hot_views([mask, mask, mask, mask]))])
    differ = measure_uncertainty("b", [(["organ"], _one_hot_views([mask, shifted, mask, shifted]))])
    assert same.disagreement == pytest.approx(0.0)
    assert differ.disagreement > 0.2
    assert differ.entropy > same.entropy
    assert differ.uncertainty > same.uncertainty
    assert same.views == 4 and same.missing == []


def test_a_structure_no_view_finds_is_fully_uncertain():
    empty = np.zeros((8, 8, 8), bool)
    u = measure_uncertainty("c", [(["organ"], _one_hot_views([empty, empty]))])
    assert u.missing == ["organ"] and u.disagreement == 1.0


def test_ranking_does_not_pick_near_copies_one_after_the_other():
    rng = np.random.default_rng(0)
    pool = rng.normal(size=(5, 20))
    pool[1] = pool[0] + 1e-3  # a near-copy of case 0
    uncertainty = [0.9, 0.89, 0.5, 0.4, 0.3]
    order = rank_pool(uncertainty, pool)
    picks = [i for i, *_ in order]
    assert picks[0] == 0
    assert picks.index(1) == 4, "the near-copy of the first pick goes last"
    copy = next(row for row in order if row[0] == 1)
    assert copy[2] < 0.01 and copy[3] == 0  # novelty ~0, nearest = pool case 0 (no labeled cases: offset 0)
    # Novelty discounts near-copies only: distinct cases, however near their nearest, count in full.
    assert [round(row[2], 6) for row in order if row[0] != 1][1:] == [1.0, 1.0, 1.0]
    # Pure uncertainty order would have been 0, 1, 2, 3, 4.
    assert sorted(range(5), key=lambda i: -uncertainty[i]) != picks


def test_ranking_measures_novelty_against_the_labeled_cases():
    rng = np.random.default_rng(1)
    labeled = rng.normal(size=(2, 10))
    pool = np.stack([labeled[0] + 1e-3, rng.normal(size=10)])
    order = rank_pool([0.9, 0.5], pool, labeled)
    assert [i for i, *_ in order] == [1, 0]
    assert order[1][3] == 0  # case 0's nearest reference is labeled case 0


def test_typicality_is_highest_in_the_crowd_and_lowest_for_the_outlier():
    rng = np.random.default_rng(2)
    crowd = rng.normal(scale=0.1, size=(6, 10))
    outlier = crowd[0] + 5.0
    pool = np.concatenate([crowd[:4], outlier[None]])
    typical = typicality(pool, labeled=crowd[4:], neighbours=3)
    assert typical.shape == (5,) and typical.max() == pytest.approx(1.0) and (typical > 0).all()
    assert typical.argmin() == 4 and typical[4] < 0.1
    # Ranked by typicality the outlier goes last even though it is the one the model is least sure of.
    assert [i for i, *_ in rank_pool(typical, pool, crowd[4:])][-1] == 4
    assert [i for i, *_ in rank_pool([0.1, 0.1, 0.1, 0.1, 0.9], pool, crowd[4:])][0] == 4
    # Neighbours are counted among the cases there are; one case alone is fully typical.
    assert typicality(pool, neighbours=50).argmin() == 4
    assert typicality(pool[:1]).tolist() == [1.0]


def test_a_two_subnetwork_model_contributes_both_subnetworks_as_views():
    from semiseg.nets import build_network
    net = build_network("dual-vnet-resnet", in_channels=1, n_classes=2, n_filters=2, dropout=0.0).eval()
    manifest = {"labels": [{"name": "organ", "value": 1}], "patch_size": [16, 16, 16]}
    groups = view_probabilities(net, manifest, np.zeros((16, 16, 16), np.float32), torch.device("cpu"))
    assert groups[0][1].shape[:2] == (8, 2)  # 2 subnetworks × 4 flips, background + organ


def test_suggest_command_ranks_the_whole_pool_with_reasons(capsys, tiny_model, tiny_dataset, tmp_path):
    out = tmp_path / "ranking.json"
    assert main(["suggest", "--model", str(tiny_model), "--data", str(tiny_dataset), "--json", "--device", "cpu",
                 "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text(encoding="utf-8"))
    rows = printed["suggestions"]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4]
    assert len({r["id"] for r in rows}) == 4
    for r in rows:  # the default strategy: typicality × novelty
        assert r["strategy"] == "typical" and 0.0 <= r["score"] <= r["typicality"] <= 1.0
        assert "typicality" in r["reason"] and "views agree" in r["reason"] and r["nearest"]
    assert main(["suggest", "--model", str(tiny_model), "--data", str(tiny_dataset), "--json", "--device", "cpu",
                 "--strategy", "uncertain"]) == 0
    for r in json.loads(capsys.readouterr().out)["suggestions"]:
        assert r["strategy"] == "uncertain" and 0.0 <= r["score"] <= r["uncertainty"] <= 1.0
    assert main(["suggest", "--model", str(tiny_model), "--data", str(tiny_dataset), "--json", "--device", "cpu",
                 "--strategy", "typiclust"]) == 0
    rows = json.loads(capsys.readouterr().out)["suggestions"]
    assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in printed["suggestions"])
    for r in rows:
        assert r["strategy"] == "typiclust" and 0.0 <= r["score"] <= 1.0 and "cluster" in r["reason"]
    assert main(["suggest", "--model", str(tiny_model), "--data", str(tiny_dataset), "-n", "2",
                 "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].split()[:3] == ["rank", "case", "score"] and len(text.splitlines()) == 3
    assert main(["suggest", "--model", str(tiny_model), "--data", str(tiny_dataset), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_suggest_puts_a_duplicate_scan_behind_its_original(capsys, tiny_model, tiny_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    first = sorted((data / "imagesUn").iterdir())[0]
    shutil.copy(first, data / "imagesUn" / ("zz_copy_" + first.name))
    spec = json.loads((data / "dataset.json").read_text(encoding="utf-8"))
    spec["unlabeled"].append({"image": f"imagesUn/zz_copy_{first.name}"})
    (data / "dataset.json").write_text(json.dumps(spec), encoding="utf-8")
    assert main(["suggest", "--model", str(tiny_model), "--data", str(data), "--json", "--device", "cpu"]) == 0
    rows = json.loads(capsys.readouterr().out)["suggestions"]
    ids = [r["id"] for r in rows]
    pair = [r for r in rows if r["id"].endswith(first.name.split(".")[0])]
    assert len(pair) == 2, ids
    later = max(pair, key=lambda r: r["rank"])
    earlier = min(pair, key=lambda r: r["rank"])
    assert later["novelty"] == 0.0 and later["score"] == 0.0
    assert later["nearest"] == earlier["id"] and "picked before" in later["reason"]


def test_suggest_without_unlabeled_cases_exits_2(capsys, tiny_model, tiny_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    spec = json.loads((data / "dataset.json").read_text(encoding="utf-8"))
    spec["unlabeled"] = []
    (data / "dataset.json").write_text(json.dumps(spec), encoding="utf-8")
    assert main(["suggest", "--model", str(tiny_model), "--data", str(data)]) == 2
    assert "no unlabeled cases" in capsys.readouterr().err


def test_suggest_names_the_strategies_it_knows(tiny_model, tiny_dataset):
    with pytest.raises(ConfigError, match="typical, uncertain, typiclust"):
        suggest(tiny_model, tiny_dataset, strategy="random", device="cpu")
