"""Concept frequency: does a model know a concept as well as its training data showed it to it?

Explained in notebook 07, §Concept frequency. Udandarao et al. (2024) find that a CLIP's zero-shot accuracy on a
concept grows log-linearly with how often the concept occurs in its pretraining data (survey §4.2.4). On Shapes
World we set the frequencies ourselves: :class:`ZipfCaptionDataset` draws the colour-shape composition of each
one-object training scene from a Zipf law over the training compositions (rank ``r`` has probability proportional
to ``r ** -exponent``, the ranks a fixed shuffle of ``seed``), and :func:`frequency_table` says how often each one
occurs. :func:`accuracy_by_frequency` then measures zero-shot accuracy per composition on held-out scenes and the
rank correlation between accuracy and training frequency, with a bootstrap interval over compositions.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from scipy.stats import spearmanr

from vlm_primer.world import ShapesCaptionDataset, WorldConfig
from vlm_primer.world.splits import split_compositions

__all__ = ["ZipfCaptionDataset", "accuracy_by_frequency", "frequency_table", "zipf_weights"]


def zipf_weights(compositions: Sequence[tuple[str, str]], exponent: float, seed: int = 0
                 ) -> dict[tuple[str, str], float]:
    """Probabilities of ``compositions`` under a Zipf law with ``exponent`` (0 = uniform) over the ranks of a fixed
    shuffle drawn from ``seed``."""
    if isinstance(exponent, bool) or not isinstance(exponent, (int, float)) or exponent < 0:
        raise ValueError(f"exponent must be a number >= 0, got {exponent!r}")
    order = sorted(compositions)
    order = [order[i] for i in np.random.default_rng([seed, 11]).permutation(len(order))]
    w = np.arange(1, len(order) + 1, dtype=float) ** -float(exponent)
    return dict(zip(order, w / w.sum()))


class ZipfCaptionDataset(ShapesCaptionDataset):
    """One-object :class:`~vlm_primer.world.ShapesCaptionDataset` of the ``train`` split whose compositions follow
    :func:`zipf_weights` (``exponent``, ``rank_seed``); the object keeps its place and size. Other arguments as the
    parent's (``num_objects`` is 1 and ``distinct`` is not supported: a Zipf law repeats its head). Explained in
    notebook 07, §Concept frequency."""

    def __init__(self, size: int, config: WorldConfig | None = None, *, exponent: float = 1.0, rank_seed: int = 0,
                 **kwargs: Any) -> None:
        if kwargs.pop("num_objects", 1) != 1 or kwargs.get("distinct") is not None:
            raise ValueError("a ZipfCaptionDataset draws one-object scenes, without distinct blocks")
        super().__init__("train", size, config, num_objects=1, **kwargs)
        allowed, _ = split_compositions("train", self.config, self.held_out)
        self.weights = zipf_weights(sorted(allowed), exponent, rank_seed)
        self._pairs, self._p = list(self.weights), np.array(list(self.weights.values()))

    def scene(self, index: int):
        scene, rng = super().scene(index)
        pick = np.random.default_rng([self.seed, index, 13]).choice(len(self._pairs), p=self._p)
        color, shape = self._pairs[pick]
        return scene.replace(0, color=color, shape=shape), rng


def frequency_table(dataset: ZipfCaptionDataset) -> dict[tuple[str, str], int]:
    """How many of ``dataset``'s scenes show each training composition (zeros included), most frequent first."""
    counts = dict.fromkeys(dataset.weights, 0)
    for i in range(len(dataset)):
        o = dataset.scene(i)[0].objects[0]
        counts[(o.color, o.shape)] += 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


@torch.no_grad()
def accuracy_by_frequency(model: torch.nn.Module, transform: Callable, tokenizer: Callable,
                          counts: dict[tuple[str, str], int], *, per_class: int = 10, seed: int = 0,
                          world: dict[str, Any] | None = None, max_length: int | None = None,
                          n_boot: int = 2000) -> dict[str, Any]:
    """Zero-shot top-1 over the 48 colour-shape names (chapter 02's prompt ensemble) of ``per_class`` test scenes of
    every composition in ``counts``, and Spearman's rank correlation between a composition's accuracy and its
    training count, with a percentile bootstrap interval over compositions. Returns ``per_class_accuracy``
    (composition -> accuracy), ``spearman``, ``ci95``."""
    from vlm_primer.evaluation.zeroshot import build_classifier, zero_shot_classify
    from vlm_primer.world import COLORS, SHAPES, render
    from vlm_primer.zoo.recipes import ZERO_SHOT_TEMPLATES

    world = world or {"image_size": 48, "sizes": ("large",)}
    cfg = WorldConfig(**world)
    names = [(c, s) for c in COLORS for s in SHAPES]
    base = ShapesCaptionDataset("test", per_class * len(counts), cfg, seed=seed, num_objects=1, statements=False,
                                num_paraphrases=1)
    scenes, truth = [], []
    for i, pair in enumerate(counts):
        for j in range(per_class):  # a test scene's place and size, drawn with the composition asked for
            scenes.append(base.scene(i * per_class + j)[0].replace(0, color=pair[0], shape=pair[1]))
            truth.append(names.index(pair))
    classifier = build_classifier(model, tokenizer, [f"{c} {s}" for c, s in names], list(ZERO_SHOT_TEMPLATES),
                                  max_length=max_length)
    images = torch.stack([transform(render(s, cfg.image_size)) for s in scenes])
    right = (zero_shot_classify(model, images, classifier).argmax(1) == torch.tensor(truth)).float().numpy()
    acc = right.reshape(len(counts), per_class).mean(1)
    freq = np.array(list(counts.values()), dtype=float)
    rho = float(spearmanr(freq, acc).statistic)
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(n_boot):
        idx = rng.integers(len(acc), size=len(acc))
        if np.ptp(acc[idx]) > 0 and np.ptp(freq[idx]) > 0:
            boot.append(spearmanr(freq[idx], acc[idx]).statistic)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"per_class_accuracy": dict(zip(counts, acc.tolist())), "spearman": rho, "ci95": [float(lo), float(hi)]}
