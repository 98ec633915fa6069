"""Suites for models that score image-text pairs: two-way choices. Explained in notebook 07, §Compositionality.

* ``aro``: ARO-style (Yuksekgonul et al. 2023) two-way choices between a true caption and a negative one edit away:
  ``relation`` (the relation's arguments swapped, VG-Relation), ``attribution`` (attributes swapped between the two
  objects, VG-Attribution) and ``order`` (the caption's words shuffled, COCO-Order). Negatives of the first two have
  the true caption's words. ``order`` is one random shuffle of all the words as a two-way choice; COCO-Order has
  four structured shuffles (nouns and adjectives; all but them; within trigrams; trigrams), five-way, chance 0.2.
* ``winoground``: Winoground-style pairs (Thrush et al. 2022), two scenes and two captions with the same words;
  text, image and group scores of the 2x2 score matrix (``binding`` and ``relation`` pairs).

Every suite of this module, :mod:`.spatial` and :mod:`.zeroshot` builds ``n`` items *per type*, so its types are
balanced and its chance level is one number; the items come from the test split of the model's world, a pure
function of ``(n, seed)``.
"""

from __future__ import annotations

import numpy as np
import torch

from vlm_primer.evaluation.suites import Items, Suite, balanced_items, register, render_scenes
from vlm_primer.evaluation.suites.priors import text_prior

__all__: list[str] = []

ARO_TYPES = ("relation", "attribution", "order")


def two_way(model, items: Items) -> Items:
    """Items with ``scene``, ``true`` and ``negative``: value 1 when the true caption scores strictly higher."""
    images = render_scenes(model, [it["scene"] for it in items])
    s_true = model.match(images, [it["true"] for it in items])
    s_neg = model.match(images, [it["negative"] for it in items])
    return [{"id": it["id"], "type": it["type"], "true": it["true"], "negative": it["negative"],
             "value": float(t > f)} for it, t, f in zip(items, s_true.tolist(), s_neg.tolist())]


def two_way_prior(model, items: Items, seed: int) -> Items:
    prior = text_prior(model)
    return [{"id": it["id"], "type": it["type"],
             "value": float(prior.log_prob(it["true"]) > prior.log_prob(it["negative"]))} for it in items]


def build_aro(model, n: int, seed: int) -> Items:
    """``n`` items per type from two-object test scenes (a scene that admits no negative of a type is skipped)."""
    from vlm_primer.world import Relation, SceneDataset, caption_scene, hard_negative, holds, realize

    ds = SceneDataset("test", 50 * n, model.world_config(), seed, num_objects=2)
    rng = np.random.default_rng(seed)

    def draw(i: int, kind: str) -> dict | None:
        scene, _ = ds.scene(i)
        cap = caption_scene(scene, rng, "relation" if kind == "relation" else "objects", ds.config.margin)
        if cap is None:
            return None
        if kind == "order":
            words = cap.text.split()
            shuffled = " ".join(words[j] for j in rng.permutation(len(words)))
            neg = shuffled if shuffled != cap.text else None
        elif kind == "relation":  # VG-Relation: the arguments swapped, the relation word kept
            m = cap.meaning
            swapped = Relation(m.b, m.rel, m.a)
            neg = None if holds(swapped, scene, ds.config.margin) else realize(swapped, cap.style, cap.template)
        else:
            edit = hard_negative(cap, scene, rng, kind="binding", margin=ds.config.margin)
            neg = edit.text if edit is not None else None
        return None if neg is None else {"scene": scene, "true": cap.text, "negative": neg}

    return balanced_items(ARO_TYPES, n, len(ds), draw, "ARO items")


register(Suite("aro", "match", "accuracy",
               "ARO-style: true caption vs one edit (relation swap, attribute swap, word-order shuffle)",
               build_aro, two_way, two_way_prior, "bigram text prior P(text) (never sees the image)",
               default_n=100, chance=0.5))


# ------------------------------------------------------------------------------------------------ helpers

def world_scene(model, index: int, seed: int, num_objects, split: str = "test"):
    """Scene ``index`` of ``split`` in ``model``'s world, and its generator (for captions)."""
    from vlm_primer.world import split_scene

    return split_scene(split, index, seed, model.world_config(), num_objects)


def pair_scores(model, images: torch.Tensor, image_index: list[int], texts: list[str]) -> np.ndarray:
    """``model.match`` of ``images[image_index[p]]`` with ``texts[p]`` for every pair ``p``, in one batched call."""
    return model.match(images[torch.as_tensor(image_index, dtype=torch.long)], list(texts)).double().cpu().numpy()


# --------------------------------------------------------------------------------------------- Winoground

WINOGROUND_TYPES = ("binding", "relation")
WINOGROUND_CHANCE = {"text": 1 / 4, "image": 1 / 4, "group": 1 / 6}


def build_winoground(model, n: int, seed: int) -> Items:
    """``n`` Winoground pairs per kind (``binding``: colours swapped; ``relation``: positions swapped), drawn from
    the test split's generators with its compositions only (a binding swap never creates a held-out pair).
    Explained in notebook 07, §Compositionality."""
    from vlm_primer.world import split_rng, winoground_pair
    from vlm_primer.world.splits import split_compositions

    cfg = model.world_config()
    allowed, _ = split_compositions("test", cfg)
    items: Items = []
    for i in range(n):
        for k, kind in enumerate(WINOGROUND_TYPES):
            pair = winoground_pair(split_rng("test", len(WINOGROUND_TYPES) * i + k, seed), cfg, kind, allowed=allowed)
            items.append({"id": len(items), "type": kind, "scenes": pair.scenes,
                          "captions": tuple(c.text for c in pair.captions)})
    return items


def _winoground_rows(items: Items, s: np.ndarray) -> Items:
    from vlm_primer.evaluation.stats import winoground_outcomes

    ok = winoground_outcomes(s)
    return [{"id": it["id"], "type": it["type"], "captions": list(it["captions"]), "scores": s[i].tolist(),
             "text": float(ok["text"][i]), "image": float(ok["image"][i]), "value": float(ok["group"][i])}
            for i, it in enumerate(items)]


def run_winoground(model, items: Items) -> Items:
    """``s[n, i, j]`` = match of image ``i`` with caption ``j`` (caption ``j`` is true of image ``j``); value: group."""
    images = render_scenes(model, [sc for it in items for sc in it["scenes"]])
    index = [2 * n + i for n in range(len(items)) for i in range(2) for _ in range(2)]
    texts = [it["captions"][j] for it in items for _ in range(2) for j in range(2)]
    return _winoground_rows(items, pair_scores(model, images, index, texts).reshape(len(items), 2, 2))


def _winoground_prior(model, items: Items) -> np.ndarray:
    prior = text_prior(model)
    return np.array([[prior.scores(it["captions"])] * 2 for it in items])  # the same row for both images


def blind_winoground(model, items: Items, seed: int) -> Items:
    """The text prior scores a caption the same with either image: it ties on the image score, and since one
    caption is likelier than the other for *both* images, it fails the text score too."""
    return _winoground_rows(items, _winoground_prior(model, items))


def extra_winoground(model, items: Items, results: Items) -> dict:
    """Text, image and group scores (all pairs, by type, the blind prior's, chance), and the four two-way choices
    inside them scored one at a time (``two_way``, chance 0.5): each image choosing between the captions, each
    caption between the images. A model whose caption preference barely depends on the image sits near 0.5 there
    and near 0 on the text score, which needs both images to flip the preference."""
    from vlm_primer.evaluation.stats import winoground_scores

    def scores(rows: Items) -> dict[str, float]:
        return winoground_scores(np.array([r["scores"] for r in rows]))

    s = np.array([r["scores"] for r in results])
    types = list(dict.fromkeys(r["type"] for r in results))
    blind = blind_winoground(model, items, 0)
    return {"scores": scores(results), "by_type": {t: scores([r for r in results if r["type"] == t]) for t in types},
            "blind": scores(blind), "chance": dict(WINOGROUND_CHANCE),
            "two_way": {"text": float(np.r_[s[:, 0, 0] > s[:, 0, 1], s[:, 1, 1] > s[:, 1, 0]].mean()),
                        "image": float(np.r_[s[:, 0, 0] > s[:, 1, 0], s[:, 1, 1] > s[:, 0, 1]].mean())}}


register(Suite("winoground", "match", "group_score",
               "Winoground-style pairs (binding and relation swaps): text, image and group scores of the 2x2 matrix",
               build_winoground, run_winoground, blind_winoground,
               "bigram text prior P(text) (never sees the image: it ties on every image comparison)",
               default_n=100, chance=WINOGROUND_CHANCE["group"], extra=extra_winoground))


# ---------------------------------------------------------------------------------------------------- DCI
