"""Merging the outputs of several task prompts (VerSemi) into one multi-label map.

A prompted model answers one task at a time: task t gives probabilities (1 + n_t, ...) over
background and its structures, in the order of its class values. Several prompts merge as:
each prompt claims the voxels where its most probable channel is a structure, with that
structure's probability as its confidence; a voxel claimed by several prompts goes to the more
confident one (ties: the earlier prompt); unclaimed voxels are background (0).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from semiseg.errors import ModelError


def merge_task_probabilities(per_task: Sequence[tuple[Sequence[int], "torch.Tensor | np.ndarray"]]):
    """[(class_values, probs (1 + len(class_values), *spatial)), ...] → label map (*spatial) of class values.

    Returns a numpy int array when the first probabilities are numpy, else a torch long tensor.
    """
    if not per_task:
        raise ModelError("no task prompts to merge")
    as_numpy = isinstance(per_task[0][1], np.ndarray)
    best_conf = None
    labels = None
    for values, probs in per_task:
        probs = torch.as_tensor(probs)
        values = [int(v) for v in values]
        if probs.shape[0] != 1 + len(values):
            raise ModelError(f"a prompt with class values {values} needs {1 + len(values)} probability channels "
                             f"(background first), got {probs.shape[0]}")
        if best_conf is None:
            best_conf = torch.zeros(probs.shape[1:], dtype=torch.float32, device=probs.device)
            labels = torch.zeros(probs.shape[1:], dtype=torch.long, device=probs.device)
        elif probs.shape[1:] != best_conf.shape:
            raise ModelError(f"prompts disagree on the image size: {tuple(probs.shape[1:])} vs {tuple(best_conf.shape)}")
        conf, idx = probs.float().max(0)
        lut = torch.tensor([0, *values], dtype=torch.long, device=probs.device)
        claims = (idx > 0) & (conf > best_conf)
        best_conf = torch.where(claims, conf, best_conf)
        labels = torch.where(claims, lut[idx], labels)
    return labels.cpu().numpy() if as_numpy else labels
