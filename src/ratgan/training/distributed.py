"""Several processes with PyTorch's own engine: ``torchrun --nproc_per_node N -m ratgan train``.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; each rank trains on its own shard of the cohort
with its own random streams, the phases are wrapped in DistributedDataParallel (so gradients,
gradient-penalty gradients included, are averaged across ranks), and only rank 0 writes logs,
figures and checkpoints.  A single process is the special case world_size == 1 with no wrapping.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ratgan.errors import RatganError
from ratgan.seeds import derived_seed


@dataclass
class DistInfo:
    """Where this process stands among the ranks."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True when torchrun (or torch.distributed.run) started this process with several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by torchrun; pick this rank's device."""
    if not launched_by_torchrun():
        return DistInfo(), device
    info = DistInfo(
        int(os.environ["RANK"]),
        int(os.environ.get("LOCAL_RANK", "0")),
        int(os.environ["WORLD_SIZE"]),
    )
    if device.type == "cuda":
        if torch.cuda.device_count() <= info.local_rank:
            raise RatganError(
                f"rank {info.rank} needs GPU {info.local_rank} but this machine "
                f"has {torch.cuda.device_count()}."
            )
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return info, device


def finish(info: DistInfo) -> None:
    """Wait until every rank has finished (rank 0 may still be writing a checkpoint)."""
    if info.enabled and dist.is_initialized():
        dist.barrier()


def teardown(info: DistInfo) -> None:
    """Leave the process group (if this process joined one).

    destroy_process_group only drops the registry's reference: DistributedDataParallel's
    reducers hold the group too, and reference cycles keep them alive after the training loop
    returns.  Left to interpreter shutdown, a gloo worker thread then tries to take the GIL
    while Python finalises and the process aborts ("terminate called without an active
    exception": 4 of 20 two-rank runs under load, seen with gdb).  Collecting first lets the
    group be destroyed, and its threads joined, while Python is still alive (0 of 40).
    """
    if info.enabled and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def wrapper(info: DistInfo, device: torch.device) -> Callable[[nn.Module], nn.Module]:
    """The function that wraps a phase module: DDP under torchrun, identity otherwise."""
    if not info.enabled:
        return lambda module: module

    def wrap(module: nn.Module) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    return wrap


def rank_seed(seed: int, rank: int, stream: int) -> int:
    """An independent seed for each (rank, stream); rank 0 of one process keeps ``seed + stream``
    so that single-process runs are unchanged by the distributed code."""
    return seed + stream if rank == 0 else seed + stream + 1_000_003 * rank


def resumed_seed(seed: int, iteration: int, rank: int, stream: int) -> int:
    """An independent seed for each (run seed, iteration, rank, stream): the fresh random
    streams of a run resumed on another number of processes (NumPy's SeedSequence mixes the
    four numbers, so no two of them give the same seed by adding up)."""
    return derived_seed(seed, iteration, rank, stream)


def mean_over_ranks(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """``values`` averaged over every rank (one collective; every rank must call it)."""
    if not info.enabled:
        return values
    total = values.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / info.world_size


def all_finite(flag: torch.Tensor, info: DistInfo) -> bool:
    """Whether every rank's losses stayed finite (one host sync, at logging intervals only)."""
    if info.enabled:
        value = flag.to(torch.int32).reshape(1)
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
        return bool(value.item())
    return bool(flag)


def any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """Whether ``flag`` is true on any rank (one collective; every rank must call it)."""
    if not info.enabled:
        return flag
    value = torch.tensor([int(flag)], dtype=torch.int32, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj``, in rank order (a list of one in a single process)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out
