"""Data-parallel helpers: start from torchrun's environment, all-reduce, broadcast.

Launch any training script with ``torchrun --nproc_per_node N script.py ...``; the Trainer calls
:func:`init_from_env` itself, shards every global batch across the N processes and averages their
gradients, so N processes give the same weights as one process with the same ``batch_size`` (up to
float summation order). Backend: gloo on CPU, nccl on CUDA. Without torchrun's variables (or with
WORLD_SIZE=1) everything here is a no-op on a single process.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_from_env(backend: str | None = None, timeout_s: float = 1800.0) -> bool:
    """Join the process group described by torchrun's RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT.

    Idempotent; returns True when running distributed. backend None = nccl when CUDA is available,
    gloo otherwise. On CUDA each process uses the GPU ``LOCAL_RANK``.
    """
    if is_distributed():
        return True
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return False
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return True


def cleanup() -> None:
    """Leave the process group (call once at the end of a distributed script)."""
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over processes, in place; returns it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy parameters and buffers of ``src`` to every process (identical starting weights)."""
    if not is_distributed():
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=src)


def all_reduce_gradients(params: list[torch.Tensor], bucket_numel: int = 2**23) -> None:
    """Sum the gradients of ``params`` over processes, in buckets of flattened tensors.

    A parameter that got a gradient in some process but not in this one (unused in its forward) gets
    zeros here; one that got none anywhere keeps ``grad=None``, so the optimizer skips it exactly as a
    single process would. Each process weights its loss by its share of the global batch, so the sum
    (not the mean) is the gradient of the global batch.
    """
    if not is_distributed():
        return
    device = params[0].device if params else torch.device("cpu")
    has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=device)
    dist.all_reduce(has_grad, op=dist.ReduceOp.MAX)
    params = [p for p, used in zip(params, has_grad.tolist()) if used]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    bucket: list[torch.Tensor] = []
    size = 0
    for p in params + [None]:
        if p is not None:
            bucket.append(p.grad)
            size += p.grad.numel()
        if bucket and (p is None or size >= bucket_numel):
            flat = torch.cat([g.reshape(-1) for g in bucket])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            offset = 0
            for g in bucket:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()
            bucket, size = [], 0


def gather_objects(obj) -> list:
    """Every process's ``obj`` (picklable), in rank order, on every process."""
    if not is_distributed():
        return [obj]
    out = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out
