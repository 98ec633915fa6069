"""``python -m vlm_primer.train llava --stage 1|2``: LLaVA's two training stages (notebook 05).

* ``--preset tiny`` starts from the zoo: the ``clip-tiny-pairs`` tower and ``lm-tiny``, Shapes World at
  48 px with one or two objects. ``--preset base`` builds LLaVA-1.5-7B's shapes (CLIP ViT-L/14 at
  336 px, a Llama-2-7B-shaped LM) with random weights: load real parts with ``--set init=PATH``.
* ``--stage 1`` trains the connector on captions; ``--stage 2`` trains connector + LM on instructions
  and short VQA answers (``--set data=instruct|vqa|mix``; ``--set train_vision=1`` unfreezes the tower).
* ``--set init=PATH``: start from saved weights (a checkpoint directory or a safetensors file), e.g.
  stage 2 from stage 1's ``--ckpt-dir``.

    python -m vlm_primer.train llava --preset tiny --stage 1 --steps 300 --ckpt-dir runs/llava-s1
    python -m vlm_primer.train llava --preset tiny --stage 2 --set init=runs/llava-s1 --steps 600
"""

from __future__ import annotations

from vlm_primer.backbones.data import llava_collate
from vlm_primer.backbones.llava import Llava, LlavaConfig
from vlm_primer.backbones.stages import LR, TINY_WORLD, stage_data, tiny_llava
from vlm_primer.training import TrainConfig
from vlm_primer.training.recipes import RecipeArgs, TrainJob, register_recipe

OPTIONS = ("stage", "data", "init", "train_vision", "train_size", "connector")


def _model(args: RecipeArgs) -> tuple[Llava, object]:
    connector = args.options.get("connector", "mlp")
    if args.preset == "tiny":
        return tiny_llava("clip-tiny-pairs", connector=connector, seed=args.seed)
    return Llava(LlavaConfig.from_preset(args.preset, connector=connector)), None


@register_recipe("llava", help="LLaVA stage 1 (connector on captions) or 2 (instruction tuning) (chapter 05)")
def llava_recipe(args: RecipeArgs) -> TrainJob:
    unknown = sorted(set(args.options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown --set option(s) {unknown}; this recipe knows {OPTIONS}")
    stage = int(args.options.get("stage", 1))
    model, transform = _model(args)
    if "init" in args.options:  # a run's --ckpt-dir (its latest checkpoint), a checkpoint, or a .safetensors file
        from vlm_primer.training.checkpoint import latest_checkpoint, load_weights

        init = args.options["init"]
        load_weights(model, latest_checkpoint(init) or init)
    model.set_stage(stage, train_vision=args.options.get("train_vision", "0") in ("1", "true", "yes"))
    kind = args.options.get("data", "caption" if stage == 1 else "mix")
    from vlm_primer.world import WorldConfig

    world = TINY_WORLD if args.preset == "tiny" else WorldConfig.from_preset(
        args.preset, image_size=model.cfg.vision.image_size).to_dict()
    data = stage_data(kind, model, transform, size=int(args.options.get("train_size", 50_000)), seed=args.seed,
                      world=world)
    train = TrainConfig.from_preset(args.preset, lr=LR.get(stage, 1e-3), weight_decay=0.0)
    if args.batch_size is not None:
        train = train.replace(batch_size=args.batch_size)
    return TrainJob(model, data, train, collate_fn=llava_collate(model.cfg.text.pad_token_id))
