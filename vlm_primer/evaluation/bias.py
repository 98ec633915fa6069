"""A planted bias and the two ways to measure it: the background tint that goes with a shape.

Explained in notebook 07, §Bias. The survey's §4.2 measures bias in two ways: how a model's accuracy differs
between groups of images (classification disparity), and how strongly its embeddings associate a group with
attribute words (WEAT/SEAT, Caliskan et al. 2017). On real data the truth is unknown; here we plant it. Half the
shapes belong to the *warm* group and half to the *cool* group (alternating in :data:`~vlm_primer.world.SHAPES`),
and :class:`SpuriousCaptionDataset` paints a scene's background with its shape group's tint with probability
``correlation`` (the other tint otherwise). Captions never mention the background, so a model that learns the
tint learns a shortcut its captions never asked for. ``correlation=0.5`` is the control: the tint carries no
information about the shape.

* :func:`tint_disparity`: zero-shot accuracy over the world's colour-shape names on the *same* test scenes drawn
  on the aligned tint and on the conflicting one; the paired gap and its bootstrap interval.
* :func:`tint_association`: WEAT with the same scenes on the warm tint (targets X) and on the cool tint (targets Y)
  against the names of the warm shapes (attributes A) and of the cool shapes (attributes B); effect size and
  permutation p-value (:func:`~vlm_primer.evaluation.stats.weat_test`).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from vlm_primer.evaluation.stats import paired_bootstrap_diff, weat_test
from vlm_primer.world import SHAPES, Scene, ShapesCaptionDataset, WorldConfig, render

__all__ = ["TINTS", "SpuriousCaptionDataset", "shape_group", "tint_association", "tint_disparity", "tinted"]

# Dark enough that every colour of the world stays visible on them, far enough apart to be seen at a glance.
TINTS: dict[str, tuple[float, float, float]] = {"warm": (0.30, 0.16, 0.10), "cool": (0.08, 0.16, 0.30)}
FORCES = ("aligned", "conflicting")


def shape_group(shape: str) -> str:
    """``"warm"`` for circle, triangle, star; ``"cool"`` for square, diamond, hexagon."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose one of {SHAPES}")
    return ("warm", "cool")[SHAPES.index(shape) % 2]


def tinted(scene: Scene, tint: str) -> Scene:
    """``scene`` on the ``"warm"`` or ``"cool"`` background."""
    if tint not in TINTS:
        raise ValueError(f"tint must be one of {tuple(TINTS)}, got {tint!r}")
    return Scene(scene.objects, TINTS[tint])


def _other(tint: str) -> str:
    return "cool" if tint == "warm" else "warm"


class SpuriousCaptionDataset(ShapesCaptionDataset):
    """:class:`~vlm_primer.world.ShapesCaptionDataset` whose backgrounds follow the first object's shape group with
    probability ``correlation`` (drawn per scene from ``(seed, index)``, so the dataset stays a pure function of its
    arguments). ``force="aligned"`` / ``"conflicting"`` paints every scene with its group's tint / the other one.
    Every other argument as the parent's. Explained in notebook 07, §Bias."""

    def __init__(self, *args: Any, correlation: float = 0.5, force: str | None = None, **kwargs: Any) -> None:
        if isinstance(correlation, bool) or not isinstance(correlation, (int, float)) or not 0 <= correlation <= 1:
            raise ValueError(f"correlation must be a probability in [0, 1], got {correlation!r}")
        if force is not None and force not in FORCES:
            raise ValueError(f"force must be None or one of {FORCES}, got {force!r}")
        self.correlation, self.force = float(correlation), force
        super().__init__(*args, **kwargs)

    def scene(self, index: int):
        scene, rng = super().scene(index)
        tint = shape_group(scene.objects[0].shape)
        if self.force == "conflicting" or (self.force is None and
                                           np.random.default_rng([self.seed, index, 7]).random() >= self.correlation):
            tint = _other(tint)
        return tinted(scene, tint), rng


def _scenes(n: int, seed: int, world: dict[str, Any]) -> list[Scene]:
    ds = ShapesCaptionDataset("test", n, WorldConfig(**world), seed=seed, num_objects=1, statements=False,
                              num_paraphrases=1)
    return [ds.scene(i)[0] for i in range(n)]


@torch.no_grad()
def tint_disparity(model: torch.nn.Module, transform: Callable, tokenizer: Callable, *, n: int = 480, seed: int = 0,
                   world: dict[str, Any] | None = None, templates: Sequence[str] | None = None,
                   max_length: int | None = None) -> dict[str, Any]:
    """Zero-shot top-1 over the world's 48 colour-shape names (chapter 02's prompt ensemble) of ``n`` one-object
    test scenes drawn on their aligned tint and the same scenes on the conflicting tint: ``aligned``,
    ``conflicting``, the paired ``gap`` (aligned − conflicting) with its bootstrap ``gap_ci95``, and the same for
    the shape alone (``shape_*``: the predicted name's shape is right, whatever its colour). Explained in notebook
    07, §Bias."""
    from vlm_primer.evaluation.zeroshot import build_classifier, zero_shot_classify
    from vlm_primer.world import COLORS
    from vlm_primer.zoo.recipes import ZERO_SHOT_TEMPLATES

    world = world or {"image_size": 48, "sizes": ("large",)}
    scenes = _scenes(n, seed, world)
    pairs = [(c, s) for c in COLORS for s in SHAPES]
    classifier = build_classifier(model, tokenizer, [f"{c} {s}" for c, s in pairs],
                                  list(templates or ZERO_SHOT_TEMPLATES), max_length=max_length)
    truth = [(sc.objects[0].color, sc.objects[0].shape) for sc in scenes]
    out: dict[str, Any] = {"n": n}
    correct = {}
    for force in FORCES:
        tints = [shape_group(s) if force == "aligned" else _other(shape_group(s)) for _, s in truth]
        images = torch.stack([transform(render(tinted(sc, t), world["image_size"])) for sc, t in zip(scenes, tints)])
        pred = zero_shot_classify(model, images, classifier).argmax(1).tolist()
        correct[force] = np.array([pairs[p] == t for p, t in zip(pred, truth)], dtype=float)
        correct[f"shape_{force}"] = np.array([pairs[p][1] == t[1] for p, t in zip(pred, truth)], dtype=float)
    for prefix in ("", "shape_"):
        a, c = correct[f"{prefix}aligned"], correct[f"{prefix}conflicting"]
        diff, lo, hi = paired_bootstrap_diff(a, c, seed=seed)
        out |= {f"{prefix}aligned": float(a.mean()), f"{prefix}conflicting": float(c.mean()), f"{prefix}gap": diff,
                f"{prefix}gap_ci95": [lo, hi]}
    return out


@torch.no_grad()
def tint_association(model: torch.nn.Module, transform: Callable, tokenizer: Callable, *, n: int = 200,
                     seed: int = 0, world: dict[str, Any] | None = None, n_resamples: int = 2000,
                     max_length: int | None = None) -> dict[str, float]:
    """WEAT of image embeddings: targets X = ``n`` one-object test scenes on the warm tint, Y = the same scenes on
    the cool tint; attributes A = "a {shape}" for the warm shapes, B = for the cool ones. Positive effect size: warm
    backgrounds sit closer to warm shapes' names. Returns :func:`~vlm_primer.evaluation.stats.weat_test`'s
    ``effect_size``, ``p_value`` (one-sided permutation test) and ``statistic``. Explained in notebook 07, §Bias."""
    world = world or {"image_size": 48, "sizes": ("large",)}
    scenes = _scenes(n, seed, world)

    def images(tint: str) -> np.ndarray:
        x = torch.stack([transform(render(tinted(sc, tint), world["image_size"])) for sc in scenes])
        return model.encode_image(x).float().numpy()

    def texts(group: str) -> np.ndarray:
        enc = tokenizer([f"a {s}" for s in SHAPES if shape_group(s) == group], max_length=max_length)
        return model.encode_text(enc["input_ids"], attention_mask=enc["attention_mask"]).float().numpy()

    return weat_test(images("warm"), images("cool"), texts("warm"), texts("cool"), n_resamples=n_resamples,
                     seed=seed)
