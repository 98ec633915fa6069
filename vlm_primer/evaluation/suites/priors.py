"""Blind baselines: predictors that never see the image. Explained in notebook 07, §Language priors.

* :class:`TextPrior`: a bigram language model of the world's training captions (add-one smoothing), the cheapest
  ``P(text)``: it scores a caption by how caption-like its words are, with no image in sight. On negatives that
  break the grammar (word-order shuffles) it wins; on negatives that are as fluent as the truth it cannot.
* :func:`vqa_prior`: the most frequent training answer for each question text (chapter 01's blind prior).
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from typing import Any, Sequence

import numpy as np

__all__ = ["TextPrior", "text_prior", "vqa_prior"]


class TextPrior:
    """``log P(text)`` under a bigram model with add-one smoothing over ``<s>`` words ``</s>``."""

    def __init__(self, texts: Sequence[str]) -> None:
        if isinstance(texts, str) or not len(texts):
            raise ValueError("a text prior needs a non-empty list of training texts")
        self.unigrams: Counter = Counter()
        self.bigrams: Counter = Counter()
        for t in texts:
            words = ["<s>", *t.lower().split(), "</s>"]
            self.unigrams.update(words[:-1])
            self.bigrams.update(zip(words[:-1], words[1:]))
        self.vocab = len({w for pair in self.bigrams for w in pair}) + 1  # + one slot for unseen words

    def log_prob(self, text: str) -> float:
        words = ["<s>", *text.lower().split(), "</s>"]
        return sum(math.log((self.bigrams[(a, b)] + 1) / (self.unigrams[a] + self.vocab))
                   for a, b in zip(words[:-1], words[1:]))

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([self.log_prob(t) for t in texts])


@functools.lru_cache(maxsize=8)
def _text_prior(world: tuple, num_objects: tuple, n: int) -> TextPrior:
    from vlm_primer.world import CAPTION_KINDS, ShapesCaptionDataset, WorldConfig, caption_scene

    ds = ShapesCaptionDataset("train", n, WorldConfig(**dict(world)), num_objects=num_objects, statements=False,
                              num_paraphrases=1)
    rng = np.random.default_rng(0)
    texts = []
    for i in range(n):
        scene, _ = ds.scene(i)
        for kind in CAPTION_KINDS:
            cap = caption_scene(scene, rng, kind, ds.config.margin)
            if cap is not None:
                texts.append(cap.text)
    return TextPrior(texts)


def text_prior(model: Any, n: int = 2000) -> TextPrior:
    """The text prior of ``model``'s world: every kind of true caption of ``n`` training scenes (cached)."""
    return _text_prior(tuple(sorted(model.world.items())), tuple(model.num_objects), n)


def vqa_prior(model: Any, qtypes: Sequence[str], n: int = 3000):
    """Chapter 01's :class:`~vlm_primer.world.BlindPrior` fitted on ``n`` training questions of ``model``'s world."""
    from vlm_primer.world import ShapesVQADataset, blind_prior

    train = ShapesVQADataset("train", n, config=model.world_config(), num_objects=model.num_objects, qtypes=qtypes)
    return blind_prior([train.question(i) for i in range(n)])
