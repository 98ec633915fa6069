"""The ``zeroshot`` suite: zero-shot classification of one-object scenes into the world's colour-shape names with
chapter 02's prompt ensemble, ``seen`` and ``held-out`` compositions (the latter from the ``compositional`` split),
plus the names written with frequent and rare synonyms. Explained in notebook 07, §Zero-shot.
"""

from __future__ import annotations

import functools
from collections import Counter

import numpy as np
import torch

from vlm_primer.evaluation.suites import Items, Suite, register, render_scenes
from vlm_primer.evaluation.suites.matching import world_scene
from vlm_primer.evaluation.suites.priors import text_prior

__all__: list[str] = []


ZEROSHOT_TYPES = ("seen", "held-out")
SYNONYM_CHOICES = ("frequent", "rare")


def _zs_classes(cfg) -> list[tuple[str, str]]:
    return [(c, s) for c in cfg.colors for s in cfg.shapes]


def _names(cfg, words: dict[str, str] | None = None) -> list[str]:
    words = words or {}
    return [f"{words.get(c, c)} {words.get(s, s)}" for c, s in _zs_classes(cfg)]


def synonym_counts(model) -> dict[str, dict[str, int]]:
    """For each colour and shape of the world with synonyms: how often each synonym occurs in the world's training
    captions (those of :func:`~vlm_primer.evaluation.suites.priors.text_prior`; a noun with its plural), in the
    vocabulary's order."""
    from vlm_primer.world.vocab import COLOR_WORDS, PLURALS, SHAPE_WORDS

    cfg = model.world_config()
    unigrams = text_prior(model).unigrams
    table = {**{c: COLOR_WORDS[c] for c in cfg.colors}, **{s: SHAPE_WORDS[s] for s in cfg.shapes}}
    return {k: {w: int(unigrams[w] + (unigrams[PLURALS[w]] if w in PLURALS else 0)) for w in words}
            for k, words in table.items() if len(words) > 1}


def synonym_choices(counts: dict[str, dict[str, int]]) -> dict[str, dict[str, str]]:
    """Each word's most frequent and rarest synonym (a tie goes to the vocabulary's order: canonical first)."""
    def key(c: dict[str, int]):
        order = list(c)
        return lambda w: (c[w], -order.index(w))

    return {"frequent": {k: max(c, key=key(c)) for k, c in counts.items()},
            "rare": {k: min(c, key=key(c)) for k, c in counts.items()}}


def build_zeroshot(model, n: int, seed: int) -> Items:
    """``n`` one-object scenes per type: ``seen`` from the test split (compositions seen in training) and
    ``held-out`` from the ``compositional`` split (the held-out pairs, :data:`~vlm_primer.world.DEFAULT_HELD_OUT`).
    The label is one of the world's colour-shape classes ("red circle"); every item also carries the class names
    three ways (``names``: canonical words, each word's most frequent synonym in the training captions, its rarest).
    Explained in notebook 07, §Zero-shot."""
    from vlm_primer.world.splits import split_compositions

    cfg = model.world_config()
    classes = _zs_classes(cfg)
    counts = synonym_counts(model)
    names = {"canonical": _names(cfg), **{k: _names(cfg, w) for k, w in synonym_choices(counts).items()},
             "counts": counts}
    items: Items = []
    for kind, split in zip(ZEROSHOT_TYPES, ("test", "compositional")):
        try:
            split_compositions(split, cfg)
        except ValueError:  # a world without held-out pairs has no held-out type
            continue
        for i in range(n):
            scene, _ = world_scene(model, i, seed, 1, split)
            obj = scene.objects[0]
            items.append({"id": len(items), "type": kind, "scene": scene, "label": f"{obj.color} {obj.shape}",
                          "label_id": classes.index(obj.composition), "names": names})
    return items


def zero_shot_scores(model, images: torch.Tensor, classnames: list[str], templates=None) -> torch.Tensor:
    """``(N, C)`` class scores: the model's own prompt-ensemble classifier where it has one (``classify``), else
    ``match`` averaged over the templates: ``N x C x T`` pair scores, one batched call per template (an ITM head
    scores about a thousand pairs a second on one CPU core: keep ``n`` small). A blind scorer gives every image the
    same row, so that row is scored once."""
    from vlm_primer.evaluation.zeroshot import fill_template
    from vlm_primer.zoo.recipes import ZERO_SHOT_TEMPLATES

    templates = list(ZERO_SHOT_TEMPLATES if templates is None else templates)
    if model.classify is not None:
        return model.classify(images, list(classnames), templates).float().cpu()
    n, c = len(images), len(classnames)
    rows = images[:1] if model.blind else images
    total = torch.zeros(len(rows), c)
    for t in templates:
        texts = [fill_template(t, name) for name in classnames]
        total += model.match(rows.repeat_interleave(c, 0), texts * len(rows)).float().cpu().view(len(rows), c)
    return (total / len(templates)).expand(n, c)


def _zs_rows(items: Items, predictions: dict[str, list[int]]) -> Items:
    """``predictions``: class indices under the canonical names (the score) and under each synonym choice."""
    rows = []
    for i, it in enumerate(items):
        p = predictions["canonical"][i]
        rows.append({"id": it["id"], "type": it["type"], "label": it["label"],
                     "prediction": it["names"]["canonical"][p], "value": float(p == it["label_id"]),
                     **{f"{k}_correct": float(predictions[k][i] == it["label_id"]) for k in SYNONYM_CHOICES}})
    return rows


def run_zeroshot(model, items: Items) -> Items:
    """Every class name of the three namings scored once (a name that no synonym changes is shared), each naming's
    prediction its argmax over its own names; value: the canonical naming is right."""
    names = items[0]["names"]
    union = list(dict.fromkeys(n for k in ("canonical", *SYNONYM_CHOICES) for n in names[k]))
    scores = zero_shot_scores(model, render_scenes(model, [it["scene"] for it in items]), union)
    column = {n: j for j, n in enumerate(union)}
    predictions = {k: scores[:, [column[n] for n in names[k]]].argmax(1).tolist()
                   for k in ("canonical", *SYNONYM_CHOICES)}
    return _zs_rows(items, predictions)


def _train_class_counts(model, n: int = 1000) -> dict[tuple[str, str], int]:
    """How often each colour-shape pair occurs among the objects of ``n`` training scenes of the model's world."""
    return dict(_train_class_counts_cached(tuple(sorted(model.world.items())), tuple(model.num_objects), n))


@functools.lru_cache(maxsize=8)
def _train_class_counts_cached(world: tuple, num_objects: tuple, n: int) -> tuple:
    from vlm_primer.world import WorldConfig, split_scene

    cfg = WorldConfig(**dict(world))
    counts = Counter(o.composition for i in range(n) for o in split_scene("train", i, 0, cfg, num_objects)[0])
    return tuple(sorted(counts.items()))


def blind_zeroshot(model, items: Items, seed: int) -> Items:
    """Always the most frequent class of the training split (never a held-out pair, which training never shows)."""
    classes = _zs_classes(model.world_config())
    counts = _train_class_counts(model)
    top = classes.index(max(classes, key=lambda c: (counts.get(c, 0), -classes.index(c))))
    return _zs_rows(items, {k: [top] * len(items) for k in ("canonical", *SYNONYM_CHOICES)})


def extra_zeroshot(model, items: Items, results: Items) -> dict:
    """Chance for the world's classes, and the survey's advice (§4.1, zero-shot: prompt with the words the training
    captions use most) tested: accuracy with each word's most frequent synonym vs its rarest, over all items and
    over the items whose class has a word with synonyms."""
    names = items[0]["names"]
    affected = [i for i, it in enumerate(items) if set(it["label"].split()) & set(names["counts"])]
    synonyms: dict = {"counts": names["counts"], "affected_n": len(affected)}
    for k, choice in synonym_choices(names["counts"]).items():
        ok = np.array([r[f"{k}_correct"] for r in results])
        synonyms[k] = {"words": choice, "accuracy": float(ok.mean()),
                       "accuracy_affected": float(ok[affected].mean()) if affected else None}
    classes = len(names["canonical"])
    return {"classes": classes, "chance": 1 / classes, "synonyms": synonyms}


register(Suite("zeroshot", "match", "top1",
               "zero-shot colour-shape classification of one-object scenes (prompt ensemble), seen vs held-out pairs",
               build_zeroshot, run_zeroshot, blind_zeroshot, "the most frequent training class (never sees the image)",
               default_n=50, chance=1 / 48, extra=extra_zeroshot))
