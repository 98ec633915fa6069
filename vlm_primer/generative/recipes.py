"""Training recipes of chapter 04: ``python -m vlm_primer.train blip|coca --preset tiny|base ...``.

Both train from scratch on Shapes World captions rendered at the model's image size (or on WebDataset shards with
``--shards``), with the project tokenizer: ``--preset base`` keeps the papers' shapes (ViT-B/16 and BERT-base for
BLIP, CoCa-Base's decoder) and swaps only the vocabulary for the tokenizer's. Options (``--set key=value``):

* ``train_size`` (default 50 000): Shapes World items per epoch;
* ``distill`` (BLIP, default the preset's: off at tiny, on at base): ITC with momentum distillation;
* ``caption_kind`` (default ``objects``): which Shapes World captions to train on.

    python -m vlm_primer.train blip --preset tiny --steps 300 --ckpt-dir runs/blip
    python -m vlm_primer.train coca --preset base --precision bf16 --compile --batch-size 256

Explained in notebook 04, §Training at scale.
"""

from __future__ import annotations

from torch import nn

from vlm_primer.generative.blip import Blip, BlipConfig
from vlm_primer.generative.coca import CoCa, CoCaConfig
from vlm_primer.training.config import TrainConfig
from vlm_primer.training.recipes import RecipeArgs, TrainJob, register_recipe

__all__ = ["blip_recipe", "coca_recipe", "shapes_vocab"]

OPTIONS = ("train_size", "distill", "caption_kind")
#: The MED's task tokens over the project tokenizer: <bos> is [CLS], <eos> is [SEP], two new ids after the 814.
SHAPES_MED = dict(vocab_size=816, cls_token_id=2, enc_token_id=814, dec_token_id=815, sep_token_id=3, pad_token_id=0)


def shapes_vocab(cfg: BlipConfig | CoCaConfig) -> BlipConfig | CoCaConfig:
    """A paper preset pointed at the project tokenizer (814 tokens, ``<bos>=2``, ``<eos>=3``, ``<pad>=0``)."""
    if isinstance(cfg, BlipConfig):
        return cfg.replace(text=cfg.text.replace(**SHAPES_MED))
    return cfg.replace(vocab_size=814, bos_token_id=2, eos_token_id=3, pad_token_id=0)


def _job(args: RecipeArgs, model: nn.Module, lr: float) -> TrainJob:
    from vlm_primer.backbones.data import caption_pairs_collate
    from vlm_primer.world import ShapesCaptionDataset, WorldConfig

    args.check_options(OPTIONS)
    train = TrainConfig.from_preset(args.preset, lr=lr, weight_decay=0.05)
    if args.batch_size is not None:
        train = train.replace(batch_size=args.batch_size)
    image_size = model.cfg.vision.image_size
    collate = caption_pairs_collate(max_length=32)
    if args.shards:
        from vlm_primer.contrastive.recipes import pair_collate
        from vlm_primer.text import Tokenizer
        from vlm_primer.training.shards import shard_loader

        resize = pair_collate(Tokenizer.load(), 32, image_size)

        def shard_collate(samples):
            return collate([{"image": img, "caption": s["caption"]}
                            for img, s in zip(resize(samples)["pixel_values"], samples)])

        data = shard_loader(args.shards, train.batch_size, shard_collate, seed=args.seed, num_workers=args.num_workers)
        return TrainJob(model, data, train)
    world = WorldConfig.from_preset(args.preset, image_size=image_size)
    data = ShapesCaptionDataset("train", args.option("train_size", 50_000), world, seed=args.seed,
                                caption_kind=args.options.get("caption_kind", "objects"), statements=False)
    return TrainJob(model, data, train, collate_fn=collate)


@register_recipe("blip", help="BLIP (ViT + MED: ITC, ITM with hard negatives, LM) on Shapes World (chapter 04)")
def blip_recipe(args: RecipeArgs) -> TrainJob:
    cfg = shapes_vocab(BlipConfig.from_preset(args.preset))
    cfg = cfg.replace(distill=args.option("distill", cfg.distill))
    return _job(args, Blip(cfg), lr=5e-4 if args.preset == "tiny" else 3e-4)


@register_recipe("coca", help="CoCa (contrastive + captioning losses, attentional poolers) on Shapes World "
                              "(chapter 04)")
def coca_recipe(args: RecipeArgs) -> TrainJob:
    if "distill" in args.options:
        raise ValueError("distill is BLIP's option: CoCa has no momentum encoder")
    return _job(args, CoCa(shapes_vocab(CoCaConfig.from_preset(args.preset))), lr=5e-4 if args.preset == "tiny"
                else 3e-4)


# Chapter 04b's recipes (vqvae, ar_t2i, diffusion) register themselves when their module is imported.
from vlm_primer.generative import t2i_recipes  # noqa: E402,F401
