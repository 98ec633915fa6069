"""Resumable data order: a sampler and a loader whose order is a pure function of (seed, epoch).

Exact resumption needs the data to continue where it stopped. Here the permutation of epoch ``e``
is ``torch.randperm(n)`` drawn from a private generator seeded with ``seed + e`` (never the global
RNG), each of ``W`` processes takes every ``W``-th index of it (the last ``n mod W`` samples are
dropped so every rank sees the same number), and a loader can start at any batch of an epoch. The
:class:`~vlm_primer.training.Trainer` stores ``(epoch, batch)`` in its checkpoints.

Explained in notebook 02, §Training a tiny CLIP and §Scaling up.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler, default_collate

from vlm_primer.training import distributed as D
from vlm_primer.validate import check_int


class SeededByPosition(torch.utils.data.Dataset):
    """``dataset`` read with ``(position, index)`` items: before loading ``dataset[index]``, Python's, NumPy's and
    torch's RNGs are seeded from ``key`` and the sample's ``position`` in the epoch. Used in loader workers, where
    which worker loads a sample (and so its RNG state) depends on where the epoch was started."""

    def __init__(self, dataset: Any, key: tuple[int, ...]) -> None:
        self.dataset, self.key = dataset, tuple(int(k) % 2**32 for k in key)  # SeedSequence takes no negatives

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> Any:
        position, index = item
        seed = int(np.random.SeedSequence([*self.key, position]).generate_state(1)[0])
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        return self.dataset[index]


class ResumableSampler(Sampler[int]):
    """Indices of one epoch for one rank, optionally starting at position ``start``.

    ``order(epoch)`` is ``randperm(n, generator=Generator().manual_seed(seed + epoch))`` (or
    ``arange(n)`` without shuffling); rank ``r`` of ``W`` takes ``order[:n - n % W][r::W]``.
    """

    def __init__(
        self,
        num_samples: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        check_int(num_samples, "num_samples", 0)
        self.num_samples, self.shuffle, self.seed = num_samples, shuffle, seed
        self.rank = D.rank() if rank is None else rank
        self.world_size = D.world_size() if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must be in [0, world_size={self.world_size}), got {self.rank}")
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_start(self, start: int) -> None:
        """Skip the first ``start`` indices of this rank's share of the epoch."""
        if not 0 <= start <= self.per_rank:
            raise ValueError(f"start must be in [0, {self.per_rank}], got {start}")
        self.start = start

    @property
    def per_rank(self) -> int:
        return self.num_samples // self.world_size

    def indices(self, epoch: int) -> torch.Tensor:
        """This rank's full index list for ``epoch`` (a pure function of seed, epoch, rank)."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(self.num_samples, generator=g)
        else:
            order = torch.arange(self.num_samples)
        return order[: self.per_rank * self.world_size][self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        yield from self.indices(self.epoch)[self.start :].tolist()

    def __len__(self) -> int:
        return self.per_rank - self.start


def auto_num_workers(device: torch.device | str, cpu_count: int | None = None, procs_per_node: int | None = None) -> int:
    """Loader worker processes for ``num_workers="auto"``: none on a CPU (workers would take the cores the
    model computes on, and chapter 06 measured little gain at 2 cores) or Apple's MPS (macOS starts workers by
    spawning, which cannot send a notebook's own functions to them); on a CUDA GPU, the machine's cores shared by
    the training processes on it (``LOCAL_WORLD_SIZE`` under ``torchrun``), one left to each process's main
    loop, at most 8 (beyond that the collate, not the workers, is what waits).
    """
    if torch.device(device).type != "cuda":
        return 0
    import os

    cpus = cpu_count if cpu_count is not None else (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                                      else os.cpu_count() or 1)
    procs = procs_per_node if procs_per_node is not None else int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    return max(0, min(8, cpus // max(1, procs) - 1))


def check_batch(batch: Any) -> dict[str, Any]:
    """``batch`` if it is a dict (what the Trainer passes as ``model(**batch)``); a TypeError otherwise."""
    if not isinstance(batch, dict):
        raise TypeError(f"a batch must be a dict of tensors (passed as model(**batch)), got {type(batch).__name__}")
    return batch


class Batches:
    """Ready-made batches (dicts of batched tensors) as a :class:`~vlm_primer.training.Trainer`'s training data, used
    as they are: each pass over them is an epoch, in their order. A plain list of them would be read as a dataset
    of samples and batched again (a list of batches and a list of samples look alike to the Trainer). Explained in
    notebook 02, §Training a tiny CLIP."""

    def __init__(self, batches: Iterable[dict[str, Any]]) -> None:
        self.batches = [check_batch(batch) for batch in batches]
        if not self.batches:
            raise ValueError("Batches needs at least one batch")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class ResumableLoader:
    """Batches of a map-style dataset in the order of a :class:`ResumableSampler`.

    Iterating gives full batches only (the last partial batch is dropped, so every rank and every
    step sees ``batch_size`` samples). ``iter_from(epoch, batch)`` starts in the middle of an epoch.
    Worker processes (``num_workers > 0``) get seeds drawn from a private generator seeded with
    ``seed + epoch``, so creating a loader never touches the global RNG; in them each sample's random draws
    (``random``, NumPy, torch: a random crop in a transform) are seeded from its place in the epoch
    (:class:`SeededByPosition`), so they do not depend on which worker loads it, and a resumed run draws what
    the uninterrupted one did. Without workers they come from the training process's RNG, which a checkpoint
    restores.
    """

    def __init__(
        self,
        dataset: Sequence[Any] | torch.utils.data.Dataset,
        batch_size: int,
        *,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        shuffle: bool = True,
        seed: int = 0,
        num_workers: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        pin_memory: bool = False,
    ) -> None:
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(f"ResumableLoader needs a map-style dataset (__len__ and __getitem__), got {type(dataset).__name__}")
        check_int(batch_size, "batch_size")
        self.dataset, self.batch_size = dataset, batch_size
        self.collate_fn = collate_fn or default_collate
        self.num_workers, self.pin_memory, self.seed = num_workers, pin_memory, seed
        self.sampler = ResumableSampler(len(dataset), shuffle=shuffle, seed=seed, rank=rank, world_size=world_size)
        if len(self) == 0:
            raise ValueError(
                f"dataset of {len(dataset)} samples is smaller than one batch of {batch_size} per process "
                f"x {self.sampler.world_size} process(es); lower batch_size or add data"
            )
        self.epoch = 0

    def __len__(self) -> int:
        """Full batches per epoch for this rank."""
        return self.sampler.per_rank // self.batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def iter_from(self, epoch: int, batch: int = 0) -> Iterator[Any]:
        """Batches of ``epoch`` starting at batch index ``batch``."""
        if not 0 <= batch <= len(self):
            raise ValueError(f"batch must be in [0, {len(self)}], got {batch}")
        self.sampler.set_epoch(epoch)
        self.sampler.set_start(batch * self.batch_size)
        dataset, sampler = self.dataset, self.sampler
        if self.num_workers:
            dataset = SeededByPosition(self.dataset, (self.seed, epoch, self.sampler.rank))
            sampler = list(enumerate(self.sampler, batch * self.batch_size))
        loader = DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            collate_fn=self.collate_fn,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            drop_last=True,
            generator=torch.Generator().manual_seed(self.seed + epoch),
            persistent_workers=False,
            prefetch_factor=4 if self.num_workers else None,  # a few batches ready while the GPU steps
        )
        return iter(loader)

    def __iter__(self) -> Iterator[Any]:
        return self.iter_from(self.epoch, 0)
