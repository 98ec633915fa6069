"""Suites for models that score image-text pairs: regions and space. Explained in notebook 07, §Spatial relations and
§Compositionality (DCI).

* ``dci``: DCI-style region-caption matching (Urbanek et al. 2024): each object of a 2-4-object scene, shown alone
  at its place, must pick its own dense caption among the scene's captions.
* ``pug``: PUG-style spatial probes (Bordes et al. 2023): a scene and its twin with one object moved to the other
  side; does the true relation caption win (``text``), does the caption pick its scene (``image``), and does the
  right count win once objects are added one at a time (``count``).
"""

from __future__ import annotations

import numpy as np
import torch

from vlm_primer.evaluation.suites import Items, Suite, balanced_items, register, render_scenes
from vlm_primer.evaluation.suites.matching import pair_scores, world_scene
from vlm_primer.evaluation.suites.priors import text_prior

__all__: list[str] = []


DCI_OBJECTS = (2, 3, 4)


def region_caption(obj) -> str:
    """The dense caption of one object: all its attributes, canonical words ("a large red circle")."""
    from vlm_primer.world import Exists, realize
    from vlm_primer.world.language import full_np

    return realize(Exists((full_np(obj),)))


def region_views(model, scene) -> torch.Tensor:
    """Each object of ``scene`` rendered alone at its own place and size: ``(k, 3, S, S)``."""
    from vlm_primer.world import Scene

    return render_scenes(model, [Scene((o,), scene.background) for o in scene.objects])


def resized_crops(model, scene, pad: float = 0.25) -> torch.Tensor:
    """Each object's box (a square, ``pad`` of its side added on every side, clipped at the image border) cut from
    the rendered scene and resized to the model's resolution (antialiased): DCI's literal crops, at a scale the
    zoo's models never saw."""
    from vlm_primer.world import boxes, render

    size = model.image_size
    image = render(scene, size)
    out = []
    for x0, y0, x1, y1 in boxes(scene, size).tolist():
        half = max(x1 - x0, y1 - y0) * (0.5 + pad)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        a0, b0 = max(0, int(np.floor(cx - half))), max(0, int(np.floor(cy - half)))
        a1, b1 = min(size, int(np.ceil(cx + half))), min(size, int(np.ceil(cy + half)))
        crop = image[None, :, b0:b1, a0:a1]
        out.append(torch.nn.functional.interpolate(crop, size=(size, size), mode="bilinear", antialias=True,
                                                   align_corners=False)[0].clamp(0, 1))
    return torch.stack(out)


def build_dci(model, n: int, seed: int) -> Items:
    """``n`` test scenes per object count (2, 3, 4), every object a different (size, colour, shape), so each has
    its own dense caption. A region is the object rendered alone at its place (:func:`region_views`), not DCI's
    crop resized to the full frame (:func:`resized_crops`): a large object's box in a 48 px scene is about 13 px, and
    blowing its padded crop up to 48 px makes the object more than twice as large, a scale no zoo model saw, so the
    crop would test the scale shift rather than the region-caption match (``extra`` reports the crops beside it).
    Objects never overlap in Shapes World, so the region shows exactly the object's pixels in the scene. Explained
    in notebook 07, §Compositionality."""
    from vlm_primer.world.language import full_np

    types = [f"{k} objects" for k in DCI_OBJECTS]

    def draw(index: int, kind: str) -> dict | None:
        k = DCI_OBJECTS[types.index(kind)]
        scene, _ = world_scene(model, index, seed, k)
        if len({full_np(o) for o in scene.objects}) < k:  # two identical objects: one caption for two regions
            return None
        return {"scene": scene, "captions": [region_caption(o) for o in scene.objects]}

    return balanced_items(types, n, 50 * n * len(DCI_OBJECTS), draw, "DCI scenes")


def _dci_rows(items: Items, matrices: list[np.ndarray]) -> Items:
    rows = []
    for it, s in zip(items, matrices):
        k = len(it["captions"])
        own = np.diag(s)
        rivals = np.where(np.eye(k, dtype=bool), -np.inf, s).max(1)
        rows.append({"id": it["id"], "type": it["type"], "captions": it["captions"],
                     "picked": [it["captions"][j] for j in s.argmax(1)], "value": float(np.mean(own > rivals))})
    return rows


def _dci_matrices(model, items: Items, views) -> list[np.ndarray]:
    regions = [views(model, it["scene"]) for it in items]
    images = torch.cat(regions)
    index, texts, starts, start = [], [], [], 0
    for it, reg in zip(items, regions):
        starts.append(len(texts))
        k = len(it["captions"])
        index += [start + r for r in range(k) for _ in range(k)]
        texts += [c for _ in range(k) for c in it["captions"]]
        start += len(reg)
    s = pair_scores(model, images, index, texts)
    return [s[a:a + len(it["captions"]) ** 2].reshape(len(it["captions"]), -1) for a, it in zip(starts, items)]


def run_dci(model, items: Items) -> Items:
    """Score every region of a scene with every caption of the scene; value: the share of regions whose own
    caption scores strictly highest."""
    return _dci_rows(items, _dci_matrices(model, items, region_views))


def blind_dci(model, items: Items, seed: int) -> Items:
    """The text prior gives every region the same caption, its likeliest: one region in ``k`` is right."""
    prior = text_prior(model)
    return _dci_rows(items, [np.tile(prior.scores(it["captions"]), (len(it["captions"]), 1)) for it in items])


def extra_dci(model, items: Items, results: Items) -> dict:
    crops = _dci_rows(items, _dci_matrices(model, items, resized_crops))
    return {"chance": float(np.mean([1 / len(it["captions"]) for it in items])),
            "resized_crops": float(np.mean([r["value"] for r in crops]))}


register(Suite("dci", "match", "accuracy",
               "DCI-style: each object of a 2-4-object scene, shown alone, picks its dense caption among the scene's",
               build_dci, run_dci, blind_dci, "bigram text prior P(text): the same likeliest caption for every region",
               default_n=40, chance=float(np.mean([1 / k for k in DCI_OBJECTS])), extra=extra_dci))


# ---------------------------------------------------------------------------------------------------- PUG

PUG_TYPES = ("text", "image", "count")
PUG_COUNT = 4  # count probes: the first 1..4 objects of a four-object scene


def _moved_twin(scene, rng: np.random.Generator, margin: float):
    """``(twin, mover)``: ``scene`` with one of its two objects reflected across the other's vertical line, so
    that left and right swap and nothing else changes (same distance, same vertical offset); None when neither
    reflection stays inside the image or the pair has no clear left/right relation."""
    from vlm_primer.world import relation_holds

    a, b = scene.objects
    if not (relation_holds(a, b, "left", margin) or relation_holds(a, b, "right", margin)):
        return None
    for mover in ((0, 1) if rng.random() < 0.5 else (1, 0)):
        obj, other = scene.objects[mover], scene.objects[1 - mover]
        x = 2 * other.x - obj.x
        if obj.radius <= x <= 1 - obj.radius:
            return scene.replace(mover, x=float(x)), mover
    return None


def _pug_relation_item(model, index: int, seed: int):
    """``(scene A, twin B, caption true of A and false of B, the caption with its arguments swapped, mover)``."""
    from vlm_primer.world import Relation, holds, realize, referring_np, relation_holds

    margin = model.world_config().margin
    scene, rng = world_scene(model, index, seed, 2)
    twin = _moved_twin(scene, rng, margin)
    if twin is None:
        return None
    twin, mover = twin
    a, b = scene.objects
    rel = "left" if relation_holds(a, b, "left", margin) else "right"
    if rng.random() < 0.5:  # say it either way round: "a left of b" or "b right of a"
        a, b, rel = b, a, {"left": "right", "right": "left"}[rel]
    x, y = referring_np(a, scene), referring_np(b, scene)
    true, swapped = Relation(x, rel, y), Relation(y, rel, x)
    if not (holds(true, scene, margin) and not holds(true, twin, margin)
            and holds(swapped, twin, margin) and not holds(swapped, scene, margin)):
        return None  # e.g. two identical objects: the caption cannot tell them apart
    template, style = int(rng.integers(4)), int(rng.integers(2**31))
    return scene, twin, realize(true, style, template), realize(swapped, style, template), mover


def _pug_count_item(model, index: int, seed: int):
    """A prefix of a four-object test scene (objects added one at a time), its count caption and the count of the
    scene one addition before or after it ("two shapes" vs "three shapes")."""
    from vlm_primer.world import NP, Count, Scene, realize

    scene, rng = world_scene(model, index, seed, PUG_COUNT)
    k = int(rng.integers(1, PUG_COUNT + 1))
    other = [j for j in (k - 1, k + 1) if 1 <= j <= PUG_COUNT][int(rng.integers(2)) if 1 < k < PUG_COUNT else 0]
    template, style = int(rng.integers(4)), int(rng.integers(2**31))
    true, negative = (realize(Count(j, NP()), style, template) for j in (k, other))
    return Scene(scene.objects[:k], scene.background), true, negative, k


def build_pug(model, n: int, seed: int) -> Items:
    """``n`` probes per type. ``text``: two-object scene A with a clear left/right relation; its true relation
    caption vs the same words with the arguments swapped. ``image``: that caption with A vs A's twin, where one
    object is reflected to the other side of the other (the relation flips, nothing else moves). ``count``: the
    first ``k`` objects of a four-object scene, "k shapes" vs the count one object away. Both scenes of a pair and
    both captions are checked against the scene graph. Explained in notebook 07, §Spatial relations."""
    def draw(index: int, kind: str) -> dict | None:
        if kind == "count":
            scene, true, negative, k = _pug_count_item(model, index, seed)
            return {"scene": scene, "true": true, "negative": negative, "objects": k}
        built = _pug_relation_item(model, index, seed)
        if built is None:
            return None
        scene, twin, true, swapped, mover = built
        return {"scene": scene, "twin": twin, "true": true, "negative": swapped,
                "moved": scene.objects[mover].describe()}

    return balanced_items(PUG_TYPES, n, 50 * n * len(PUG_TYPES), draw, "PUG probes")


def _pug_row(it: dict, win: bool) -> dict:
    row = {"id": it["id"], "type": it["type"], "true": it["true"]}
    if it["type"] == "image":
        row["moved"] = it["moved"]
    else:
        row["negative"] = it["negative"]
    return {**row, "value": float(win)}


def run_pug(model, items: Items) -> Items:
    """One batched call: (A, true) vs (A, negative) for ``text`` and ``count``, (A, true) vs (twin, true) for
    ``image``; value 1 when the first pair scores strictly higher."""
    scenes = [it["scene"] for it in items] + [it.get("twin", it["scene"]) for it in items]
    images = render_scenes(model, scenes)
    m = len(items)
    index = list(range(m)) + [m + i if it["type"] == "image" else i for i, it in enumerate(items)]
    texts = [it["true"] for it in items] + [it["true"] if it["type"] == "image" else it["negative"] for it in items]
    s = pair_scores(model, images, index, texts)
    return [_pug_row(it, s[i] > s[m + i]) for i, it in enumerate(items)]


def blind_pug(model, items: Items, seed: int) -> Items:
    """The text prior on ``text`` and ``count``; on ``image`` it scores both scenes the same, a tie: 0."""
    prior = text_prior(model)
    return [_pug_row(it, it["type"] != "image" and prior.log_prob(it["true"]) > prior.log_prob(it["negative"]))
            for it in items]


register(Suite("pug", "match", "accuracy",
               "PUG-style: left/right caption swap (text), one object moved across (image), objects added (count)",
               build_pug, run_pug, blind_pug, "bigram text prior P(text) (ties on every image comparison)",
               default_n=100, chance=0.5))


# ----------------------------------------------------------------------------------------------- zero-shot
