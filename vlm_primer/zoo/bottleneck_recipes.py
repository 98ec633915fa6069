"""The zoo's learned bottlenecks for notebook 05b: BLIP-2, InstructBLIP and Flamingo on the zoo's frozen parts.

Explained in notebook 05b. Each reads the ``clip-tiny-pairs`` tower and talks through ``lm-tiny``, both frozen,
as in the papers; only the bottleneck learns:

* ``qformer-tiny``: BLIP-2's stage 1 alone, the Q-Former and its ITG head after 600 steps of ITC, ITM and ITG on
  captions (the very Q-Former ``blip2-tiny`` starts its stage 2 from); its card measures ITC zero-shot
  classification and how often its ITG captions name the object;
* ``blip2-tiny``: stage 1 trains the Q-Former on captions (ITC, ITM, ITG); stage 2 sends its 8 queries through
  a linear map into ``lm-tiny`` and trains them on VQA (the paper's stage 2 trains on captions and leaves
  questions to an LLM that already follows instructions; ``lm-tiny`` read questions only with whole-sentence
  answers and no picture, and one soft prompt for captions and short answers alike did worse: 33.8 % against
  45.9 % on the 1,200 test questions, one run each);
* ``instructblip-tiny``: ``blip2-tiny`` instruction-tuned on VQA with the question read by the Q-Former too;
* ``flamingo-tiny``: a perceiver (8 latents) and gated cross-attention before every second block of ``lm-tiny``,
  trained on the same VQA as ``blip2-tiny``'s stage 2.

Kept in their own module so that the other zoo models keep their recipe hashes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

SOURCES = ("vlm_primer.backbones.stages:train_stage", "vlm_primer.backbones.stages:vqa_eval",
           "vlm_primer.backbones.data:LlavaChatDataset", "vlm_primer.backbones.data:InstructionChatDataset",
           "vlm_primer.backbones.data:caption_pairs_collate", "vlm_primer.backbones.blip2:Blip2Stage1")
STAGE1_STEPS, STAGE2_STEPS, LR = 600, 1500, 1e-3
TRAIN_SIZE = 40_000


def measure(name: str, model: nn.Module) -> dict[str, float]:
    """Exact-match VQA accuracy (per question type and overall) on 1,200 held-out test questions; for
    ``qformer-tiny`` the ITC zero-shot top-1 (:func:`itc_zero_shot`)."""
    from vlm_primer.backbones.stages import vqa_eval, vqa_set
    from vlm_primer.zoo import preprocess

    if name == "qformer-tiny":
        return {"itc_zero_shot_top1": round(itc_zero_shot(model.qformer), 4),
                "itg_caption_match": round(itg_caption_match(model), 4)}
    acc = vqa_eval(model.float().eval(), preprocess("clip-tiny-pairs"), vqa_set(1200))["accuracy"]
    return {f"vqa_{k}": round(v, 4) for k, v in acc.items()}


def _parts():
    from vlm_primer import zoo

    return zoo.load("clip-tiny-pairs").vision, zoo.load("lm-tiny"), zoo.preprocess("clip-tiny-pairs")


def _vqa(model: nn.Module, transform, seed: int) -> torch.utils.data.Dataset:
    """Short VQA answers about the tiny world's scenes, one ``<image>`` per question (the model's token count)."""
    from vlm_primer.backbones.data import LlavaChatDataset
    from vlm_primer.backbones.stages import TINY_OBJECTS, TINY_WORLD
    from vlm_primer.world import WorldConfig

    return LlavaChatDataset("vqa", size=TRAIN_SIZE, seed=seed + 1, image_tokens=model.tokens_per_image,
                            transform=transform, config=WorldConfig(**TINY_WORLD), num_objects=TINY_OBJECTS,
                            image_id=model.cfg.image_token_id)


def train_blip2_stage1(model: nn.Module, steps: int, seed: int = 0, progress: bool = False) -> nn.Module:
    """BLIP-2's stage 1 for ``model.qformer`` (it needs its text side): ITC, ITM and ITG on 32 captions a step,
    the tower frozen. Returns the trained :class:`Blip2Stage1` (it shares ``model``'s Q-Former and tower)."""
    from vlm_primer.backbones import Blip2Stage1
    from vlm_primer.backbones.data import caption_pairs_collate
    from vlm_primer.backbones.stages import TINY_OBJECTS, TINY_WORLD
    from vlm_primer.training import ResumableLoader, TrainConfig, Trainer
    from vlm_primer.world import ShapesCaptionDataset, WorldConfig
    from vlm_primer.zoo import preprocess

    stage1 = Blip2Stage1(model.qformer, vision_tower=model.vision_tower)
    data = ShapesCaptionDataset("train", TRAIN_SIZE, WorldConfig(**TINY_WORLD), seed=seed, num_objects=TINY_OBJECTS,
                                statements=False, num_paraphrases=1, transform=preprocess("clip-tiny-pairs"))
    loader = ResumableLoader(data, 32, collate_fn=caption_pairs_collate(), shuffle=True, seed=seed)
    cfg = TrainConfig(max_steps=steps, batch_size=32, lr=LR, warmup_steps=min(30, steps // 5), weight_decay=0.05,
                      log_every=max(1, steps // 20), seed=seed, device="cpu", progress=progress, live_plot=False)
    Trainer(stage1, loader, cfg).fit()
    return stage1


def itc_zero_shot(qformer: nn.Module, n: int = 480) -> float:
    """Top-1 of a stage-1 Q-Former's ITC scores (best query against each class's prompts) over the 48
    colour-shape names, on ``n`` single-object test scenes of the tiny world, read through ``clip-tiny-pairs``."""
    from vlm_primer.backbones import Blip2Stage1
    from vlm_primer.backbones.stages import TINY_WORLD
    from vlm_primer.evaluation import build_classifier, zero_shot_accuracy
    from vlm_primer.text import Tokenizer
    from vlm_primer.world import ShapesCaptionDataset, WorldConfig
    from vlm_primer.zoo.recipes import ZERO_SHOT_TEMPLATES

    tower, _, transform = _parts()
    ds = ShapesCaptionDataset("test", n, WorldConfig(**TINY_WORLD), num_objects=1, statements=False,
                              transform=transform)
    items = [ds[i] for i in range(n)]
    model = Blip2Stage1(qformer.float().eval(), vision_tower=tower).eval()
    tok = Tokenizer.load()
    with_bos = lambda texts, max_length: tok(texts, max_length=max_length, add_bos=True)  # noqa: E731 (as in stage 1)
    classifier = build_classifier(model, with_bos, ds.classnames, list(ZERO_SHOT_TEMPLATES), max_length=32)
    images, labels = torch.stack([it["image"] for it in items]), torch.tensor([it["label_id"] for it in items])
    return float(zero_shot_accuracy(model, images, labels, classifier, topk=(1,))["top1"])


def itg_caption_match(stage1: nn.Module, n: int = 240) -> float:
    """How often a stage-1 Q-Former's greedy ITG caption (:func:`~vlm_primer.backbones.blip2.itg_captions`) of a
    single-object test scene names its object, colour and shape (synonyms merged by the judge's fact reader)."""
    from vlm_primer.backbones.blip2 import itg_captions
    from vlm_primer.backbones.stages import TINY_WORLD
    from vlm_primer.evaluation.judge import answer_facts
    from vlm_primer.text import Tokenizer
    from vlm_primer.world import ShapesCaptionDataset, WorldConfig

    tower, _, transform = _parts()
    tok = Tokenizer.load()
    ds = ShapesCaptionDataset("test", n, WorldConfig(**TINY_WORLD), num_objects=1, statements=False,
                              transform=transform)
    items = [ds[i] for i in range(n)]
    with torch.no_grad():
        image = tower.eval()(torch.stack([it["image"] for it in items])).last_hidden_state
    ids = itg_captions(stage1, image, tok.bos_id, tok.eos_id)
    captions = [tok.decode(row[:row.index(tok.eos_id)] if tok.eos_id in row else row) for row in ids.tolist()]
    return sum(("object", *it["label"].split()) in answer_facts(c) for it, c in zip(items, captions)) / n


def blip2_after_stage1(stage1_steps: int = STAGE1_STEPS, seed: int = 0, progress: bool = False
                       ) -> tuple[nn.Module, nn.Module | None]:
    """A BLIP-2 on the zoo's frozen tower and ``lm-tiny`` after stage 1 (none when ``stage1_steps`` is 0), and
    the trained :class:`Blip2Stage1` (or None)."""
    from vlm_primer.backbones import Blip2, QFormerConfig
    from vlm_primer.utils import seed_everything

    tower, lm, _ = _parts()
    seed_everything(seed)
    model = Blip2.from_parts(tower, lm, context_length=256,
                             qformer=QFormerConfig.from_preset("tiny", vocab_size=lm.cfg.vocab_size))
    stage1 = train_blip2_stage1(model, stage1_steps, seed=seed, progress=progress) if stage1_steps else None
    return model, stage1


def train_blip2(stage1_steps: int = STAGE1_STEPS, stage2_steps: int = STAGE2_STEPS, seed: int = 0,
                progress: bool = False) -> nn.Module:
    """A BLIP-2 on the zoo's frozen tower and ``lm-tiny``: stage 1 (skipped when ``stage1_steps`` is 0, the
    ablation of notebook 05b), then stage 2 on VQA."""
    from vlm_primer.backbones.stages import train_stage

    model, _ = blip2_after_stage1(stage1_steps, seed, progress)
    train_stage(model, 2, _vqa(model, _parts()[2], seed), stage2_steps, lr=LR, train_language=False,
                seed=seed, progress=progress)
    return model


def train_instructblip(blip2: nn.Module, steps: int = STAGE2_STEPS, seed: int = 0, progress: bool = False) -> nn.Module:
    """InstructBLIP from a trained BLIP-2 (its weights, now reading the instruction in the Q-Former too),
    instruction-tuned on VQA with the tower and the LM frozen."""
    from vlm_primer.backbones import InstructBlip, InstructBlipConfig
    from vlm_primer.backbones.data import InstructionChatDataset
    from vlm_primer.backbones.stages import TINY_OBJECTS, TINY_WORLD, train_stage
    from vlm_primer.world import WorldConfig
    from vlm_primer.zoo import preprocess

    model = InstructBlip(InstructBlipConfig(**blip2.cfg.to_dict()))
    model.load_state_dict(blip2.state_dict())
    data = InstructionChatDataset("vqa", size=TRAIN_SIZE, seed=seed + 2, image_tokens=model.tokens_per_image,
                                  transform=preprocess("clip-tiny-pairs"), config=WorldConfig(**TINY_WORLD),
                                  num_objects=TINY_OBJECTS, image_id=model.cfg.image_token_id)
    train_stage(model, 2, data, steps, lr=LR, train_language=False, seed=seed, progress=progress)
    return model


def train_flamingo(steps: int = STAGE2_STEPS, seed: int = 0, progress: bool = False) -> nn.Module:
    """A Flamingo on the zoo's frozen tower and ``lm-tiny`` (the tiny preset's perceiver and gated layers),
    trained on VQA."""
    from vlm_primer.backbones import Flamingo, FlamingoConfig
    from vlm_primer.backbones.stages import train_stage
    from vlm_primer.utils import seed_everything

    tower, lm, transform = _parts()
    seed_everything(seed)
    new_layers = {k: v for k, v in FlamingoConfig.PRESETS["tiny"].items() if k not in ("vision", "text")}
    model = Flamingo.from_parts(tower, lm, context_length=256, **new_layers)
    train_stage(model, 2, _vqa(model, transform, seed), steps, lr=LR, train_language=False, seed=seed,
                progress=progress)
    return model


def qformer_tiny(steps: int | None = None, progress: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """BLIP-2's stage 1 on the frozen ``clip-tiny-pairs`` tower: the Q-Former (8 queries) after 600 steps of ITC,
    ITM and ITG on captions, exactly where ``blip2-tiny``'s stage 2 starts."""
    _, stage1 = blip2_after_stage1(steps or STAGE1_STEPS, progress=progress)
    stage1.vision_tower = None  # the frozen clip-tiny-pairs tower stays in its own file
    return stage1, measure("qformer-tiny", stage1)


def blip2_tiny(steps: int | None = None, progress: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """BLIP-2 on the frozen ``clip-tiny-pairs`` tower and ``lm-tiny``: 600 steps of stage 1 (ITC, ITM, ITG on
    captions), then 1,500 of stage 2 (8 queries into the LM, on VQA)."""
    model = train_blip2(steps or STAGE1_STEPS, steps or STAGE2_STEPS, progress=progress)
    return model, measure("blip2-tiny", model)


def instructblip_tiny(steps: int | None = None, progress: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """``blip2-tiny`` instruction-tuned for 1,500 steps on VQA, the question read by the Q-Former as well as by
    the frozen LM."""
    from vlm_primer import zoo

    model = train_instructblip(zoo.load("blip2-tiny"), steps or STAGE2_STEPS, progress=progress)
    return model, measure("instructblip-tiny", model)


def flamingo_tiny(steps: int | None = None, progress: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """Flamingo on the frozen ``clip-tiny-pairs`` tower and ``lm-tiny``: a perceiver (8 latents) and gated
    cross-attention before every second LM block, 1,500 steps on VQA."""
    model = train_flamingo(steps or STAGE2_STEPS, progress=progress)
    return model, measure("flamingo-tiny", model)


RECIPES = {"qformer-tiny": qformer_tiny, "blip2-tiny": blip2_tiny, "instructblip-tiny": instructblip_tiny,
           "flamingo-tiny": flamingo_tiny}
