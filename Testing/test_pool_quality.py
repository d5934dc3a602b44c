"""Pseudo-label quality on the unlabeled pool (`--pool-truth`): each method's target network, the measurement
during training, and that it never changes what is trained."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from semiseg.errors import ConfigError
from semiseg.methods import MethodContext, build_method
from semiseg.methods.dual_contrast import pseudo_label


@pytest.fixture(scope="module")
def pool_dataset(tmp_path_factory):
    from semiseg.synthetic import make_dataset
    root = tmp_path_factory.mktemp("pool") / "phantom"
    return make_dataset(root, n_labeled=3, n_unlabeled=2, n_test=1, shape=(32, 32, 32), seed=0,
                        unlabeled_truth=True)


def _config(data, out, **kw):
    from semiseg.train import TrainConfig
    return TrainConfig(data=str(data), out=str(out), method="mean-teacher", method_options={"n_filters": 4},
                       iterations=4, patch=[32, 32, 32], device="cpu", progress=False, val_every=2,
                       batch_labeled=1, batch_unlabeled=1, **{"val_cases": 1, **kw})


def test_truth_is_found_per_unlabeled_case_or_the_folder_is_named(pool_dataset, tmp_path):
    from semiseg.datasets import load_dataset
    from semiseg.training.pool_quality import with_pool_truth
    pool = load_dataset(pool_dataset).unlabeled
    cases = with_pool_truth(pool, pool_dataset / "labelsUn_truth")
    assert [c.label.name for c in cases] == [f"{c.id}.nii.gz" for c in pool]
    with pytest.raises(ConfigError, match="not a folder"):
        with_pool_truth(pool, tmp_path / "nowhere")
    partial = tmp_path / "partial"
    shutil.copytree(pool_dataset / "labelsUn_truth", partial)
    (partial / f"{pool[1].id}.nii.gz").unlink()
    with pytest.raises(ConfigError, match=f"{partial}.*{pool[1].id}"):
        with_pool_truth(pool, partial)


def test_pool_is_scored_at_every_validation_and_training_is_unchanged(pool_dataset, tmp_path):
    from semiseg.model import load_model
    from semiseg.train import train
    events = tmp_path / "events.jsonl"
    measured = train(_config(pool_dataset, tmp_path / "with.semiseg", pool_truth=str(pool_dataset / "labelsUn_truth"),
                             events=str(events)))
    plain = train(_config(pool_dataset, tmp_path / "without.semiseg"))
    assert [h["iteration"] for h in measured.pool_history] == [h["iteration"] for h in measured.history] == [2, 4]
    assert all(0.0 <= h["dice"] <= 1.0 and set(h["per_label"]) == {"organ", "vessel", "lesion"}
               for h in measured.pool_history)
    assert plain.pool_history == []
    # Without validation cases (train's default) the pool is still scored every val_every iterations.
    alone = train(_config(pool_dataset, tmp_path / "alone.semiseg", val_cases=0,
                          pool_truth=str(pool_dataset / "labelsUn_truth")))
    assert alone.history == [] and [h["iteration"] for h in alone.pool_history] == [2, 4]
    kinds = [json.loads(line)["event"] for line in events.read_text(encoding="utf-8").splitlines()]
    assert kinds.count("pool_quality") == 2
    # Measurement only: the same weights, bit for bit, with and without it.
    a, _ = load_model(tmp_path / "with.semiseg", torch.device("cpu"))
    b, _ = load_model(tmp_path / "without.semiseg", torch.device("cpu"))
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_pool_truth_of_the_wrong_folder_is_a_clear_error(pool_dataset, tmp_path, capsys):
    from semiseg.cli import main
    code = main(["bench", "--data", str(pool_dataset), "--name", "b", "--out", str(tmp_path), "--methods",
                 "supervised", "--seeds", "0", "--profile", "smoke", "--pool-truth", str(tmp_path / "missing")])
    err = capsys.readouterr().err
    assert code == 2 and "--pool-truth" in err and "missing" in err and "Traceback" not in err


def _ctx(n_classes=2, **options):
    return MethodContext(n_classes=n_classes, total_iterations=100, options={"n_filters": 4, **options})


def test_each_method_scores_the_targets_it_trains_on():
    torch.manual_seed(0)
    x = torch.randn(1, 1, 16, 16, 16)
    mt = build_method("mean-teacher", _ctx())
    assert mt.pseudo_label_network() is mt.teacher
    sup = build_method("supervised", _ctx())
    assert sup.pseudo_label_network() is sup.inference_network()
    # dual-contrast: the union of both subnetworks' foreground, the target of its unlabeled cross-entropy.
    dual = build_method("dual-contrast", _ctx(dropout=0.0))
    net = dual.pseudo_label_network().eval()
    with torch.no_grad():
        (la, _), (lb, _) = dual.net(x, pair=True)
        expected = pseudo_label(la.softmax(1), lb.softmax(1))
        assert torch.equal(net(x).argmax(1), expected)
    assert not dual.training  # eval() on the wrapper reaches the method's networks
    # A&D: the DDIM + D_ψ pseudo-label, as classes.
    ad = build_method("ad", _ctx(n_classes=3))
    with torch.no_grad():
        out = ad.pseudo_label_network().eval()(x)
    assert out.shape == (1, 3, 16, 16, 16)
    assert torch.allclose(out.softmax(1).amax(1), torch.ones(1, 16, 16, 16), atol=1e-4)  # one class a voxel


def test_report_section_gives_first_halfway_and_last():
    from semiseg.bench_pool import pool_lines
    runs = [{"method": "mean-teacher", "pool_curve": [(2, 0.2), (4, 0.5), (6, 0.6)]},
            {"method": "mean-teacher", "pool_curve": [(2, 0.4), (4, 0.7), (6, 0.8)]},
            {"method": "supervised", "pool_curve": []}]
    lines = pool_lines(["supervised", "mean-teacher"], runs)
    row = next(line for line in lines if line.startswith("| mean-teacher"))
    assert row == "| mean-teacher | 30.0 ± 10.0 | 60.0 ± 10.0 | 70.0 ± 10.0 |"
    assert not any(line.startswith("| supervised") for line in lines)
    assert pool_lines(["supervised"], runs[2:]) == []
