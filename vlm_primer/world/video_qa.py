"""Video QA on Shapes World clips: a suite that one frame can mostly answer, and one that provably needs two.

Explained in notebook 08, §Single-frame bias (survey §5.4). Many video benchmarks can be solved from a single frame,
so they measure nothing temporal. :class:`VideoQADataset` draws a clip (:func:`~vlm_primer.world.video.sample_clip`)
and one question per item from one of two suites:

* ``standard``: what a typical video QA benchmark mixes: appearance questions about the first frame (colour,
  shape, how many, is there: :func:`~vlm_primer.world.vqa.ask`; objects keep their colour and shape and nothing
  appears, so every frame answers them) and temporal ones (which way, how many bounces, does X hit Y) as they come;
* ``temporal``: only questions that the reversed clip answers differently
  (:func:`~vlm_primer.world.video.needs_two_frames`): which way an object starts to move, which of two events
  comes first. No function of a single frame answers them above chance on a clip and its reversal.

Item ``i`` is a pure function of ``(seed, split, i)`` and honours the compositional splits like every Shapes World
dataset.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from vlm_primer.validate import check_choice, check_int
from vlm_primer.world.scene import Composition, Scene, WorldConfig
from vlm_primer.world.datasets import SceneDataset
from vlm_primer.world.splits import split_compositions, split_rng
from vlm_primer.world.tasks import _question_item
from vlm_primer.world.video import Clip, ask_temporal, needs_two_frames, render_clip, sample_clip
from vlm_primer.world.vqa import Question, ask

__all__ = ["APPEARANCE_TYPES", "SUITES", "VideoQADataset"]

SUITES = ("standard", "temporal")
APPEARANCE_TYPES = ("color", "shape", "count", "exist")
STANDARD_TYPES = APPEARANCE_TYPES + ("direction", "bounces", "hit")
TEMPORAL_TYPES = ("direction", "first_event")
MAX_DRAWS = 100


class VideoQADataset(SceneDataset):
    """One question per clip of ``num_frames`` frames, from ``suite`` (:data:`SUITES`). Items: ``frames``
    ``(T, 3, H, W)`` in ``[0, 1]``, ``question``, ``answer``, ``answers``, ``qtype``, ``answer_type``,
    ``sentence``, ``needs_two_frames`` (proved by the reversed clip), ``clip`` and ``index``. ``split``, ``size``,
    ``config``, ``seed``, ``num_objects`` and ``held_out`` as :class:`~vlm_primer.world.SceneDataset`'s."""

    def __init__(self, split: str = "train", size: int = 1000, config: WorldConfig | None = None, seed: int = 0, *,
                 suite: str = "temporal", num_frames: int = 9, num_objects: int | tuple[int, int] = (2, 3),
                 held_out: Iterable[Composition] | None = None) -> None:
        super().__init__(split, size, config, seed, num_objects, held_out)
        self.suite = check_choice(suite, SUITES, "suite")
        self.num_frames = check_int(num_frames, "num_frames", 2, 64)
        self.compositions = split_compositions(self.split, self.config, self.held_out)
        self._items: dict[int, tuple[Clip, Question]] = {}

    def _draw(self, rng: np.random.Generator) -> tuple[Clip, Question]:
        allowed, required = self.compositions
        clip = sample_clip(rng, self.config, num_frames=self.num_frames, num_objects=self.num_objects,
                           allowed=allowed, required=required)
        types = STANDARD_TYPES if self.suite == "standard" else TEMPORAL_TYPES
        qtype = types[int(rng.integers(len(types)))]
        if qtype in APPEARANCE_TYPES:
            return clip, ask(clip.frames[0], rng, qtype)
        return clip, ask_temporal(clip, rng, qtype)

    def _drawn(self, index: int) -> tuple[Clip, Question, np.random.Generator]:
        rng = split_rng(self.split, self._index(index), self.seed)
        for _ in range(MAX_DRAWS):  # clips are redrawn until the suite's question applies
            clip, q = self._draw(rng)
            if q is not None and (self.suite == "standard" or needs_two_frames(clip, q)):
                return clip, q, rng
        raise RuntimeError(f"no {self.suite} question in {MAX_DRAWS} clips: the world config allows too little motion")

    def item(self, index: int) -> tuple[Clip, Question]:
        """Clip ``index`` and its question (clips are redrawn until the suite's question applies; remembered, as
        drawing is the slow part and the item is a pure function of the index)."""
        key = self._index(index)
        if key not in self._items:
            self._items[key] = self._drawn(index)[:2]
        return self._items[key]

    def scene(self, index: int) -> tuple[Scene, np.random.Generator]:
        """The first frame of clip ``index`` and its generator (positioned after drawing the clip and question)."""
        clip, _, rng = self._drawn(index)
        return clip.frames[0], rng

    def question(self, index: int) -> Question:
        return self.item(index)[1]

    def __getitem__(self, index: int) -> dict[str, Any]:
        clip, q = self.item(index)
        proved = q.qtype not in APPEARANCE_TYPES and needs_two_frames(clip, q)
        return {"frames": render_clip(clip, self.config.image_size), **_question_item(q), "needs_two_frames": proved,
                "clip": clip, "index": self._index(index)}
