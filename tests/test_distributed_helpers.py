"""Single-process behaviour of the distributed helpers and the resumable, rank-sharded sampler."""

import pytest
import torch

from vlm_primer.training import distributed as D
from vlm_primer.training.data import ResumableLoader, ResumableSampler


def test_helpers_alone(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert (D.rank(), D.world_size(), D.is_distributed(), D.is_main_process()) == (0, 1, False, True)
    assert D.init_distributed("cpu") == torch.device("cpu") and not D.is_initialized()
    x = torch.tensor([1.0, 2.0])
    assert D.all_reduce_mean(x) is x and D.gather_objects({"a": 1}) == [{"a": 1}]
    assert D.broadcast_object(3) == 3
    D.barrier()
    D.cleanup()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert (D.rank(), D.world_size(), D.is_main_process()) == (1, 4, False)  # torchrun's env before init


def test_sampler_shards_are_disjoint_and_a_pure_function_of_seed_and_epoch():
    n, w = 21, 2
    shards = [ResumableSampler(n, seed=3, rank=r, world_size=w) for r in range(w)]
    a, b = (list(s) for s in shards)
    assert len(a) == len(b) == 10 and not set(a) & set(b)
    expected = torch.randperm(n, generator=torch.Generator().manual_seed(3))[:20]
    assert sorted(a + b) == sorted(expected.tolist()) and a == expected[0::2].tolist()
    shards[0].set_epoch(1)
    assert list(shards[0]) != a and list(shards[0]) == ResumableSampler(n, seed=3, rank=0, world_size=w).indices(1).tolist()
    shards[0].set_epoch(0)
    shards[0].set_start(4)
    assert list(shards[0]) == a[4:] and len(shards[0]) == 6
    with pytest.raises(ValueError, match="rank"):
        ResumableSampler(n, rank=2, world_size=2)


def test_loader_starts_mid_epoch_without_touching_the_global_rng():
    data = [{"i": torch.tensor(i)} for i in range(10)]
    loader = ResumableLoader(data, 3, seed=1)
    assert len(loader) == 3
    full = [b["i"].tolist() for b in loader.iter_from(2, 0)]
    state = torch.get_rng_state()
    tail = [b["i"].tolist() for b in loader.iter_from(2, 1)]
    assert torch.equal(state, torch.get_rng_state())
    assert tail == full[1:] and len(full) == 3 and all(len(b) == 3 for b in full)
    assert full != [b["i"].tolist() for b in loader.iter_from(3, 0)]


class _RandomCrop(torch.utils.data.Dataset):
    """A sample that draws from the global RNGs (torch, NumPy, random), as a random augmentation does."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int) -> torch.Tensor:
        import random

        import numpy as np

        return torch.tensor([i, torch.rand(()).item(), np.random.rand(), random.random()])


def test_random_augmentations_resume_exactly_with_workers():
    """Starting an epoch at batch 2 gives the batches an uninterrupted epoch gives from there, random draws
    included: in workers each sample is seeded by its place in the epoch, not by the worker that loads it.
    (Without workers the draws come from the training process's RNG, which a checkpoint restores.)"""
    loader = ResumableLoader(_RandomCrop(), 2, seed=3, num_workers=2)
    full, tail = list(loader.iter_from(1, 0)), list(loader.iter_from(1, 2))
    assert len(tail) == len(full) - 2 and all(torch.equal(a, b) for a, b in zip(tail, full[2:]))
    assert len({round(float(b[0, 1]), 6) for b in full}) == len(full)  # the draws do differ from sample to sample
    other = list(loader.iter_from(2, 0))
    assert not torch.equal(other[0][:, 1:], full[0][:, 1:])  # and from epoch to epoch
