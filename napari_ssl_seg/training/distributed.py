"""torch.distributed for the training loop: data parallel over GPUs and machines, CPU/gloo for tests.

Launch with ``torchrun`` (``python -m torch.distributed.run``); the loop notices the ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` variables it sets. One process per GPU:

* one machine, 4 GPUs::

    torchrun --standalone --nproc_per_node 4 -m napari_ssl_seg.cli train PROJECT --method uamt

* two machines with 8 GPUs each (run on both; ``--node_rank`` 0 and 1, the first machine's address)::

    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --rdzv_backend c10d \\
        --rdzv_endpoint HOST0:29500 -m napari_ssl_seg.cli train PROJECT --method uamt

  The project folder must be readable on every machine (shared file system); only rank 0 writes.

What the loop does with it: NCCL on CUDA (each rank on ``cuda:LOCAL_RANK``), gloo on the CPU; each
rank samples its own patches (the sampler seed includes the rank), so the effective batch is
``world_size`` times the configured one; trainable networks are wrapped in
``DistributedDataParallel`` (gradients averaged, so every rank takes the same optimiser step);
teachers are broadcast from rank 0 after every teacher update; only rank 0 validates, logs and
writes files; a stop request on any rank stops all of them at the same iteration.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["STOP_POLL_EVERY", "DistContext", "broadcast_json", "broadcast_module", "init_distributed", "wrap_for_ddp"]


#: Across ranks a stop request is polled every this many iterations, not every one: each poll is a
#: collective whose result the host must read, which on NCCL waits for the GPU's queued work.
STOP_POLL_EVERY = 10


@dataclass
class DistContext:
    """Where this process stands in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def any_true(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any rank (keeps ranks in step)."""
        if not self.enabled:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=_collective_device())
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def stop_requested(self, iteration: int, should_stop: Callable[[], bool] | None) -> bool:
        """Whether to stop before ``iteration``, the same answer on every rank.

        One process asks ``should_stop`` every iteration (a host flag, free); ranks agree on it
        every :data:`STOP_POLL_EVERY` iterations, so a cancel lands within that many.
        """
        if self.enabled and iteration % STOP_POLL_EVERY:
            return False
        asked = bool(should_stop is not None and should_stop())
        return self.any_true(asked) if self.enabled else asked

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def _collective_device() -> torch.device:
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def init_distributed(device_type: str) -> DistContext:
    """Join the torchrun process group when launched by torchrun; a single-process context otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 or not dist.is_available():
        return DistContext()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, init_method="env://")
        owns = True
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, owns_group=owns)


@torch.no_grad()
def broadcast_module(module: nn.Module, ctx: DistContext) -> None:
    """Make every rank hold rank 0's parameters and buffers of ``module``.

    Why teachers need this although their students are synchronised by DDP: an EMA teacher also
    averages the student's BatchNorm running statistics, and those are updated by each rank's own
    forward passes on its own patches, so they differ between ranks; an EMA of them (and any
    teacher state a method computes from local data) would drift apart, and ranks would then
    compute consistency targets with different teachers. Broadcasting after each update keeps one
    teacher, the one rank 0 validates and exports.
    """
    if not ctx.enabled:
        return
    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, src=0)


def broadcast_json(value: Any, ctx: DistContext) -> Any:
    """Rank 0's ``value`` on every rank, sent as JSON bytes (``broadcast_object_list`` would pickle)."""
    if not ctx.enabled:
        return value
    device = _collective_device()
    payload = json.dumps(value).encode("utf-8") if ctx.is_main else b""
    size = torch.tensor([len(payload)], dtype=torch.int64, device=device)
    dist.broadcast(size, src=0)
    buffer = torch.zeros(int(size.item()), dtype=torch.uint8, device=device)
    if ctx.is_main:
        buffer.copy_(torch.frombuffer(bytearray(payload), dtype=torch.uint8))
    dist.broadcast(buffer, src=0)
    return json.loads(bytes(buffer.cpu().tolist()).decode("utf-8"))


def wrap_for_ddp(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` as a DistributedDataParallel network on ``device`` (its gradients averaged over ranks)."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    # Methods may leave parameters of a trainable network without gradient in a step (UG-CEMT's
    # teacher-side attention projections feed a detached path), which plain DDP reports as an
    # error; finding them costs one graph walk per backward.
    return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)
