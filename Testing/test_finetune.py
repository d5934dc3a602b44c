"""Fine-tuning: a parent package's weights, remapped by structure name, into every method (what each of its
parts starts from); see test_finetune_train.py for `semiseg train --init` itself."""

from __future__ import annotations

import pytest
import torch

from semiseg.finetune import NEW_CHANNEL_BIAS, open_parent
from semiseg.methods import MethodContext, build_method
from semiseg.model import save_model
from semiseg.nets import build_network

PREP = {"spacing": None, "intensity": "zscore", "ct_window": [-125.0, 275.0], "percentiles": [0.5, 99.5]}


def _randomise(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Weights and norm statistics far from their initialisation, so a copy is recognisable."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, t in net.state_dict().items():
            if key.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.75)
            elif t.dtype.is_floating_point:
                t.copy_(torch.randn(t.shape, generator=g) * 0.2)
    return net.eval()


def _save_parent(path, net, labels: list[str], tasks: dict[str, list[str]] | None = None, method="supervised"):
    tasks = tasks or {"default": labels}
    task_of = {n: t for t, names in tasks.items() for n in names}
    card = {"name": path.stem, "labels": [{"name": n, "value": i + 1, "task": task_of[n]} for i, n in enumerate(labels)],
            "tasks": [{"name": t, "index": i, "labels": names} for i, (t, names) in enumerate(tasks.items())],
            "prompted": bool(getattr(net, "prompted", False)), "patch_size": [16, 16, 16], "preprocessing": PREP,
            "method": {"name": method, "options": {}}, "data": {"dataset": "parent data"}}
    return save_model(path, net, card)


def _method(name: str, n_classes: int, task_classes=None, **options):
    context = MethodContext(n_classes=n_classes, total_iterations=10, task_classes=task_classes or [],
                            n_tasks=len(task_classes or []) or 1, options=options)
    return build_method(name, context).eval()


X = torch.rand(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(3))
X32 = torch.rand(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(4))  # InstanceNorm needs a >1³ bottleneck


def _assert_new_channel_from_background(new_logits, parent_logits, mapping):
    for k, source in enumerate(mapping):
        if source is None:
            torch.testing.assert_close(new_logits[:, k], parent_logits[:, 0] + NEW_CHANNEL_BIAS)
        else:
            torch.testing.assert_close(new_logits[:, k], parent_logits[:, source])


@pytest.mark.parametrize("names", [["organ", "vessel", "lesion"], ["lesion", "Organ", "vessel"]])
def test_plain_network_keeps_known_channels_and_starts_a_new_one_from_background(tmp_path, names):
    parent_net = _randomise(build_network("vnet", in_channels=1, n_classes=3, n_filters=2, norm="batch", dropout=0.0))
    path = _save_parent(tmp_path / "p.semiseg", parent_net, ["organ", "vessel"])
    parent = open_parent(path, names, ["default"])
    assert parent.classes == ([0, 1, 2, None] if names[0] == "organ" else [0, None, 1, 2])
    method = _method("supervised", 4, n_filters=2)
    method.load_parent(parent)
    with torch.no_grad():
        _assert_new_channel_from_background(method.net(X), parent_net(X), parent.classes)
    # At the start the parent's segmentation is unchanged and the new structure gets a tenth of background.
    probs = method.net(X).softmax(1)
    assert torch.allclose(probs[:, parent.new_structures[0]], probs[:, 0] / 10, rtol=1e-4)


@pytest.mark.parametrize("inference", ["student", "teacher"])
def test_mean_teacher_student_and_teacher_both_start_from_the_package(tmp_path, inference):
    parent_net = _randomise(build_network("vnet", in_channels=1, n_classes=2, n_filters=2, norm="batch", dropout=0.0))
    path = _save_parent(tmp_path / "p.semiseg", parent_net, ["organ"], method="mean-teacher")
    method = _method("mean-teacher", 2, n_filters=2, inference=inference)
    method.load_parent(open_parent(path, ["organ"], ["default"]))
    for net in (method.net, method.teacher):
        for key, value in parent_net.state_dict().items():
            torch.testing.assert_close(net.state_dict()[key], value)


def test_ad_decoders_start_from_the_packaged_decoder(tmp_path):
    method = _method("ad", 3, n_filters=2)
    parent_net = _randomise(build_network("diffvnet-infer", **method._arch_args()))
    path = _save_parent(tmp_path / "p.semiseg", parent_net, ["organ", "vessel"], method="ad")
    method.load_parent(open_parent(path, ["organ", "vessel"], ["default"]))
    net = method.net
    with torch.no_grad():
        torch.testing.assert_close(method.inference_network()(X), parent_net(X))
    theta = parent_net.decoder_theta.state_dict()
    for key, value in net.decoder_psi.state_dict().items():
        torch.testing.assert_close(value, theta[key])
    xi = net.decoder_xi.state_dict()
    shared = [k for k in xi if k in theta]
    assert len(shared) == len(theta)  # every D_θ tensor has its D_ξ counterpart
    for key in shared:
        torch.testing.assert_close(xi[key], theta[key])
    stem = net.denoise_model.embedding_diffusion.emb.ops[0].conv.weight
    torch.testing.assert_close(stem[:, :1], parent_net.embedding.emb.ops[0].conv.weight)


def test_dual_contrast_both_subnetworks_start_from_the_package(tmp_path):
    parent_net = _randomise(build_network("dual-vnet-resnet", in_channels=1, n_classes=2, n_filters=2,
                                          norm="batch", dropout=0.5))
    path = _save_parent(tmp_path / "p.semiseg", parent_net, ["organ"], method="dual-contrast")
    method = _method("dual-contrast", 3, n_filters=2)
    parent = open_parent(path, ["organ", "vessel"], ["default"])
    method.load_parent(parent)
    with torch.no_grad():
        for ours, theirs in zip(method.net.subnetworks(), parent_net.subnetworks()):
            _assert_new_channel_from_background(ours(X), theirs(X), parent.classes)


def test_versemi_known_tasks_answer_as_before_and_new_tasks_and_channels_are_added(tmp_path):
    parent_net = _randomise(build_network("vnet-dynamic", in_channels=1, task_classes=[[1], [2]], n_filters=2,
                                          head_channels=8, last_skip=False, released_head=False))
    path = _save_parent(tmp_path / "p.semiseg", parent_net, ["organ", "lesion"],
                        tasks={"organs": ["organ"], "lesions": ["lesion"]}, method="versemi")
    # New data: "organs" gains a vessel (appended), a new task "tumours"; tasks are sorted by name.
    names = ["organ", "lesion", "vessel", "tumour"]
    tasks = ["lesions", "organs", "tumours"]
    parent = open_parent(path, names, tasks)
    method = _method("versemi", 5, task_classes=[[2], [1, 3], [4]], n_filters=2)
    method.load_parent(parent)
    net = method.net.eval()
    with torch.no_grad():
        # organs: parent prompt 0 → prompt 1 here; channels bg, organ kept, vessel new from background.
        old, new = parent_net(X32, task=0), net(X32, task=1)
        torch.testing.assert_close(new[:, :2], old)
        torch.testing.assert_close(new[:, 2], old[:, 0] + NEW_CHANNEL_BIAS)
        torch.testing.assert_close(net(X32, task=0)[:, :2], parent_net(X32, task=1))  # lesions
        torch.testing.assert_close(net(X32, task=3), parent_net(X32, task=2))  # the synthetic union prompt
    enc = net.controller.weight[:, -4:-1]  # the three real task columns
    parent_enc = parent_net.controller.weight[:, -3:-1]
    rows = slice(0, 8 * 8)  # the first dynamic layer's weights: same rows in both
    torch.testing.assert_close(enc[rows, 2], parent_enc[rows].mean(1))  # the new task: the average task


def test_versemi_refuses_a_task_whose_structures_change_order(tmp_path):
    from semiseg.errors import ConfigError
    parent_net = build_network("vnet-dynamic", in_channels=1, task_classes=[[1, 2]], n_filters=2, head_channels=8,
                               last_skip=False, released_head=False)
    path = _save_parent(tmp_path / "p.semiseg", parent_net, ["organ", "vessel"], method="versemi")
    parent = open_parent(path, ["vessel", "organ"], ["default"])
    method = _method("versemi", 3, task_classes=[[1, 2]], n_filters=2)
    with pytest.raises(ConfigError, match="keep the parent's structures in their order"):
        method.load_parent(parent)
