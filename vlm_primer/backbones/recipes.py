"""``python -m vlm_primer.train llava --stage 1|2``: LLaVA's two training stages (notebook 05); ``blip2 --stage 1|2``
and ``flamingo``: the learned bottlenecks of notebook 05b.

* ``--preset tiny`` starts from the zoo: the ``clip-tiny-pairs`` tower and ``lm-tiny``, Shapes World at
  48 px with one or two objects. ``--preset base`` builds LLaVA-1.5-7B's shapes (CLIP ViT-L/14 at
  336 px, a Llama-2-7B-shaped LM) with random weights: load real parts with ``--set init=PATH``.
* ``--stage 1`` trains the connector on captions; ``--stage 2`` trains connector + LM on instructions
  and short VQA answers (``--set data=instruct|vqa|mix``; ``--set train_vision=1`` unfreezes the tower).
* ``--set init=PATH``: start from saved weights (a checkpoint directory or a safetensors file), e.g.
  stage 2 from stage 1's ``--ckpt-dir``.

    python -m vlm_primer.train llava --preset tiny --stage 1 --steps 300 --ckpt-dir runs/llava-s1
    python -m vlm_primer.train llava --preset tiny --stage 2 --set init=runs/llava-s1 --steps 600
    python -m vlm_primer.train blip2 --preset tiny --stage 1 --steps 300 --ckpt-dir runs/blip2-s1
    python -m vlm_primer.train blip2 --preset tiny --stage 2 --set qformer_init=runs/blip2-s1 --set data=vqa
    python -m vlm_primer.train flamingo --preset tiny --steps 300
"""

from __future__ import annotations

from vlm_primer.backbones.data import llava_collate
from vlm_primer.backbones.llava import Llava, LlavaConfig
from vlm_primer.backbones.stages import LR, TINY_OBJECTS, TINY_WORLD, stage_data, tiny_llava
from vlm_primer.training import TrainConfig
from vlm_primer.training.recipes import RecipeArgs, TrainJob, register_recipe

OPTIONS = ("stage", "data", "init", "train_vision", "train_size", "connector")


def _tiny_parts():
    """The zoo's ``clip-tiny-pairs`` tower, ``lm-tiny`` and the tower's transform (the tiny presets' backbones)."""
    from vlm_primer import zoo

    return zoo.load("clip-tiny-pairs").vision, zoo.load("lm-tiny"), zoo.preprocess("clip-tiny-pairs")


def _init(model, path: str | None) -> None:
    """Load a run's weights (its --ckpt-dir, a checkpoint or a .safetensors file) into ``model``, strictly."""
    if path:
        from vlm_primer.training.checkpoint import latest_checkpoint, load_weights

        load_weights(model, latest_checkpoint(path) or path)


def _model(args: RecipeArgs) -> tuple[Llava, object]:
    connector = args.options.get("connector", "mlp")
    if args.preset == "tiny":
        return tiny_llava("clip-tiny-pairs", connector=connector, seed=args.seed)
    return Llava(LlavaConfig.from_preset(args.preset, connector=connector)), None


@register_recipe("llava", help="LLaVA stage 1 (connector on captions) or 2 (instruction tuning) (chapter 05)")
def llava_recipe(args: RecipeArgs) -> TrainJob:
    args.check_options(OPTIONS)
    stage = args.option("stage", 1)
    model, transform = _model(args)
    _init(model, args.options.get("init"))
    model.set_stage(stage, train_vision=args.option("train_vision", False))
    kind = args.options.get("data", "caption" if stage == 1 else "mix")
    from vlm_primer.world import WorldConfig

    world = TINY_WORLD if args.preset == "tiny" else WorldConfig.from_preset(
        args.preset, image_size=model.cfg.vision.image_size).to_dict()
    data = stage_data(kind, model, transform, size=args.option("train_size", 50_000), seed=args.seed,
                      world=world)
    train = TrainConfig.from_preset(args.preset, lr=LR.get(stage, 1e-3), weight_decay=0.0)
    if args.batch_size is not None:
        train = train.replace(batch_size=args.batch_size)
    return TrainJob(model, data, train, collate_fn=llava_collate(model.cfg.text.pad_token_id))


BLIP2_OPTIONS = ("stage", "data", "init", "qformer_init", "train_size", "train_qformer")


@register_recipe("blip2", help="BLIP-2 stage 1 (Q-Former: ITC, ITM, ITG) or 2 (queries -> frozen LM) (chapter 05b)")
def blip2_recipe(args: RecipeArgs) -> TrainJob:
    """``--stage 1`` trains the Q-Former on captions with its three losses (tower frozen); ``--stage 2`` trains
    the queries and the projection into the frozen LM on ``--set data=caption|vqa|mix`` (default caption, as
    BLIP-2's generative pre-training). ``--set qformer_init=RUN`` starts stage 2 from a stage-1 run; ``init``
    resumes the same stage's weights; ``--set train_qformer=0`` trains the projection alone (MiniGPT-4)."""
    from vlm_primer.backbones.blip2 import Blip2, Blip2Config, Blip2Stage1
    from vlm_primer.backbones.data import caption_pairs_collate
    from vlm_primer.backbones.qformer import QFormerConfig
    from vlm_primer.world import ShapesCaptionDataset, WorldConfig

    args.check_options(BLIP2_OPTIONS)
    stage = args.option("stage", 1)
    if stage not in (1, 2):
        raise ValueError(f"BLIP-2 has stages 1 and 2, got --stage {stage}")
    if args.preset == "tiny":
        tower, lm, transform = _tiny_parts()
        model = Blip2.from_parts(tower, lm, context_length=256,
                                 qformer=QFormerConfig.from_preset("tiny", vocab_size=lm.cfg.vocab_size))
    else:  # stage 1 needs the Q-Former's text side
        preset = Blip2Config.PRESETS[args.preset]
        model, transform = Blip2(Blip2Config.from_preset(args.preset, qformer=dict(preset["qformer"],
                                                                                   text_input=True))), None
    stage1 = Blip2Stage1(model.qformer, vision_tower=model.vision_tower)  # shares the Q-Former and the tower
    _init(stage1, args.options.get("qformer_init"))
    _init(stage1 if stage == 1 else model, args.options.get("init"))
    world = WorldConfig(**TINY_WORLD) if args.preset == "tiny" else WorldConfig.from_preset(
        args.preset, image_size=model.cfg.vision.image_size)
    size = args.option("train_size", 50_000)
    train = TrainConfig.from_preset(args.preset, lr=1e-4 if stage == 1 else LR[1], weight_decay=0.05 * (stage == 1))
    if args.batch_size is not None:
        train = train.replace(batch_size=args.batch_size)
    if stage == 1:
        data = ShapesCaptionDataset("train", size, world, seed=args.seed, num_objects=TINY_OBJECTS, statements=False,
                                    num_paraphrases=1, transform=transform)
        return TrainJob(stage1, data, train, collate_fn=caption_pairs_collate())
    model.set_stage(2, train_qformer=args.option("train_qformer", True))
    data = stage_data(args.options.get("data", "caption"), model, transform, size=size, seed=args.seed,
                      world=world.to_dict())
    return TrainJob(model, data, train, collate_fn=llava_collate(model.cfg.text.pad_token_id))


FLAMINGO_OPTIONS = ("data", "init", "train_size")


@register_recipe("flamingo", help="Flamingo: perceiver + gated cross-attention into a frozen LM (chapter 05b)")
def flamingo_recipe(args: RecipeArgs) -> TrainJob:
    """Trains the perceiver and the gated cross-attention layers (tower and LM frozen) on ``--set
    data=caption|vqa|mix`` (default vqa); each image is one ``<image>`` marker in the text."""
    from vlm_primer.backbones.flamingo import Flamingo, FlamingoConfig

    args.check_options(FLAMINGO_OPTIONS)
    if args.preset == "tiny":
        tower, lm, transform = _tiny_parts()
        model = Flamingo.from_parts(tower, lm, context_length=256, **{
            k: v for k, v in FlamingoConfig.PRESETS["tiny"].items() if k not in ("vision", "text")})
    else:
        model, transform = Flamingo(FlamingoConfig.from_preset(args.preset)), None
    _init(model, args.options.get("init"))
    model.set_stage()
    from vlm_primer.world import WorldConfig

    world = TINY_WORLD if args.preset == "tiny" else WorldConfig.from_preset(
        args.preset, image_size=model.cfg.vision.image_size).to_dict()
    data = stage_data(args.options.get("data", "vqa"), model, transform,
                      size=args.option("train_size", 50_000), seed=args.seed, world=world)
    train = TrainConfig.from_preset(args.preset, lr=LR[1], weight_decay=0.0)
    if args.batch_size is not None:
        train = train.replace(batch_size=args.batch_size)
    return TrainJob(model, data, train, collate_fn=llava_collate(model.cfg.text.pad_token_id))
