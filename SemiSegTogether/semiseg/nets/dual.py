"""Two different subnetworks in one module: UA-MT V-Net (A) and ResNet-34 + V-Net decoder (B).

One module holds both so that one optimiser step, one checkpoint and one DDP wrapper cover them.

- `forward(x, pair=True)` → ((logits_a, feature_a), (logits_b, feature_b)): what training runs
  (through the method's `step_net`, so a DDP wrapper sees the call).
- `forward(x)` → log of the average of the two softmax maps, clamped at 1e-8. Prediction code that
  applies softmax to it gets the average back exactly (the log-probabilities of a distribution are
  its logits up to a constant), which is the reference's test-time ensemble
  (SSL-contrastive `test_util.py`: average of both softmax maps, then argmax).

Both subnetworks are initialised as in the reference: Kaiming-normal conv / transposed-conv
weights, norm weight 1 and bias 0 (which also undoes ResNet's zero-γ trick, as the reference does).
"""

from __future__ import annotations

import torch
from torch import nn

from semiseg.nets.resnet_vnet import ResNetVNet
from semiseg.nets.vnet import VNet


def kaiming_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, (nn.BatchNorm3d, nn.GroupNorm, nn.InstanceNorm3d)) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class DualVNetResNet(nn.Module):
    def __init__(self, in_channels: int = 1, n_classes: int = 2, n_filters: int = 16, norm: str = "batch",
                 dropout: float = 0.5):
        super().__init__()
        # Reference: V-Net has Dropout3d on the deepest encoder feature and the last decoder feature,
        # the ResNet only on the last decoder feature; both p = 0.5 (`has_dropout=True`).
        self.vnet = VNet(in_channels, n_classes, n_filters, norm, dropout)
        self.resnet = ResNetVNet(in_channels, n_classes, n_filters, norm, dropout)
        kaiming_init(self)

    def subnetworks(self) -> tuple[nn.Module, nn.Module]:
        return self.vnet, self.resnet

    def forward(self, x: torch.Tensor, pair: bool = False):
        out_a = self.vnet.forward_features(x)
        out_b = self.resnet.forward_features(x)
        if pair:
            return out_a, out_b
        avg = 0.5 * (out_a[0].float().softmax(1) + out_b[0].float().softmax(1))
        return torch.log(avg.clamp_min(1e-8))
