"""Distributed helpers for ``torchrun`` (DistributedDataParallel through ``torch.distributed``).

``torchrun --nproc_per_node N ...`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT``; :func:`init_distributed` reads them, starts the process group (NCCL on CUDA, Gloo on
CPU) and returns the device this process should use. Every helper also works in a plain single
process: ``rank() == 0``, ``world_size() == 1`` and the collectives are no-ops.

Explained in notebook 02, §Scaling up (DDP with ``torchrun``).
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

from vlm_primer.utils import default_device


def is_initialized() -> bool:
    """True when a ``torch.distributed`` process group is running in this process."""
    return dist.is_available() and dist.is_initialized()


def is_distributed() -> bool:
    """True when this process is one of several in a running process group."""
    return is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """Global rank of this process (``RANK`` from ``torchrun`` before the group starts; 0 alone)."""
    return dist.get_rank() if is_initialized() else int(os.environ.get("RANK", 0))


def world_size() -> int:
    """Number of processes (``WORLD_SIZE`` from ``torchrun`` before the group starts; 1 alone)."""
    return dist.get_world_size() if is_initialized() else int(os.environ.get("WORLD_SIZE", 1))


def local_rank() -> int:
    """Rank of this process on its machine (``LOCAL_RANK``); picks the GPU under ``torchrun``."""
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main_process() -> bool:
    """Rank 0: the one process that logs, plots and writes checkpoints."""
    return rank() == 0


def init_distributed(device: str | torch.device | None = "auto", backend: str | None = None) -> torch.device:
    """Start the process group when ``WORLD_SIZE > 1`` and return this process's device.

    ``device="auto"`` means ``cuda:LOCAL_RANK`` when CUDA is available, else what
    :func:`vlm_primer.utils.default_device` picks. The backend defaults to NCCL on CUDA and Gloo
    otherwise. Calling it again (or inside an already initialised group) is harmless.
    """
    dev = default_device(device)
    if world_size() <= 1:
        return dev
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank() if dev.index is None else dev.index)
        torch.cuda.set_device(dev)
    if not is_initialized():
        backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
        kwargs = {"device_id": dev} if backend == "nccl" else {}
        dist.init_process_group(backend=backend, **kwargs)
    return dev


def cleanup() -> None:
    """Destroy the process group if one is running (call once at the end of a ``torchrun`` script)."""
    if is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process (no-op when alone)."""
    if is_distributed():
        dist.barrier()


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over processes (a new tensor; ``x`` itself when alone). Not differentiable."""
    if not is_distributed():
        return x
    y = x.detach().clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y / dist.get_world_size()


def gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj`` (picklable Python objects) as a list indexed by rank, on all ranks."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every process."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
