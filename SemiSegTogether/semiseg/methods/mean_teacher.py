"""Mean Teacher (Tarvainen & Valpola, 2017) as the LA lineage runs it (UA-MT's MT baseline).

The teacher is an exponential moving average of the student's parameters *and* BatchNorm
buffers; it sees the unlabeled batch with small Gaussian noise and the student is pulled
towards its softmax output, with a sigmoid ramp-up of the consistency weight.

By default (`mix=cutmix`) the student also gets the mixing perturbation of French et al. (BMVC 2020,
"Semi-supervised semantic segmentation needs strong, varied perturbations"): it sees each unlabeled patch with a
box of half its volume pasted from another, and matches the same mix of the teacher's outputs on the unmixed
patches. `mix=none` (and `recipe=authors`) gives UA-MT's Mean Teacher.
"""

from __future__ import annotations

import copy

import torch

from semiseg.errors import ConfigError
from semiseg.losses import dice_ce_loss, softmax_mse
from semiseg.methods.base import Method, ema_update, sigmoid_rampup
from semiseg.methods.cutmix import cutmix_box, mix_with_previous
from semiseg.nets import build_network


MIXES = ("none", "cutmix")
CUTMIX_SIDE = 0.5 ** (1 / 3)  # a cube of this fraction of each side holds half the patch, as French et al.'s box


class MeanTeacher(Method):
    name = "mean-teacher"
    # 2: one student pass over the labeled and unlabeled patches together; 3: consistency 1 by default;
    # 4: the weight ramps over the whole run, as UA-MT's does (it ramped over 0.4 of the run); 5: CutMix consistency
    revision = 5
    description = "EMA teacher gives targets on unlabeled data; student matches its softmax (consistency)."
    defaults = {"n_filters": 16, "norm": "batch", "dropout": 0.0, "ema_decay": 0.99, "consistency": 1.0,
                "rampup": 1.0, "noise": 0.1, "mix": "cutmix", "inference": "student"}
    # UA-MT's weight 0.1 makes the term a thousandth of the loss late in a run and loses to the supervised twin on
    # la-dev; 1 beats the twin on every seed at equal steps and at equal time (docs/methods.md, "Options for short
    # runs"). The authors' value stays one option away. The ramp is UA-MT's: over 40 "epochs" of 150 iterations,
    # its whole 6,000-iteration run (a ramp over 0.4 of the run drifted late at 30 minutes on la-dev). CutMix
    # consistency put it ahead of UA-MT's perturbation at 10 and 30 minutes on la-dev (docs/methods.md).
    authors_recipe = {"consistency": 0.1, "mix": "none"}
    option_help = {
        "n_filters": "V-Net width", "norm": "batch | instance | group", "dropout": "Dropout3d rate",
        "ema_decay": "teacher EMA decay (UA-MT: 0.99)",
        "consistency": "maximum consistency weight (default 1, measured on la-dev; UA-MT and recipe=authors: 0.1)",
        "rampup": "sigmoid ramp-up length as a fraction of the iterations (default 1, the whole run, as UA-MT)",
        "noise": "std of the Gaussian noise on the teacher's input (clipped at ±2 std)",
        "mix": "cutmix (default, measured on la-dev): the student sees each unlabeled patch with a box of half its "
               "volume from another (from its own mirror image in a batch of one), against the same mix of the "
               "teacher's outputs (French et al. 2020) | none: the patches as they are (UA-MT; recipe=authors)",
        "inference": "student (as UA-MT reports) | teacher",
    }

    unlabeled_only = frozenset({"consistency", "rampup", "noise", "mix"})  # the twin's teacher still uses ema_decay

    def __init__(self, context):
        super().__init__(context)
        if self.opts["mix"] not in MIXES:
            raise ConfigError(f"mean-teacher: mix must be one of {', '.join(MIXES)}, got {self.opts['mix']!r}")
        self.net = build_network("vnet", in_channels=context.in_channels, n_classes=context.n_classes,
                                 n_filters=self.opts["n_filters"], norm=self.opts["norm"],
                                 dropout=self.opts["dropout"])
        self.teacher = copy.deepcopy(self.net)
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def consistency_weight(self, step: int) -> float:
        length = int(self.opts["rampup"] * self.context.total_iterations)
        return self.opts["consistency"] * sigmoid_rampup(step, length)

    def training_step(self, labeled, unlabeled, step):
        unlabeled = self.unlabeled_batch(unlabeled)
        if unlabeled is None:  # the supervised twin: no consistency (the teacher still follows the student)
            supervised = dice_ce_loss(self.step_net(labeled["image"]), labeled["label"])
            return {"total": supervised, "supervised": supervised.detach()}
        # One student pass over labeled and unlabeled patches together, as UA-MT's `model(volume_batch)`: its
        # BatchNorm sees the whole batch, and one pass costs less than two on small CPU patches.
        n, image_u = labeled["image"].shape[0], unlabeled["image"]
        keep = self.cutmix_keep(image_u)
        student_in = image_u if keep is None else mix_with_previous(image_u, keep)
        student = self.step_net(torch.cat([labeled["image"], student_in]))
        supervised = dice_ce_loss(student[:n], labeled["label"])
        with torch.no_grad():
            # Teacher in eval mode: it uses its EMA'd BatchNorm statistics, not the batch's.
            self.teacher.eval()
            sigma = self.opts["noise"]
            noise = (torch.randn_like(image_u) * sigma).clamp(-2 * sigma, 2 * sigma)
            target = self.teacher(image_u + noise).float().softmax(1)
            if keep is not None:
                target = mix_with_previous(target, keep)
        consistency = softmax_mse(student[n:], target)
        weight = self.consistency_weight(step)
        total = supervised + weight * consistency
        return {"total": total, "supervised": supervised.detach(), "consistency": consistency.detach(),
                "consistency_weight": torch.tensor(weight)}

    def cutmix_keep(self, image_u: torch.Tensor) -> torch.Tensor | None:
        """(B, D, H, W) CutMix mask for the unlabeled patches (1 = the patch's own voxels), or None (no mixing)."""
        if self.opts["mix"] != "cutmix":
            return None
        return cutmix_box((image_u.shape[0], *image_u.shape[2:]), CUTMIX_SIDE, image_u.device)

    def after_optimizer_step(self, step):
        # Early on the teacher follows the student closely (decay ramps from 0 to ema_decay).
        decay = min(1.0 - 1.0 / (step + 2), self.opts["ema_decay"])
        ema_update(self.teacher, self.net, decay)

    def inference_network(self):
        return self.teacher if self.opts["inference"] == "teacher" else self.net

    def pseudo_label_network(self):
        return self.teacher  # its softmax is the consistency target

    parent_init = "student and teacher (the teacher a copy of the student)"

    def spread_parent_weights(self) -> None:
        loaded = self.inference_network()
        other = self.net if loaded is self.teacher else self.teacher
        other.load_state_dict(loaded.state_dict())
