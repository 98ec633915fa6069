"""Caption probes: does a model score the true caption above a controlled negative?

Explained in notebook 02, §Compositionality (reused by the evaluation chapter, 07).

For each scene the probe holds the true caption and one negative of each kind, all false of the
scene (checked against its scene graph):

* ``binding swap``: the same words, with the attributes bound to the other object;
* ``word shuffle``: the caption's words in a random order;
* ``replace one word``: one attribute replaced by a word not in the caption — **the control**.

A model that reads the scene at all must catch the replaced word; only when it does is the binding
swap's result about binding (and not about a model that cannot read the captions). Scores are the
cosine similarity of image ``i`` with caption ``i``, as in zero-shot classification.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from vlm_primer.evaluation.clipscore import pair_cosines
from vlm_primer.world.language import caption_scene
from vlm_primer.world.negatives import hard_negative

__all__ = ["PROBE_KINDS", "CaptionProbe", "caption_probe", "pair_similarity", "probe_scores"]

PROBE_KINDS: tuple[str, ...] = ("binding swap", "word shuffle", "replace one word")


@dataclass
class CaptionProbe:
    """``images`` ``(N, 3, H, W)``, ``true`` (N captions) and ``negatives[kind]`` (N captions per kind)."""

    images: torch.Tensor
    true: list[str]
    negatives: dict[str, list[str]]

    def __len__(self) -> int:
        return len(self.true)


def caption_probe(dataset, seed: int = 0) -> CaptionProbe:
    """The probe over a :class:`~vlm_primer.world.ShapesCaptionDataset` of two-object scenes.

    Scenes where a binding swap or a replacement is impossible (both objects share their colour and
    shape words, say) are skipped, so every scene has every kind of negative.
    """
    if dataset.num_objects[0] < 2:
        raise ValueError(f"the binding probe needs scenes of at least two objects, "
                         f"got num_objects={dataset.num_objects}")
    rng = np.random.default_rng(seed)
    images, true, negs = [], [], {kind: [] for kind in PROBE_KINDS}
    for i in range(len(dataset)):
        item = dataset[i]
        cap = caption_scene(item["scene"], rng, "objects", dataset.config.margin)
        bind = hard_negative(cap, item["scene"], rng, kind="binding", margin=dataset.config.margin)
        repl = hard_negative(cap, item["scene"], rng, kind="replace", margin=dataset.config.margin)
        if bind is None or repl is None:
            continue
        words = cap.text.split()
        images.append(item["image"])
        true.append(cap.text)
        negs["binding swap"].append(bind.text)
        negs["word shuffle"].append(" ".join(words[j] for j in rng.permutation(len(words))))
        negs["replace one word"].append(repl.text)
    if not true:
        raise ValueError("no scene of the dataset admits both a binding swap and a replacement")
    return CaptionProbe(torch.stack(images), true, negs)


def pair_similarity(model: torch.nn.Module, tokenizer: Callable[..., dict], images: torch.Tensor,
                    captions: list[str], max_length: int) -> torch.Tensor:
    """Cosine similarity of image ``i`` with caption ``i``: ``(N,)`` on the CPU. A model whose image embedding
    depends on the caption (Llip) scores each pair with its own ``similarity``: CLIPScore's cosine
    (:func:`~vlm_primer.evaluation.clipscore.pair_cosines`), all pairs in one batch."""
    return pair_cosines(model, tokenizer, images, captions, max_length=max_length, batch_size=max(len(captions), 1))


def probe_scores(model: torch.nn.Module, tokenizer: Callable[..., dict], probe: CaptionProbe,
                 max_length: int, score: Callable[[torch.Tensor, list[str]], torch.Tensor] | None = None
                 ) -> dict[str, dict[str, float]]:
    """Per negative kind: ``prefers_true`` (how often the true caption scores higher) and ``gap``
    (mean ``|s(true) - s(negative)|``, how far the negative moves the score). ``score(images, captions)`` ->
    ``(N,)`` scores pairs; by default the cosine similarity (:func:`pair_similarity`), e.g. BLIP's ITM match
    probability instead (notebook 04)."""
    if score is None:
        def score(images, captions):
            return pair_similarity(model, tokenizer, images, captions, max_length)
    s_true = score(probe.images, probe.true)
    out = {}
    for kind, caps in probe.negatives.items():
        s_neg = score(probe.images, caps)
        out[kind] = {"prefers_true": (s_true > s_neg).float().mean().item(),
                     "gap": (s_true - s_neg).abs().mean().item()}
    return out
