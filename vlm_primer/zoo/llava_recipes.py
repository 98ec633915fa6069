"""The zoo's LLaVA: chapter 05's two stages run to the end, so later chapters start from a model that talks.

Explained in notebook 05, §Stage 1 and stage 2. Kept apart from :mod:`vlm_primer.zoo.recipes` so that
the contrastive towers and ``lm-tiny`` it starts from keep their recipe hash; this recipe's hash covers
this file and the training functions it runs (``SOURCES``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

SOURCES = ("vlm_primer.backbones.stages:tiny_llava", "vlm_primer.backbones.stages:stage_data",
           "vlm_primer.backbones.stages:train_stage", "vlm_primer.backbones.data:LlavaChatDataset")
STAGE1_STEPS, STAGE2_STEPS = 300, 1500


def measure(name: str, model: nn.Module) -> dict[str, float]:
    """Exact-match VQA accuracy (per question type and overall) on 1,200 held-out test questions."""
    from vlm_primer.backbones.stages import vqa_eval, vqa_set
    from vlm_primer.zoo import preprocess

    acc = vqa_eval(model.float().eval(), preprocess("clip-tiny-pairs"), vqa_set(1200))["accuracy"]
    return {f"vqa_{k}": round(v, 4) for k, v in acc.items()}


def llava_tiny(steps: int | None = None, progress: bool = True, seed: int = 0) -> tuple[nn.Module, dict[str, Any]]:
    """LLaVA-1.5's recipe at the tiny scale: the ``clip-tiny-pairs`` tower (penultimate layer, CLS dropped, frozen),
    a 2-layer MLP connector and ``lm-tiny``; stage 1 trains the connector for 300 steps of 32 captions, stage 2 the
    connector and the LM for 1,500 steps of 32 conversations (instructions and short VQA answers, half each)."""
    from vlm_primer.backbones.stages import stage_data, tiny_llava, train_stage

    s1, s2 = (STAGE1_STEPS, STAGE2_STEPS) if steps is None else (max(1, steps // 5), steps)
    model, transform = tiny_llava("clip-tiny-pairs", seed=seed)
    train_stage(model, 1, stage_data("caption", model, transform, seed=seed), s1, seed=seed, progress=progress)
    train_stage(model, 2, stage_data("mix", model, transform, size=60_000, seed=seed), s2, seed=seed,
                progress=progress)
    return model, measure("llava-tiny", model)


RECIPES = {"llava-tiny": llava_tiny}
