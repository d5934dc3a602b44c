"""V-Net as used by the LA semi-supervised benchmark lineage (UA-MT variant).

conv → norm → ReLU blocks, strided-conv downsampling, transposed-conv upsampling
and *additive* skips. With 1 input channel, 2 classes and n_filters 16 it has
9,448,866 parameters, like the reference code. `forward` returns logits;
`forward_features` also returns the last decoder feature (16 channels at
n_filters 16), which contrastive and prototype methods need.
"""

from __future__ import annotations

import torch
from torch import nn

NORMS = ("batch", "instance", "group", "none")


def make_norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    if kind == "instance":
        # affine=False, as in nnU-Net-free reference code (VerSemi); keeps the parameter count of the BN variant
        # lower by 2*channels per norm, which is expected.
        return nn.InstanceNorm3d(channels)
    if kind == "group":
        return nn.GroupNorm(min(16, channels), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; expected one of {NORMS}")


class ConvBlock(nn.Sequential):
    """n_stages × (3³ conv → norm → ReLU)."""

    def __init__(self, n_stages: int, in_ch: int, out_ch: int, norm: str):
        layers: list[nn.Module] = []
        for i in range(n_stages):
            layers += [nn.Conv3d(in_ch if i == 0 else out_ch, out_ch, 3, padding=1), make_norm(norm, out_ch),
                       nn.ReLU(inplace=True)]
        super().__init__(*layers)


class Down(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, norm: str):
        super().__init__(nn.Conv3d(in_ch, out_ch, 2, stride=2), make_norm(norm, out_ch), nn.ReLU(inplace=True))


class Up(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, norm: str):
        super().__init__(nn.ConvTranspose3d(in_ch, out_ch, 2, stride=2), make_norm(norm, out_ch),
                         nn.ReLU(inplace=True))


class VNetEncoder(nn.Module):
    """Five resolution levels; returns the five skip features, finest first."""

    def __init__(self, in_channels: int, n_filters: int, norm: str, dropout: float):
        super().__init__()
        f = n_filters
        self.block_one = ConvBlock(1, in_channels, f, norm)
        self.block_one_dw = Down(f, 2 * f, norm)
        self.block_two = ConvBlock(2, 2 * f, 2 * f, norm)
        self.block_two_dw = Down(2 * f, 4 * f, norm)
        self.block_three = ConvBlock(3, 4 * f, 4 * f, norm)
        self.block_three_dw = Down(4 * f, 8 * f, norm)
        self.block_four = ConvBlock(3, 8 * f, 8 * f, norm)
        self.block_four_dw = Down(8 * f, 16 * f, norm)
        self.block_five = ConvBlock(3, 16 * f, 16 * f, norm)
        self.dropout = nn.Dropout3d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x1 = self.block_one(x)
        x2 = self.block_two(self.block_one_dw(x1))
        x3 = self.block_three(self.block_two_dw(x2))
        x4 = self.block_four(self.block_three_dw(x3))
        x5 = self.dropout(self.block_five(self.block_four_dw(x4)))
        return [x1, x2, x3, x4, x5]


class VNetDecoder(nn.Module):
    """Additive-skip decoder; returns (logits, last feature)."""

    def __init__(self, n_classes: int, n_filters: int, norm: str, dropout: float):
        super().__init__()
        f = n_filters
        self.block_five_up = Up(16 * f, 8 * f, norm)
        self.block_six = ConvBlock(3, 8 * f, 8 * f, norm)
        self.block_six_up = Up(8 * f, 4 * f, norm)
        self.block_seven = ConvBlock(3, 4 * f, 4 * f, norm)
        self.block_seven_up = Up(4 * f, 2 * f, norm)
        self.block_eight = ConvBlock(2, 2 * f, 2 * f, norm)
        self.block_eight_up = Up(2 * f, f, norm)
        self.block_nine = ConvBlock(1, f, f, norm)
        self.dropout = nn.Dropout3d(dropout) if dropout > 0 else nn.Identity()
        self.out_conv = nn.Conv3d(f, n_classes, 1)

    def forward(self, skips: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x1, x2, x3, x4, x5 = skips
        x = self.block_six(self.block_five_up(x5) + x4)
        x = self.block_seven(self.block_six_up(x) + x3)
        x = self.block_eight(self.block_seven_up(x) + x2)
        feature = self.block_nine(self.block_eight_up(x) + x1)
        return self.out_conv(self.dropout(feature)), feature


class VNet(nn.Module):
    """Input spatial sizes must be divisible by 16 (four 2× downsamplings)."""

    def __init__(self, in_channels: int = 1, n_classes: int = 2, n_filters: int = 16, norm: str = "batch",
                 dropout: float = 0.0):
        super().__init__()
        self.encoder = VNetEncoder(in_channels, n_filters, norm, dropout)
        self.decoder = VNetDecoder(n_classes, n_filters, norm, dropout)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decoder(self.encoder(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]
