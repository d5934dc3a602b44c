"""Labeled data only: the reference every semi-supervised method is measured against."""

from __future__ import annotations

from semiseg.losses import dice_ce_loss
from semiseg.methods.base import Method
from semiseg.nets import build_network


class Supervised(Method):
    name = "supervised"
    description = "V-Net trained on the labeled cases only (Dice + cross-entropy); the baseline."
    defaults = {"n_filters": 16, "norm": "batch", "dropout": 0.0}
    option_help = {"n_filters": "V-Net width", "norm": "batch | instance | group", "dropout": "Dropout3d rate"}

    def __init__(self, context):
        super().__init__(context)
        self.net = build_network("vnet", in_channels=context.in_channels, n_classes=context.n_classes,
                                 n_filters=self.opts["n_filters"], norm=self.opts["norm"],
                                 dropout=self.opts["dropout"])

    @classmethod
    def learns_from(cls, opts) -> bool:
        return False

    def training_step(self, labeled, unlabeled, step):
        loss = dice_ce_loss(self.step_net(labeled["image"]), labeled["label"])
        return {"total": loss, "supervised": loss.detach()}
