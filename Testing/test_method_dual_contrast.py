"""dual-contrast: each mechanism of the dual-subnetwork contrastive method, on tiny inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from semiseg.methods import MethodContext, build_method, method_names
from semiseg.methods.dual_contrast import (DualContrast, entropy, entropy_gate, gated_cross_entropy, percentile,
                                           prototype_contrast, pseudo_label, squared_dice_loss, verification_error,
                                           verification_mask)
from semiseg.nets import build_network
from semiseg.nets.dual import DualVNetResNet


@pytest.fixture(autouse=True)
def one_thread():
    """The test machine is shared: one intra-op thread avoids OpenMP spin-waiting under load."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def probs_from_fg(fg):
    """(1, 2, 1, 1, N) two-class probabilities from a list of foreground probabilities."""
    p1 = torch.tensor(fg, dtype=torch.float32).view(1, 1, 1, -1)
    return torch.stack([1 - p1, p1], dim=1)


def small_method(**options):
    torch.manual_seed(0)
    ctx = MethodContext(in_channels=1, n_classes=2, total_iterations=100,
                        options={"n_filters": 4, "dropout": 0.0, **options})
    return build_method("dual-contrast", ctx)


def blob_batch(b=2, shape=(16, 16, 16), seed=0, with_label=True):
    g = torch.Generator().manual_seed(seed)
    zz, yy, xx = torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in shape], indexing="ij")
    images, labels = [], []
    for _ in range(b):
        c = [float(torch.randint(5, s - 5, (1,), generator=g)) for s in shape]
        r = 3.0 + 2 * float(torch.rand(1, generator=g))
        lab = ((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) <= r * r
        images.append(lab.float() * 2 + 0.5 * torch.randn(shape, generator=g))
        labels.append(lab.long())
    out = {"image": torch.stack(images)[:, None], "task": torch.zeros(b, dtype=torch.long),
           "domain": torch.zeros(b, dtype=torch.long)}
    if with_label:
        out["label"] = torch.stack(labels)
    return out


def grad_norm(module):
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


# --------------------------------------------------------------------------------------------- registry


def test_registered_with_reference_optimiser():
    assert "dual-contrast" in method_names()
    # SGD 0.01, momentum 0.9, wd 1e-4; lr x0.1 at 2.5k and 5k of 6k iterations (SSL-contrastive src/train_LA.py:225-226, 324-329).
    assert DualContrast.preferred_optimizer == {"optimizer": "sgd", "lr": 1e-2, "momentum": 0.9,
                                                "weight_decay": 1e-4, "schedule": "step",
                                                "milestones": [2500 / 6000, 5000 / 6000]}
    assert DualContrast.defaults["released"] is False


# --------------------------------------------------------------------------------------------- networks


def test_parameter_counts_match_reference():
    net = DualVNetResNet(in_channels=1, n_classes=2, n_filters=16, norm="batch")
    assert n_params(net.vnet) == 9_448_866
    assert n_params(net.resnet) == 17_930_354
    assert n_params(net) == 9_448_866 + 17_930_354


def test_subnetworks_differ_and_return_features():
    torch.manual_seed(0)
    net = DualVNetResNet(n_filters=4, dropout=0.0)
    assert type(net.vnet).__name__ != type(net.resnet).__name__
    (la, fa), (lb, fb) = net(torch.randn(2, 1, 16, 16, 16), pair=True)
    assert la.shape == lb.shape == (2, 2, 16, 16, 16)
    assert fa.shape == fb.shape == (2, 4, 16, 16, 16)
    assert not torch.allclose(la, lb)


def test_inference_network_returns_log_of_averaged_softmax_and_rebuilds():
    method = small_method()
    net = method.inference_network()
    assert net.semiseg_arch["name"] == "dual-vnet-resnet"
    net.eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        out = net(x)
        avg = 0.5 * (net.vnet(x).softmax(1) + net.resnet(x).softmax(1))
        assert torch.allclose(out.softmax(1), avg, atol=1e-5)
        rebuilt = build_network(net.semiseg_arch["name"], **net.semiseg_arch["args"])
        rebuilt.load_state_dict(net.state_dict())
        rebuilt.eval()
        assert torch.allclose(rebuilt(x), out, atol=1e-6)
    # One module holds both: the method's state is exactly the two subnetworks.
    keys = set(method.state_dict())
    assert any(k.startswith("net.vnet.") for k in keys) and any(k.startswith("net.resnet.") for k in keys)
    assert all(k.startswith("net.") for k in keys)


# --------------------------------------------------------------------------------------------- labeled terms


def test_verification_mask_is_xor_of_confident_foreground():
    #            both fg   only a    a unsure  only b    a at 0.6  neither
    pa = probs_from_fg([0.9, 0.9, 0.55, 0.1, 0.6, 0.2])
    pb = probs_from_fg([0.8, 0.3, 0.1, 0.7, 0.4, 0.3])
    mask = verification_mask(pa, pb, threshold=0.6)
    assert mask.view(-1).tolist() == [False, True, False, True, True, False]

    label = torch.tensor([1, 0, 1, 1, 0, 0]).view(1, 1, 1, -1)
    # squared error of the foreground probability on the 3 masked voxels
    expected_a = ((0.9 - 0) ** 2 + (0.1 - 1) ** 2 + (0.6 - 0) ** 2) / 3
    assert float(verification_error(pa, label, mask)) == pytest.approx(expected_a, rel=1e-5)
    # no mask → no term
    assert float(verification_error(pa, label, torch.zeros_like(mask))) == 0.0


def test_squared_dice_matches_reference_formula():
    p = probs_from_fg([0.9, 0.2, 0.7, 0.0])
    y = torch.tensor([1, 0, 1, 0]).view(1, 1, 1, -1)
    inter, psq, ysq = 0.9 + 0.7, 0.81 + 0.04 + 0.49, 2.0
    expected = 1 - (2 * inter + 1e-5) / (psq + ysq + 1e-5)
    assert float(squared_dice_loss(p, y)) == pytest.approx(expected, rel=1e-5)


def test_winner_is_lower_dice_loss():
    assert DualContrast.choose_winner(torch.tensor(0.2), torch.tensor(0.3)) == 0
    assert DualContrast.choose_winner(torch.tensor(0.4), torch.tensor(0.3)) == 1


# --------------------------------------------------------------------------------------------- unlabeled terms


def test_pseudo_label_is_union_of_foregrounds():
    pa = probs_from_fg([0.9, 0.2, 0.7, 0.1])
    pb = probs_from_fg([0.1, 0.8, 0.9, 0.3])
    assert pseudo_label(pa, pb).view(-1).tolist() == [1, 1, 1, 0]


def test_percentile_matches_numpy():
    x = torch.randn(3, 7, 5)
    for q in (0, 20, 37.5, 100):
        assert float(percentile(x, q)) == pytest.approx(float(np.percentile(x.numpy(), q)), rel=1e-5, abs=1e-6)


def test_entropy_gate_keeps_configured_share():
    torch.manual_seed(0)
    pa = torch.randn(2, 2, 8, 8, 8).softmax(1)
    n = pa[:, 0].numel()
    # identical predictions: exactly the `percent` most certain voxels are kept
    for percent in (20.0, 50.0):
        kept = (~entropy_gate(pa, pa, percent)).sum().item()
        assert abs(kept - percent / 100 * n) <= 1
    # independent predictions: kept = certain in a OR certain in b → between 20 % and 40 %, ≈ 36 %
    pb = torch.randn(2, 2, 8, 8, 8).softmax(1)
    ignore = entropy_gate(pa, pb, 20.0)
    share = (~ignore).float().mean().item()
    assert 0.2 <= share <= 0.4 and abs(share - 0.36) < 0.05
    ha, hb = entropy(pa), entropy(pb)
    expected_kept = (ha < percentile(ha, 20)) | (hb < percentile(hb, 20))
    assert torch.equal(~ignore, expected_kept)


def test_gated_cross_entropy_scaling_as_reference():
    logits = torch.randn(1, 2, 1, 1, 10)
    target = torch.randint(0, 2, (1, 1, 1, 10))
    ignore = torch.zeros(1, 1, 1, 10, dtype=torch.bool)
    ignore[..., :6] = True
    ce_kept = torch.nn.functional.cross_entropy(logits[..., 6:], target[..., 6:])
    assert float(gated_cross_entropy(logits, target, ignore)) == pytest.approx(float(ce_kept) * 10 / 4, rel=1e-5)


# --------------------------------------------------------------------------------------------- prototypes


def two_cluster_features(theta, n=40):
    """Reliable bg voxels at angle 0, reliable fg voxels at angle theta, in a 2-channel feature."""
    feats = torch.zeros(1, 2, 1, 1, n)
    target = torch.zeros(1, 1, 1, n, dtype=torch.long)
    target[..., n // 2:] = 1
    feats[0, 0, ..., : n // 2] = 1.0
    feats[0, 0, ..., n // 2:] = math.cos(theta)
    feats[0, 1, ..., n // 2:] = math.sin(theta)
    ignore = torch.zeros(1, 1, 1, n, dtype=torch.bool)
    return feats, target, ignore


def test_prototype_term_decreases_as_prototypes_move_apart():
    values_push, values_pull = [], []
    for theta in (0.1, 0.5, 1.0, 1.5):
        f, t, ig = two_cluster_features(theta)
        values_push.append(float(prototype_contrast(f, t, ig, t, 2, push=True)["prototype"]))
        values_pull.append(float(prototype_contrast(f, t, ig, t, 2, push=False)["prototype"]))
    assert all(a > b for a, b in zip(values_push, values_push[1:]))   # paper: falls as they separate
    assert all(a < b for a, b in zip(values_pull, values_pull[1:]))   # released: rises (pulls together)
    # gradient of the described term moves the prototypes apart: a step along −grad increases the distance
    f, t, ig = two_cluster_features(0.5)
    f.requires_grad_(True)
    prototype_contrast(f, t, ig, t, 2, push=True)["prototype"].backward()
    with torch.no_grad():
        f2 = f - 0.1 * f.grad
        d = [float(prototype_contrast(x, t, ig, t, 2, push=False)["prototype"]) for x in (f, f2)]
    assert d[1] > d[0]


def test_pull_term_pulls_unreliable_voxels_to_their_prototype():
    f, t, ig = two_cluster_features(1.2, n=40)
    ig[..., 0] = True       # an unreliable voxel predicted foreground …
    own = t.clone()
    own[..., 0] = 1
    values = []
    for angle in (0.0, 0.6, 1.2):  # … whose feature moves towards the fg prototype (angle 1.2)
        f2 = f.clone()
        f2[0, 0, 0, 0, 0], f2[0, 1, 0, 0, 0] = math.cos(angle), math.sin(angle)
        values.append(float(prototype_contrast(f2, t, ig, own, 2, fraction=1.0)["pull"]))
    assert values[0] > values[1] > values[2]
    assert values[2] == pytest.approx(0.0, abs=1e-3)
    # too few candidates for one draw (reference: fg // 100) → no pull term
    assert float(prototype_contrast(f, t, ig, own, 2, fraction=0.01)["pull"]) == 0.0


# --------------------------------------------------------------------------------------------- gradients


def _terms(method, winner, monkeypatch):
    monkeypatch.setattr(DualContrast, "choose_winner", staticmethod(lambda a, b: winner))
    method.train()
    return method.loss_terms(blob_batch(2, seed=1), blob_batch(2, seed=2, with_label=False), step=50)


@pytest.mark.parametrize("winner", [0, 1])
def test_described_unlabeled_gradients_reach_both_subnetworks(winner, monkeypatch):
    method = small_method(candidate_fraction=1.0)
    net = method.net
    terms = _terms(method, winner, monkeypatch)
    assert float(terms["winner"]) == winner

    net.zero_grad()
    terms["unlabeled_vnet"].backward(retain_graph=True)
    assert grad_norm(net.vnet) > 0 and grad_norm(net.resnet) == 0
    net.zero_grad()
    terms["unlabeled_resnet"].backward(retain_graph=True)
    assert grad_norm(net.resnet) > 0 and grad_norm(net.vnet) == 0

    # the contrastive term trains the loser, with both its parts live
    loser, other = (net.resnet, net.vnet) if winner == 0 else (net.vnet, net.resnet)
    for part in ("contrast_pull", "contrast_prototype"):
        assert terms[part].requires_grad and float(terms[part].detach()) > 0
    net.zero_grad()
    terms["contrast"].backward(retain_graph=True)
    assert grad_norm(loser) > 0 and grad_norm(other) == 0


def test_released_option_has_no_unlabeled_gradient(monkeypatch):
    method = small_method(candidate_fraction=1.0, released=True)
    terms = _terms(method, 0, monkeypatch)
    for key in ("unlabeled_vnet", "unlabeled_resnet", "contrast"):
        assert not terms[key].requires_grad
    assert float(terms["unlabeled_vnet"]) > 0 and float(terms["contrast"]) > 0
    # only the labeled terms train: the total's gradient equals the supervised terms' gradient
    net = method.net
    net.zero_grad()
    terms["total"].backward(retain_graph=True)
    g_total = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    (terms["supervised_vnet"] + terms["supervised_resnet"]).backward()
    for a, p in zip(g_total, net.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-6)


def test_training_step_detaches_logged_terms_and_ramps_weights():
    method = small_method()
    method.train()
    out = method.training_step(blob_batch(2, seed=1), blob_batch(2, seed=2, with_label=False), step=0)
    assert out["total"].requires_grad
    assert all(not v.requires_grad for k, v in out.items() if k != "total")
    assert 0.2 <= float(out["kept_fraction"]) <= 0.4
    assert method.contrast_weight(0) == pytest.approx(0.1 * math.exp(-5))
    assert method.contrast_weight(100) == pytest.approx(0.1)
    assert method.unlabeled_weight(0) == 1.0  # reference: no ramp on the unlabeled CE


# --------------------------------------------------------------------------------------------- training


def test_few_iterations_lower_the_loss():
    from semiseg.synthetic import make_phantom

    def phantom_batch(seeds):
        ims, labs = [], []
        for s in seeds:
            im, lab = make_phantom(shape=(32, 32, 16), seed=s)
            a = torch.from_numpy(np.asarray(im.array, dtype=np.float32))
            ims.append((a - a.mean()) / (a.std() + 1e-6))
            labs.append(torch.from_numpy(np.asarray(lab.array)).long().clamp_max(1))  # structure 1+ vs rest
        z = torch.zeros(len(seeds), dtype=torch.long)
        return {"image": torch.stack(ims)[:, None], "label": torch.stack(labs), "task": z, "domain": z}

    labeled = phantom_batch([0, 1])
    unlabeled = {k: v for k, v in phantom_batch([2, 3]).items() if k != "label"}
    torch.manual_seed(0)
    method = build_method("dual-contrast", MethodContext(n_classes=2, total_iterations=30,
                                                         options={"n_filters": 4, "dropout": 0.0}))
    opt = torch.optim.Adam(method.trainable().parameters(), lr=1e-3)
    losses = []
    for step in range(30):
        method.train()
        out = method.training_step(labeled, unlabeled, step)
        opt.zero_grad()
        out["total"].backward()
        opt.step()
        losses.append(float(out["total"].detach()))
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
