"""Training recipes of chapter 02: ``python -m vlm_primer.train clip|siglip|llip --preset tiny ...``.

Explained in notebook 02 (and notebook 03 for the command line). Without ``--shards`` the models
train on Shapes World captions generated on the fly (``ShapesCaptionDataset``, rendered at the
model's image size); with ``--shards`` on WebDataset shards (``KEY.png`` + ``KEY.txt``), resized
to the model's image size. Recipe options (``--set key=value``):

* ``caption_kind`` (default ``objects``; ``random`` mixes in relations, counts and negations,
  which contrastive models find much harder): which Shapes World captions to train on;
* ``train_size`` (default 50 000): Shapes World items per epoch;
* ``eval_size`` (default 256): validation pairs for the retrieval Recall@K reported by ``eval_fn``;
* ``loss`` (Llip only): ``sigmoid`` or ``infonce``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from vlm_primer.contrastive.clip import SHAPES_TEXT, CLIP, CLIPConfig
from vlm_primer.contrastive.llip import Llip, LlipConfig
from vlm_primer.contrastive.siglip import SigLIP, SigLIPConfig
from vlm_primer.evaluation.retrieval import recall_at_k
from vlm_primer.training.config import TrainConfig
from vlm_primer.training.recipes import RecipeArgs, TrainJob, register_recipe

__all__ = ["clip_recipe", "llip_recipe", "pair_collate", "retrieval_eval", "siglip_recipe"]

PAIR_KEYS = ("pixel_values", "input_ids", "attention_mask")
OPTIONS = ("caption_kind", "train_size", "eval_size")
LLIP_OPTIONS = (*OPTIONS, "loss")


def pair_collate(tokenizer: Any, max_length: int, image_size: int, image_key: str = "image",
                 text_key: str = "caption") -> Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]:
    """Samples ``{image, caption}`` -> ``{pixel_values, input_ids, attention_mask}`` (what ``forward`` takes).

    Images of another size are resized (bilinear, antialiased) to ``image_size``.
    """

    def collate(samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not samples:
            raise ValueError("cannot collate an empty batch")
        images = []
        for s in samples:
            img = s[image_key]
            if tuple(img.shape[-2:]) != (image_size, image_size):
                img = F.interpolate(img[None].float(), size=(image_size, image_size), mode="bilinear",
                                    antialias=True, align_corners=False)[0]
            images.append(img)
        missing = [s.get("key", i) for i, s in enumerate(samples) if not isinstance(s.get(text_key), str)]
        if missing:
            raise ValueError(f"samples {missing[:5]} have no {text_key!r} text (a shard sample needs a .txt): "
                             "a text-image model trains on pairs")
        enc = tokenizer([s[text_key] for s in samples], max_length=max_length)
        return {"pixel_values": torch.stack(images), "input_ids": enc["input_ids"],
                "attention_mask": enc["attention_mask"]}

    return collate


def retrieval_eval(batch: dict[str, torch.Tensor], ks: tuple[int, ...] = (1, 5)) -> Callable[[nn.Module], dict]:
    """``eval_fn`` for the Trainer: image<->text Recall@K of a fixed validation batch.

    Uses the model's own ``similarity`` when it has one (Llip), else cosine similarity.
    """

    @torch.no_grad()
    def eval_fn(model: nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        b = {k: v.to(device) for k, v in batch.items()}
        img = model.encode_image(b["pixel_values"])
        txt = model.encode_text(b["input_ids"], attention_mask=b["attention_mask"])
        sim = model.similarity(img, txt) if hasattr(model, "similarity") else F.normalize(img, dim=-1) @ F.normalize(
            txt, dim=-1).t()
        return {f"val_{k}": v for k, v in recall_at_k(sim.float().cpu(), None, ks).items()}

    return eval_fn


#: Peak learning rate by preset: 1e-3 trains the tiny CLIP in 300 steps (5e-4 is the paper's, for base).
#: Llip uses at most 5e-4: at 1e-3 its InfoNCE variant can collapse to caption-independent scores.
LR = {"tiny": 1e-3, "small": 1e-3, "base": 5e-4}


def _job(args: RecipeArgs, model: nn.Module, max_lr: float = 1.0, known: tuple[str, ...] = OPTIONS
         ) -> TrainJob:
    args.check_options(known)
    from vlm_primer.text import Tokenizer
    from vlm_primer.world import ShapesCaptionDataset, WorldConfig

    cfg = model.cfg
    tokenizer = Tokenizer.load()
    collate = pair_collate(tokenizer, cfg.text.context_length, cfg.vision.image_size)
    train = TrainConfig.from_preset(args.preset, lr=min(LR.get(args.preset, 5e-4), max_lr), weight_decay=0.2, eps=1e-6)
    if args.batch_size is not None:
        train = train.replace(batch_size=args.batch_size)
    world = WorldConfig.from_preset(args.preset, image_size=cfg.vision.image_size)
    kind = args.options.get("caption_kind", "objects")
    eval_size = args.option("eval_size", 256)
    eval_set = ShapesCaptionDataset("val", eval_size, world, seed=args.seed, caption_kind=kind, statements=False)
    eval_items = [eval_set[i] for i in range(eval_size)]
    eval_fn = retrieval_eval(collate(eval_items))
    if args.shards:
        from vlm_primer.training.shards import shard_loader

        data = shard_loader(args.shards, train.batch_size, collate, seed=args.seed, num_workers=args.num_workers)
        return TrainJob(model, data, train, eval_fn=eval_fn)
    data = ShapesCaptionDataset("train", args.option("train_size", 50_000), world, seed=args.seed,
                                caption_kind=kind, statements=False)
    return TrainJob(model, data, train, collate_fn=collate, eval_fn=eval_fn)


def _shapes_text(cfg: Any) -> Any:
    """Point the text tower at the project tokenizer (``<eos>=3``, ``<pad>=0``) for the paper presets."""
    pool = "eos" if cfg.text.pool == "argmax" else cfg.text.pool
    return cfg.replace(text=cfg.text.replace(pool=pool, **SHAPES_TEXT))


@register_recipe("clip", help="CLIP (InfoNCE) on Shapes World captions or WebDataset shards (chapter 02)")
def clip_recipe(args: RecipeArgs) -> TrainJob:
    return _job(args, CLIP(_shapes_text(CLIPConfig.from_preset(args.preset))))


@register_recipe("siglip", help="SigLIP (sigmoid loss) on Shapes World captions or WebDataset shards (chapter 02)")
def siglip_recipe(args: RecipeArgs) -> TrainJob:
    return _job(args, SigLIP(_shapes_text(SigLIPConfig.from_preset(args.preset))))


@register_recipe("llip", help="Llip (caption-conditioned image embeddings) on Shapes World (chapter 02)")
def llip_recipe(args: RecipeArgs) -> TrainJob:
    cfg = LlipConfig.from_preset(args.preset, loss=args.options.get("loss", "sigmoid"))
    return _job(args, Llip(_shapes_text(cfg)), max_lr=5e-4, known=LLIP_OPTIONS)
