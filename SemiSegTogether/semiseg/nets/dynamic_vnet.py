"""Task-prompted V-Net with a DoDNet-style dynamic head (VerSemi, Zeng et al. 2023).

Body: the V-Net of `semiseg.nets.vnet` with InstanceNorm (affine=False), and, as the released
VerSemi model (`vnet_odod_mix.py`), no last skip `x8_up + x1`, no `block_nine` and no `out_conv`.

Head: a controller maps [GAP(bottleneck) ‖ one-hot(task)] to the weights and biases of a small
per-sample stack of 1×1×1 convolutions (8 channels, 3 layers), applied as grouped convolutions
with one group per (sample, prompt). The one-hot has K+1 entries: the K real tasks of the data
and, last, the synthetic CutMix "union" task.

Outputs. Task t has 1 + len(task_classes[t]) channels (background, then its structures in the
order of task_classes[t]); the synthetic task has 2 (background, union of all foregrounds). The
last dynamic layer has the maximum of these counts; a prompt's unused channels are filled with
`INVALID_LOGIT`, so softmax and cross-entropy over the padded logits equal those over the
prompt's own channels.

    forward(x, task)          task (B,)   → (B, 1 + max n_t over the batch, D, H, W)
    forward(x, task)          task (B, T) → (B, T, C_max, D, H, W)   T prompts per sample, one body pass
    forward(x)                            → error: a prompted network needs a task

With the reference settings (1 input channel, n_filters 16, 8 head channels, one structure per
task, `released_head=True` for the dead "tumor" output the released code also generates) the
controller makes 180 parameters per sample, as the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from semiseg.errors import ModelError
from semiseg.nets.vnet import ConvBlock, Up, VNetEncoder

INVALID_LOGIT = -1.0e4  # finite so fp16 autocast and gradients stay clean; softmax gives exactly 0


class DynamicVNet(nn.Module):
    prompted = True

    def __init__(self, in_channels: int = 1, task_classes: list[list[int]] | None = None, n_filters: int = 16,
                 norm: str = "instance", head_channels: int = 8, head_layers: int = 3, last_skip: bool = False,
                 released_head: bool = False):
        super().__init__()
        if not task_classes:
            task_classes = [[1]]
        task_classes = [[int(v) for v in cls] for cls in task_classes]
        if any(len(cls) == 0 for cls in task_classes):
            raise ModelError(f"every task needs at least one class value, got task_classes={task_classes}")
        if head_layers < 2:
            raise ModelError(f"the dynamic head needs at least 2 layers, got head_layers={head_layers}")
        self.task_classes = task_classes
        self.n_tasks = len(task_classes)          # real tasks; prompts 0..n_tasks-1
        self.synthetic_task = self.n_tasks        # the CutMix union task is the last prompt
        self.n_prompts = self.n_tasks + 1
        self.task_channels = [1 + len(cls) for cls in task_classes] + [2]
        self.out_channels = max(self.task_channels)
        self.head_channels = head_channels
        self.last_skip = last_skip
        self.released_head = released_head

        f = n_filters
        self.encoder = VNetEncoder(in_channels, f, norm, 0.0)
        self.block_five_up = Up(16 * f, 8 * f, norm)
        self.block_six = ConvBlock(3, 8 * f, 8 * f, norm)
        self.block_six_up = Up(8 * f, 4 * f, norm)
        self.block_seven = ConvBlock(3, 4 * f, 4 * f, norm)
        self.block_seven_up = Up(4 * f, 2 * f, norm)
        self.block_eight = ConvBlock(2, 2 * f, 2 * f, norm)
        self.block_eight_up = Up(2 * f, f, norm)
        # Global context of the bottleneck (BatchNorm here even though the body uses IN, as the reference).
        self.gap = nn.Sequential(nn.BatchNorm3d(16 * f), nn.ReLU(inplace=True), nn.AdaptiveAvgPool3d(1))
        self.precls_conv = nn.Sequential(nn.BatchNorm3d(f), nn.ReLU(inplace=True), nn.Conv3d(f, head_channels, 1))

        c = head_channels
        # (in, out) of each dynamic layer; the released code adds a parallel, never-used second output layer.
        self.layer_shapes = [(c, c)] * (head_layers - 1) + [(c, self.out_channels)]
        if released_head:
            self.layer_shapes.append((c, 2))
        self.weight_nums = [i * o for i, o in self.layer_shapes]
        self.bias_nums = [o for _, o in self.layer_shapes]
        self.n_head_params = sum(self.weight_nums) + sum(self.bias_nums)
        self.controller = nn.Linear(16 * f + self.n_prompts, self.n_head_params)

        valid = torch.zeros(self.n_prompts, self.out_channels, dtype=torch.bool)
        for t, n in enumerate(self.task_channels):
            valid[t, :n] = True
        self.register_buffer("valid_channels", valid, persistent=False)

    # -- body ------------------------------------------------------------------------------------
    def body(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """→ (global context (B, 16f), head input (B, head_channels, D, H, W)); independent of the task."""
        x1, x2, x3, x4, x5 = self.encoder(x)
        context = self.gap(x5).flatten(1)
        h = self.block_six(self.block_five_up(x5) + x4)
        h = self.block_seven(self.block_six_up(h) + x3)
        h = self.block_eight(self.block_seven_up(h) + x2)
        h = self.block_eight_up(h)
        if self.last_skip:
            h = h + x1
        return context, self.precls_conv(h)

    # -- dynamic head ----------------------------------------------------------------------------
    def task_encoding(self, task: torch.Tensor) -> torch.Tensor:
        task = task.long()
        if task.numel() and (int(task.min()) < 0 or int(task.max()) >= self.n_prompts):
            raise ModelError(f"task prompt out of range: got {task.tolist()}, this model has tasks "
                             f"0..{self.n_tasks - 1} and the synthetic task {self.synthetic_task}")
        return F.one_hot(task, self.n_prompts).float()

    def head_params(self, context: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """(B, 16f), (B,) → (B, n_head_params) generated weights and biases."""
        enc = self.task_encoding(task).to(context.dtype)
        return self.controller(torch.cat([context, enc], 1))

    def heads(self, context: torch.Tensor, feats: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """Apply the prompted heads. task (B, T) → padded logits (B, T, C_max, D, H, W)."""
        B, T = task.shape
        c = self.head_channels
        D, H, W = feats.shape[2:]
        ctx = context.unsqueeze(1).expand(B, T, context.shape[1]).reshape(B * T, -1)
        params = self.head_params(ctx, task.reshape(B * T))                      # (N, P), N = B·T
        N = B * T
        x = feats.unsqueeze(1).expand(B, T, c, D, H, W).reshape(1, N * c, D, H, W)
        splits = torch.split(params, self.weight_nums + self.bias_nums, dim=1)
        n = len(self.layer_shapes)
        weights, biases = splits[:n], splits[n:]
        n_main = len(self.layer_shapes) - (1 if self.released_head else 0)
        for i in range(n_main):
            cin, cout = self.layer_shapes[i]
            w = weights[i].reshape(N * cout, cin, 1, 1, 1)
            b = biases[i].reshape(N * cout)
            x = F.conv3d(x, w.to(x.dtype), b.to(x.dtype), groups=N)
            if i < n_main - 1:
                x = F.relu(x)
        # (The released "tumor" output, when generated, is never applied: it is dead in the reference too.)
        logits = x.reshape(B, T, self.out_channels, D, H, W)
        valid = self.valid_channels[task.reshape(-1)].reshape(B, T, self.out_channels, 1, 1, 1)
        return logits.masked_fill(~valid, INVALID_LOGIT)

    def forward(self, x: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        if task is None:
            raise ModelError("this is a task-prompted network (VerSemi): call it as net(x, task=...) with one task "
                             f"index per sample (0..{self.n_tasks - 1}); merge several prompts with "
                             "semiseg.prompts.merge_task_probabilities")
        task = torch.as_tensor(task, device=x.device).long()
        if task.ndim == 0:
            task = task.expand(x.shape[0])
        context, feats = self.body(x)
        if task.ndim == 2:
            return self.heads(context, feats, task)
        logits = self.heads(context, feats, task.unsqueeze(1))[:, 0]
        n = max(self.task_channels[t] for t in task.tolist())
        return logits[:, :n]
