"""Dual-subnetwork self-supervised contrastive learning (Karimijafarbigloo, Azad et al., ISBI 2024,
"Leveraging unlabeled data for 3D medical image segmentation through self-supervised contrastive
learning"; code github.com/xmindflow/SSL-contrastive, built on MCF).

Two subnetworks that differ in their encoder (V-Net and ResNet-34, same V-Net decoder) see the same
batch (labeled + unlabeled, one forward pass so BatchNorm sees both, as the reference):

- supervised, each subnetwork: CE + Dice (squared-denominator Dice, as the reference);
- targeted verification, each subnetwork: squared error against the label on the voxels where
  exactly one subnetwork predicts confident foreground (XOR of the confident-foreground masks,
  threshold 0.6), weight 0.5;
- the "winner" of the iteration is the subnetwork with the lower supervised Dice loss;
- unlabeled: pseudo-label = union of both subnetworks' foreground; voxels that are among the least
  certain (entropy above the 20th percentile) of *both* subnetworks are ignored; each subnetwork
  gets cross-entropy to the pseudo-label on the rest, scaled by N_voxels / N_kept as the reference;
- contrastive term on the loser's last decoder feature: features of the ignored (unreliable)
  voxels, split by the loser's own prediction, are pulled to the prototype (mean feature of the
  reliable voxels) of their class, and the prototypes are pushed apart; weight 0.1 with a sigmoid
  ramp over training.

`released=True` restores the released code's behaviour instead: every unlabeled term is computed on
detached tensors / under no_grad (so only the labeled terms train), the CE takes probabilities in
place of logits, and the prototype term pulls the prototypes together
(see docs/methods/dual-contrast.md; released code github.com/xmindflow/SSL-contrastive at 201716a,
`src/train_LA.py:127` and `:285-286`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from semiseg import distributed
from semiseg.errors import ConfigError
from semiseg.losses import one_hot
from semiseg.methods.base import LabelsAsLogits, Method, sigmoid_rampup
from semiseg.nets import build_network

IGNORE = -1


# ---------------------------------------------------------------------------------------------
# Loss pieces (module-level so tests can check each mechanism on hand-made tensors)
# ---------------------------------------------------------------------------------------------

def squared_dice_loss(probs: torch.Tensor, target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """1 − (2Σpy + ε)/(Σp² + Σy² + ε) over the whole batch, per foreground class, averaged
    (the reference's `losses.dice_loss` on class 1; identical for two classes)."""
    onehot = one_hot(target, probs.shape[1])[:, 1:]
    p = probs[:, 1:]
    dims = (0, *range(2, p.ndim))
    inter = (p * onehot).sum(dims)
    denom = (p * p).sum(dims) + (onehot * onehot).sum(dims)
    return (1 - (2 * inter + eps) / (denom + eps)).mean()


def confident_foreground(probs: torch.Tensor, threshold: float) -> torch.Tensor:
    conf, pred = probs.max(1)
    return (pred != 0) & (conf >= threshold)


@torch.no_grad()
def verification_mask(probs_a: torch.Tensor, probs_b: torch.Tensor, threshold: float = 0.6) -> torch.Tensor:
    """Voxels where exactly one subnetwork predicts confident foreground (bool, (B, ...))."""
    return confident_foreground(probs_a, threshold) ^ confident_foreground(probs_b, threshold)


def verification_error(probs: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ_M Σ_{c≥1} (p_c − y_c)² / (|M| + 1e-16): the reference's `mistake` term (squared error of the
    foreground probability against the label; for two classes exactly (p₁ − y)²)."""
    onehot = one_hot(target, probs.shape[1])
    sq = ((probs[:, 1:] - onehot[:, 1:]) ** 2).sum(1)
    m = mask.to(sq.dtype)
    return (m * sq).sum() / (m.sum() + 1e-16)


@torch.no_grad()
def pseudo_label(probs_a: torch.Tensor, probs_b: torch.Tensor) -> torch.Tensor:
    """Union of the two subnetworks' foreground. Two classes: argmax_a OR argmax_b, as the reference.
    More classes: a voxel either calls foreground takes that class; where both call (different)
    foreground classes, the foreground class with the larger summed probability."""
    pred_a, pred_b = probs_a.argmax(1), probs_b.argmax(1)
    if probs_a.shape[1] == 2:
        return pred_a | pred_b
    both = (probs_a + probs_b)[:, 1:].argmax(1) + 1
    target = torch.where(pred_a != 0, pred_a, pred_b)
    return torch.where((pred_a != 0) & (pred_b != 0), both, target)


def entropy(probs: torch.Tensor) -> torch.Tensor:
    return -(probs * torch.log(probs + 1e-10)).sum(1)


def percentile(x: torch.Tensor, q: float) -> torch.Tensor:
    """q-th percentile of all elements, linear interpolation (numpy's default, as the reference);
    works for tensors of any size (torch.quantile is limited to 2^24 elements)."""
    flat = x.reshape(-1).float()
    n = flat.numel()
    pos = q / 100.0 * (n - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, n - 1)
    v_lo = flat.kthvalue(lo + 1).values
    v_hi = flat.kthvalue(hi + 1).values if hi != lo else v_lo
    return v_lo + (pos - lo) * (v_hi - v_lo)


@torch.no_grad()
def entropy_gate(probs_a: torch.Tensor, probs_b: torch.Tensor, percent: float = 20.0) -> torch.Tensor:
    """Ignore mask: voxels whose entropy is at or above the `percent`-th percentile (over the batch)
    in *both* subnetworks. Kept: voxels among the `percent` % most certain of at least one."""
    h_a, h_b = entropy(probs_a.float()), entropy(probs_b.float())
    return (h_a >= percentile(h_a, percent)) & (h_b >= percentile(h_b, percent))


def gated_cross_entropy(inputs: torch.Tensor, target: torch.Tensor, ignore: torch.Tensor) -> torch.Tensor:
    """(N / N_kept) · mean CE over the kept voxels, the reference's scaling."""
    target = target.masked_fill(ignore, IGNORE)
    kept = (~ignore).sum().clamp_min(1)
    ce = F.cross_entropy(inputs.float(), target.long(), ignore_index=IGNORE)
    return ce * (target.numel() / kept)


def prototype_contrast(features: torch.Tensor, target: torch.Tensor, ignore: torch.Tensor, own_pred: torch.Tensor,
                       n_classes: int, fraction: float = 0.01, push: bool = True,
                       generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Prototype term on features (B, C, ...) of one subnetwork.

    Prototypes: mean feature of the reliable (not ignored) voxels of each pseudo-label class.
    Candidates: ignored voxels, split by the subnetwork's own prediction; from each class
    ⌊fraction · #foreground candidates⌋ are drawn at random (the reference: fg // 100 for both).
    pull = Σ_k mean ‖ẑ − ĉ_k‖ (ẑ, ĉ L2-normalised over channels);
    prototypes: push → mean over class pairs of (2 − ‖ĉ_i − ĉ_j‖), which falls as they move apart
    (the paper); not push → mean ‖ĉ_i − ĉ_j‖, which pulls them together (the released code).
    Classes with no reliable voxel or no candidate drop out of the sums.
    """
    ch = features.shape[1]
    z = features.float().movedim(1, -1).reshape(-1, ch)
    t = target.reshape(-1)
    ig = ignore.reshape(-1)
    pred = own_pred.reshape(-1)
    reliable = one_hot(t, n_classes) * (~ig).unsqueeze(1).float()  # (N, K)
    # Under DDP the prototypes are those of the global batch: per-class feature sums and counts over all ranks
    # (gradients reach this rank's own features; identity in a single process).
    counts = distributed.all_reduce_sum(reliable.sum(0))
    protos = distributed.all_reduce_sum(reliable.t() @ z) / counts.clamp_min(1).unsqueeze(1)  # (K, C)
    present = counts > 0
    protos_n = F.normalize(protos, dim=1)

    n_fg = int((ig & (pred != 0)).sum())
    n_draw = int(math.floor(n_fg * fraction + 1e-6))
    zero = z.sum() * 0.0
    pull = zero
    for k in range(n_classes):
        if not bool(present[k]) or n_draw == 0:
            continue
        idx = (ig & (pred == k)).nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        order = torch.randperm(idx.numel(), generator=generator, device="cpu" if generator is not None else idx.device)
        idx = idx[order.to(idx.device)[:n_draw]]
        zk = F.normalize(z[idx], dim=1)
        pull = pull + (zk - protos_n[k]).norm(dim=1).mean()

    pairs = [(i, j) for i in range(n_classes) for j in range(i + 1, n_classes)
             if bool(present[i]) and bool(present[j])]
    proto = zero
    if pairs:
        dists = torch.stack([(protos_n[i] - protos_n[j]).norm() for i, j in pairs])
        proto = (2.0 - dists).mean() if push else dists.mean()
    return {"pull": pull, "prototype": proto, "total": pull + proto}


# ---------------------------------------------------------------------------------------------
# The method
# ---------------------------------------------------------------------------------------------

class DualContrast(Method):
    name = "dual-contrast"
    description = ("Two different subnetworks (V-Net, ResNet-34 V-Net) with targeted verification on "
                   "disagreements, entropy-gated pseudo-labels and a prototype contrastive term; "
                   "predicts with the average of both.")
    defaults = {
        "n_filters": 16, "norm": "batch", "dropout": 0.5,
        "released": False, "lr_schedule": "step",
        "confidence": 0.6, "verification_weight": 0.5,
        "entropy_percent": 20.0,
        "unlabeled_weight": 1.0, "unlabeled_rampup": 0.0,
        "contrast_weight": 0.1, "contrast_rampup": 1.0, "candidate_fraction": 0.01,
    }
    option_help = {
        "n_filters": "width of both subnetworks (reference 16)",
        "norm": "batch | instance | group",
        "dropout": "Dropout3d rate on the last decoder feature (and V-Net's deepest feature); reference 0.5",
        "released": "true: the released code's behaviour (no gradient from unlabeled data, prototypes "
                    "pulled together, CE on probabilities); false: the paper's method",
        "lr_schedule": "step (the authors': lr x0.1 at 5/12 and 10/12 of the run) | poly (short runs: the "
                       "supervised baseline's decay, which keeps the lr above 0.001 for 92 % of the run) | constant",
        "confidence": "confidence threshold of the targeted-verification mask",
        "verification_weight": "weight of the targeted-verification squared error",
        "entropy_percent": "percentile of entropy under which a subnetwork's voxels count as reliable",
        "unlabeled_weight": "weight of the gated unlabeled cross-entropy (reference 1, no ramp)",
        "unlabeled_rampup": "sigmoid ramp of the unlabeled CE as a fraction of the iterations (0 = none)",
        "contrast_weight": "maximum weight of the prototype contrastive term (reference 0.1)",
        "contrast_rampup": "sigmoid ramp of the contrastive weight as a fraction of the iterations",
        "candidate_fraction": "share of the unreliable foreground voxels drawn per class (reference 1/100)",
    }
    # The authors' schedule: lr x0.1 at 2,500 and 5,000 of 6,000 iterations (as fractions of the run).
    preferred_optimizer = {"optimizer": "sgd", "lr": 1e-2, "momentum": 0.9, "weight_decay": 1e-4,
                           "schedule": "step", "milestones": [2500 / 6000, 5000 / 6000]}

    def __init__(self, context):
        super().__init__(context)
        if self.opts["lr_schedule"] not in ("step", "poly", "constant"):
            raise ConfigError(f"dual-contrast: lr_schedule must be step, poly or constant, "
                              f"got {self.opts['lr_schedule']!r}")
        self.net = build_network("dual-vnet-resnet", in_channels=context.in_channels, n_classes=context.n_classes,
                                 n_filters=self.opts["n_filters"], norm=self.opts["norm"],
                                 dropout=self.opts["dropout"])

    def optimizer_settings(self):
        return {**self.preferred_optimizer, "schedule": self.opts["lr_schedule"]}

    # -- schedules --------------------------------------------------------------------------------
    def contrast_weight(self, step: int) -> float:
        length = int(self.opts["contrast_rampup"] * self.context.total_iterations)
        return self.opts["contrast_weight"] * sigmoid_rampup(step, length)

    def unlabeled_weight(self, step: int) -> float:
        frac = self.opts["unlabeled_rampup"]
        ramp = sigmoid_rampup(step, int(frac * self.context.total_iterations)) if frac > 0 else 1.0
        return self.opts["unlabeled_weight"] * ramp

    @staticmethod
    def choose_winner(dice_loss_vnet: torch.Tensor, dice_loss_resnet: torch.Tensor) -> int:
        """0 (V-Net) if its supervised Dice loss is lower, else 1 (ResNet), as train_LA.py."""
        return 0 if bool(dice_loss_vnet < dice_loss_resnet) else 1

    # -- losses -----------------------------------------------------------------------------------
    def loss_terms(self, labeled: dict, unlabeled: dict | None, step: int) -> dict[str, torch.Tensor]:
        """Every term with its graph (the tests back-propagate them one by one)."""
        o = self.opts
        released = bool(o["released"])
        n_l = labeled["image"].shape[0]
        x = labeled["image"] if unlabeled is None else torch.cat([labeled["image"], unlabeled["image"]])
        (logits_a, feat_a), (logits_b, feat_b) = self.step_net(x, pair=True)
        with torch.autocast(device_type=x.device.type, enabled=False):
            logits_a, logits_b = logits_a.float(), logits_b.float()
            probs_a, probs_b = logits_a.softmax(1), logits_b.softmax(1)
            y = labeled["label"].long()
            terms: dict[str, torch.Tensor] = {}
            mask = verification_mask(probs_a[:n_l], probs_b[:n_l], o["confidence"])
            sup = {}
            for key, logits, probs in (("vnet", logits_a, probs_a), ("resnet", logits_b, probs_b)):
                ce = F.cross_entropy(logits[:n_l], y)
                dice = squared_dice_loss(probs[:n_l], y)
                verif = verification_error(probs[:n_l], y, mask)
                sup[key] = ce + dice + o["verification_weight"] * verif
                terms[f"dice_{key}"], terms[f"verification_{key}"], terms[f"supervised_{key}"] = dice, verif, sup[key]
            terms["verification_voxels"] = mask.float().mean()
            total = sup["vnet"] + sup["resnet"]
            # The winner over the global batch, so every rank gives the contrastive term to the same subnetwork.
            dice_pair = distributed.all_reduce_mean(torch.stack([terms["dice_vnet"], terms["dice_resnet"]]).detach())
            winner = self.choose_winner(dice_pair[0], dice_pair[1])
            terms["winner"] = torch.tensor(float(winner))

            if unlabeled is not None:
                pu_a, pu_b = probs_a[n_l:], probs_b[n_l:]
                target = pseudo_label(pu_a, pu_b)
                ignore = entropy_gate(pu_a, pu_b, o["entropy_percent"])
                terms["kept_fraction"] = (~ignore).float().mean()
                if released:
                    # train_LA.py:285-286 feeds detached softmax outputs to the CE.
                    in_a, in_b = pu_a.detach(), pu_b.detach()
                else:
                    in_a, in_b = logits_a[n_l:], logits_b[n_l:]
                terms["unlabeled_vnet"] = gated_cross_entropy(in_a, target, ignore)
                terms["unlabeled_resnet"] = gated_cross_entropy(in_b, target, ignore)
                # The loser (higher Dice loss) gets the contrastive term on its own features.
                loser_feat, loser_probs = (feat_b, pu_b) if winner == 0 else (feat_a, pu_a)
                loser_feat = loser_feat[n_l:]
                with torch.set_grad_enabled(torch.is_grad_enabled() and not released):
                    con = prototype_contrast(loser_feat if not released else loser_feat.detach(), target, ignore,
                                             loser_probs.argmax(1), self.context.n_classes,
                                             o["candidate_fraction"], push=not released)
                terms["contrast"], terms["contrast_pull"], terms["contrast_prototype"] = (
                    con["total"], con["pull"], con["prototype"])
                w_u, w_c = self.unlabeled_weight(step), self.contrast_weight(step)
                terms["contrast_weight"] = torch.tensor(w_c)
                total = total + w_u * (terms["unlabeled_vnet"] + terms["unlabeled_resnet"]) + w_c * con["total"]
            terms["total"] = total
        return terms

    def training_step(self, labeled, unlabeled, step):
        # The supervised twin gets no unlabeled batch: no unlabeled CE, no contrastive term, and BatchNorm
        # sees the labeled batch alone.
        terms = self.loss_terms(labeled, self.unlabeled_batch(unlabeled), step)
        return {k: (v if k == "total" else v.detach()) for k, v in terms.items()}

    def inference_network(self):
        return self.net

    def pseudo_label_network(self):
        """The union of both subnetworks' foreground, the target of the gated unlabeled cross-entropy (the gate
        itself, which drops the least certain voxels, is not applied: every voxel is scored)."""
        def union(x):
            (logits_a, _), (logits_b, _) = self.net(x, pair=True)
            return pseudo_label(logits_a.float().softmax(1), logits_b.float().softmax(1))
        return LabelsAsLogits(self, union, self.context.n_classes)

    parent_init = "both subnetworks (V-Net and ResNet), each from its own weights in the package"
