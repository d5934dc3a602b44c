"""Supervised twins (`unlabeled: false`): every unlabeled term exactly off, everything else the method's."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from semiseg.losses import dice_ce_loss
from semiseg.methods import MethodContext, build_method, describe_methods
from semiseg.methods.mean_teacher import MIXES
from semiseg.model import load_model
from semiseg.train import TrainConfig, _Trainer, train

TOTAL = 20
# Small options per method, and a step at which its unlabeled terms are active (VerSemi: stage 2).
SMALL = {
    "mean-teacher": {"n_filters": 4},
    "ad": {"n_filters": 4, "sample_steps": 2},
    "versemi": {"n_filters": 4},
    "dual-contrast": {"n_filters": 4},
}
ACTIVE_STEP = TOTAL - 1
SHAPE = {"versemi": (32, 32, 32)}  # InstanceNorm needs more than one voxel at the bottleneck


def build(name: str, seed: int = 0, **options):
    torch.manual_seed(seed)
    return build_method(name, MethodContext(n_classes=2, total_iterations=TOTAL, options={**SMALL[name], **options}))


def batches(seed: int = 0, shape=(16, 16, 16)):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(2, 1, *shape, generator=g)
    labeled = {"image": image, "label": (image[:, 0] > 0.5).long()}
    unlabeled = {"image": torch.randn(2, 1, *shape, generator=g).requires_grad_(True)}
    return labeled, unlabeled


@pytest.mark.parametrize("name", list(SMALL))
def test_twin_has_the_methods_network_options_and_optimiser(name):
    method, twin = build(name), build(name, unlabeled=False)
    assert method.uses_unlabeled and not method.is_twin
    assert twin.is_twin and not twin.uses_unlabeled
    assert {k: v for k, v in twin.opts.items() if k != "unlabeled"} == \
        {k: v for k, v in method.opts.items() if k != "unlabeled"}
    assert twin.optimizer_settings() == method.optimizer_settings()
    ours, theirs = twin.state_dict(), method.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours), "same seed, same initial weights"
    assert type(twin.inference_network()) is type(method.inference_network())


@pytest.mark.parametrize("name", list(SMALL))
def test_twin_gets_no_gradient_from_unlabeled_images(name):
    labeled, unlabeled = batches(shape=SHAPE.get(name, (16, 16, 16)))
    method = build(name)
    method.train()
    method.training_step(labeled, unlabeled, ACTIVE_STEP)["total"].backward()
    assert unlabeled["image"].grad is not None and unlabeled["image"].grad.abs().sum() > 0, \
        "the method itself must learn from the unlabeled batch (else this test proves nothing)"

    labeled, unlabeled = batches(shape=SHAPE.get(name, (16, 16, 16)))
    twin = build(name, unlabeled=False)
    twin.train()
    torch.manual_seed(1)
    handed = twin.training_step(labeled, unlabeled, ACTIVE_STEP)
    handed["total"].backward()
    assert unlabeled["image"].grad is None, "an unlabeled image reached the twin's loss"
    twin = build(name, unlabeled=False)
    twin.train()
    torch.manual_seed(1)
    alone = twin.training_step(labeled, None, ACTIVE_STEP)
    assert torch.allclose(handed["total"], alone["total"]), "the twin's loss must not depend on the unlabeled batch"
    unlabeled_terms = {"consistency", "unlabeled", "unlabeled_vnet", "unlabeled_resnet", "contrast",
                       "aggregate_consistency", "labeled_cube"}
    assert not unlabeled_terms & set(handed)


CHOICES = {"mix": MIXES}  # options that name a choice, and the values they take


def another_value(cls, key):
    """A value of option `key` other than its default."""
    if key in CHOICES:
        return next(v for v in CHOICES[key] if v != cls.defaults[key])
    return cls.defaults[key] * 3 + 0.5


@pytest.mark.parametrize("name", [n for n in SMALL if type(build(n)).unlabeled_only])
def test_options_a_twin_ignores_change_nothing_in_its_training(name):
    # `semiseg bench` shares one twin among variants that differ only in `unlabeled_only` options: that is only
    # honest if the twin trains bit for bit the same whatever they are.
    cls = type(build(name))
    other = {k: another_value(cls, k) for k in cls.unlabeled_only}
    states = []
    for options in ({}, other):
        labeled, unlabeled = batches(shape=SHAPE.get(name, (16, 16, 16)))
        twin = build(name, unlabeled=False, **options)
        twin.train()
        optimizer = torch.optim.SGD(twin.trainable().parameters(), lr=0.1)
        for step in (0, ACTIVE_STEP, 500):  # 500: past the EMA decay's warm-up
            torch.manual_seed(step)
            twin.training_step(labeled, unlabeled, step)["total"].backward()
            optimizer.step()
            twin.after_optimizer_step(step)
        states.append(twin.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_mean_teacher_twin_is_its_supervised_term():
    # The method's student passes labeled and unlabeled patches together (UA-MT), so its supervised term has
    # other BatchNorm statistics; the twin's loss is the supervised term on the labeled patches alone.
    labeled, unlabeled = batches()
    twin = build("mean-teacher", unlabeled=False)
    out = twin.training_step(labeled, unlabeled, ACTIVE_STEP)  # handed an unlabeled batch, it reads none of it
    assert set(out) == {"total", "supervised"}
    assert torch.allclose(out["total"], dice_ce_loss(twin.net(labeled["image"]), labeled["label"]))


def test_versemi_twin_keeps_stage_two_labeled_terms():
    labeled, _ = batches(shape=SHAPE["versemi"])
    twin = build("versemi", unlabeled=False)
    assert twin.stage(ACTIVE_STEP) == 2 and twin.stage(0) == 1
    out = twin.training_step(labeled, None, ACTIVE_STEP)
    assert float(out["stage"]) == 2.0 and "synthetic" in out and "specific" not in out


def test_ad_twin_gives_d_theta_batchnorm_statistics_from_the_labeled_image():
    labeled, _ = batches()
    twin = build("ad", unlabeled=False)
    twin.train()
    before = {k: v.clone() for k, v in twin.net.decoder_theta.state_dict().items() if "running_mean" in k}
    out = twin.training_step(labeled, None, 0)
    after = twin.net.decoder_theta.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert "mu" not in out and torch.allclose(out["total"], out["denoise"] + out["labeled"])


def test_describe_methods_lists_the_twin_option():
    for m in describe_methods():
        assert m["options"]["unlabeled"]["default"] is True and "twin" in m["options"]["unlabeled"]["help"]


def _weights(model: Path) -> dict:
    net, _ = load_model(model)
    return net.state_dict()


def test_twin_trains_without_unlabeled_cases_and_they_change_nothing(tiny_dataset, tmp_path):
    """End to end: the twin trained on the data and on the same data with its unlabeled list removed gives
    identical weights, so unlabeled images reach neither its gradients nor its BatchNorm statistics. Mean
    Teacher's twin trains the same student as plain supervised, step for step (the demo reports it as the twin)."""
    bare = tmp_path / "no-unlabeled"
    shutil.copytree(tiny_dataset, bare)
    spec = json.loads((bare / "dataset.json").read_text(encoding="utf-8"))
    spec["unlabeled"] = []
    spec.pop("numUnlabeled", None)
    (bare / "dataset.json").write_text(json.dumps(spec), encoding="utf-8")
    shutil.rmtree(bare / "imagesUn")

    def cfg(data, name, method="mean-teacher", options=(("unlabeled", False),)):
        return TrainConfig(data=str(data), out=str(tmp_path / f"{name}.semiseg"), method=method,
                           method_options={"n_filters": 4, **dict(options)}, iterations=3, patch=[32, 32, 32],
                           device="cpu", progress=False, val_every=3, seed=5)

    assert _Trainer(cfg(tiny_dataset, "probe"), _NoEvents()).unlabeled_stream is None
    a = _weights(train(cfg(tiny_dataset, "with")).model)
    b = _weights(train(cfg(bare, "without")).model)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    c = _weights(train(cfg(tiny_dataset, "supervised", method="supervised", options=())).model)
    assert a.keys() == c.keys() and all(torch.equal(a[k], c[k]) for k in a)
    _, card = load_model(tmp_path / "with.semiseg")
    assert card["method"]["options"]["unlabeled"] is False


class _NoEvents:
    def emit(self, *args, **kwargs):
        pass


def test_trainer_applies_the_methods_optimizer_settings(tiny_dataset, tmp_path):
    cfg = TrainConfig(data=str(tiny_dataset), out=str(tmp_path / "dc.semiseg"), method="dual-contrast",
                      method_options={"n_filters": 4, "lr_schedule": "poly"}, iterations=2, patch=[32, 32, 32],
                      device="cpu", progress=False, val_every=2)
    assert _Trainer(cfg, _NoEvents()).optimisation.schedule == "poly"
    assert _Trainer(replace(cfg, method_options={"n_filters": 4}), _NoEvents()).optimisation.schedule == "step"
