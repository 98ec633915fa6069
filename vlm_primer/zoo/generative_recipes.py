"""The zoo's generative models for notebook 04: BLIP and CoCa trained from scratch on Shapes World captions.

Explained in notebook 04. Chapter 02's tiny world (48 px, large objects; here one or two per scene, 6 px patches,
a 2-block image tower, the same pixel normalisation), 32 captions a step:

* ``blip-tiny``: BLIP's ViT and MED with ITC, ITM (hard negatives) and LM, 4,000 steps;
* ``coca-tiny``: CoCa (attentional poolers, 2 unimodal + 2 multimodal decoder layers), 4,000 steps.

Each card measures zero-shot classification (chapter 02's 48 names and prompts), CIDEr-D and how often the greedy
caption names every object of a test scene, and for BLIP the binding probe through ITC and through ITM. Kept in
their own module so that the other zoo models keep their recipe hashes.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from vlm_primer.generative.captioner import with_bos

SOURCES = ("vlm_primer.backbones.data:caption_pairs_collate", "vlm_primer.generative.blip:Blip",
           "vlm_primer.generative.med:MED", "vlm_primer.generative.med:MEDLayer", "vlm_primer.generative.coca:CoCa")
STEPS, BATCH, LR = 4000, 32, 1e-3
OBJECTS = (1, 2)
CAPTION_SET = 200


def tiny_config(kind: str):
    """The tiny preset of ``blip`` or ``coca`` at chapter 02's image size: 48 px, 6 px patches, 2 image blocks."""
    from vlm_primer.generative import BlipConfig
    from vlm_primer.generative.coca import CoCaConfig

    cfg = {"blip": BlipConfig, "coca": CoCaConfig}[kind].from_preset("tiny")
    return cfg.replace(vision=cfg.vision.replace(image_size=48, patch_size=6, depth=2))


def caption_dataset(split: str, size: int, seed: int = 0, **kw: Any):
    """Shapes World pairs of this chapter: the tiny world, one or two objects, normalised images."""
    from vlm_primer.world import ShapesCaptionDataset, WorldConfig
    from vlm_primer.zoo.recipes import WORLD, normalizer, pixel_stats

    kw = {"num_objects": OBJECTS, "statements": False, **kw}
    return ShapesCaptionDataset(split, size, WorldConfig(**WORLD), seed=seed, transform=normalizer(*pixel_stats()),
                                **kw)


def train_captioner(model: nn.Module, steps: int, seed: int = 0, progress: bool = False,
                    data: torch.utils.data.Dataset | None = None) -> list[dict[str, float]]:
    """Train BLIP or CoCa on ``data`` (items with ``image`` and ``caption``; default fresh training pairs) for
    ``steps`` steps of 32; returns the Trainer's history."""
    from vlm_primer.backbones.data import caption_pairs_collate
    from vlm_primer.training import ResumableLoader, TrainConfig, Trainer

    data = data if data is not None else caption_dataset("train", steps * BATCH, seed=seed, num_paraphrases=1)
    loader = ResumableLoader(data, BATCH, collate_fn=caption_pairs_collate(), shuffle=True, seed=seed)
    cfg = TrainConfig(max_steps=steps, batch_size=BATCH, lr=LR, warmup_steps=min(50, steps // 5), weight_decay=0.05,
                      log_every=max(1, steps // 20), seed=seed, device="cpu", progress=progress, live_plot=False)
    return Trainer(model, loader, cfg).fit()


def caption_set(n: int = CAPTION_SET) -> tuple[torch.Tensor, list[list[str]], list[dict[str, Any]]]:
    """The fixed captioning set: ``n`` test scenes, their images and references (the caption and its paraphrases)."""
    ds = caption_dataset("test", n, num_paraphrases=5)
    items = [ds[i] for i in range(n)]
    refs = [list(dict.fromkeys([it["caption"], *it["captions"]])) for it in items]
    return torch.stack([it["image"] for it in items]), refs, items


def names_objects(caption: str, scene) -> bool:
    """Does the caption name every object of the scene (colour and shape, synonyms merged) and nothing else?"""
    from collections import Counter

    from vlm_primer.evaluation.judge import answer_facts

    said = Counter({f: n for f, n in answer_facts(caption).items() if f[0] == "object"})
    return said == Counter(("object", o.color, o.shape) for o in scene.objects)


@torch.no_grad()
def caption_quality(model: nn.Module, n: int = CAPTION_SET, **generate_kw: Any) -> dict[str, float]:
    """CIDEr-D, BLEU-4 and ``names_objects`` of the model's captions (greedy unless ``generate_kw`` say otherwise)
    on :func:`caption_set`."""
    from vlm_primer.evaluation import caption_scores
    from vlm_primer.text import Tokenizer

    images, refs, items = caption_set(n)
    captions = model.eval().captions(images, Tokenizer.load(), **{"max_new_tokens": 20, **generate_kw})
    scores = caption_scores(refs, captions)
    hits = sum(names_objects(c, it["scene"]) for c, it in zip(captions, items)) / n
    return {"cider_d": round(scores["CIDEr-D"], 4), "bleu4": round(scores["BLEU-4"], 4), "names_objects": round(hits, 4)}


def zero_shot(model: nn.Module, n: int = 480) -> float:
    """Chapter 02's zero-shot top-1 (48 names, 7 prompts) on single-object test scenes, captions read after
    ``<bos>``."""
    from vlm_primer.evaluation import build_classifier, zero_shot_accuracy
    from vlm_primer.zoo.recipes import ZERO_SHOT_TEMPLATES

    ds = caption_dataset("test", n, num_objects=1)
    items = [ds[i] for i in range(n)]
    model = model.float().eval()
    classifier = build_classifier(model, with_bos(), ds.classnames, list(ZERO_SHOT_TEMPLATES), max_length=32)
    images, labels = torch.stack([it["image"] for it in items]), torch.tensor([it["label_id"] for it in items])
    return round(float(zero_shot_accuracy(model, images, labels, classifier, topk=(1,))["top1"]), 4)


def binding_probe(n: int = 300):
    """Chapter 02's binding probe (two-object test scenes, true / binding-swapped / shuffled / one-word-replaced)."""
    from vlm_primer.evaluation import caption_probe

    return caption_probe(caption_dataset("test", n, num_objects=2))


def itm_score(model: nn.Module) -> Callable[[torch.Tensor, list[str]], torch.Tensor]:
    """``score(images, captions)`` -> BLIP's ITM match probability of each pair (for ``probe_scores``)."""
    tok = with_bos()

    def score(images: torch.Tensor, captions: list[str]) -> torch.Tensor:
        enc = tok(captions, 32)
        return model.eval().itm_scores(images, enc["input_ids"], enc["attention_mask"])

    return score


def binding_scores(model: nn.Module, probe=None) -> dict[str, float]:
    """How often the true caption beats the replaced word (the control) and the binding swap, through ITC (cosine)
    and, for BLIP, through ITM."""
    from vlm_primer.evaluation import probe_scores

    probe = probe or binding_probe()
    heads = {"itc": None}
    if hasattr(model, "itm_scores"):
        heads["itm"] = itm_score(model)
    out = {}
    for head, score in heads.items():
        rows = probe_scores(model.eval(), with_bos(), probe, 32, score=score)
        out[f"{head}_replace_win"] = round(rows["replace one word"]["prefers_true"], 4)
        out[f"{head}_binding_win"] = round(rows["binding swap"]["prefers_true"], 4)
    return out


def measure(name: str, model: nn.Module) -> dict[str, float]:
    """The card's figures: zero-shot top-1, caption quality, and the binding probe."""
    return {"zero_shot_top1": zero_shot(model), **caption_quality(model), **binding_scores(model)}


def train(kind: str, steps: int = STEPS, seed: int = 0, progress: bool = False) -> nn.Module:
    """A fresh tiny ``blip`` or ``coca`` trained for ``steps`` steps (the zoo's recipe; benchmarks vary ``seed``)."""
    from vlm_primer.generative import Blip
    from vlm_primer.generative.coca import CoCa
    from vlm_primer.utils import seed_everything

    seed_everything(seed)
    model = {"blip": Blip, "coca": CoCa}[kind](tiny_config(kind))
    train_captioner(model, steps, seed=seed, progress=progress)
    return model.eval()


def blip_tiny(steps: int | None = None, progress: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """BLIP (ViT + MED, ITC + ITM + LM) trained from scratch: 4,000 steps of 32 Shapes World captions at 48 px."""
    model = train("blip", steps or STEPS, progress=progress)
    return model, measure("blip-tiny", model)


def coca_tiny(steps: int | None = None, progress: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """CoCa (contrastive + 2 x captioning loss) trained from scratch like ``blip-tiny``: 4,000 steps of 32."""
    model = train("coca", steps or STEPS, progress=progress)
    return model, measure("coca-tiny", model)


RECIPES = {"blip-tiny": blip_tiny, "coca-tiny": coca_tiny}
