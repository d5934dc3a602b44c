"""3D ResNet-34 encoder with the UA-MT V-Net decoder: subnetwork B of the dual-subnetwork
contrastive method (Karimijafarbigloo et al., ISBI 2024; SSL-contrastive `networks/ResNet34.py`
and `networks/resnet.py`).

Encoder: a 7³ stride-1 stem conv (no bias) → norm → ReLU at full resolution, no max-pool, then
four stages of basic residual blocks ([3, 4, 6, 3] blocks) with 2f, 4f, 8f, 16f channels, each
stage starting with a stride-2 block (1³ stride-2 conv + norm on the shortcut). It returns five
features at /1 … /16 with f … 16f channels, exactly the shapes the V-Net decoder's additive skips
expect, so the decoder is `VNetDecoder` unchanged. The reference uses dropout only on the last
decoder feature (not on the deepest encoder feature), which `VNetDecoder(dropout=…)` does.

With 1 input channel, 2 classes, n_filters 16 and batch norm it has 17,930,354 parameters, as
the reference `Resnet34(n_filters=16)`.
"""

from __future__ import annotations

import torch
from torch import nn

from semiseg.nets.vnet import VNetDecoder, make_norm

RESNET34_LAYERS = (3, 4, 6, 3)


class BasicBlock3d(nn.Module):
    """Two 3³ convs (no bias) with norm; identity or projected shortcut; ReLU after the sum."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv3d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = make_norm(norm, out_ch)
        self.conv2 = nn.Conv3d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = make_norm(norm, out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv3d(in_ch, out_ch, 1, stride=stride, bias=False),
                                          make_norm(norm, out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNetEncoder3d(nn.Module):
    """Returns [stem, c2, c3, c4, c5] with f, 2f, 4f, 8f, 16f channels at /1, /2, /4, /8, /16."""

    def __init__(self, in_channels: int = 1, n_filters: int = 16, norm: str = "batch",
                 layers: tuple[int, ...] = RESNET34_LAYERS):
        super().__init__()
        f = n_filters
        self.stem = nn.Sequential(nn.Conv3d(in_channels, f, 7, padding=3, bias=False), make_norm(norm, f),
                                  nn.ReLU(inplace=True))
        stages = []
        in_ch = f
        for i, n_blocks in enumerate(layers):
            out_ch = f * 2 ** (i + 1)
            blocks = [BasicBlock3d(in_ch, out_ch, 2, norm)]
            blocks += [BasicBlock3d(out_ch, out_ch, 1, norm) for _ in range(n_blocks - 1)]
            stages.append(nn.Sequential(*blocks))
            in_ch = out_ch
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.stem(x)]
        for stage in self.stages:
            feats.append(stage(feats[-1]))
        return feats


class ResNetVNet(nn.Module):
    """ResNet-34 encoder + V-Net decoder. `forward` → logits; `forward_features` → (logits, last
    decoder feature). Input sizes must be divisible by 16."""

    def __init__(self, in_channels: int = 1, n_classes: int = 2, n_filters: int = 16, norm: str = "batch",
                 dropout: float = 0.0):
        super().__init__()
        self.encoder = ResNetEncoder3d(in_channels, n_filters, norm)
        self.decoder = VNetDecoder(n_classes, n_filters, norm, dropout)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decoder(self.encoder(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]
