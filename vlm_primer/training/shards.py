"""Data at scale: WebDataset tar shards (what img2dataset writes and open_clip trains on).

A shard is a plain ``.tar`` whose members are grouped into samples by ``__key__``: ``KEY.png`` or
``KEY.jpg`` (the image), ``KEY.txt`` (the caption) and optionally ``KEY.json`` (metadata). Reading
and writing go through the maintained ``webdataset`` library. Explained in notebook 01,
§Datasets for training, and notebook 02, §Scaling up.

Order: :func:`shard_loader` shuffles the shard list with ``random.Random(seed + epoch)`` (the same
on every rank), gives rank ``r`` of ``W`` the shards ``r::W`` (and DataLoader workers a further
split), then shuffles samples in a buffer seeded by ``(seed, epoch, rank)``. The order of epoch
``e`` is therefore a pure function of ``(seed, e, rank, num_workers)``, which is what lets the
:class:`~vlm_primer.training.Trainer` resume by skipping the batches it already used.
"""

from __future__ import annotations

import glob
import io
import os
import random
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from webdataset.shardlists import expand_urls
from webdataset.tariterators import group_by_keys, tar_file_expander

from vlm_primer.training import distributed as D
from vlm_primer.validate import check_int

IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp")


def _png_bytes(image: torch.Tensor, where: str) -> bytes:
    if not torch.is_tensor(image) or not image.is_floating_point():
        raise TypeError(f"{where}: image must be a float tensor (3, H, W) in [0, 1], got {getattr(image, 'dtype', type(image).__name__)}")
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"{where}: image must have shape (3, H, W), got {tuple(image.shape)}")
    lo, hi = float(image.min()), float(image.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{where}: image values must be in [0, 1], got range [{lo:.3g}, {hi:.3g}]")
    pixels = (image.detach().cpu() * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels), mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def write_shards(
    samples: Iterable[dict[str, Any]],
    out_dir: str | os.PathLike,
    *,
    maxcount: int = 1000,
    prefix: str = "shard",
    maxsize: float = 3e9,
) -> list[str]:
    """Write ``samples`` as WebDataset shards ``out_dir/{prefix}-000000.tar, ...``; return their paths.

    Each sample is a dict with ``image`` (float ``(3, H, W)`` in ``[0, 1]``, stored losslessly as
    PNG after rounding to uint8), ``caption`` (str) and optionally ``key`` (str, default the
    running index) and ``meta`` (a JSON-able dict, stored as ``.json``). Refuses to write into a
    directory that already holds ``{prefix}-*.tar`` shards.
    """
    check_int(maxcount, "maxcount")
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    existing = sorted(glob.glob(os.path.join(glob.escape(out_dir), f"{prefix}-*.tar")))
    if existing:
        raise FileExistsError(f"{out_dir} already holds {len(existing)} {prefix}-*.tar shard(s); refusing to overwrite")
    pattern = os.path.join(out_dir, f"{prefix}-%06d.tar")
    count = 0
    with wds.ShardWriter(pattern, maxcount=maxcount, maxsize=maxsize, verbose=0) as sink:
        for i, sample in enumerate(samples):
            if not isinstance(sample, dict) or "image" not in sample or "caption" not in sample:
                raise ValueError(f"sample {i} must be a dict with 'image' and 'caption', got {type(sample).__name__}")
            caption = sample["caption"]
            if not isinstance(caption, str):
                raise TypeError(f"sample {i}: caption must be a str, got {type(caption).__name__}")
            record: dict[str, Any] = {
                "__key__": str(sample.get("key", f"{i:09d}")),
                "png": _png_bytes(sample["image"], f"sample {i}"),
                "txt": caption,
            }
            if sample.get("meta") is not None:
                record["json"] = sample["meta"]
            sink.write(record)
            count += 1
    paths = sorted(glob.glob(os.path.join(glob.escape(out_dir), f"{prefix}-*.tar")))
    if count == 0:
        for p in paths:
            os.remove(p)
        raise ValueError("write_shards got no samples")
    return paths


def collate_samples(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Default batch: ``image`` stacked to ``(B, 3, H, W)``; ``caption``, ``key``, ``meta`` as lists."""
    sizes = {tuple(s["image"].shape) for s in samples}
    if len(sizes) > 1:
        raise ValueError(f"images in one batch must share a size, got shapes {sorted(sizes)}; resize in a collate_fn")
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "caption": [s["caption"] for s in samples],
        "key": [s["key"] for s in samples],
        "meta": [s["meta"] for s in samples],
    }


def _to_sample(sample: dict[str, Any]) -> dict[str, Any]:
    image = next((sample[e] for e in IMAGE_EXTENSIONS if e in sample), None)
    if image is None:
        keys = sorted(k for k in sample if not k.startswith("__"))
        raise ValueError(f"sample {sample.get('__key__')!r} in {sample.get('__url__')!r} has no image (.png/.jpg); it has {keys}")
    return {
        "image": image,
        "caption": sample.get("txt"),  # None without a .txt: image-only shards (MAE) have none
        "key": sample["__key__"],
        "meta": sample.get("json", {}),
    }


def _open_shards(src: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Open each shard (``wds.gopen``: local paths, URLs, ``pipe:``) and close it once it is read.

    Used instead of ``wds.tarfile_to_samples``, which leaves its file handles for the garbage
    collector to close.
    """
    for shard in src:
        stream = wds.gopen(shard["url"])
        try:
            yield dict(shard, stream=stream)
        finally:
            stream.close()


class ShardLoader:
    """Iterable of batches from WebDataset shards; one full pass is one epoch (see module docs)."""

    def __init__(
        self,
        urls: str | Sequence[str],
        batch_size: int,
        collate_fn: Callable[[list[dict[str, Any]]], Any] | None = None,
        *,
        shuffle_buffer: int = 1000,
        shuffle_shards: bool = True,
        seed: int = 0,
        num_workers: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        partial: bool = False,
    ) -> None:
        if isinstance(urls, (str, os.PathLike)):
            self.urls = expand_urls(os.fspath(urls))
        else:
            self.urls = [os.fspath(u) for u in urls]
        if not self.urls:
            raise ValueError("shard_loader got no shard urls")
        missing = [u for u in self.urls if "://" not in u and not u.startswith("pipe:") and not os.path.exists(u)]
        if missing:
            raise FileNotFoundError(f"{len(missing)} shard(s) not found, e.g. {missing[0]!r}")
        check_int(batch_size, "batch_size")
        self.batch_size, self.collate_fn = batch_size, collate_fn or collate_samples
        self.shuffle_buffer, self.shuffle_shards, self.seed = shuffle_buffer, shuffle_shards, seed
        self.num_workers, self.partial = num_workers, partial
        self.rank = D.rank() if rank is None else rank
        self.world_size = D.world_size() if world_size is None else world_size
        if len(self.urls) < self.world_size:
            raise ValueError(f"{len(self.urls)} shard(s) cannot be split over {self.world_size} processes; write more shards")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def shards(self, epoch: int) -> list[str]:
        """This rank's shards for ``epoch``, in reading order."""
        urls = list(self.urls)
        if self.shuffle_shards:
            random.Random(self.seed + epoch).shuffle(urls)
        return urls[self.rank :: self.world_size]

    def pipeline(self, epoch: int) -> wds.DataPipeline:
        stages: list[Any] = [
            wds.SimpleShardList(self.shards(epoch)), wds.split_by_worker, _open_shards, tar_file_expander, group_by_keys,
        ]
        if self.shuffle_buffer > 1:
            rng = random.Random(f"{self.seed}-{epoch}-{self.rank}")
            stages.append(wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng))
        stages += [
            wds.decode("torchrgb"),
            wds.map(_to_sample),
            wds.batched(self.batch_size, collation_fn=self.collate_fn, partial=self.partial),
        ]
        return wds.DataPipeline(*stages)

    def __iter__(self) -> Iterator[Any]:
        pipe = self.pipeline(self.epoch)
        if self.num_workers == 0:
            return iter(pipe)
        loader = torch.utils.data.DataLoader(
            pipe, batch_size=None, num_workers=self.num_workers,
            generator=torch.Generator().manual_seed(self.seed + self.epoch),
        )
        return iter(loader)


def shard_loader(
    urls: str | Sequence[str],
    batch_size: int,
    collate_fn: Callable[[list[dict[str, Any]]], Any] | None = None,
    *,
    shuffle_buffer: int = 1000,
    shuffle_shards: bool = True,
    seed: int = 0,
    num_workers: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
    partial: bool = False,
) -> ShardLoader:
    """Batches from WebDataset shards, split by rank (``torchrun``) and DataLoader worker.

    ``urls`` is a brace pattern (``"data/shard-{000000..000009}.tar"``) or a list of paths. Each
    sample becomes ``{"image": float (3, H, W) in [0, 1], "caption": str (None without a ``.txt``), "key": str,
    "meta": dict}``; ``collate_fn(list_of_samples)`` makes the batch (default :func:`collate_samples`).
    The trailing partial batch is dropped unless ``partial=True``: once per rank without workers; with
    ``num_workers > 0`` the batches are made in the workers (collation runs in parallel, as in open_clip's
    webdataset pipeline), so each worker drops its own, up to ``num_workers * (batch_size - 1)`` samples per rank
    and epoch.
    """
    return ShardLoader(
        urls, batch_size, collate_fn, shuffle_buffer=shuffle_buffer, shuffle_shards=shuffle_shards,
        seed=seed, num_workers=num_workers, rank=rank, world_size=world_size, partial=partial,
    )
