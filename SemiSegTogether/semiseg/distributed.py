"""Distributed data parallel (DDP) plumbing: PyTorch's own engine under torchrun, nothing home-made.

`torchrun --nproc_per_node N -m semiseg train ...` sets RANK, WORLD_SIZE, LOCAL_RANK (and MASTER_ADDR /
MASTER_PORT); `setup()` then joins the process group — NCCL when the run is on CUDA, gloo on CPU — with a
finite timeout so that a collective waiting for a dead rank fails with an error instead of hanging.

Every helper here is a no-op (or the identity) when the process group is not initialised, so single-process
code paths are unchanged: methods may call `all_reduce_mean` etc. unconditionally.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from semiseg.errors import ConfigError, SemiSegError

DEFAULT_TIMEOUT_S = 1800.0


class DistributedError(SemiSegError):
    """A collective failed: another rank died or stalled past the process-group timeout."""


_COLLECTIVE_SIGNS = ("timed out", "timeout", "connection closed", "connection reset", "broken pipe", "gloo",
                     "nccl", "process group", "watchdog", "remote worker")


def is_collective_failure(exc: BaseException) -> bool:
    """Whether an exception raised on a distributed run comes from the communication layer."""
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    return isinstance(exc, RuntimeError) and any(s in str(exc).lower() for s in _COLLECTIVE_SIGNS)


def launched_by_torchrun() -> bool:
    """True when the environment carries torchrun's rank variables with more than one process."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def launch_rank() -> int:
    """This process's rank as torchrun announced it (usable before the process group exists)."""
    return int(os.environ.get("RANK", "0")) if launched_by_torchrun() else 0


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def setup(device: torch.device, timeout_s: float = DEFAULT_TIMEOUT_S) -> torch.device:
    """Join the process group when launched by torchrun; returns the device this rank trains on.

    `device` is what --device resolved to: on CUDA each rank takes cuda:LOCAL_RANK (NCCL), on CPU all ranks
    share the CPU (gloo). MPS has no DDP backend. Single process (no torchrun): returns `device` unchanged."""
    if not (launched_by_torchrun() or is_initialized()):
        return device
    if not dist.is_available():
        raise ConfigError("this PyTorch build has no torch.distributed; run without torchrun / --gpus")
    if device.type == "cuda":
        lr = int(os.environ.get("LOCAL_RANK", "0"))
        if lr >= torch.cuda.device_count():
            raise ConfigError(f"torchrun local rank {lr} but only {torch.cuda.device_count()} CUDA device(s) "
                              f"on this machine: --nproc_per_node must not exceed the GPU count")
        device = torch.device("cuda", lr)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise ConfigError(f"--device {device}: distributed training runs on CUDA (NCCL) or CPU (gloo), not "
                          f"{device.type}")
    if not is_initialized():
        kwargs: dict[str, Any] = {"backend": backend, "timeout": timedelta(seconds=float(timeout_s))}
        if backend == "nccl":
            kwargs["device_id"] = device  # binds the communicator to this rank's GPU
        dist.init_process_group(**kwargs)
    elif dist.get_backend() != backend:
        raise ConfigError(f"the process group uses {dist.get_backend()}, but training on {device} needs {backend}")
    return device


def cleanup() -> None:
    if is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_initialized():
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks. Differentiable with respect to this rank's own term: the result is
    `tensor + (Σ_ranks tensor − tensor).detach()`, so gradients flow to the local contribution
    (DDP then averages the parameter gradients as usual)."""
    if not is_initialized():
        return tensor
    total = tensor.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return tensor + (total - tensor.detach())


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean over ranks (no gradient through other ranks' values, as all_reduce_sum)."""
    if not is_initialized():
        return tensor
    return all_reduce_sum(tensor) / dist.get_world_size()


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum over ranks (no gradient); bool tensors come back as bool."""
    if not is_initialized():
        return tensor
    out = tensor.detach().clone()
    is_bool = out.dtype == torch.bool
    if is_bool:
        out = out.to(torch.uint8)
    dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return out.bool() if is_bool else out


def all_gather_cat(tensor: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Concatenate every rank's tensor along `dim` (rank order); sizes along `dim` may differ between ranks
    (gathered first, then padded). This rank's slice keeps its gradient; the others are constants."""
    if not is_initialized():
        return tensor
    n = dist.get_world_size()
    moved = tensor.movedim(dim, 0)
    size = torch.tensor([moved.shape[0]], device=tensor.device, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(n)]
    dist.all_gather(sizes, size)
    sizes_i = [int(s) for s in sizes]
    longest = max(sizes_i)
    padded = moved.detach()
    if moved.shape[0] < longest:
        pad = torch.zeros((longest - moved.shape[0], *moved.shape[1:]), dtype=moved.dtype, device=moved.device)
        padded = torch.cat([padded, pad])
    gathered = [torch.empty_like(padded) for _ in range(n)]
    dist.all_gather(gathered, padded.contiguous())
    parts = [g[:s] for g, s in zip(gathered, sizes_i)]
    parts[dist.get_rank()] = moved  # keep the local gradient
    return torch.cat(parts).movedim(0, dim)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    if not is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


@torch.no_grad()
def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Make every rank's buffers (BatchNorm running statistics) equal to rank `src`'s."""
    if not is_initialized():
        return
    for buf in module.buffers():
        if buf.dtype != torch.bool:  # bool buffers are constant masks (and gloo cannot send them)
            dist.broadcast(buf, src=src)


__all__ = ["launched_by_torchrun", "launch_rank", "is_initialized", "rank", "world_size", "local_rank", "is_main", "setup",
           "cleanup", "barrier", "all_reduce_sum", "all_reduce_mean", "all_reduce_max", "all_gather_cat",
           "broadcast_object", "all_gather_object", "broadcast_buffers", "DEFAULT_TIMEOUT_S",
           "DistributedError", "is_collective_failure"]
