"""Under torchrun: SyncBatchNorm (optional) and one DistributedDataParallel around the method's trainable
module, which the method's forward passes then go through (`set_step_net`)."""

from __future__ import annotations

import inspect

import torch

from semiseg.errors import ConfigError


def wrap_distributed(method, device: torch.device, world_size: int, sync_bn: bool, method_name: str):
    """The DDP wrapper (also installed as the method's step net), or None in a single process."""
    trainable = method.trainable()
    if sync_bn and world_size > 1:
        if device.type != "cuda":
            raise ConfigError("--sync-bn: SyncBatchNorm runs on CUDA only; on CPU use a method's norm=instance "
                              "or norm=group option instead")
        # In place on the trainable module (its parameters and buffers are kept, so the EMA teacher copies
        # made at build time and the checkpoint keys are unaffected); before the optimiser is built.
        converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(trainable)
        if converted is not trainable:
            raise ConfigError(f"--sync-bn: method {method_name!r}'s trainable module is itself a BatchNorm")
    if world_size == 1:
        return None
    from torch.nn.parallel import DistributedDataParallel
    # Buffers are broadcast once after each step instead of before every forward pass (see the loop's step):
    # methods run several passes per step, and the EMA teacher reads the buffers after the step.
    no_forward_sync = ({"forward_sync_buffers": False}
                       if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                       else {"broadcast_buffers": False})  # PyTorch before forward_sync_buffers
    ddp = DistributedDataParallel(
        trainable, device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=bool(method.ddp_find_unused_parameters),
        static_graph=bool(method.ddp_static_graph), **no_forward_sync)
    method.set_step_net(ddp)
    return ddp
