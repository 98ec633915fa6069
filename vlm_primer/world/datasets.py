"""torch ``Dataset``s over Shapes World and the collate function that tokenises captions.

Explained in notebook 01, §Datasets. Items are generated on the fly, deterministically: item ``i``
of a split is a pure function of ``(seed, split, i)`` (see ``splits.py``), so a dataset needs no
storage and two workers never disagree.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch.utils.data import Dataset

from vlm_primer.validate import check_int
from vlm_primer.world.language import CAPTION_KINDS, Caption, caption_scene, describe, paraphrases
from vlm_primer.world.negatives import hard_negative
from vlm_primer.world.render import boxes as scene_boxes
from vlm_primer.world.render import render
from vlm_primer.world.scene import Composition, Scene, WorldConfig, check_num_objects
from vlm_primer.world.splits import check_held_out, check_split, distinct_pool, split_compositions, split_scene


class SceneDataset(Dataset):
    """The scenes of one split, generated on the fly: what every Shapes World dataset shares.

    Scene ``i`` is a pure function of ``(seed, split, i)`` (see ``splits.py``); ``num_objects`` is
    ``n`` or ``(min, max)`` (None: the config's range), ``held_out`` the (color, shape) pairs kept
    for the ``compositional`` split, ``distinct=B`` gives every block of ``B`` consecutive scenes
    first objects of ``B`` different compositions. Subclasses turn :meth:`scene` into items.
    """

    def __init__(
        self,
        split: str = "train",
        size: int = 1000,
        config: WorldConfig | None = None,
        seed: int = 0,
        num_objects: int | tuple[int, int] | None = None,
        held_out: Iterable[Composition] | None = None,
        distinct: int | None = None,
    ) -> None:
        self.split = check_split(split)
        size = check_int(size, "size", hint="the number of items")
        self.config = config if config is not None else WorldConfig()
        if not isinstance(self.config, WorldConfig):
            raise TypeError(f"config must be a WorldConfig, got {type(self.config).__name__}")
        check_int(seed, "seed", 0)
        self.size, self.seed = size, seed
        self.num_objects = check_num_objects(
            (self.config.min_objects, self.config.max_objects) if num_objects is None else num_objects
        )
        self.held_out = check_held_out(held_out)
        allowed, required = split_compositions(self.split, self.config, self.held_out)  # fails early on an empty split
        if distinct is not None:  # fails early on a block larger than the split's compositions
            distinct_pool(self.split, allowed, required, distinct)
        self.distinct = distinct

    def __len__(self) -> int:
        return self.size

    def _index(self, index: int) -> int:
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        if not -self.size <= index < self.size:
            raise IndexError(f"index {index} out of range for a dataset of size {self.size}")
        return int(index) % self.size

    def scene(self, index: int) -> tuple[Scene, np.random.Generator]:
        """Scene ``index`` and its generator (positioned after sampling it, for captions and questions)."""
        return split_scene(self.split, self._index(index), self.seed, self.config, self.num_objects, self.held_out,
                           self.distinct)


class ShapesCaptionDataset(SceneDataset):
    """Image-caption pairs from Shapes World (explained in notebook 01, §Datasets).

    Each item is a dict with ``image`` ``(3, H, W)`` float in ``[0, 1]``, ``caption`` (str, of
    ``caption_kind``), ``captions`` (paraphrases of it), ``statements`` (one true caption of every
    other kind), ``scene``, ``boxes`` ``(N, 4)`` pixel xyxy, ``meaning`` and ``index``; with
    ``negatives=True`` also ``negative`` (a hard negative, str, or "" when none applies). With one
    object per scene it also has ``label`` (``"red circle"``) and ``label_id`` into ``classnames``.

    ``caption_kind``: one of ``CAPTION_KINDS`` or ``"random"`` (a random applicable kind per item);
    ``num_objects``: ``n`` or ``(min, max)``; None uses the config's range (``(1, 3)`` by default).
    ``statements=False`` skips the other captions (about a third faster).

    ``distinct=B`` makes every block of ``B`` consecutive items (``0..B-1``, ``B..2B-1``, ...) show
    ``B`` different (color, shape) compositions (of the first object). Read in order in batches of
    ``B`` (``ResumableLoader(..., shuffle=False)``), no batch holds two pairs with the same meaning,
    so a contrastive loss never treats a true match as a negative (explained in notebook 02,
    §Training a tiny CLIP). ``B`` is at most the split's number of compositions (42 for ``train``
    with the default held-out pairs). That holds for one object per scene; with more, only the first objects
    differ, so a one-object caption can also be true of another scene of the block that holds that object
    (the zoo's ``clip-tiny-pairs``, one or two objects in blocks of 32, has about six such pairs per batch).
    """

    def __init__(
        self,
        split: str = "train",
        size: int = 1000,
        config: WorldConfig | None = None,
        seed: int = 0,
        num_objects: int | tuple[int, int] | None = None,
        held_out: Iterable[Composition] | None = None,
        caption_kind: str = "objects",
        num_paraphrases: int = 4,
        negatives: bool = False,
        statements: bool = True,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        distinct: int | None = None,
    ) -> None:
        super().__init__(split, size, config, seed, num_objects, held_out, distinct)
        if caption_kind not in CAPTION_KINDS + ("random",):
            raise ValueError(f"unknown caption_kind {caption_kind!r}; choose one of {CAPTION_KINDS + ('random',)}")
        if num_paraphrases < 1:
            raise ValueError(f"num_paraphrases must be >= 1, got {num_paraphrases}")
        self.caption_kind, self.num_paraphrases = caption_kind, num_paraphrases
        self.negatives, self.statements, self.transform = negatives, statements, transform
        self.classnames: list[str] = [f"{c} {s}" for c in self.config.colors for s in self.config.shapes]
        self._class_index = {name: i for i, name in enumerate(self.classnames)}

    @property
    def single_object(self) -> bool:
        return self.num_objects == (1, 1)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = self._index(index)
        cfg = self.config
        scene, rng = self.scene(index)
        vocab = dict(colors=cfg.colors, shapes=cfg.shapes)
        kind = self.caption_kind
        if kind == "random":
            kind = CAPTION_KINDS[int(rng.integers(len(CAPTION_KINDS)))]
        caption = caption_scene(scene, rng, kind, cfg.margin, **vocab)
        if caption is None:  # e.g. no clear relation in a one-object scene
            caption = caption_scene(scene, rng, "objects", cfg.margin, **vocab)
        assert isinstance(caption, Caption)
        image = render(scene, cfg.image_size)
        if self.transform is not None:
            image = self.transform(image)
        item: dict[str, Any] = {
            "image": image,
            "caption": caption.text,
            "captions": paraphrases(caption.meaning, rng, self.num_paraphrases),
            "meaning": caption.meaning,
            "scene": scene,
            "boxes": scene_boxes(scene, cfg.image_size),
            "index": index,
        }
        if self.statements:
            others = describe(scene, rng, margin=cfg.margin, **vocab)
            item["statements"] = [c.text for c in others if c.kind != caption.kind]
        if self.negatives:
            neg = hard_negative(caption, scene, rng, margin=cfg.margin)
            item["negative"] = neg.text if neg is not None else ""
        if self.single_object:
            obj = scene.objects[0]
            item["label"] = f"{obj.color} {obj.shape}"
            item["label_id"] = self._class_index[item["label"]]
        return item


def make_collate(
    tokenizer=None,
    max_length: int | None = 32,
    text_key: str = "caption",
    add_bos: bool = False,
) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
    """A ``collate_fn`` that stacks images and tokenises ``text_key`` (default tokenizer: ``Tokenizer.load()``).

    Returns ``pixel_values`` ``(B, 3, H, W)``, ``input_ids``/``attention_mask`` ``(B, L)``, the raw
    ``captions``, ``scenes`` and ``boxes`` lists, ``labels`` ``(B,)`` when items carry ``label_id``,
    and ``negative_ids``/``negative_mask`` when items carry ``negative``.
    """
    if tokenizer is None:
        from vlm_primer.text import Tokenizer

        tokenizer = Tokenizer.load()

    def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
        if not batch:
            raise ValueError("cannot collate an empty batch")
        texts = [item[text_key] for item in batch]
        if not all(isinstance(t, str) for t in texts):
            raise TypeError(f"items[{text_key!r}] must be strings")
        enc = tokenizer(texts, max_length=max_length, add_bos=add_bos)
        out: dict[str, Any] = {
            "pixel_values": torch.stack([item["image"] for item in batch]),
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "captions": texts,
            "scenes": [item.get("scene") for item in batch],
            "boxes": [item.get("boxes") for item in batch],
        }
        if "label_id" in batch[0]:
            out["labels"] = torch.tensor([item["label_id"] for item in batch], dtype=torch.long)
        if "negative" in batch[0]:
            neg = tokenizer([item["negative"] for item in batch], max_length=max_length, add_bos=add_bos)
            out["negative_ids"], out["negative_mask"] = neg["input_ids"], neg["attention_mask"]
        return out

    return collate
