"""How each zoo model is trained and measured: one function per model, the card's numbers come from here.

Explained in notebook 00, §The zoo. A recipe returns ``(model, quality)``; ``quality`` is the figure
on the card, measured on a fixed evaluation set by :func:`evaluate` (so a test can reproduce it from
the saved file). ``steps`` overrides the recipe's step count (the tests rebuild at a few steps to
show the recipe runs). The card stores a hash of the recipe's source: change a recipe without
rebuilding its file and ``tests/test_zoo.py`` fails.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

from vlm_primer.text import Tokenizer, encode_chat
from vlm_primer.training import ResumableLoader, TrainConfig, Trainer
from vlm_primer.utils import seed_everything

CONTEXT = 16                       # caption tokens for the contrastive towers (chapter 02's)
LM_CONTEXT = 128                   # tokens per language-model training sequence
# ``seed`` (default 0, the zoo's files) seeds the weights and the data; benchmarks/bench_contrastive_seeds.py
# varies it to measure how much a card's figure depends on it.
ZERO_SHOT_TEMPLATES = ("a {}", "a large {}", "a big {}", "there is a {}", "a picture of a {}", "the image shows a {}",
                       "an image showing a {}")  # chapter 02's ensemble


# --------------------------------------------------------------------------- contrastive towers


# Chapter 02's tiny setting, where CLIP reaches about 95 % zero-shot: single large objects at 48 px
# (8 x 8 patches of 6 px), a 2-block image tower, pixels normalised with the training images' statistics.
WORLD = dict(image_size=48, sizes=("large",))


def contrastive_config(kind: str, tok: Tokenizer, **changes):
    """The tiny towers of chapter 02 (48 px, patch 6, a 2-block image tower) for ``kind`` in clip/siglip/llip."""
    from vlm_primer.contrastive import CLIPConfig, LlipConfig, SigLIPConfig

    cls = {"clip": CLIPConfig, "siglip": SigLIPConfig, "llip": LlipConfig}[kind]
    cfg = cls.from_preset("tiny")
    return cfg.replace(vision=cfg.vision.replace(image_size=48, patch_size=6, depth=2),
                       text=cfg.text.replace(vocab_size=tok.vocab_size, context_length=CONTEXT), **changes)


def pixel_stats() -> tuple[list[float], list[float]]:
    """Per-channel mean and std of 256 training images (CLIP normalises with its data's statistics)."""
    from vlm_primer.world import ShapesCaptionDataset, WorldConfig

    ds = ShapesCaptionDataset("train", 256, WorldConfig(**WORLD), num_objects=1, statements=False)
    x = torch.stack([ds[i]["image"] for i in range(256)])
    return [round(v, 6) for v in x.mean(dim=(0, 2, 3)).tolist()], [round(v, 6) for v in x.std(dim=(0, 2, 3)).tolist()]


def normalizer(mean: list[float], std: list[float]) -> Callable[[torch.Tensor], torch.Tensor]:
    m, s = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    return lambda image: (image - m) / s


def _zero_shot_set(n: int = 480):
    """Single-object scenes of the test split (the recipe's world, normalised): the fixed zero-shot set."""
    from vlm_primer.world import ShapesCaptionDataset, WorldConfig

    ds = ShapesCaptionDataset("test", n, WorldConfig(**WORLD), num_objects=1, statements=False,
                              transform=normalizer(*pixel_stats()))
    items = [ds[i] for i in range(n)]
    return torch.stack([it["image"] for it in items]), torch.tensor([it["label_id"] for it in items]), ds.classnames


def zero_shot_top1(model: nn.Module, tok: Tokenizer | None = None) -> float:
    """Zero-shot top-1 over the 48 colour-shape names on :func:`_zero_shot_set`, with a 4-prompt ensemble."""
    from vlm_primer.evaluation import build_classifier, zero_shot_accuracy

    tok = tok or Tokenizer.load()
    images, labels, classnames = _zero_shot_set()
    model = model.float().eval()
    classifier = build_classifier(model, tok, classnames, list(ZERO_SHOT_TEMPLATES))
    return round(float(zero_shot_accuracy(model, images, labels, classifier, topk=(1,))["top1"]), 4)


def binding_probe(n: int = 300):
    """Two-object test scenes with true, binding-swapped, shuffled and one-word-replaced captions (normalised)."""
    from vlm_primer.evaluation import caption_probe
    from vlm_primer.world import ShapesCaptionDataset, WorldConfig

    return caption_probe(ShapesCaptionDataset("test", n, WorldConfig(**WORLD), num_objects=2, statements=False,
                                              transform=normalizer(*pixel_stats())))


def binding_scores(model: nn.Module, tok: Tokenizer | None = None) -> dict[str, float]:
    """How often the true caption beats a replaced word (the control) and a binding swap on :func:`binding_probe`."""
    from vlm_primer.evaluation import probe_scores

    rows = probe_scores(model.float().eval(), tok or Tokenizer.load(), binding_probe(), CONTEXT)
    return {"replace_control_win": round(rows["replace one word"]["prefers_true"], 4),
            "binding_swap_win": round(rows["binding swap"]["prefers_true"], 4)}


def measure(name: str, model: nn.Module) -> dict[str, float]:
    """The quality figures on ``name``'s card, measured on its fixed evaluation set."""
    if name == "lm-tiny":
        return {"val_perplexity": perplexity(model, lm_eval_docs())}
    quality = {"zero_shot_top1": zero_shot_top1(model)}
    if name == "clip-tiny-pairs":
        quality |= binding_scores(model)
    return quality


def train_contrastive(model: nn.Module, steps: int, batch: int = 32, lr: float = 2e-3, *,
                      num_objects: int | tuple[int, int] = 1, distinct: bool = True, seed: int = 0,
                      progress: bool = False) -> list[dict[str, float]]:
    """Chapter 02's tiny training loop on fresh Shapes World pairs; returns the Trainer's history.

    ``distinct``: batches of distinct colour-shape compositions read in order, so no batch holds a false
    negative (chapter 02, §Training a tiny CLIP); otherwise random batches (needed above 42 pairs).
    """
    from vlm_primer.contrastive.recipes import pair_collate
    from vlm_primer.world import ShapesCaptionDataset, WorldConfig

    tok = Tokenizer.load()
    data = ShapesCaptionDataset("train", steps * batch, WorldConfig(**WORLD), seed=seed, num_objects=num_objects,
                                num_paraphrases=1, statements=False, distinct=batch if distinct else None,
                                transform=normalizer(*pixel_stats()))
    config = TrainConfig(max_steps=steps, batch_size=batch, lr=lr, warmup_steps=min(20, steps // 5),
                         weight_decay=0.2, eps=1e-6, log_every=max(1, steps // 20), seed=seed, device="cpu",
                         progress=progress, live_plot=False)
    loader = ResumableLoader(data, batch, collate_fn=pair_collate(tok, CONTEXT, WORLD["image_size"]),
                             shuffle=not distinct, seed=seed)
    return Trainer(model, loader, config).fit()


def _train_contrastive(kind: str, steps: int | None, progress: bool,
                       num_objects: int | tuple[int, int] = 1, seed: int = 0) -> nn.Module:
    from vlm_primer.contrastive import CLIP, SigLIP

    seed_everything(seed)
    model = (CLIP if kind == "clip" else SigLIP)(contrastive_config(kind, Tokenizer.load()))
    train_contrastive(model, steps or 2000, num_objects=num_objects, seed=seed, progress=progress)
    return model


def clip_tiny(steps: int | None = None, progress: bool = True, seed: int = 0) -> tuple[nn.Module, dict[str, Any]]:
    """CLIP (InfoNCE) towers trained with chapter 02's tiny recipe: 2,000 steps of 32 single-object pairs at 48 px."""
    model = _train_contrastive("clip", steps, progress, seed=seed)
    return model, measure("clip-tiny", model)


def clip_tiny_pairs(steps: int | None = None, progress: bool = True, seed: int = 0) -> tuple[nn.Module, dict[str, Any]]:
    """CLIP trained like :func:`clip_tiny` on scenes of one *or two* objects, so that it can read two-object
    captions: the model of chapter 02's binding test, whose replaced-word control it must pass."""
    model = _train_contrastive("clip", steps, progress, num_objects=(1, 2), seed=seed)
    return model, measure("clip-tiny-pairs", model)


def siglip_tiny(steps: int | None = None, progress: bool = True, seed: int = 0) -> tuple[nn.Module, dict[str, Any]]:
    """SigLIP (sigmoid loss) towers, same data and schedule as :func:`clip_tiny`."""
    model = _train_contrastive("siglip", steps, progress, seed=seed)
    return model, measure("siglip-tiny", model)


# --------------------------------------------------------------------------- the language model


def lm_texts(split: str, n: int, seed: int = 0) -> list[list[int]]:
    """Token ids of ``n`` documents of Shapes World language: a caption paragraph, a VQA exchange and an
    instruction conversation per scene, each in the chat template with ``<image>`` where the picture goes."""
    from vlm_primer.world import ShapesInstructDataset, ShapesVQADataset, describe

    tok = Tokenizer.load()
    inst, vqa = ShapesInstructDataset(split, n, seed=seed), ShapesVQADataset(split, n, seed=seed)
    docs = []
    for i in range(n):
        scene, rng = inst.scene(i)
        docs.append(tok.encode(" ".join(c.text + "." for c in describe(scene, rng)), add_bos=True))
        q = vqa.question(i)
        messages = [{"role": "user", "content": "<image>" + q.question}, {"role": "assistant", "content": q.sentence}]
        docs.append([tok.bos_id] + encode_chat(tok, messages)[0] + [tok.eos_id])
        docs.append([tok.bos_id] + encode_chat(tok, inst[i]["messages"])[0] + [tok.eos_id])
    return docs


class _Packed(torch.utils.data.Dataset):
    """Documents concatenated and cut into ``(LM_CONTEXT,)`` blocks: ``input_ids`` = ``labels``."""

    def __init__(self, docs: list[list[int]]) -> None:
        flat = torch.tensor([t for d in docs for t in d], dtype=torch.long)
        self.blocks = flat[: len(flat) // LM_CONTEXT * LM_CONTEXT].view(-1, LM_CONTEXT)

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.blocks[i], "labels": self.blocks[i]}


def perplexity(model: nn.Module, docs: list[list[int]]) -> float:
    """exp(mean next-token cross-entropy) over the packed blocks of ``docs``."""
    data = _Packed(docs)
    model = model.float().eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(data), 64):
            ids = data.blocks[i:i + 64]
            loss = model(ids, labels=ids).loss
            total, count = total + float(loss) * len(ids), count + len(ids)
    return round(math.exp(total / count), 4)


def lm_eval_docs() -> list[list[int]]:
    """The fixed evaluation documents of ``lm-tiny``: 300 scenes of the val split."""
    return lm_texts("val", 300)


def lm_tiny(steps: int | None = None, progress: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """A Llama-style decoder (RMSNorm, RoPE, SwiGLU, grouped-query attention) on Shapes World language."""
    from vlm_primer.nn import DecoderConfig, DecoderLM

    seed_everything(0)
    tok = Tokenizer.load()
    cfg = DecoderConfig.from_preset("llama_tiny", vocab_size=tok.vocab_size, context_length=LM_CONTEXT,
                                    bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)
    model = DecoderLM(cfg)
    steps, batch = steps or 2000, 32
    data = _Packed(lm_texts("train", 4000))
    config = TrainConfig(max_steps=steps, batch_size=batch, lr=3e-3, warmup_steps=min(100, steps // 5),
                         weight_decay=0.1, log_every=max(1, steps // 20), device="cpu", progress=progress,
                         live_plot=False)
    Trainer(model, data, config).fit()
    return model, measure("lm-tiny", model)


RECIPES: dict[str, Callable[..., tuple[nn.Module, dict[str, Any]]]] = {
    "clip-tiny": clip_tiny, "clip-tiny-pairs": clip_tiny_pairs, "siglip-tiny": siglip_tiny, "lm-tiny": lm_tiny,
}
