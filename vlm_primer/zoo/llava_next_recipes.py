"""The zoo's LLaVA-NeXT: ``llava-tiny`` taught to read AnyRes tiles, for notebook 05's resolution experiment.

Explained in notebook 05, §AnyRes. The model starts from ``llava-tiny`` (a new ``image_newline``, a longer
RoPE context) and is fine-tuned as stage 2 on VQA about 96 px mosaics (:func:`~vlm_primer.backbones.stages.
mosaic_set`), half of the images as AnyRes tiles of the full image and half squeezed to the tower's 48 px
first, so that one set of weights answers from either view and the two can be compared. Kept in its own
module so that the other zoo models keep their recipe hashes.
"""

from __future__ import annotations

from typing import Any

from torch import nn

SOURCES = ("vlm_primer.backbones.stages:tiny_llava_next", "vlm_primer.backbones.stages:mosaic_set",
           "vlm_primer.backbones.stages:train_stage", "vlm_primer.backbones.data:AnyResVQADataset",
           "vlm_primer.world.mosaic:spread_scene", "vlm_primer.world.mosaic:render_mosaic")
STEPS, SQUEEZE = 600, 0.5


def measure(name: str, model: nn.Module) -> dict[str, float]:
    """Exact-match VQA accuracy on 600 held-out mosaic questions of every type and on 300 shape questions (the
    detail a squeezed image loses), given the tiles of the full image (``tiles_*``) and of the image squeezed
    to 48 px first (``squeezed_*``)."""
    from vlm_primer.backbones.stages import mosaic_set, vqa_eval
    from vlm_primer.zoo import preprocess

    model, transform = model.float().eval(), preprocess("clip-tiny-pairs")
    sets = {"": mosaic_set(600), "shapeset_": mosaic_set(300, seed=1, qtypes=("shape",))}
    out = {}
    for view, squeeze in (("tiles", False), ("squeezed", True)):
        for prefix, questions in sets.items():
            acc = vqa_eval(model, transform, questions, squeeze=squeeze)["accuracy"]
            out |= {f"{view}_{prefix}{k}": round(v, 4) for k, v in acc.items() if not prefix or k == "all"}
    return out


def train_llava_next(steps: int = STEPS, seed: int = 0, progress: bool = False) -> nn.Module:
    """``llava-tiny`` as a LLaVA-NeXT fine-tuned for ``steps`` of 32 mosaic questions (connector, LM and
    ``image_newline``; the tower stays frozen): the zoo recipe, and each seed of the benchmark."""
    from vlm_primer.backbones.data import AnyResVQADataset
    from vlm_primer.backbones.stages import mosaic_set, tiny_llava_next, train_stage

    model, transform = tiny_llava_next(seed)
    data = AnyResVQADataset(mosaic_set(40_000, split="train", seed=seed), model.cfg, transform, squeeze=SQUEEZE,
                            seed=seed)
    train_stage(model, 2, data, steps, seed=seed, progress=progress)
    return model


def llava_next_tiny(steps: int | None = None, progress: bool = True, seed: int = 0) -> tuple[nn.Module, dict[str, Any]]:
    """``llava-tiny`` + AnyRes: 600 steps of stage 2 on 32 questions about 96 px mosaics, half as 2 x 2 tiles
    (336 image tokens), half squeezed to 48 px first (136 tokens)."""
    model = train_llava_next(steps or STEPS, seed=seed, progress=progress)
    return model, measure("llava-next-tiny", model)


RECIPES = {"llava-next-tiny": llava_next_tiny}
