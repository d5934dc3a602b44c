"""Supervised and Mean Teacher: the mechanisms, not just that they run."""

import copy

import pytest
import torch

from semiseg.errors import ConfigError
from semiseg.methods import MethodContext, build_method, describe_methods, method_names
from semiseg.methods.base import ema_update, sigmoid_rampup
from semiseg.methods.cutmix import cutmix_box, mix_with_previous
from semiseg.methods.mean_teacher import CUTMIX_SIDE


def context(**options):
    return MethodContext(n_classes=2, total_iterations=100, options={"n_filters": 4, **options})


def batch(seed=0, b=2, shape=(16, 16, 16)):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(b, 1, *shape, generator=g)
    label = (image[:, 0] > 0.5).long()
    return {"image": image, "label": label}, {"image": torch.randn(b, 1, *shape, generator=g)}


def test_registry_lists_every_method_with_options():
    assert method_names()[:2] == ["supervised", "mean-teacher"]
    assert {"ad", "versemi", "dual-contrast"} <= set(method_names())
    described = {m["name"]: m for m in describe_methods()}
    assert described["mean-teacher"]["options"]["ema_decay"]["default"] == 0.99
    assert all(m["description"] for m in described.values())


def test_mean_teachers_default_departs_from_ua_mt_only_in_the_weight_and_the_mix_and_recipe_authors_restores_it():
    default = build_method("mean-teacher", context())
    assert default.opts["consistency"] == 1.0 and default.consistency_weight(100) == pytest.approx(1.0)
    authors = build_method("mean-teacher", context(recipe="authors"))
    # UA-MT: weight 0.1, reached at the run's last iteration (its ramp spans the run: 40 x 150 of 6,000).
    assert authors.opts["consistency"] == 0.1 and authors.consistency_weight(100) == pytest.approx(0.1)
    assert authors.consistency_weight(40) == pytest.approx(0.1 * sigmoid_rampup(40, 100))
    assert build_method("mean-teacher", context(recipe="authors", consistency=3.0)).opts["consistency"] == 3.0
    described = {m["name"]: m for m in describe_methods()}
    assert described["mean-teacher"]["authors_recipe"] == {"consistency": 0.1, "mix": "none"}
    assert described["supervised"]["authors_recipe"] == {}  # its defaults are the recipe
    # Every other option of the default recipe is the authors'.
    default, theirs = (build_method("mean-teacher", context(**o)).opts for o in ({}, {"recipe": "authors"}))
    assert {k for k in default if default[k] != theirs[k]} == {"consistency", "mix", "recipe"}
    with pytest.raises(ConfigError, match="recipe must be one of default, authors"):
        build_method("mean-teacher", context(recipe="paper"))


def test_unknown_method_and_unknown_option_are_clear_errors():
    with pytest.raises(ConfigError, match="unknown method"):
        build_method("fixmatch", context())
    with pytest.raises(ConfigError, match="no option"):
        build_method("mean-teacher", context(ema_decai=0.9))


def test_supervised_ignores_unlabeled_data():
    method = build_method("supervised", context())
    labeled, unlabeled = batch()
    assert not method.uses_unlabeled
    torch.manual_seed(0)
    a = method.training_step(labeled, None, 0)["total"]
    torch.manual_seed(0)
    b = method.training_step(labeled, unlabeled, 0)["total"]
    assert torch.equal(a, b)


def test_ema_update_covers_parameters_and_batchnorm_buffers():
    method = build_method("mean-teacher", context())
    student, teacher = method.net, method.teacher
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    labeled, _ = batch()
    student.train()
    student(labeled["image"])  # moves BatchNorm running statistics
    before = copy.deepcopy(teacher.state_dict())
    ema_update(teacher, student, 0.9)
    after, s = teacher.state_dict(), student.state_dict()
    for key, value in after.items():
        if value.dtype.is_floating_point:
            assert torch.allclose(value, 0.9 * before[key] + 0.1 * s[key], atol=1e-6), key
        else:
            assert torch.equal(value, s[key]), key  # num_batches_tracked is copied
    assert any("running_mean" in k for k in after)


def test_teacher_decay_ramps_up_to_the_configured_value():
    method = build_method("mean-teacher", context(ema_decay=0.99))
    with torch.no_grad():
        for p in method.net.parameters():
            p.fill_(1.0)
        for p in method.teacher.parameters():
            p.fill_(0.0)
    method.after_optimizer_step(0)  # decay min(1 - 1/2, 0.99) = 0.5
    assert torch.allclose(next(method.teacher.parameters()), torch.tensor(0.5))


def test_unlabeled_consistency_reaches_the_student_and_not_the_teacher():
    # Same weights, same batch, same teacher noise; only the consistency weight differs.
    on = build_method("mean-teacher", context(consistency=1.0, rampup=0.0))
    off = build_method("mean-teacher", context(consistency=0.0, rampup=0.0))
    off.load_state_dict(on.state_dict())
    with torch.no_grad():  # a teacher that disagrees with the student, so the consistency term is not ~0
        for p in on.teacher.parameters():
            p.add_(0.1 * torch.randn_like(p))
    off.teacher.load_state_dict(on.teacher.state_dict())
    labeled, unlabeled = batch()
    grads = []
    for method in (on, off):
        torch.manual_seed(0)
        method.training_step(labeled, unlabeled, 50)["total"].backward()
        assert all(p.grad is None for p in method.teacher.parameters())
        grads.append(torch.cat([p.grad.flatten() for p in method.net.parameters()]))
    assert not torch.allclose(grads[0], grads[1])


def test_student_sees_labeled_and_unlabeled_patches_in_one_pass():
    # UA-MT's `model(volume_batch)`: one forward over both halves, so BatchNorm normalises them together;
    # the twin passes the labeled half alone.
    sizes = {}
    for twin in (False, True):
        method = build_method("mean-teacher", context(unlabeled=not twin))
        seen = []
        method.net.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
        method.training_step(*batch(b=2), 10)
        sizes[twin] = seen
    assert sizes == {False: [4], True: [2]}


def test_consistency_weight_follows_the_sigmoid_ramp():
    method = build_method("mean-teacher", context(consistency=0.1, rampup=0.5))
    assert method.consistency_weight(0) == pytest.approx(0.1 * sigmoid_rampup(0, 50))
    assert method.consistency_weight(25) == pytest.approx(0.1 * torch.exp(torch.tensor(-5 * 0.25)).item())
    assert method.consistency_weight(50) == pytest.approx(0.1)
    assert method.consistency_weight(99) == pytest.approx(0.1)


def test_teacher_is_in_the_checkpointed_state():
    method = build_method("mean-teacher", context())
    keys = method.state_dict().keys()
    assert any(k.startswith("teacher.") for k in keys) and any(k.startswith("net.") for k in keys)
    with torch.no_grad():
        next(method.teacher.parameters()).fill_(3.0)
    restored = build_method("mean-teacher", context())
    restored.load_state_dict(method.state_dict())
    assert torch.equal(next(restored.teacher.parameters()), next(method.teacher.parameters()))


def test_inference_network_is_student_or_teacher_as_configured():
    assert build_method("mean-teacher", context()).inference_network() is not None
    m = build_method("mean-teacher", context(inference="teacher"))
    assert m.inference_network() is m.teacher
    m = build_method("mean-teacher", context())
    assert m.inference_network() is m.net


def test_cutmix_mixes_the_students_unlabeled_input_and_the_teachers_target_with_the_same_boxes():
    method = build_method("mean-teacher", context(mix="cutmix", noise=0.0, rampup=0.0))
    labeled, unlabeled = batch(b=3)
    seen = {}
    for name, net in (("student", method.net), ("teacher", method.teacher)):
        net.register_forward_hook(lambda module, args, out, name=name: seen.update({name: args[0]}))
    torch.manual_seed(0)
    method.training_step(labeled, unlabeled, 10)
    torch.manual_seed(0)
    keep = cutmix_box((3, 16, 16, 16), CUTMIX_SIDE)  # the step's first draw
    assert 0.4 < float(1 - keep.mean()) < 0.6  # each box holds about half the patch
    u = unlabeled["image"]
    assert torch.equal(seen["student"][3:], mix_with_previous(u, keep))
    assert torch.equal(seen["student"][3:][1][keep[1][None] == 0], u[0][keep[1][None] == 0])
    assert torch.equal(seen["teacher"], u)  # the teacher sees the patches unmixed
    # A voxel-wise network commutes with the mix: a teacher equal to the student then gives a zero consistency,
    # which holds only if the target is mixed with the student's boxes.
    pointwise = torch.nn.Conv3d(1, 2, 1)
    method.net, method.teacher = pointwise, copy.deepcopy(pointwise)
    assert float(method.training_step(labeled, unlabeled, 10)["consistency"]) < 1e-12
    method.opts["mix"] = "none"
    method.teacher.weight.data.mul_(-1)
    assert float(method.training_step(labeled, unlabeled, 10)["consistency"]) > 1e-4


def test_cutmix_on_one_unlabeled_patch_takes_the_box_from_its_mirror_image_and_the_mix_must_be_known():
    x = torch.arange(2 * 4 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4, 4)
    keep = torch.ones(1, 4, 4, 4)
    keep[0, :2, :2, :2] = 0
    mixed = mix_with_previous(x, keep)
    assert torch.equal(mixed[..., :2, :2, :2], x.flip(-1)[..., :2, :2, :2])
    assert torch.equal(mixed[..., 2:, :, :], x[..., 2:, :, :])
    method = build_method("mean-teacher", context(mix="cutmix"))
    labeled, unlabeled = batch(b=1)
    assert torch.isfinite(method.training_step(labeled, unlabeled, 0)["consistency"])
    with pytest.raises(ConfigError, match="mix must be one of none, cutmix"):
        build_method("mean-teacher", context(mix="mixup"))
