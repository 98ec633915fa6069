"""LLaVA's two training stages at the tiny scale, and the VQA read-out: what notebook 05, the zoo's
``llava-tiny`` and ``benchmarks/bench_llava_ablations.py`` all run.

Explained in notebook 05, §Stage 1 and stage 2. :func:`tiny_llava` joins zoo parts (a contrastive
vision tower and ``lm-tiny``) with a new connector; :func:`train_stage` runs one stage with the
freezing of :meth:`Llava.set_stage`; :func:`vqa_eval` asks held-out questions and scores the
replies per question type, beside the blind prior that never sees the image.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from vlm_primer.backbones.data import LlavaChatDataset, llava_collate
from vlm_primer.backbones.inference import generate_replies
from vlm_primer.backbones.llava import Llava, with_context
from vlm_primer.backbones.llava_next import LlavaNext, LlavaNextConfig, anyres_view
from vlm_primer.training import ResumableLoader, TrainConfig, Trainer
from vlm_primer.validate import check_choice

__all__ = ["STAGE_DATA", "TINY_WORLD", "TOWERS", "mosaic_set", "stage_data", "tiny_llava", "tiny_llava_next",
           "train_stage", "vqa_eval", "vqa_set"]

# The world of the tiny LLaVA: the zoo towers' 48 px images of large objects, one or two per scene.
TINY_WORLD = dict(image_size=48, sizes=("large",))
TINY_OBJECTS = (1, 2)
TOWERS = ("clip-tiny-pairs", "clip-tiny", "siglip-tiny")
STAGE_DATA = ("caption", "vqa", "instruct", "mix")
INSTRUCT_KINDS = ("conversation", "detail", "reasoning")  # LLaVA-Instruct's three types
LR = {1: 2e-3, 2: 1e-3}  # stage 1 trains a small connector fast; stage 2 moves the LM


def tiny_llava(tower: str = "clip-tiny-pairs", *, connector: str = "mlp", select_layer: int = -2,
               seed: int = 0) -> tuple[Llava, Callable[[torch.Tensor], torch.Tensor]]:
    """A LLaVA around the zoo's ``tower`` (vision half) and ``lm-tiny``, with a new connector seeded by ``seed``;
    returns the model and the tower's image transform. ``lm-tiny`` was trained on 128-token blocks; its RoPE
    takes 256 with the same weights (room for the 64 image tokens)."""
    from vlm_primer import zoo
    from vlm_primer.utils import seed_everything

    check_choice(tower, TOWERS, "tower")
    seed_everything(seed)
    model = Llava.from_parts(zoo.load(tower).vision, zoo.load("lm-tiny"), context_length=256, connector=connector,
                             select_layer=select_layer)
    return model, zoo.preprocess(tower)


def stage_data(kind: str, model: Llava, transform: Callable | None, *, split: str = "train", size: int = 20_000,
               seed: int = 0, world: dict[str, Any] | None = None) -> torch.utils.data.Dataset:
    """Training conversations of ``kind``: ``caption`` (stage 1), ``vqa`` (short answers), ``instruct``
    (conversation, detailed description, complex reasoning) or ``mix`` (instruct and VQA, half each, as
    LLaVA-1.5 mixes academic VQA into its instructions)."""
    from vlm_primer.world import WorldConfig

    check_choice(kind, STAGE_DATA, "kind")
    config = WorldConfig(**(world or TINY_WORLD))
    common = dict(split=split, image_tokens=model.tokens_per_image, transform=transform, config=config,
                  num_objects=TINY_OBJECTS, image_id=model.cfg.image_token_id)
    if kind == "mix":
        return torch.utils.data.ConcatDataset([
            LlavaChatDataset("instruct", size=size // 2, seed=seed, kinds=INSTRUCT_KINDS, **common),
            LlavaChatDataset("vqa", size=size - size // 2, seed=seed + 1, **common)])
    extra = {"kinds": INSTRUCT_KINDS} if kind == "instruct" else {}
    return LlavaChatDataset(kind, size=size, seed=seed, **common, **extra)


def train_stage(model: Llava, stage: int, data: torch.utils.data.Dataset, steps: int, *, batch: int = 32,
                lr: float | None = None, train_vision: bool = False, train_language: bool = True, seed: int = 0,
                progress: bool = False, collate_fn: Callable[[list[Any]], dict[str, Any]] | None = None,
                **config: Any) -> list[dict[str, float]]:
    """Run LLaVA's stage ``stage`` (1: connector only; 2: connector + LM) for ``steps`` on shuffled ``data``;
    returns the Trainer's history. ``collate_fn`` makes the batches (default :func:`llava_collate`; video models
    pass :func:`~vlm_primer.video.data.video_collate`); ``config``: further :class:`TrainConfig` fields."""
    model.set_stage(stage, train_vision=train_vision, train_language=train_language)
    cfg = TrainConfig(max_steps=steps, batch_size=batch, lr=lr or LR[stage], warmup_steps=min(30, steps // 5),
                      weight_decay=0.0, log_every=max(1, steps // 20), seed=seed, device="cpu", progress=progress,
                      live_plot=False).replace(**config)
    collate_fn = collate_fn or llava_collate(model.cfg.text.pad_token_id)
    loader = ResumableLoader(data, batch, collate_fn=collate_fn, shuffle=True, seed=seed)
    history = Trainer(model, loader, cfg).fit()
    model.eval()
    return history


def vqa_set(size: int = 1200, *, split: str = "test", seed: int = 0, world: dict[str, Any] | None = None):
    """Held-out VQA questions on scenes like the training ones (one question per scene, types balanced).

    No ``size`` questions: every object of the tiny world is large, so their answer is in the question."""
    from vlm_primer.world import QUESTION_TYPES, ShapesVQADataset, WorldConfig

    world = world or TINY_WORLD
    qtypes = [t for t in QUESTION_TYPES if t != "size" or len(world.get("sizes", ("small", "large"))) > 1]
    return ShapesVQADataset(split, size, config=WorldConfig(**world), num_objects=TINY_OBJECTS, seed=seed,
                            qtypes=qtypes)


def vqa_eval(model: Llava, transform: Callable, questions, *, batch_size: int = 100,
             squeeze: bool = False) -> dict[str, Any]:
    """Ask every question of ``questions`` (a :func:`vqa_set` or :func:`mosaic_set`) about its image; returns the
    ``predictions``, the exact-match ``accuracy`` per question type and ``"all"``
    (:func:`~vlm_primer.world.accuracy_by_type`) and the ``questions`` themselves. A :class:`LlavaNext` gets
    AnyRes tiles, of the image squeezed to the tower's resolution first if ``squeeze``."""
    from vlm_primer.world import accuracy_by_type

    qs = [questions.question(i) for i in range(len(questions))]
    raw = [questions[i]["image"] for i in range(len(questions))]
    if isinstance(model, LlavaNext):
        views = [anyres_view(im, model.cfg, transform, squeeze=squeeze) for im in raw]
        images, sizes = [v[0] for v in views], [v[1] for v in views]
    else:
        images, sizes = torch.stack([transform(im) for im in raw]), None
    preds = generate_replies(model.eval(), [q.question for q in qs], images, max_new_tokens=4, batch_size=batch_size,
                             image_sizes=sizes)
    return {"predictions": preds, "accuracy": accuracy_by_type(qs, preds), "questions": qs}


def tiny_llava_next(seed: int = 0) -> tuple[LlavaNext, Callable[[torch.Tensor], torch.Tensor]]:
    """The zoo's ``llava-tiny`` as a LLaVA-NeXT: the same weights, a new ``image_newline`` (seeded by ``seed``)
    and a 512-token context (RoPE, same weights) for the tiles' tokens; returns it and the tower's transform."""
    from vlm_primer import zoo
    from vlm_primer.utils import seed_everything

    llava = zoo.load("llava-tiny")
    cfg = llava.cfg.replace(text=with_context(llava.cfg.text, 512)).to_dict()
    seed_everything(seed)
    model = LlavaNext(LlavaNextConfig(**cfg))
    missing, unexpected = model.load_state_dict(llava.state_dict(), strict=False)
    assert missing == ["image_newline"] and not unexpected, (missing, unexpected)
    return model, zoo.preprocess("clip-tiny-pairs")


def mosaic_set(size: int = 600, *, split: str = "test", seed: int = 0, qtypes: tuple[str, ...] | None = None):
    """VQA questions on 2 x 2 mosaics of the tiny world (96 px images, objects at the towers' scale inside each
    48 px cell, :class:`~vlm_primer.world.MosaicVQADataset`): notebook 05's high-resolution scenes. ``qtypes``:
    the question types (default all but ``size``: every object is large)."""
    from vlm_primer.world import QUESTION_TYPES, MosaicVQADataset, WorldConfig

    qtypes = qtypes or tuple(t for t in QUESTION_TYPES if t != "size")
    return MosaicVQADataset(split, size, config=WorldConfig(**TINY_WORLD), num_objects=TINY_OBJECTS, seed=seed,
                            qtypes=qtypes)
