"""Short-run options: each changes what it says, and the authors' recipe stays the default."""

from __future__ import annotations

import pytest
import torch

from semiseg.errors import ConfigError
from semiseg.methods import MethodContext, build_method
from semiseg.methods.base import sigmoid_rampup
from semiseg.nets.diffvnet import Stage


def make(name, total=100, **options):
    torch.manual_seed(0)
    return build_method(name, MethodContext(n_classes=2, total_iterations=total,
                                            options={"n_filters": 4, **options}))


def test_dual_contrast_schedule_authors_step_or_short_run_poly():
    assert make("dual-contrast").optimizer_settings()["schedule"] == "step"  # the authors'
    assert make("dual-contrast").optimizer_settings()["milestones"] == [2500 / 6000, 5000 / 6000]
    assert make("dual-contrast", lr_schedule="poly").optimizer_settings()["schedule"] == "poly"
    with pytest.raises(ConfigError, match="lr_schedule"):
        make("dual-contrast", lr_schedule="cosine")


def test_dual_contrast_unlabeled_ramp_is_a_fraction_of_the_run():
    authors = make("dual-contrast", total=300)
    assert authors.unlabeled_weight(0) == 1.0  # full weight from step 0, as released
    ramped = make("dual-contrast", total=300, unlabeled_rampup=0.4)
    assert ramped.unlabeled_weight(0) == pytest.approx(sigmoid_rampup(0, 120))
    assert ramped.unlabeled_weight(60) < ramped.unlabeled_weight(119) < ramped.unlabeled_weight(120) == 1.0


def test_dual_contrast_contrast_ramp_is_a_fraction_of_the_run():
    m = make("dual-contrast", total=300, contrast_rampup=0.5)
    assert m.contrast_weight(150) == pytest.approx(0.1) and m.contrast_weight(0) == pytest.approx(0.1 * sigmoid_rampup(0, 150))


def test_mean_teacher_ramp_length_scales_with_the_run():
    for total in (300, 6000):
        m = make("mean-teacher", total=total, rampup=0.2, consistency=0.1)
        end = int(0.2 * total)
        assert m.consistency_weight(end) == pytest.approx(0.1)
        assert m.consistency_weight(end // 2) == pytest.approx(0.1 * sigmoid_rampup(end // 2, end))


def test_ad_stage_dropout_sets_every_convolution_dropout():
    rates = {s.dropout.p for s in make("ad").net.modules() if isinstance(s, Stage)}
    assert rates == {0.1}  # the authors'
    off = make("ad", dropout=False, stage_dropout=0.0)
    assert {s.dropout.p for s in off.net.modules() if isinstance(s, Stage)} == {0.0}
    assert not off.net.decoder_theta.has_dropout and not off.net.encoder.has_dropout
    with pytest.raises(ConfigError, match="stage_dropout"):
        make("ad", stage_dropout=1.0)


def _encoder_stats(m):
    return {k: v.clone() for k, v in m.net.encoder.state_dict().items() if "running" in k}


@pytest.mark.parametrize("mode", ["all", "image"])
def test_ad_encoder_batchnorm_statistics_from_the_image_path(mode):
    m = make("ad", sample_steps=2, encoder_bn_stats=mode)
    m.train()
    image = torch.randn(2, 1, 16, 16, 16)
    x_t, t = torch.randn(2, 2, 16, 16, 16), torch.tensor([3, 500])
    before = _encoder_stats(m)
    with m.diffusion_pass():
        m.net(image, x_t, t, mode="xi")
    moved = any(not torch.equal(before[k], v) for k, v in _encoder_stats(m).items())
    assert moved == (mode == "all")
    m.diffusion_x0(image)  # the DDIM passes too
    assert any(not torch.equal(before[k], v) for k, v in _encoder_stats(m).items()) == (mode == "all")
    m.net(image, mode="theta")  # the image path always updates them
    assert any(not torch.equal(before[k], v) for k, v in _encoder_stats(m).items())
    norms = [x for x in m.net.encoder.modules() if isinstance(x, torch.nn.BatchNorm3d)]
    assert {x.momentum for x in norms} == {0.1}, "momentum restored after the diffusion passes"
    with pytest.raises(ConfigError, match="encoder_bn_stats"):
        make("ad", encoder_bn_stats="diffusion")
