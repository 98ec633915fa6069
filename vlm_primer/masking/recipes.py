"""Training recipes of chapter 03: ``python -m vlm_primer.train mae|flava --preset tiny|base ...``.

* ``mae``: MAE on Shapes World images (or WebDataset shards with ``--shards``). ``--preset base`` is the paper's
  ViT-B/16 with its 8-block decoder, 75 % masking, per-patch normalised targets, AdamW with betas (0.9, 0.95),
  weight decay 0.05 and the learning rate ``1.5e-4 x batch / 256`` for the global batch of one optimizer step
  (He et al. 2022, Table 8, where it is 4,096): ``--batch-size x --grad-accum x`` the number of processes; no
  gradient clipping.
* ``flava``: FLAVA's objectives on Shapes World captions (:mod:`vlm_primer.masking.flava`): every step runs an
  image-only batch (MIM), a text-only batch (MLM) and a batch of pairs, half of them mismatched (ITM, MMM, global
  contrastive), the round robin over unimodal and multimodal data of the paper in one step
  (:class:`FlavaJointStep`). MIM's targets come from a k-means :class:`~vlm_primer.masking.codebook.PatchCodebook`
  fitted on 512 training images (FLAVA's are DALL-E dVAE codes). ``--preset base`` is the paper's shape.

Options (``--set key=value``): ``train_size`` (default 50 000 Shapes World items per epoch); for MAE
``mask_ratio`` (default the preset's 0.75); for FLAVA ``negatives``: ``random`` (default: ITM's mismatched pairs
take another item's caption) or ``hard`` (chapter 01's binding swaps and replaced attributes,
:func:`with_hard_negatives`).

    python -m vlm_primer.train mae --preset tiny --steps 300 --ckpt-dir runs/mae
    python -m vlm_primer.train mae --preset base --precision bf16 --compile --batch-size 256

Explained in notebook 03, §Training at scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vlm_primer.masking.codebook import PatchCodebook
from vlm_primer.masking.flava import Flava, FlavaConfig, mismatch_pairs
from vlm_primer.masking.mae import MAE, MAEConfig
from vlm_primer.masking.masks import bert_mask_tokens, block_mask
from vlm_primer.training.config import TrainConfig
from vlm_primer.training.recipes import RecipeArgs, TrainJob, register_recipe

__all__ = ["FlavaJointStep", "flava_collate", "flava_recipe", "image_collate", "mae_recipe", "with_hard_negatives"]


def image_collate(image_size: int):
    """Samples with an ``image`` -> ``{pixel_values}`` (resized when the sample is another size)."""
    import torch.nn.functional as F

    def collate(samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not samples:
            raise ValueError("cannot collate an empty batch")
        images = [s["image"] if tuple(s["image"].shape[-2:]) == (image_size, image_size) else
                  F.interpolate(s["image"][None].float(), size=(image_size, image_size), mode="bilinear",
                                antialias=True, align_corners=False)[0] for s in samples]
        return {"pixel_values": torch.stack(images)}

    return collate


@register_recipe("mae", help="MAE (masked auto-encoder, 75 % of patches hidden) on Shapes World images (chapter 03)")
def mae_recipe(args: RecipeArgs) -> TrainJob:
    from vlm_primer.world import ShapesCaptionDataset, WorldConfig

    args.check_options(("train_size", "mask_ratio"))
    cfg = MAEConfig.from_preset(args.preset)
    cfg = cfg.replace(mask_ratio=args.option("mask_ratio", cfg.mask_ratio))
    train = TrainConfig.from_preset(args.preset, betas=(0.9, 0.95), weight_decay=0.05, grad_clip=None)
    if args.batch_size is not None:
        train = train.replace(batch_size=args.batch_size)
    if args.preset == "tiny":
        train = train.replace(lr=1e-3)
    else:  # the paper's rule, on the batch of one optimizer step over every process
        from vlm_primer.training import distributed as D

        step_batch = train.batch_size * (args.grad_accum or train.grad_accum_steps) * D.world_size()
        train = train.replace(lr=1.5e-4 * step_batch / 256)
    collate = image_collate(cfg.encoder.image_size)
    if args.shards:
        from vlm_primer.training.shards import shard_loader

        data = shard_loader(args.shards, train.batch_size, collate, seed=args.seed, num_workers=args.num_workers)
        return TrainJob(MAE(cfg), data, train)
    world = WorldConfig.from_preset(args.preset, image_size=cfg.encoder.image_size)
    data = ShapesCaptionDataset("train", args.option("train_size", 50_000), world, seed=args.seed,
                                statements=False)
    return TrainJob(MAE(cfg), data, train, collate_fn=collate)


def flava_collate(cfg: FlavaConfig, codebook: PatchCodebook, tokenizer: Any = None, max_length: int = 32,
                  seed: int = 0):
    """Image-caption items -> everything :class:`FlavaJointStep` takes: the images and their masked patches with
    the codebook's ids, the true captions (``text_ids``) and their masked copy, and pairs for ITM where about half
    of the captions are another item's (``input_ids``, ``itm_labels``; an identical caption counts as a match)."""
    from vlm_primer.text import Tokenizer

    tokenizer = tokenizer or Tokenizer.load()
    g = torch.Generator().manual_seed(seed)

    def collate(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if len(items) < 2:
            raise ValueError("FLAVA's matching and contrastive losses need a batch of at least 2 pairs")
        captions = [it["caption"] for it in items]
        enc = tokenizer(captions, max_length=max_length, add_bos=True)
        pixels = torch.stack([it["image"] for it in items])
        index, _ = mismatch_pairs(len(items), generator=g)
        itm_labels = torch.tensor([int(captions[j] == captions[i]) for i, j in enumerate(index.tolist())])
        ids_masked, mlm_labels = bert_mask(cfg, enc["input_ids"], g)
        pair_masked, pair_labels = bert_mask(cfg, enc["input_ids"][index], g)
        return {"pixel_values": pixels, "text_ids": enc["input_ids"], "text_mask": enc["attention_mask"],
                "text_ids_masked": ids_masked, "mlm_labels": mlm_labels,
                "bool_masked_pos": block_mask(len(items), cfg.image.grid, cfg.mim_ratio, generator=g),
                "mim_labels": codebook.encode(pixels), "input_ids": enc["input_ids"][index],
                "attention_mask": enc["attention_mask"][index], "input_ids_masked": pair_masked,
                "pair_mlm_labels": pair_labels, "itm_labels": itm_labels}

    return collate


def with_hard_negatives(collate, cfg: FlavaConfig, tokenizer: Any = None, max_length: int = 32, prob: float = 0.5,
                        seed: int = 0):
    """:func:`flava_collate` with ITM on chapter 01's **hard negatives**: each item's pair is, with probability
    ``prob``, the image with its ``negative`` caption (a binding swap or a replaced attribute, from
    ``ShapesCaptionDataset(..., negatives=True)``; label 0), else with its own caption (label 1). Items without a
    hard negative keep their own caption. The pairs' captions are masked for MMM like the others."""
    from vlm_primer.text import Tokenizer

    tokenizer = tokenizer or Tokenizer.load()
    g = torch.Generator().manual_seed(seed)

    def hard(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if any("negative" not in it for it in items):
            raise ValueError("hard negatives need items with a 'negative' caption: "
                             "ShapesCaptionDataset(..., negatives=True)")
        batch = collate(items)
        swap = (torch.rand(len(items), generator=g) < prob).tolist()
        swap = [s and bool(it["negative"]) for s, it in zip(swap, items)]
        enc = tokenizer([it["negative"] if s else it["caption"] for s, it in zip(swap, items)],
                        max_length=max_length, add_bos=True)
        masked, labels = bert_mask(cfg, enc["input_ids"], g)
        return {**batch, "input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                "input_ids_masked": masked, "pair_mlm_labels": labels,
                "itm_labels": torch.tensor([int(not s) for s in swap])}

    return hard


def bert_mask(cfg: FlavaConfig, input_ids: torch.Tensor, generator: torch.Generator):
    """BERT's corruption with FLAVA's settings (:meth:`~vlm_primer.masking.Flava.mask_text`)."""
    return bert_mask_tokens(input_ids, mask_token_id=cfg.mask_token_id, vocab_size=cfg.text.vocab_size,
                            prob=cfg.mlm_prob, special_ids=cfg.special_token_ids, generator=generator)


@dataclass
class FlavaStepOutput:
    loss: torch.Tensor
    losses: dict[str, torch.Tensor]   # each unweighted loss of this step (detached), for the plots


class FlavaJointStep(nn.Module):
    """One FLAVA pre-training step over the three kinds of data at once: images alone (MIM), captions alone (MLM)
    and pairs (ITM on true and mismatched pairs; MMM and the global contrastive loss on the true ones). The
    mismatched captions are masked like the true ones, but MMM reads only the true pairs.
    Explained in notebook 03, §FLAVA."""

    def __init__(self, flava: Flava) -> None:
        super().__init__()
        self.flava = flava

    def forward(self, pixel_values, text_ids, text_mask, text_ids_masked, mlm_labels, bool_masked_pos, mim_labels,
                input_ids, attention_mask, input_ids_masked, pair_mlm_labels, itm_labels) -> FlavaStepOutput:
        """The keys of :func:`flava_collate`: ``text_*`` are the items' own captions (MLM and its labels),
        ``input_ids`` / ``input_ids_masked`` / ``pair_mlm_labels`` the pairs' captions (some mismatched)."""
        flava = self.flava
        image = flava(pixel_values, bool_masked_pos=bool_masked_pos, mim_labels=mim_labels)
        text = flava(input_ids=text_ids, attention_mask=text_mask, input_ids_masked=text_ids_masked,
                     mlm_labels=mlm_labels)
        pairs = flava(pixel_values, input_ids, attention_mask, input_ids_masked=input_ids_masked,
                      bool_masked_pos=bool_masked_pos, mim_labels=mim_labels, mlm_labels=pair_mlm_labels,
                      itm_labels=itm_labels)
        losses = {"mim": image.mim, "mlm": text.mlm, **{k: getattr(pairs, k) for k in
                                                         ("mmm_image", "mmm_text", "itm", "global_contrastive")}}
        return FlavaStepOutput(loss=sum(o.loss for o in (image, text, pairs) if o.loss is not None),
                               losses={k: v.detach() for k, v in losses.items() if v is not None})

    def post_step(self) -> None:
        self.flava.post_step()


def shapes_codebook(world: Any, patch_size: int, k: int, transform=None, n: int = 512,
                    seed: int = 0) -> PatchCodebook:
    """k-means codes of the patches of ``n`` Shapes World training images of ``world`` (a
    :class:`~vlm_primer.world.WorldConfig`), after ``transform``: FLAVA's image tokenizer here."""
    from vlm_primer.world import ShapesCaptionDataset

    ds = ShapesCaptionDataset("train", n, world, seed=seed + 10_000, statements=False, num_paraphrases=1,
                              transform=transform)
    return PatchCodebook.fit(torch.stack([ds[i]["image"] for i in range(n)]), k, patch_size, seed=seed)


@register_recipe("flava", help="FLAVA (MIM, MLM, MMM, ITM, global contrastive) on Shapes World (chapter 03)")
def flava_recipe(args: RecipeArgs) -> TrainJob:
    from vlm_primer.world import ShapesCaptionDataset, WorldConfig

    args.check_options(("train_size", "negatives"))
    negatives = args.options.get("negatives", "random")
    if negatives not in ("random", "hard"):
        raise ValueError(f"negatives must be 'random' or 'hard', got {negatives!r}")
    if args.shards:
        raise ValueError("the flava recipe trains on Shapes World; --shards is not supported yet")
    cfg = FlavaConfig.from_preset(args.preset)
    if args.preset == "base":  # the paper's shapes with the project tokenizer's vocabulary
        cfg = cfg.replace(text=cfg.text.replace(vocab_size=814, eos_token_id=3, pad_token_id=0), mask_token_id=4,
                          special_token_ids=(0, 1, 2, 3))
    train = TrainConfig.from_preset(args.preset, lr=1e-3 if args.preset == "tiny" else 5e-4, weight_decay=0.1,
                                    betas=(0.9, 0.999))
    if args.batch_size is not None:
        train = train.replace(batch_size=args.batch_size)
    size = cfg.image.image_size
    world = WorldConfig.from_preset(args.preset, image_size=size)
    codebook = shapes_codebook(world, cfg.image.patch_size, min(cfg.codebook_size, 512), seed=args.seed)
    if codebook.k < cfg.codebook_size:
        cfg = cfg.replace(codebook_size=codebook.k)
    data = ShapesCaptionDataset("train", args.option("train_size", 50_000), world, seed=args.seed,
                                statements=False, negatives=negatives == "hard")
    collate = flava_collate(cfg, codebook, max_length=cfg.text.context_length, seed=args.seed)
    if negatives == "hard":
        collate = with_hard_negatives(collate, cfg, max_length=cfg.text.context_length, seed=args.seed)
    return TrainJob(FlavaJointStep(Flava(cfg)), data, train, collate_fn=collate)
