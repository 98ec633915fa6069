"""Suites for models that write captions or draw images: ``captioning``, ``chair`` and ``t2i``. Explained in
notebook 07, §Captioning metrics, §Hallucination and §Text to image.

* ``captioning``: the model's caption of each held-out scene against several true captions (chapter 04's references:
  the scene's caption and its paraphrases), scored with CIDEr-D (per image, with the document frequencies of all the
  evaluated references, as ``pycocoevalcap``; so a few images make a poor corpus, and one image scores 0); the
  corpus BLEU-1..4 and ROUGE-L beside it, and METEOR when :data:`WITH_METEOR` is set.
* ``chair``: the same captions read for the objects they name (CHAIR, Rohrbach et al. 2018): per caption 1 when it
  names a shape that is not in the scene, so the mean is CHAIR_s and *lower is better*.
* ``t2i``: text-to-image consistency: an image drawn for ``"a large {colour} {shape}"`` is read back by chapter 04b's
  scene reader and counts when it shows both the colour and the shape.

The captioning suites' blind baseline is one fixed caption for every image, the most frequent caption of the
world's training split (a prior that never sees the image); the ``t2i`` one is a real test scene drawn regardless of
the prompt (it never shows a held-out composition, so it scores 0 on those).
"""

from __future__ import annotations

import functools
import shutil
from collections import Counter
from typing import Any

import numpy as np
import torch

from vlm_primer.evaluation.captioning import caption_scores, cider_d, meteor, simple_tokenize
from vlm_primer.evaluation.hallucination import chair, mentioned_objects
from vlm_primer.evaluation.suites import Items, Suite, register, render_scenes

__all__ = ["prior_caption"]

NUM_REFERENCES = 5  # paraphrases per scene besides its caption (chapter 04's caption_set)
WITH_METEOR = False  # METEOR starts Java: ~8 s a call whatever n; set True to add it to the captioning extra


# --------------------------------------------------------------------------------------------- shared

def build_caption_items(model, n: int, seed: int) -> Items:
    """``n`` held-out test scenes of ``model``'s world with their references: the scene's caption and its
    paraphrases, deduplicated (chapter 04's :func:`~vlm_primer.zoo.generative_recipes.caption_set`)."""
    from vlm_primer.world import ShapesCaptionDataset

    ds = ShapesCaptionDataset("test", n, model.world_config(), seed=seed, num_objects=model.num_objects,
                              statements=False, num_paraphrases=NUM_REFERENCES)
    items = []
    for i in range(n):
        it = ds[i]
        k = len(it["scene"].objects)
        items.append({"id": i, "type": f"{k} object{'s' if k > 1 else ''}", "scene": it["scene"],
                      "references": list(dict.fromkeys([it["caption"], *it["captions"]]))})
    return items


def _captions(model, items: Items) -> list[str]:
    captions = model.caption(render_scenes(model, [it["scene"] for it in items]))
    if len(captions) != len(items) or not all(isinstance(c, str) for c in captions):
        raise ValueError(f"{model.name}'s caption returned {len(captions)} captions for {len(items)} images")
    return list(captions)


@functools.lru_cache(maxsize=8)
def _prior_caption(world: tuple, num_objects: tuple, n: int) -> str:
    from vlm_primer.world import ShapesCaptionDataset, WorldConfig

    ds = ShapesCaptionDataset("train", n, WorldConfig(**dict(world)), num_objects=num_objects, statements=False,
                              num_paraphrases=1)
    return Counter(ds[i]["caption"] for i in range(n)).most_common(1)[0][0]  # ties: the first met


def prior_caption(model: Any, n: int = 5000) -> str:
    """The most frequent caption of ``n`` training scenes of ``model``'s world: the caption a model that never looks
    at the image would write for every one (cached)."""
    return _prior_caption(tuple(sorted(model.world.items())), tuple(model.num_objects), n)


# ------------------------------------------------------------------------------------------ captioning

def _cider_rows(items: Items, captions: list[str]) -> Items:
    refs = [[simple_tokenize(r) for r in it["references"]] for it in items]
    _, per_image = cider_d(refs, [simple_tokenize(c) for c in captions])  # corpus IDF over all items' references
    return [{"id": it["id"], "type": it["type"], "caption": c, "reference": it["references"][0], "value": v}
            for it, c, v in zip(items, captions, per_image)]


def run_captioning(model, items: Items) -> Items:
    """CIDEr-D of each image's caption, with the corpus IDF. Explained in notebook 07, §Captioning metrics."""
    return _cider_rows(items, _captions(model, items))


def blind_captioning(model, items: Items, seed: int) -> Items:
    return _cider_rows(items, [prior_caption(model)] * len(items))


def extra_captioning(model, items: Items, results: Items) -> dict[str, Any]:
    """The corpus figures: BLEU-1..4, CIDEr-D and ROUGE-L; METEOR too when :data:`WITH_METEOR` is set and Java
    runs it (it costs ~8 s of start-up a call)."""
    refs, captions = [it["references"] for it in items], [r["caption"] for r in results]
    out: dict[str, Any] = dict(caption_scores(refs, captions))
    if WITH_METEOR and shutil.which("java"):
        out["METEOR"] = meteor(refs, captions)[0]
    out["blind_caption"] = prior_caption(model)
    return out


register(Suite("captioning", "caption", "cider_d",
               "one caption per held-out scene, CIDEr-D against its true caption and paraphrases (corpus IDF)",
               build_caption_items, run_captioning, blind_captioning,
               "the most frequent training caption, for every image", default_n=200, extra=extra_captioning))


# ----------------------------------------------------------------------------------------------- CHAIR

def _chair_rows(items: Items, captions: list[str]) -> Items:
    per = chair(captions, [it["scene"] for it in items])["per_caption"]
    return [{"id": it["id"], "type": it["type"], "caption": c, "mentioned": p["mentioned"],
             "hallucinated": p["hallucinated"], "value": float(bool(p["hallucinated"]))}
            for it, c, p in zip(items, captions, per)]


def run_chair(model, items: Items) -> Items:
    """1 for a caption that names a shape the scene lacks (CHAIR_s). Explained in notebook 07, §Hallucination."""
    return _chair_rows(items, _captions(model, items))


def blind_chair(model, items: Items, seed: int) -> Items:
    return _chair_rows(items, [prior_caption(model)] * len(items))


def extra_chair(model, items: Items, results: Items) -> dict[str, Any]:
    """CHAIR_i and its counts, the same with colours checked (``_color``), and what the captions name: mentions per
    caption and ``coverage``, the share of the scenes' objects whose shape the caption names (a caption that names
    nothing hallucinates nothing: read CHAIR beside it)."""
    scenes, captions = [it["scene"] for it in items], [r["caption"] for r in results]
    out: dict[str, Any] = {}
    for suffix, with_color in (("", False), ("_color", True)):
        c = chair(captions, scenes, with_color=with_color)
        out.update({f"{k}{suffix}": c[k] for k in ("chair_s", "chair_i", "mentions", "hallucinations")})
    named = [set(mentioned_objects(cap)) for cap in captions]
    out["mentions_per_caption"] = out["mentions"] / len(captions)
    out["coverage"] = float(np.mean([np.mean([o.shape in said for o in s.objects]) for s, said in zip(scenes, named)]))
    out["blind_caption"] = prior_caption(model)
    return out


register(Suite("chair", "caption", "chair_s (lower is better)",
               "CHAIR: does the caption of a held-out scene name a shape that is not there (1 = hallucinated)",
               build_caption_items, run_chair, blind_chair, "the most frequent training caption, for every image",
               default_n=200, chance=None, extra=extra_chair, higher_is_better=False))


# ------------------------------------------------------------------------------------------------ T2I

def _compositions(model) -> list[tuple[str, str]]:
    cfg = model.world_config()
    return [(c, s) for c in cfg.colors for s in cfg.shapes]


def build_t2i(model, n: int, seed: int) -> Items:
    """``"a large {colour} {shape}"`` for the world's compositions, each ``ceil(n / C)`` times in the world's order
    (a random ``n`` of them, in order, when that is too many); ``type`` says whether the training split held the
    composition out. With ``n`` twice the compositions and seed 0 these are the zoo card's faithfulness prompts."""
    from vlm_primer.world.splits import DEFAULT_HELD_OUT

    pairs = _compositions(model)
    repeats = -(-n // len(pairs))
    pairs = [p for p in pairs for _ in range(repeats)]
    if len(pairs) > n:
        keep = np.sort(np.random.default_rng(seed).choice(len(pairs), n, replace=False))
        pairs = [pairs[i] for i in keep]
    return [{"id": i, "type": "held-out" if p in DEFAULT_HELD_OUT else "seen", "prompt": f"a large {p[0]} {p[1]}",
             "target": p, "seed": seed} for i, p in enumerate(pairs)]


def _t2i_rows(items: Items, images: torch.Tensor, sizes: tuple[str, ...]) -> Items:
    from vlm_primer.evaluation.scene_reader import read_largest

    read = read_largest(images, sizes=sizes)  # at the images' own resolution
    return [{"id": it["id"], "type": it["type"], "prompt": it["prompt"], "read": " ".join(r) if r else None,
             "color": float(r is not None and r[0] == it["target"][0]),
             "shape": float(r is not None and r[1] == it["target"][1]),
             "value": float(r is not None and tuple(r) == tuple(it["target"]))} for it, r in zip(items, read)]


def run_t2i(model, items: Items) -> Items:
    """1 for an image that reads back as its prompt's colour and shape. Explained in notebook 07, §Text to image."""
    images = model.generate([it["prompt"] for it in items], items[0]["seed"])
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or len(images) != len(items):
        raise ValueError(f"{model.name}'s generate must return (N, 3, H, W) images, one per prompt; "
                         f"got {getattr(images, 'shape', type(images))}")
    return _t2i_rows(items, images.float().clamp(0, 1), model.world_config().sizes)


def blind_t2i(model, items: Items, seed: int) -> Items:
    """A real one-object test scene for every prompt, drawn from ``seed`` whatever the prompt says."""
    from vlm_primer.world import SceneDataset

    ds = SceneDataset("test", len(items), model.world_config(), seed, num_objects=1)
    images = render_scenes(model, [ds.scene(i)[0] for i in range(len(items))])
    return _t2i_rows(items, images, model.world_config().sizes)


def extra_t2i(model, items: Items, results: Items) -> dict[str, Any]:
    return {"color": float(np.mean([r["color"] for r in results])),
            "shape": float(np.mean([r["shape"] for r in results])),
            "unreadable": sum(r["read"] is None for r in results)}


def _chance() -> float:
    """Guessing one of the default world's compositions (every zoo model's world has its colours and shapes)."""
    from vlm_primer.world import WorldConfig

    cfg = WorldConfig()
    return 1.0 / (len(cfg.colors) * len(cfg.shapes))


register(Suite("t2i", "generate", "accuracy",
               "text-to-image consistency: does the image for 'a large {colour} {shape}' read back as both",
               build_t2i, run_t2i, blind_t2i, "a real test scene of a random composition, whatever the prompt",
               default_n=96, chance=_chance(), extra=extra_t2i))
