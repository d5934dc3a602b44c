"""Segmentation losses shared by the methods (the LA lineage's Dice + cross-entropy)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def one_hot(target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(B, D, H, W) int → (B, C, D, H, W) float."""
    return F.one_hot(target.long(), n_classes).movedim(-1, 1).float()


def soft_dice_loss(probs: torch.Tensor, target_onehot: torch.Tensor, class_weights: torch.Tensor | None = None,
                   include_background: bool = False, eps: float = 1e-5) -> torch.Tensor:
    """1 − soft Dice per class (over the whole batch, as the reference code), averaged with optional weights."""
    if not include_background and probs.shape[1] > 1:
        probs, target_onehot = probs[:, 1:], target_onehot[:, 1:]
        if class_weights is not None:
            class_weights = class_weights[1:]
    dims = (0, *range(2, probs.ndim))
    inter = (probs * target_onehot).sum(dims)
    denom = probs.sum(dims) + target_onehot.sum(dims)
    dice = (2 * inter + eps) / (denom + eps)
    loss = 1 - dice
    if class_weights is None:
        return loss.mean()
    return (loss * class_weights).sum() / class_weights.sum().clamp_min(eps)


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, class_weights: torch.Tensor | None = None,
                 ignore_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(CE + Dice) / 2 on logits (B, C, ...) and integer target (B, ...).

    `ignore_mask` (B, ...) bool marks voxels excluded from both terms.
    """
    logits = logits.float()
    n_classes = logits.shape[1]
    ce = F.cross_entropy(logits, target.long(), weight=class_weights, reduction="none")
    probs = logits.softmax(1)
    onehot = one_hot(target, n_classes)
    if ignore_mask is not None:
        keep = (~ignore_mask).float()
        ce = (ce * keep).sum() / keep.sum().clamp_min(1.0)
        probs, onehot = probs * keep.unsqueeze(1), onehot * keep.unsqueeze(1)
    else:
        ce = ce.mean()
    return 0.5 * (ce + soft_dice_loss(probs, onehot, class_weights))


def softmax_mse(student_logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between the student's softmax and target probabilities, both (B, C, ...): the Mean
    Teacher consistency, whose target is the teacher's softmax."""
    return F.mse_loss(student_logits.float().softmax(1), target_probs.float())
