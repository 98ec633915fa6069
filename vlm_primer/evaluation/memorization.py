"""Déjà vu memorization (Jayaraman et al. 2024): does a CLIP remember more of a training image than its caption says?

Explained in notebook 07, §Memorization. Two disjoint training sets, A and B, of three-object scenes, each with one
fixed caption that names two of the objects (a relation caption: "a green disk to the right of a purple disk"); the
third object is *hidden* from the text. A *target* model trains on A, a *reference* model on B, same recipe. A
public set of other scenes stands for the images an attacker can search. For a training pair, the caption's
embedding retrieves its ``k`` nearest public images; the **recovery rate** is the share of those neighbours that
contain the hidden object (same colour and shape). A model that learned only what the caption says finds it at the
base rate of the world, and so does the reference, which never saw the pair; a target that memorised the image
finds it more often. The déjà vu gap is target − reference on the same captions, with a paired bootstrap interval.
:func:`text_randomization` is the mitigation the paper proposes: train with a share of caption tokens masked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from vlm_primer.evaluation.stats import paired_bootstrap_diff
from vlm_primer.world import Caption, Scene, WorldConfig, caption_scene, render, sample_scene

__all__ = ["DejaVuSets", "PairDataset", "dejavu_gap", "dejavu_sets", "hidden_object", "recovery_rates",
           "text_randomization"]

WORLD = {"image_size": 48, "sizes": ("large",), "max_objects": 3}


@dataclass(frozen=True)
class DejaVuSets:
    """``a`` and ``b``: disjoint lists of (scene, caption) training pairs; ``public``: scenes neither trains on."""

    a: list[tuple[Scene, Caption]]
    b: list[tuple[Scene, Caption]]
    public: list[Scene]


def _pairs(rng: np.random.Generator, n: int, cfg: WorldConfig) -> list[tuple[Scene, Caption]]:
    out = []
    while len(out) < n:
        scene = sample_scene(rng, cfg, num_objects=3)
        caption = caption_scene(scene, rng, "relation", cfg.margin)
        if caption is not None and hidden_object(scene, caption) is not None:
            out.append((scene, caption))
    return out


def dejavu_sets(size: int = 100, public: int = 3000, seed: int = 0) -> DejaVuSets:
    """Two training sets of ``size`` pairs and ``public`` public scenes, three large objects each at 48 px, every
    caption with exactly one hidden object; each set from its own stream of ``seed``."""
    for name, value in (("size", size), ("public", public)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    cfg = WorldConfig(**WORLD)
    a, b, p = (np.random.default_rng([seed, k]) for k in range(3))
    return DejaVuSets(_pairs(a, size, cfg), _pairs(b, size, cfg), [s for s, _ in _pairs(p, public, cfg)])


def _named(caption: Caption) -> Callable:
    nps = (caption.meaning.a, caption.meaning.b)
    return lambda o: any((n.color is None or n.color == o.color) and (n.shape is None or n.shape == o.shape)
                         for n in nps)


def hidden_object(scene: Scene, caption: Caption) -> tuple[str, str] | None:
    """The (colour, shape) of the one object of ``scene`` that no noun phrase of ``caption`` can refer to (None
    when there is not exactly one)."""
    named = _named(caption)
    hidden = [(o.color, o.shape) for o in scene.objects if not named(o)]
    return hidden[0] if len(hidden) == 1 else None


@torch.no_grad()
def recovery_rates(model: torch.nn.Module, transform: Callable, tokenizer: Callable,
                   pairs: Sequence[tuple[Scene, Caption]], public: Sequence[Scene], *, k: int = 50,
                   max_length: int | None = None, batch_size: int = 512) -> np.ndarray:
    """Per pair, the share of the caption's ``k`` nearest public images (cosine of the model's embeddings) that
    contain the pair's hidden object: ``(len(pairs),)``."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(public):
        raise ValueError(f"k must be an int in [1, {len(public)}] (the public set's size), got {k!r}")
    if not pairs:
        raise ValueError("no pairs to score")
    model.eval()
    size = int(WORLD["image_size"])
    images = torch.cat([torch.nn.functional.normalize(model.encode_image(torch.stack(
        [transform(render(s, size)) for s in public[i:i + batch_size]])).float(), dim=-1)
        for i in range(0, len(public), batch_size)])
    enc = tokenizer([c.text for _, c in pairs], max_length=max_length)
    texts = torch.nn.functional.normalize(model.encode_text(enc["input_ids"], attention_mask=enc["attention_mask"])
                                          .float(), dim=-1)
    neighbours = (texts @ images.T).topk(k, dim=1).indices.tolist()
    has = [{(o.color, o.shape) for o in s.objects} for s in public]
    return np.array([np.mean([hidden_object(s, c) in has[j] for j in idx])
                     for (s, c), idx in zip(pairs, neighbours)])


def dejavu_gap(target: np.ndarray, reference: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """The déjà vu gap from per-pair recovery rates of the target and the reference on the same captions: their
    means, ``gap`` = target − reference and its paired bootstrap ``ci95``."""
    diff, lo, hi = paired_bootstrap_diff(target, reference, seed=seed)
    return {"target": float(np.mean(target)), "reference": float(np.mean(reference)), "gap": diff,
            "ci95": [lo, hi], "n": len(target)}


class PairDataset(torch.utils.data.Dataset):
    """A fixed list of (scene, caption) pairs as ``{"image", "caption"}`` items (rendered once, ``transform`` applied):
    the repeated data a model can memorise."""

    def __init__(self, pairs: Sequence[tuple[Scene, Caption]], transform: Callable | None = None) -> None:
        size = int(WORLD["image_size"])
        self.captions = [c.text for _, c in pairs]
        self.images = [render(s, size) if transform is None else transform(render(s, size)) for s, _ in pairs]

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.images[i], "caption": self.captions[i]}


def text_randomization(collate: Callable, p: float, mask_id: int, keep_ids: Sequence[int] = (), seed: int = 0
                       ) -> Callable:
    """``collate`` whose caption tokens are each replaced by ``mask_id`` with probability ``p`` (padding and
    ``keep_ids``, e.g. the ``<eos>`` the text tower pools at, are kept): the paper's text randomization, a fresh
    mask at every batch drawn from ``seed``."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
        raise ValueError(f"p must be a probability in [0, 1), got {p!r}")
    gen = torch.Generator().manual_seed(seed)

    def masked(samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = collate(samples)
        ids = batch["input_ids"]
        keep = (torch.rand(ids.shape, generator=gen) >= p) | (batch["attention_mask"] == 0)
        for i in keep_ids:
            keep |= ids == i
        batch["input_ids"] = torch.where(keep, ids, torch.full_like(ids, mask_id))
        return batch
    return masked
