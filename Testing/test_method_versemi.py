"""VerSemi: task-prompted dynamic head, CutMix synthetic task, unlabeled aggregated-vs-synthetic consistency."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from semiseg.errors import ConfigError, ModelError
from semiseg.methods import MethodContext, build_method, describe_methods
from semiseg.methods.cutmix import cutmix_box
from semiseg.methods.versemi import dice_loss
from semiseg.nets import build_network
from semiseg.prompts import merge_task_probabilities

N_STEPS = 20
SH = (16, 32, 32)  # tiny patches: a 1×2×2 bottleneck, enough for the bottleneck's instance norm in training


def method(task_classes=([1], [2]), n_classes=3, iterations=100, **options):
    options.setdefault("n_filters", 4)
    ctx = MethodContext(n_classes=n_classes, n_tasks=len(task_classes), task_classes=[list(c) for c in task_classes],
                        total_iterations=iterations, options=options)
    return build_method("versemi", ctx)


def two_task_batch(n=4, seed=0, shape=SH):
    """Even cases: task 0 (a bright ball, value 1); odd cases: task 1 (a dimmer box, value 2)."""
    g = torch.Generator().manual_seed(seed)
    img = 0.3 * torch.randn(n, 1, *shape, generator=g)
    lab = torch.zeros(n, *shape, dtype=torch.long)
    zz, yy, xx = torch.meshgrid(*[torch.arange(k) for k in shape], indexing="ij")
    for i in range(n):
        c = torch.stack([torch.randint(k // 2 - 2, k // 2 + 3, (), generator=g) for k in shape])
        if i % 2 == 0:
            m = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= 36
            lab[i][m] = 1
            img[i, 0][m] += 2.0
        else:
            m = ((zz - c[0]).abs() <= 4) & ((yy - c[1]).abs() <= 5) & ((xx - c[2]).abs() <= 3)
            lab[i][m] = 2
            img[i, 0][m] += 1.0
    task = torch.tensor([i % 2 for i in range(n)])
    return {"image": img, "label": lab, "task": task}


# -- the network ----------------------------------------------------------------------------------

def test_generated_head_parameters_match_the_reference():
    # Reference: 4 tasks + synthetic, 8 channels, 3 layers + the dead "tumor" output → 180 per sample,
    # controller Conv(256+5 → 180) = 47,160, precls_conv 168, whole model 9.48 M.
    ref = build_network("vnet-dynamic", task_classes=[[1], [2], [3], [4]], released_head=True)
    assert ref.n_head_params == 180 == 8 * 8 + 8 * 8 + 8 * 2 + 8 * 2 + 8 + 8 + 2 + 2
    assert ref.controller.weight.shape == (180, 256 + 5)
    assert sum(p.numel() for p in ref.controller.parameters()) == 47_160
    assert sum(p.numel() for p in ref.precls_conv.parameters()) == 168
    assert round(sum(p.numel() for p in ref.parameters()) / 1e6, 2) == 9.48
    # Without the dead output: the DoDNet head, 3 layers 8→8→8→2.
    assert build_network("vnet-dynamic", task_classes=[[1], [2], [3], [4]]).n_head_params == 162
    # A task with two structures widens the last layer to 3 outputs (padded for the others).
    net = build_network("vnet-dynamic", task_classes=[[1], [2, 3]], n_filters=4)
    assert net.n_head_params == 64 + 8 + 64 + 8 + 8 * 3 + 3
    assert net.task_channels == [2, 3, 2]


def test_task_prompt_changes_the_output_and_the_body_is_shared():
    torch.manual_seed(0)
    net = build_network("vnet-dynamic", task_classes=[[1], [2]], n_filters=4).eval()
    x = torch.randn(1, 1, *SH)
    with torch.no_grad():
        out0, out1, out_syn = (net(x, torch.tensor([t])) for t in (0, 1, 2))
        both = net(x, torch.tensor([[0, 1, 2]]))
    assert out0.shape == (1, 2, *SH)
    assert not torch.allclose(out0, out1, atol=1e-4) and not torch.allclose(out0, out_syn, atol=1e-4)
    # Several prompts in one pass give the same answers as one pass per prompt.
    for t, ref in enumerate((out0, out1, out_syn)):
        assert torch.allclose(both[0, t, :2], ref[0], atol=1e-5)
    # The one-hot reaches the head only through the controller: its task columns are what differ.
    with torch.no_grad():
        ctx, _ = net.body(x)
        p0, p1 = net.head_params(ctx, torch.tensor([0])), net.head_params(ctx, torch.tensor([1]))
    w = net.controller.weight
    c = ctx.shape[1]
    assert torch.allclose(p1 - p0, w[:, c + 1] - w[:, c + 0], atol=1e-5)


def test_padded_channels_and_forward_without_task():
    net = build_network("vnet-dynamic", task_classes=[[1], [2, 3]], n_filters=4).eval()
    x = torch.randn(2, 1, *SH)
    with torch.no_grad():
        assert net(x, torch.tensor([0, 0])).shape == (2, 2, *SH)
        assert net(x, torch.tensor([1, 1])).shape == (2, 3, *SH)
        mixed = net(x, torch.tensor([0, 1]))
    assert mixed.shape == (2, 3, *SH)
    assert torch.all(mixed[0, 2] <= -1e3) and torch.all(mixed.softmax(1)[0, 2] == 0)
    with pytest.raises(ModelError, match="task"):
        net(x)
    with pytest.raises(ModelError, match="out of range"):
        net(x, torch.tensor([3, 0]))
    # The model package rebuilds it from {"name", "args"}: same outputs, prompts carried in the args.
    arch = net.semiseg_arch
    assert arch["name"] == "vnet-dynamic" and arch["args"]["task_classes"] == [[1], [2, 3]]
    again = build_network(arch["name"], **arch["args"])
    again.load_state_dict(net.state_dict())
    again.eval()
    assert again.prompted is True and again.n_tasks == 2
    with torch.no_grad():
        assert torch.allclose(again(x, torch.tensor([1, 1])), net(x, torch.tensor([1, 1])))


# -- CutMix and the synthetic / task-specific supervision -------------------------------------------

def test_cutmix_box_has_the_configured_size():
    torch.manual_seed(1)
    for ratio in (2 / 3, 0.3, 0.6):
        keep = cutmix_box((3, 32, 32, 16), ratio)
        for i in range(3):
            cube = (keep[i] == 0).nonzero()
            sides = (cube.max(0).values - cube.min(0).values + 1).tolist()
            assert sides == [int(32 * ratio), int(32 * ratio), int(16 * ratio)]
            assert len(cube) == np.prod(sides)                 # one solid cube
    # Stage 2 draws the ratio from mask_ratio_range per iteration.
    m = method(mask_ratio_range=[0.3, 0.6])
    b = two_task_batch(2)
    seen = set()
    for seed in range(8):
        torch.manual_seed(seed)
        with torch.no_grad():
            *_, keep = m.unlabeled_terms(b, {"image": torch.randn(2, 1, *SH)})
        cube = (keep[0] == 0).nonzero()
        side = int(cube[:, 1].max() - cube[:, 1].min() + 1)
        assert int(0.3 * 32) <= side <= int(0.6 * 32)
        seen.add(side)
    assert len(seen) > 2


def test_labeled_mix_targets_union_and_task_specific_regions():
    m = method()
    b = two_task_batch(4)
    local = m.local_labels(b["label"], b["task"])
    assert set(local[1].unique().tolist()) == {0, 1} and int(local[1].max()) == 1   # value 2 → channel 1 of task 1
    # Task 1's local labels never see task 0's structure.
    assert torch.equal(m.local_labels(b["label"], torch.tensor([1, 1, 1, 1]))[0], torch.zeros(*SH, dtype=torch.long))

    captured = {}
    real = m.prompt

    def spy(image, tasks):
        captured.setdefault("calls", []).append((image, tasks))
        return real(image, tasks)

    m.prompt = spy
    torch.manual_seed(3)
    l_syn, l_spec = m.labeled_mix(b["image"], b["label"], b["task"], 0.5, True)
    img_mix, tasks = captured["calls"][0]
    # pairs (0, 2) and (1, 3): prompts are [synthetic, task_a, task_b]
    assert tasks.tolist() == [[2, 0, 0], [2, 1, 1]]
    torch.manual_seed(3)
    keep = cutmix_box((2, *SH), 0.5)
    assert torch.allclose(img_mix, b["image"][[0, 1]] * keep[:, None] + b["image"][[2, 3]] * (1 - keep[:, None]))
    union = (b["label"][[0, 1]] > 0).float() * keep + (b["label"][[2, 3]] > 0).float() * (1 - keep)
    with torch.no_grad():
        logits = m.net(img_mix, tasks)
    assert torch.isclose(l_syn, dice_loss(logits[:, 0].softmax(1)[:, 1], union), atol=1e-5)
    assert torch.isfinite(l_spec) and 0 <= float(l_spec.detach()) <= 1


def _mix_with(m, batch, seed=3):
    """labeled_mix's (L_syn, L_spec) with the prompted logits and cube it used."""
    captured = []
    real = m.prompt
    m.prompt = lambda image, tasks: captured.append((image, tasks)) or real(image, tasks)
    torch.manual_seed(seed)
    losses = m.labeled_mix(batch["image"], batch["label"], batch["task"], 0.5, True)
    torch.manual_seed(seed)
    keep = cutmix_box((1, *SH), 0.5)
    with torch.no_grad():
        logits = m.net(*captured[0])
    return losses, captured, logits, keep


@pytest.mark.parametrize("region", ["image", "own", "off"])
def test_specific_region_scores_each_task_where_its_labels_hold(region):
    # One pair of different tasks: a (task 0, outside the cube) and b (task 1, inside it).
    torch.manual_seed(0)
    m = method(specific_region=region)
    b = two_task_batch(2)
    (l_syn, l_spec), calls, logits, keep = _mix_with(m, b)
    if region == "off":
        assert float(l_spec) == 0 and calls[0][1].tolist() == [[2]]      # only the synthetic prompt is run
        return
    loc_a = m.local_labels(b["label"][[0]], torch.tensor([0])) * keep.long()
    loc_b = m.local_labels(b["label"][[1]], torch.tensor([1])) * (1 - keep.long())
    p_a, p_b = logits[:, 1].softmax(1)[:, 1], logits[:, 2].softmax(1)[:, 1]
    if region == "own":   # the other case's region is not scored: it may hold this task's structures unlabeled
        p_a, p_b = p_a * keep, p_b * (1 - keep)
    expected = (dice_loss(p_a, loc_a == 1) + dice_loss(p_b, loc_b == 1)) / 2
    assert torch.isclose(l_spec, expected, atol=1e-5)


def test_specific_region_own_is_the_reference_when_both_cases_share_a_task():
    b = two_task_batch(4)
    b["task"] = torch.zeros(4, dtype=torch.long)
    b["label"] = (b["label"] > 0).long()
    spec = {}
    for region in ("image", "own"):
        torch.manual_seed(0)
        (_, spec[region]), *_ = _mix_with(method(specific_region=region), b)
    assert torch.isclose(spec["image"], spec["own"], atol=1e-6)
    with pytest.raises(ConfigError, match="specific_region"):
        method(specific_region="cube")


# -- stage 2: aggregated prediction vs synthetic task ------------------------------------------------

def test_aggregated_prediction_is_the_max_over_task_heads():
    torch.manual_seed(0)
    m = method(task_classes=([1], [2, 3]), n_classes=4).eval()
    b = two_task_batch(2)
    un = {"image": torch.randn(2, 1, *SH)}
    with torch.no_grad():
        torch.manual_seed(5)
        l_agg, l_cube, p_syn, p_agg, keep = m.unlabeled_terms(b, un)
        x = un["image"] * keep[:, None] + b["image"] * (1 - keep[:, None])
        fg = [1 - m.net(x, torch.full((2,), k)).softmax(1)[:, 0] for k in range(2)]
        syn = m.net(x, torch.full((2,), 2)).softmax(1)[:, 1]
    assert torch.allclose(p_agg, torch.maximum(fg[0], fg[1]), atol=1e-5)
    assert torch.allclose(p_syn, syn, atol=1e-5)
    assert torch.isclose(l_agg, dice_loss(syn, torch.maximum(fg[0], fg[1])), atol=1e-5)
    # With one structure per task the foreground is the reference's channel 1.
    logits = torch.randn(2, 3, 2, 4, 4, 4)
    assert torch.allclose(m.aggregate(logits), logits.softmax(2)[:, :, 1].max(1).values, atol=1e-6)


def test_stage2_cube_mask_has_the_label_shape():
    torch.manual_seed(0)
    m = method()
    b = two_task_batch(2)
    un = {"image": torch.randn(2, 1, *SH)}
    torch.manual_seed(7)
    _, l_cube, p_syn, _, keep = m.unlabeled_terms(b, un)
    assert keep.shape == b["label"].shape
    y = (b["label"] > 0).float()
    assert torch.isclose(l_cube, dice_loss(p_syn * (1 - keep), y * (1 - keep)), atol=1e-6)
    # The released code's mask broadcasts (B,1,D,H,W)·(B,D,H,W) to (B,B,D,H,W): a different loss.
    released = method(cube_mask="released")
    released.load_state_dict(m.state_dict())
    torch.manual_seed(7)
    _, l_rel, p_rel, _, keep_rel = released.unlabeled_terms(b, un)
    assert torch.equal(keep_rel, keep)
    assert (p_rel * (1 - keep_rel[:, None])).shape == (2, 2, *SH)
    assert not torch.isclose(l_rel, l_cube, atol=1e-4)


def test_unlabeled_consistency_gradients_reach_the_network():
    torch.manual_seed(0)
    m = method()
    b = two_task_batch(2)
    un = {"image": torch.randn(2, 1, *SH)}
    l_agg, *_ = m.unlabeled_terms(b, un)
    l_agg.backward()
    first_conv = m.net.encoder.block_one[0].weight.grad
    assert first_conv is not None and first_conv.abs().sum() > 0
    assert m.net.controller.weight.grad.abs().sum() > 0
    # Both sides get gradient (the aggregate is not detached): the synthetic prompt's one-hot column and
    # the column of the real task(s) winning the voxel-wise max.
    c = m.net.controller.weight.shape[1] - m.net.n_prompts
    g = m.net.controller.weight.grad[:, c:].abs().sum(0)
    assert g[2] > 0 and g[:2].sum() > 0
    m.zero_grad()
    detached = method(detach_aggregate=True)
    detached.load_state_dict(m.state_dict())
    l_agg, *_ = detached.unlabeled_terms(b, un)
    l_agg.backward()
    g = detached.net.controller.weight.grad[:, c:].abs().sum(0)
    assert g[2] > 0 and g[0] == 0 and g[1] == 0


# -- schedule, options, single task ----------------------------------------------------------------

def test_stage_schedule_and_options():
    m = method(stage1_fraction=0.25, iterations=40)
    assert m.uses_unlabeled and m.stage(9) == 1 and m.stage(10) == 2
    only1 = method(stage1_fraction=1.0, iterations=40)
    assert not only1.uses_unlabeled and only1.stage(39) == 1
    b = two_task_batch(2)
    out = only1.training_step(b, None, 39)
    assert float(out["stage"]) == 1 and {"supervised", "synthetic", "specific"} <= set(out)
    out = m.training_step(b, {"image": torch.randn(2, 1, *SH)}, 30)
    assert float(out["stage"]) == 2 and {"aggregate_consistency", "labeled_cube", "synthetic"} <= set(out)
    assert torch.isclose(out["total"].detach(), out["supervised"] + out["synthetic"] + out["aggregate_consistency"]
                         + out["labeled_cube"], atol=1e-5)
    opts = {d["name"]: d["options"] for d in describe_methods()}["versemi"]
    assert opts["task_balanced"]["default"] is False and "stage1_fraction" in opts
    assert type(m).preferred_optimizer["betas"] == [0.5, 0.999]
    with pytest.raises(ConfigError):
        method(nonsense=1)
    with pytest.raises(ConfigError):
        method(cube_mask="wrong")


def test_single_task_works_in_both_stages():
    m = method(task_classes=([1],), n_classes=2, iterations=10)
    assert m.net.n_tasks == 1 and m.net.synthetic_task == 1
    b = two_task_batch(2)
    b = {"image": b["image"], "label": (b["label"] > 0).long(), "task": torch.zeros(2, dtype=torch.long)}
    for step in (0, 9):
        out = m.training_step(b, {"image": torch.randn(3, 1, *SH)}, step)
        out["total"].backward()
        assert torch.isfinite(out["total"])
    # a batch of one mixes with itself
    one = {k: v[:1] for k, v in b.items()}
    assert torch.isfinite(m.training_step(one, {"image": torch.randn(1, 1, *SH)}, 0)["total"])


# -- prompts at inference ------------------------------------------------------------------------------

def test_merge_task_probabilities_more_confident_prompt_wins():
    # voxel 0: only task A claims (value 1); voxel 1: both claim, B more confident (value 3);
    # voxel 2: both claim, A more confident; voxel 3: nobody claims.
    pa = torch.tensor([[0.2, 0.3, 0.1, 0.9], [0.8, 0.7, 0.9, 0.1]])                     # A: values [1]
    pb = torch.tensor([[0.9, 0.1, 0.4, 0.8], [0.05, 0.1, 0.5, 0.1], [0.05, 0.8, 0.1, 0.1]])  # B: values [2, 3]
    lab = merge_task_probabilities([([1], pa), ([2, 3], pb)])
    assert lab.tolist() == [1, 3, 1, 0]
    assert merge_task_probabilities([([2, 3], pb)]).tolist() == [0, 3, 2, 0]
    out = merge_task_probabilities([([1], pa.numpy()), ([2, 3], pb.numpy())])
    assert isinstance(out, np.ndarray) and out.tolist() == [1, 3, 1, 0]
    with pytest.raises(ModelError):
        merge_task_probabilities([([1, 2], pa)])


# -- it learns ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("stage1_fraction", [1.0, 0.0])
def test_a_few_iterations_lower_the_loss(stage1_fraction):
    # stage1_fraction 1.0: stage 1 only (supervised + synthetic + task-specific);
    # 0.0: stage 2 throughout (supervised + synthetic + unlabeled aggregated consistency + labeled cube).
    torch.manual_seed(0)
    m = method(n_filters=4, stage1_fraction=stage1_fraction, iterations=N_STEPS)
    opt = torch.optim.Adam(m.trainable().parameters(), lr=1e-3, betas=(0.5, 0.999))
    b = two_task_batch(2, seed=1, shape=(16, 16, 32))
    un = {"image": two_task_batch(2, seed=2, shape=(16, 16, 32))["image"]}
    losses = []
    for step in range(N_STEPS):
        m.train()
        out = m.training_step(b, un, step)
        opt.zero_grad()
        out["total"].backward()
        opt.step()
        losses.append(float(out["total"].detach()))
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5, losses
