"""A&D (Aggregating & Decoupling, DiffVNet): architecture, label diffusion, class weights, aggregation,
pseudo-labels, gradients, the four settings, and a short training run."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from semiseg.errors import ConfigError
from semiseg.methods import MethodContext, build_method, describe_methods, method_names
from semiseg.methods.ad import SETTING_CONFIG, DifficultyWeights, ad_setting, dice_ce, gaussian_kernel3d
from semiseg.methods.ad_diffusion import LabelDiffusion, space_timesteps
from semiseg.nets import build_network
from semiseg.nets.diffvnet import DiffVNet

SHAPE = (16, 32, 32)  # (d, h, w): a 1×2×2 bottleneck keeps BatchNorm happy with one case per batch


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: threads only add contention on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def nparams(module) -> int:
    return sum(p.numel() for p in module.parameters())


def make(n_classes=2, iterations=1000, n_domains=1, **options):
    options.setdefault("n_filters", 4)
    ctx = MethodContext(n_classes=n_classes, total_iterations=iterations, n_domains=n_domains, options=options)
    return build_method("ad", ctx)


def batches(n_classes=2, n=1, seed=0, dom_l=0, dom_u=0):
    g = torch.Generator().manual_seed(seed)
    img_l = torch.randn(n, 1, *SHAPE, generator=g)
    lab = torch.randint(0, n_classes, (n, *SHAPE), generator=g)
    img_u = torch.randn(n, 1, *SHAPE, generator=g)
    labeled = {"image": img_l, "label": lab, "task": torch.zeros(n, dtype=torch.long),
               "domain": torch.full((n,), dom_l, dtype=torch.long)}
    unlabeled = {"image": img_u, "task": torch.zeros(n, dtype=torch.long),
                 "domain": torch.full((n,), dom_u, dtype=torch.long)}
    return labeled, unlabeled


# ------------------------------------------------------------------------------------------------ architecture
def test_reference_parameter_counts():
    """The LA configuration (1 channel, 2 classes, n_filters 32) has the released model's 57,891,910 parameters,
    split over the parts as the released model's."""
    net = DiffVNet(1, 2, 32)
    assert nparams(net) == 57_891_910
    assert nparams(net.embedding) == 346_080  # image stem (+ the unused timestep MLP the reference builds)
    assert nparams(net.denoise_model.embedding_diffusion) == 347_808  # [image ‖ x_t] stem + timestep MLP
    assert nparams(net.encoder) == 31_431_424
    assert nparams(net.decoder_xi) == 9_201_730  # D_ξ: the V-Net decoder + its timestep fusions
    assert nparams(net.decoder_psi) == nparams(net.decoder_theta) == 8_282_434
    lean = DiffVNet(1, 2, 32, reference_layout=False)
    assert nparams(lean) == 56_791_654  # without the never-used modules
    infer = build_network("diffvnet-infer", in_channels=1, n_classes=2, n_filters=32)
    assert nparams(infer) == 346_080 + 31_431_424 + 8_282_434


def test_three_decoders_shapes_and_conditioning():
    torch.manual_seed(0)
    net = DiffVNet(1, 3, 4).eval()
    img = torch.randn(2, 1, *SHAPE)
    x_t = torch.randn(2, 3, *SHAPE)
    with torch.no_grad():
        theta, psi = net(img), net(img, mode="psi")
        xi_a = net(img, x_t, torch.tensor([3, 3]), mode="xi")
        xi_b = net(img, x_t, torch.tensor([900, 900]), mode="xi")
    for out in (theta, psi, xi_a):
        assert out.shape == (2, 3, *SHAPE)
    assert not torch.allclose(theta, psi)  # two decoders, two sets of weights
    assert not torch.allclose(xi_a, xi_b)  # D_ξ sees the timestep
    # Blocks are conv → ReLU → norm → Dropout3d(0.1).
    stage = net.encoder.block_two.ops[0]
    assert [type(m).__name__ for m in (stage.conv, stage.relu, stage.norm, stage.dropout)] == \
        ["Conv3d", "ReLU", "BatchNorm3d", "Dropout3d"] and stage.dropout.p == 0.1
    # One shared encoder: changing one of its blocks changes all three heads.
    with torch.no_grad():
        for p in net.encoder.block_two.parameters():
            p.mul_(3.0).add_(0.5)
        assert not torch.allclose(net(img), theta)
        assert not torch.allclose(net(img, mode="psi"), psi)
        assert not torch.allclose(net(img, x_t, torch.tensor([3, 3]), mode="xi"), xi_a)


def test_image_paths_ignore_the_timestep_modules():
    net = DiffVNet(1, 2, 4)
    net(torch.randn(1, 1, *SHAPE), mode="theta").sum().backward()
    temb = [p for n, p in net.encoder.named_parameters() if "temb" in n]
    assert temb and all(p.grad is None for p in temb)  # without a timestep every fusion is the identity
    assert all(p.grad is not None for n, p in net.encoder.named_parameters() if "temb" not in n)
    assert all(p.grad is None for p in net.embedding.temb.parameters())  # the reference's unused MLP
    assert all(p.grad is None for p in net.decoder_xi.parameters())
    assert all(p.grad is None for p in net.decoder_psi.parameters())
    net.zero_grad(set_to_none=True)
    net(torch.randn(1, 1, *SHAPE), torch.randn(1, 2, *SHAPE), torch.tensor([7]), mode="xi").sum().backward()
    assert all(p.grad is not None for p in net.denoise_model.embedding_diffusion.temb.parameters())
    assert all(p.grad is None for p in net.decoder_theta.parameters())


# ------------------------------------------------------------------------------------------------ diffusion
def test_q_sample_matches_closed_form():
    diff = LabelDiffusion(1000)
    betas = [1e-4 + (0.02 - 1e-4) * s / 999 for s in range(1000)]
    abar = np.cumprod([1 - b for b in betas])
    g = torch.Generator().manual_seed(1)
    x0 = torch.randint(0, 2, (4, 2, 4, 4, 4), generator=g).float() * 2 - 1
    eps = torch.randn(x0.shape, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    x_t = diff.q_sample(x0, t, eps)
    for i, ti in enumerate(t.tolist()):
        expect = math.sqrt(abar[ti]) * x0[i] + math.sqrt(1 - abar[ti]) * eps[i]
        torch.testing.assert_close(x_t[i], expect, rtol=1e-5, atol=1e-6)
    # q(x_t | x0) statistics: mean sqrt(ᾱ)·x0, variance 1 − ᾱ.
    x0 = torch.ones(20000)
    xs = diff.q_sample(x0, torch.full((20000,), 300))
    assert abs(xs.mean().item() - math.sqrt(abar[300])) < 0.02
    assert abs(xs.var().item() - (1 - abar[300])) < 0.03
    # Uniform training timesteps over 0..T−1.
    ts = diff.sample_t(5000, torch.device("cpu"))
    assert ts.min() >= 0 and ts.max() <= 999 and 400 < ts.float().mean() < 600
    # The same schedule as MONAI's linear_beta DDPM scheduler.
    from monai.networks.schedulers import DDPMScheduler
    monai_abar = DDPMScheduler(num_train_timesteps=1000, schedule="linear_beta").alphas_cumprod
    torch.testing.assert_close(diff.alphas_cumprod.float(), monai_abar.float(), rtol=1e-4, atol=1e-6)


def test_ddim_ten_steps_visits_reference_timesteps_and_is_exact_for_an_oracle():
    reference = [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    assert space_timesteps(1000, 10) == sorted(reference)
    from monai.networks.schedulers import DDIMScheduler
    sched = DDIMScheduler(num_train_timesteps=1000)
    sched.set_timesteps(10)
    assert sched.timesteps.tolist() == reference  # MONAI visits the same ones (its step rule differs; see docs)

    diff = LabelDiffusion(1000, 10, eta=0.0)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 2, (2, 2, 4, 4, 4), generator=g).float() * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    visited, inputs = [], []

    def oracle(x_t, t):
        inputs.append(x_t.clone())
        return x0 * 5.0  # logits beyond [-1, 1] are clamped, as the reference's clip_denoised

    out = diff.ddim_sample(oracle, x0.shape, torch.device("cpu"), noise=noise, visited=visited)
    assert visited == reference
    torch.testing.assert_close(out, x0)
    # η = 0: the implied noise ε is fixed after the first step, so every later x_t lies on q(x_t | x0, ε).
    abar = diff.alphas_cumprod
    eps = (noise / abar[999].sqrt().float() - x0) / (1 / abar[999].float() - 1).sqrt()
    for x_in, step in zip(inputs[1:], reference[1:]):
        torch.testing.assert_close(x_in, diff.q_sample(x0, torch.full((2,), step), eps), rtol=1e-4, atol=1e-5)
    # Deterministic given x_T.
    again = diff.ddim_sample(lambda x, t: torch.tanh(x), x0.shape, torch.device("cpu"), noise=noise)
    torch.testing.assert_close(again, diff.ddim_sample(lambda x, t: torch.tanh(x), x0.shape, torch.device("cpu"),
                                                       noise=noise))


def test_ddim_inside_method_runs_the_diffusion_head_ten_times():
    m = make(n_classes=3)
    m.train()
    visited = []
    x0 = m.diffusion_x0(torch.randn(1, 1, *SHAPE), visited=visited)
    assert len(visited) == 10 and x0.shape == (1, 3, *SHAPE)
    assert x0.min() >= -1 and x0.max() <= 1


# ------------------------------------------------------------------------------------------------ losses
def test_class_weights_hand_computed_example():
    dw = DifficultyWeights(2, accumulate_iters=50)  # momentum 0.98
    label = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]).view(1, 2, 2, 2)

    def logits_for(pred):
        return torch.nn.functional.one_hot(torch.tensor(pred), 2).float().T.reshape(1, 2, 2, 2, 2)

    # Step 1: prediction 0 0 0 1 | 1 1 0 0 → class 0: tp 3, fp 2, fn 1 → d0 = 6/9; class 1: tp 2, fp 1, fn 2 → d1 = 4/7.
    w1 = dw.update(logits_for([0, 0, 0, 1, 1, 1, 0, 0]), label)
    d = [6 / 9, 4 / 7]
    learn = [0.02 * (dc - 1e-8) * math.log(dc / 1e-8) for dc in d]
    unlearn = [0.0, 0.0]
    diffc = [0.98 + 0.02 * (1 - dc) for dc in d]
    expect1 = [2 * ((u + 1e-8) / (l + 1e-8)) ** 0.2 * dd for u, l, dd in zip(unlearn, learn, diffc)]
    torch.testing.assert_close(w1, torch.tensor(expect1), rtol=1e-4, atol=1e-9)
    # Step 2: prediction 0 0 0 0 | 1 0 0 0 → class 0: tp 4, fp 3, fn 0 → 8/11 (learning);
    # class 1: tp 1, fp 0, fn 3 → 2/5 (unlearning: Δ < 0).
    w2 = dw.update(logits_for([0, 0, 0, 0, 1, 0, 0, 0]), label)
    d2 = [8 / 11, 2 / 5]
    learn = [0.98 * learn[0] + 0.02 * (d2[0] - d[0]) * math.log(d2[0] / d[0]), 0.98 * learn[1]]
    unlearn = [0.0, 0.02 * (d2[1] - d[1]) * math.log(d2[1] / d[1])]
    diffc = [0.98 * dd + 0.02 * (1 - dc) for dd, dc in zip(diffc, d2)]
    expect2 = [2 * ((u + 1e-8) / (l + 1e-8)) ** 0.2 * dd for u, l, dd in zip(unlearn, learn, diffc)]
    torch.testing.assert_close(w2, torch.tensor(expect2), rtol=1e-4, atol=1e-9)
    assert w2[1] > 5 * w2[0]  # the class being unlearned gets the weight
    torch.testing.assert_close(dw.last_dice, torch.tensor(d2))


def test_dice_ce_matches_reference_form():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, 4, generator=g)
    y = torch.randint(0, 3, (2, 4, 4, 4), generator=g)
    p = logits.softmax(1)
    oh = torch.nn.functional.one_hot(y, 3).movedim(-1, 1).float()
    w = torch.tensor([0.5, 2.0, 3.0])
    dc = []
    for c in (1, 2):
        tp = (p[:, c] * oh[:, c]).sum()
        dc.append((2 * tp + 1) / (p[:, c].sum() + oh[:, c].sum() + 1 + 1e-8))
    ce_w = torch.nn.functional.cross_entropy(logits, y, weight=w)
    expect = ce_w + 1 - (dc[0] * w[1] + dc[1] * w[2]) / 2
    torch.testing.assert_close(dice_ce(logits, y, w), expect)
    torch.testing.assert_close(dice_ce(logits, y),
                               torch.nn.functional.cross_entropy(logits, y) + 1 - (dc[0] + dc[1]) / 2)


def test_gaussian_smoothing_kernel():
    k = gaussian_kernel3d(3, 3, 1.0)
    assert k.shape == (3, 1, 3, 3, 3)
    torch.testing.assert_close(k.sum((1, 2, 3, 4)), torch.ones(3))
    g = torch.tensor([math.exp(-0.5), 1.0, math.exp(-0.5)])
    assert k[0, 0, 1, 1, 1] == k.max() and math.isclose(k[0, 0, 0, 1, 1] / k[0, 0, 1, 1, 1], g[0].item(), rel_tol=1e-6)


def test_pseudo_label_adds_diffusion_and_labeled_head_probabilities():
    m = make(n_classes=3, xi_probs="softmax", smooth_kernel=1)
    m.train()
    img = torch.randn(1, 1, *SHAPE)
    x0 = -torch.ones(1, 3, *SHAPE)
    x0[:, 2] = 1.0  # the diffusion head says class 2 (softmax(-1,-1,1)[2] ≈ 0.79)
    m.diffusion_x0 = lambda image_u, **kw: x0
    out_conv = m.net.decoder_psi.out_conv
    with torch.no_grad():
        out_conv.weight.zero_()
        out_conv.bias.zero_()  # D_ψ uniform: the diffusion head decides
    assert (m.pseudo_label(img) == 2).all()
    with torch.no_grad():
        out_conv.bias.copy_(torch.tensor([0.0, 30.0, 0.0]))  # D_ψ certain of class 1 outweighs it
    assert (m.pseudo_label(img) == 1).all()
    # Released default: Gumbel noise on the DDIM output, so the pseudo-label is random where the heads are unsure.
    g = make(n_classes=3, smooth_kernel=1)
    g.diffusion_x0 = lambda image_u, **kw: torch.zeros(1, 3, *SHAPE)
    with torch.no_grad():
        g.net.decoder_psi.out_conv.weight.zero_()
        g.net.decoder_psi.out_conv.bias.zero_()
    g.train()
    labels = g.pseudo_label(img)
    assert len(labels.unique()) == 3


# ------------------------------------------------------------------------------------------------ aggregation
def test_aggregation_formula_on_matching_parameters():
    m = make(n_classes=3)
    with torch.no_grad():
        for p in m.net.decoder_theta.parameters():
            p.fill_(1.0)
        for p in m.net.decoder_xi.parameters():
            p.fill_(3.0)
        for p in m.net.decoder_psi.parameters():
            p.fill_(5.0)
        m.net.decoder_theta.block_six.ops[0].norm.running_mean.fill_(7.0)
    assert m.aggregate() == 54  # every D_θ parameter has its D_ξ namesake
    for p in m.net.decoder_theta.parameters():
        torch.testing.assert_close(p, torch.full_like(p, 0.99 * 1 + 0.01 * (3 + 5) / 2))
    assert all((p == 3).all() for p in m.net.decoder_xi.parameters())  # the sources are untouched
    assert all((p == 5).all() for p in m.net.decoder_psi.parameters())
    assert (m.net.decoder_theta.block_six.ops[0].norm.running_mean == 7).all()  # BN statistics not averaged
    m.before_optimizer_step(0)  # the loop's hook does the same
    p = next(m.net.decoder_theta.parameters())
    torch.testing.assert_close(p, torch.full_like(p, 0.99 * 1.03 + 0.01 * 4))
    m2 = make(n_classes=2, ema_w=0.5)
    with torch.no_grad():
        for dec, v in ((m2.net.decoder_theta, 0.0), (m2.net.decoder_xi, 2.0), (m2.net.decoder_psi, 4.0)):
            for q in dec.parameters():
                q.fill_(v)
    m2.aggregate()
    assert all(torch.allclose(q, torch.full_like(q, 1.5)) for q in m2.net.decoder_theta.parameters())


# ------------------------------------------------------------------------------------------------ gradients
def test_unlabeled_loss_reaches_d_theta_and_the_encoder_only():
    m = make(n_classes=3)
    m.train()
    img_u = torch.randn(1, 1, *SHAPE)
    pseudo = m.pseudo_label(img_u)
    assert not pseudo.requires_grad and pseudo.dtype == torch.long and pseudo.shape == (1, *SHAPE)
    m.unlabeled_loss(img_u, pseudo).backward()

    def has_grad(module):
        return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())

    assert has_grad(m.net.decoder_theta) and has_grad(m.net.encoder) and has_grad(m.net.embedding.emb)
    assert not has_grad(m.net.decoder_psi) and not has_grad(m.net.decoder_xi)
    assert not has_grad(m.net.denoise_model.embedding_diffusion)


def test_training_step_losses_and_mu_ramp():
    m = make(n_classes=3, iterations=100)
    m.train()
    lab, unl = batches(3)
    m.before_optimizer_step(0)
    out = m.training_step(lab, unl, 0)
    assert {"total", "denoise", "labeled", "unlabeled", "mu"} <= set(out)
    mu0 = 10.0 * math.exp(-5.0)
    assert math.isclose(out["mu"].item(), mu0, rel_tol=1e-6)
    torch.testing.assert_close(out["total"].detach(), out["denoise"] + out["labeled"] + mu0 * out["unlabeled"])
    out["total"].backward()
    for part in (m.net.decoder_xi, m.net.decoder_psi, m.net.decoder_theta, m.net.encoder,
                 m.net.denoise_model.embedding_diffusion):
        assert any(p.grad is not None for p in part.parameters())
    assert math.isclose(m.mu(50), 10.0 * math.exp(-5 * 0.25)) and m.mu(100) == m.mu(500) == 10.0
    assert not torch.equal(m.difficulty.weights, torch.full((3,), 3.0))  # the class weights moved


# ------------------------------------------------------------------------------------------------ settings
def test_ad_setting_names_the_four_settings():
    a, b, c = "scanner-a", "scanner-b", "scanner-c"
    assert ad_setting(2, [a], [a], [a]) == "ssl"
    assert ad_setting(2, [], [], []) == "ssl"
    assert ad_setting(4, [a], [a], [a], class_fractions=[0.9, 0.08, 0.015, 0.0008]) == "imbalanced"
    assert ad_setting(4, [a], [a], [a], class_fractions=[0.4, 0.2, 0.2, 0.2]) == "ssl"
    assert ad_setting(4, [a], [a], [a], class_fractions=[0.08, 0.015, 0.0008]) == "imbalanced"  # foreground only
    assert ad_setting(4, [a], [a], [a]) == "imbalanced"  # multi-class, sizes unknown
    assert ad_setting(2, [a], [b], [b]) == "uda"  # labeled source, unlabeled target, test on target
    assert ad_setting(5, [0], [1], []) == "uda"
    assert ad_setting(4, [a, b], [a, b], [c]) == "ssdg"  # several sources with few labels, unseen test domain
    assert ad_setting(2, [a], [a], [b]) == "ssdg"
    assert ad_setting(2, [a], [a, b], [a]) == "ssl"  # extra unlabeled domain, tested on the labeled one
    with pytest.raises(ConfigError):
        ad_setting(4, [a], [a], [a], class_fractions=[0.5, 0.5])


@pytest.mark.parametrize("options, setting", [
    ({}, "ssl"),
    ({"setting": "imbalanced"}, "imbalanced"),
    ({"labeled_domains": ["scanner-a"], "unlabeled_domains": ["scanner-b"], "test_domains": ["scanner-b"]}, "uda"),
    ({"labeled_domains": [0, 1], "unlabeled_domains": [0, 1], "test_domains": [2]}, "ssdg"),
])
def test_method_picks_the_setting_configuration(options, setting):
    m = make(n_classes=2, iterations=300, **options)
    assert m.setting == setting and m.setting_config == SETTING_CONFIG[setting]
    expected_rampup = 100 / 300 if setting == "ssdg" else 1.0  # M&Ms runs with -cr 100 of 300 epochs
    assert math.isclose(m.rampup, expected_rampup)
    assert math.isclose(m.mu(100), 10.0 if setting == "ssdg" else 10.0 * math.exp(-5 * (2 / 3) ** 2))
    assert make(n_classes=2, rampup=0.5, **options).rampup == 0.5


def test_settings_train_on_domain_tagged_batches():
    # UDA: labeled on domain 0, unlabeled (and test) on domain 1; SSDG: two sources, test on unseen 2.
    uda = make(n_classes=2, n_domains=3, labeled_domains=[0], unlabeled_domains=[1], test_domains=[1])
    ssdg = make(n_classes=2, n_domains=3, labeled_domains=[0, 1], unlabeled_domains=[0, 1], test_domains=[2])
    assert (uda.setting, ssdg.setting) == ("uda", "ssdg")
    uda.train()
    lab, unl = batches(2, dom_l=0, dom_u=1)
    out = uda.training_step(lab, unl, 0)
    assert torch.isfinite(out["total"])
    seen_l, seen_u = uda.observed_domains()
    assert (seen_l, seen_u) == ([0], [1]) and ad_setting(2, seen_l, seen_u, [1]) == "uda"
    ssdg.train()
    for i, d in enumerate((0, 1)):
        lab, unl = batches(2, seed=i, dom_l=d, dom_u=1 - d)
        assert torch.isfinite(ssdg.training_step(lab, unl, i)["total"])
    seen_l, seen_u = ssdg.observed_domains()
    assert ad_setting(2, seen_l, seen_u, [2]) == "ssdg"
    # The recorded domains are method state (checkpointed).
    assert "seen_domains" in ssdg.state_dict()


def test_bad_options_are_refused():
    with pytest.raises(ConfigError):
        make(setting="semi")
    with pytest.raises(ConfigError):
        make(xi_probs="hard")
    with pytest.raises(ConfigError):
        make(learning_rate=1.0)


# ------------------------------------------------------------------------------------------------ plumbing
def test_registry_inference_network_and_checkpoint():
    assert "ad" in method_names()
    desc = {d["name"]: d for d in describe_methods()}["ad"]
    assert desc["options"]["n_filters"]["default"] == 32 and desc["options"]["setting"]["default"] == "auto"
    m = make(n_classes=3)
    assert m.preferred_optimizer["optimizer"] == "sgd" and m.preferred_optimizer["nesterov"] is True
    infer = m.inference_network()
    assert infer is m.inference_network()
    assert infer.semiseg_arch["name"] == "diffvnet-infer"
    assert {k.split(".")[0] for k in infer.state_dict()} == {"embedding", "encoder", "decoder_theta"}
    img = torch.randn(1, 1, *SHAPE)
    infer.eval()
    with torch.no_grad():
        torch.testing.assert_close(infer(img), m.net(img, mode="theta"))
        # Shared tensors: aggregation shows up in the inference network.
        before = infer(img)
        for p in m.net.decoder_xi.parameters():
            p.add_(1.0)
        m.aggregate()
        assert not torch.allclose(infer(img), before)
    # A model package rebuilds it from {"name", "args"} and the state_dict alone.
    arch = infer.semiseg_arch
    rebuilt = build_network(arch["name"], **arch["args"]).eval()
    buf = io.BytesIO()
    torch.save(infer.state_dict(), buf)
    buf.seek(0)
    rebuilt.load_state_dict(torch.load(buf, weights_only=True))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(img), infer(img))
    # The method's whole state (difficulty EMAs included) round-trips with weights_only=True.
    m.train()
    lab, unl = batches(3)
    m.training_step(lab, unl, 0)
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    fresh = make(n_classes=3)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    torch.testing.assert_close(fresh.difficulty.weights, m.difficulty.weights)
    torch.testing.assert_close(fresh.difficulty.last_dice, m.difficulty.last_dice)


def test_a_few_iterations_lower_the_loss():
    from semiseg.synthetic import make_phantom

    def case(seed):
        image, label = make_phantom(shape=SHAPE, seed=seed)
        img = torch.from_numpy(np.asarray(image.array, dtype=np.float32))
        img = (img - img.mean()) / (img.std() + 1e-6)
        lab = torch.from_numpy(np.asarray(label.array)).long().clamp_max(1)  # organ-vs-rest, binary
        return img[None, None], lab[None]

    (i0, l0), (i1, l1), (u0, _), (u1, _) = case(0), case(1), case(2), case(3)
    labeled = {"image": torch.cat([i0, i1]), "label": torch.cat([l0, l1])}
    unlabeled = {"image": torch.cat([u0, u1])}
    torch.manual_seed(0)
    # μ stays near its ramp start (1000 planned iterations); the bottleneck/last-feature Dropout3d(0.5) is off
    # at this width (8 channels), and Adam runs at the authors' base lr.
    m = make(n_classes=2, iterations=1000, n_filters=8, dropout=False)
    opt = torch.optim.Adam(m.trainable().parameters(), lr=1e-2)
    totals = []
    for step in range(25):
        m.train()
        m.before_optimizer_step(step)
        losses = m.training_step(labeled, unlabeled, step)
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
        m.after_optimizer_step(step)
        totals.append(losses["total"].item())
    first, last = np.mean(totals[:5]), np.mean(totals[-5:])
    assert last < 0.8 * first, totals


@pytest.mark.parametrize("domains, expected", [
    ({"labeled_domains": ("scanner-a",), "unlabeled_domains": ("scanner-b",), "test_domains": ("scanner-b",)}, "uda"),
    ({"labeled_domains": ("scanner-a", "scanner-b"), "test_domains": ("scanner-c",)}, "ssdg"),
    ({}, "imbalanced"),  # the phantoms' lesion is ~1 % of the organ
])
def test_the_training_loop_hands_the_data_setting_to_ad(tmp_path, domains, expected):
    from semiseg.events import EventWriter
    from semiseg.synthetic import make_dataset
    from semiseg.train import TrainConfig, _Trainer

    data = make_dataset(tmp_path / "data", n_labeled=2, n_unlabeled=2, n_test=1, shape=(16, 16, 16), **domains)
    trainer = _Trainer(TrainConfig(data=str(data), out=str(tmp_path / "m.semiseg"), method="ad", iterations=2,
                                   patch=[16, 16, 16], method_options={"n_filters": 4}, device="cpu",
                                   progress=False, val_cases=0), EventWriter(None))
    assert trainer.method._resolve_setting() == expected
