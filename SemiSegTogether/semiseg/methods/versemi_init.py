"""Fine-tuning VerSemi (`train --init`): a parent DynamicVNet onto the new data's tasks and structures.

The body (encoder, decoder, GAP, pre-classifier) is copied as is. The controller, a Linear from
[context ‖ one-hot(prompt)] to the generated head parameters, is remapped on both axes:

- inputs (prompts): a task the parent knows keeps its column; a new task starts from the mean of the parent's
  task columns (an "average task"); the synthetic union prompt stays last;
- outputs (generated parameters): output channel k of the last dynamic layer is shared by all prompts (the
  prompt says which structure it is), so channel k keeps the parent's channel k, and a channel the parent did
  not have copies the background channel's generator, its generated bias lowered by ln 10 (as
  `semiseg.finetune` does for plain networks).

Because channels are shared, a known task must keep its structures in order and may only append new ones.
"""

from __future__ import annotations

import torch

from semiseg.errors import ConfigError, ModelError
from semiseg.finetune import NEW_CHANNEL_BIAS, Parent


def _check_tasks(task_classes: list[list[int]], parent: Parent, parent_task_classes: list[list[int]]) -> None:
    known = {t["name"]: t["index"] for t in parent.manifest.get("tasks", [])}
    for name, classes in zip(parent.tasks, task_classes):
        if name not in known:
            continue
        theirs = parent_task_classes[known[name]]
        ours = [parent.classes[c] for c in classes]
        if ours[:len(theirs)] != theirs or any(c is not None for c in ours[len(theirs):]):
            raise ConfigError(f"--init {parent.where}: versemi shares output channels between tasks, so task "
                              f"{name!r} must keep the parent's structures in their order and only append new "
                              f"ones (parent classes {theirs}, here {ours}, None = new)")


def _row_sources(net, parent_net) -> list[tuple[int, bool]]:
    """Per generated parameter of `net`: (the parent's generated parameter it starts from, lower its bias)."""
    last = len(net.layer_shapes) - 1 - (1 if net.released_head else 0)

    def source_channel(layer: int, o: int) -> tuple[int, bool]:
        parent_out = parent_net.layer_shapes[layer][1]
        return (o, False) if o < parent_out else (0, layer == last)

    rows = []
    for i, (cin, cout) in enumerate(net.layer_shapes):
        base = sum(parent_net.weight_nums[:i])
        for o in range(cout):
            src, _ = source_channel(i, o)
            rows += [(base + src * cin + j, False) for j in range(cin)]
    offset = sum(parent_net.weight_nums)
    for i, (_, cout) in enumerate(net.layer_shapes):
        base = offset + sum(parent_net.bias_nums[:i])
        for o in range(cout):
            src, new = source_channel(i, o)
            rows.append((base + src, new))
    return rows


def _column_sources(net, parent_net, parent: Parent) -> list[list[int]]:
    """Per controller input of `net`: the parent's inputs it averages (one, or all real tasks for a new task)."""
    n_context = net.controller.in_features - net.n_prompts
    known = {t["name"]: t["index"] for t in parent.manifest.get("tasks", [])}
    parent_tasks = [n_context + k for k in range(parent_net.n_tasks)]
    columns = [[j] for j in range(n_context)]
    for name in parent.tasks:
        columns.append([n_context + known[name]] if name in known else parent_tasks)
    columns.append([n_context + parent_net.synthetic_task])
    return columns


@torch.no_grad()
def load_versemi_parent(net, task_classes: list[list[int]], parent: Parent) -> int:
    """Loads `parent` into `net` (a DynamicVNet for the new data). Returns the tensors loaded."""
    from semiseg.nets import build_network
    arch = parent.manifest["architecture"]
    try:
        parent_net = build_network(arch["name"], **arch.get("args", {}))
        parent_net.load_state_dict(parent.state, strict=True)
    except (ModelError, RuntimeError) as exc:
        raise ConfigError(f"--init {parent.where}: the weights do not fit their architecture: {exc}") from exc
    _check_tasks(task_classes, parent, parent_net.task_classes)
    theirs = parent_net.state_dict()
    n = 0
    for key, value in net.state_dict().items():
        if key.startswith("controller."):
            continue
        if theirs[key].shape != value.shape:
            raise ConfigError(f"--init {parent.where}: {key} has shape {tuple(theirs[key].shape)} in the package, "
                              f"{tuple(value.shape)} here")
        value.copy_(theirs[key])
        n += 1
    rows = _row_sources(net, parent_net)
    index = torch.tensor([r for r, _ in rows])
    lowered = torch.tensor([new for _, new in rows])
    weight = parent_net.controller.weight[index]  # (new outputs, parent inputs)
    net.controller.weight.copy_(torch.stack([weight[:, cols].mean(1) for cols in
                                             _column_sources(net, parent_net, parent)], 1))
    net.controller.bias.copy_(parent_net.controller.bias[index] + NEW_CHANNEL_BIAS * lowered)
    return n + 2
