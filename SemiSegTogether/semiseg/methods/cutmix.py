"""CutMix boxes for 3D patches (Yun et al. 2019), as VerSemi and Mean Teacher's `mix=cutmix` use them."""

from __future__ import annotations

import torch


def cutmix_box(shape, ratio: float, device=None) -> torch.Tensor:
    """(n, D, H, W) float mask: 1 everywhere except one random cube per sample of side int(size·ratio) per axis."""
    n, *spatial = shape
    keep = torch.ones(n, *spatial, device=device)
    sides = [max(1, min(s, int(s * ratio))) for s in spatial]
    for i in range(n):
        starts = [int(torch.randint(0, s - side + 1, ())) for s, side in zip(spatial, sides)]
        keep[(i, *[slice(a, a + side) for a, side in zip(starts, sides)])] = 0
    return keep


def mix_with_previous(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """x (B, C, ...) with sample i's box (keep == 0) taken from sample i−1 (the first's from the last); a batch of
    one takes it from its own mirror image along the last axis, so that the box still holds other content.

    keep is (B, ...) as `cutmix_box` gives it; the same call mixes images and their predicted softmax alike."""
    keep = keep[:, None].to(x.dtype)
    partner = x.roll(1, dims=0) if x.shape[0] > 1 else x.flip(-1)
    return keep * x + (1 - keep) * partner
