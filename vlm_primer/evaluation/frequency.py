"""Concept frequency: does a model know a concept as well as its training data showed it to it?

Explained in notebook 07, §Concept frequency. Udandarao et al. (2024) find that a CLIP's zero-shot accuracy on a
concept grows log-linearly with how often the concept occurs in its pretraining data (survey §4.2.4). On Shapes
World we set the frequencies ourselves (chapter 06, :mod:`vlm_primer.recipes.data`): :class:`ZipfCaptionDataset`
draws the colour-shape composition of each one-object training scene from a Zipf law over the training compositions
(rank ``r`` has probability proportional to ``r ** -exponent``, the ranks a fixed shuffle of ``seed``), and
:func:`frequency_table` says how often each one occurs. :func:`accuracy_by_frequency` then measures zero-shot accuracy per composition on held-out scenes and the
rank correlation between accuracy and training frequency, with a bootstrap interval over compositions.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from scipy.stats import spearmanr

from vlm_primer.recipes.data import ConceptFrequencyDataset, frequency_table, zipf_weights
from vlm_primer.world import ShapesCaptionDataset, WorldConfig

__all__ = ["ZipfCaptionDataset", "accuracy_by_frequency", "frequency_table", "zipf_weights"]


class ZipfCaptionDataset(ConceptFrequencyDataset):
    """One-object ``train`` scenes whose colour-shape composition follows :func:`zipf_weights` (``exponent``,
    ``rank_seed``): chapter 06's :class:`~vlm_primer.recipes.data.ConceptFrequencyDataset` with
    ``concept="composition"``. Explained in notebook 07, §Concept frequency."""

    def __init__(self, size: int, config: WorldConfig | None = None, *, exponent: float = 1.0, rank_seed: int = 0,
                 **kwargs: Any) -> None:
        super().__init__(size, config, concept="composition", exponent=exponent, rank_seed=rank_seed, **kwargs)


@torch.no_grad()
def accuracy_by_frequency(model: torch.nn.Module, transform: Callable, tokenizer: Callable,
                          counts: dict[tuple[str, str], int], *, per_class: int = 10, seed: int = 0,
                          world: dict[str, Any] | None = None, max_length: int | None = None,
                          n_boot: int = 2000) -> dict[str, Any]:
    """Zero-shot top-1 over the 48 colour-shape names (chapter 02's prompt ensemble) of ``per_class`` test scenes of
    every composition in ``counts``, and Spearman's rank correlation between a composition's accuracy and its
    training count, with a percentile bootstrap interval over compositions. Returns ``per_class_accuracy``
    (composition -> accuracy), ``spearman``, ``ci95`` (both NaN when every composition scores alike: no ranking).
    Resamples in which every drawn composition has one accuracy or one count have no rank correlation and are left
    out, so ``ci95`` is the interval over the resamples where Spearman's rho is defined."""
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
    rho = float(spearmanr(freq, acc).statistic) if np.ptp(acc) > 0 and np.ptp(freq) > 0 else float("nan")
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(n_boot):
        idx = rng.integers(len(acc), size=len(acc))
        if np.ptp(acc[idx]) > 0 and np.ptp(freq[idx]) > 0:
            boot.append(spearmanr(freq[idx], acc[idx]).statistic)
    if not boot:  # every composition equally well known: no rank correlation to speak of
        return {"per_class_accuracy": dict(zip(counts, acc.tolist())), "spearman": float("nan"),
                "ci95": [float("nan"), float("nan")]}
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"per_class_accuracy": dict(zip(counts, acc.tolist())), "spearman": rho, "ci95": [float(lo), float(hi)]}
