"""One optimiser step of any method: the part of an iteration the planner's timing probe measures too."""

from __future__ import annotations

import torch

from semiseg import distributed
from semiseg.fastpaths import FastPaths
from semiseg.training.optimisation import Optimisation


def optimiser_step(method, optimisation: Optimisation, labeled_stream, unlabeled_stream, device: torch.device,
                   fast: FastPaths, it: int, ddp=None) -> dict[str, float]:
    """Draw the batches, run the method's training step (autocast as `fast` says), step the optimiser; returns
    the losses as floats."""
    method.train()
    labeled = to_device(next(labeled_stream), device, fast)
    unlabeled = to_device(next(unlabeled_stream), device, fast) if unlabeled_stream else None
    method.before_optimizer_step(it)
    with fast.autocast(device):
        losses = method.training_step(labeled, unlabeled, it)
    total = losses["total"]
    if not torch.isfinite(total):
        raise FloatingPointError(f"the loss became {total.item()} at iteration {it + 1}; lower the learning "
                                 f"rate or check the data")
    optimisation.step(total)
    if ddp is not None:
        # BatchNorm running statistics: rank 0's everywhere, so that EMA teachers stay identical.
        distributed.broadcast_buffers(method.trainable())
    method.after_optimizer_step(it)
    return {k: float(v.detach().float()) for k, v in losses.items()}


def to_device(batch: dict, device: torch.device, fast: FastPaths | None = None) -> dict:
    """The batch's tensors on `device`; 5D images in the network's memory format."""
    prepare = fast.prepare_input if fast is not None else (lambda x: x)
    return {k: (prepare(v.to(device, non_blocking=True)) if isinstance(v, torch.Tensor) else v)
            for k, v in batch.items()}
