"""``python -m vlm_primer.train dpo``: chapter 06b's preference optimisation of LLaVA as a training job.

* ``--preset tiny`` starts from the zoo's ``llava-tiny`` (chapter 05's two stages run to the end) and trains it on
  preference pairs written from the scene graph (:func:`~vlm_primer.recipes.alignment.preference_pairs`) with the
  DPO loss against a frozen copy (:class:`~vlm_primer.recipes.alignment.DPOModel`); the tower stays frozen, the
  connector and the language model train (stage 2's freezing). ``--preset base`` builds LLaVA-1.5-7B's shapes with
  random weights: load a trained LLaVA with ``--set init=PATH``.
* ``--set beta=0.1``, ``--set loss=sigmoid|robust|hinge|ipo``, ``--set train_size=N`` (pairs),
  ``--set init=PATH`` (a LLaVA's checkpoint directory or safetensors file, or a DPO run's ``--ckpt-dir``, which
  brings the reference it was trained against).
* ``--peft lora|dora|qlora|vera`` (any recipe) puts adapters on the policy's trainable linear layers
  (:func:`~vlm_primer.recipes.peft.apply_peft`); the reference is copied before, so it is the plain model.

    python -m vlm_primer.train dpo --preset tiny --steps 300 --ckpt-dir runs/dpo
    python -m vlm_primer.train dpo --preset base --precision bf16 --set init=runs/llava-s2 --peft lora

Chapter 06b (survey §3.5) explains it.
"""

from __future__ import annotations

from vlm_primer.training import TrainConfig
from vlm_primer.training.recipes import RecipeArgs, TrainJob, register_recipe

OPTIONS = ("beta", "loss", "train_size", "init")
TINY_LR, BASE_LR = 1e-4, 5e-7  # the tiny benchmark's rate; a DPO-scale rate for a 7B model (Zephyr's DPO: 5e-7)


@register_recipe("dpo", help="DPO on LLaVA with preference pairs from the scene graph (chapter 06b)")
def dpo_recipe(args: RecipeArgs) -> TrainJob:
    from vlm_primer import zoo
    from vlm_primer.backbones.llava import Llava, LlavaConfig
    from vlm_primer.backbones.recipes import _init
    from vlm_primer.recipes.alignment import DPOModel, dpo_collate, preference_pairs
    from vlm_primer.training.checkpoint import CheckpointError
    from vlm_primer.world import WorldConfig

    args.check_options(OPTIONS)
    if args.preset == "tiny":
        policy, transform = zoo.load("llava-tiny"), zoo.preprocess("llava-tiny")
        world = WorldConfig(**zoo.card("llava-tiny")["preprocess"]["world"])
    else:
        policy, transform = Llava(LlavaConfig.from_preset(args.preset)), None
        world = WorldConfig.from_preset(args.preset, image_size=policy.cfg.vision.image_size)
    init, dpo_run = args.options.get("init"), False
    try:
        _init(policy, init)  # a LLaVA's weights: the policy and the reference both start from them
    except CheckpointError:
        dpo_run = True  # a DPO run's checkpoint: its policy and the reference it was trained against
    policy.set_stage(2)
    model = DPOModel(policy, args.option("beta", 0.1), loss_type=args.options.get("loss", "sigmoid"))
    if dpo_run:
        _init(model, init)
    pairs = preference_pairs(args.option("train_size", 10_000), world, seed=args.seed)
    collate = dpo_collate(policy.tokens_per_image, transform=transform, image_id=policy.cfg.image_token_id)
    train = TrainConfig.from_preset(args.preset, lr=TINY_LR if args.preset == "tiny" else BASE_LR, weight_decay=0.0)
    if args.batch_size is not None:
        train = train.replace(batch_size=args.batch_size)
    return TrainJob(model, pairs, train, collate_fn=collate)
