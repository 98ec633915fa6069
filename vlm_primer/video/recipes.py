"""Video-LLaVA on Shapes World clips at the tiny scale: the model, its data, its training and its read-out.

Explained in notebook 08, §Video-LLaVA on Shapes World; the zoo's ``video-llava-tiny`` and the ``video_llava``
recipe of ``python -m vlm_primer.train`` run it. :func:`tiny_video_llava` is the zoo's ``llava-next-tiny`` read as a
LLaVA-NeXT-Video (the same weights: one tower, 2 x 2 pooled frames, 16 tokens per 48 px frame);
:func:`video_chat_data` mixes the two QA suites of :class:`~vlm_primer.world.VideoQADataset` with video captions;
:func:`train_video` runs LLaVA's stage 2 on them, every batch seeing 1 to ``T`` evenly spaced frames
(:func:`~vlm_primer.video.data.video_collate`); :func:`video_qa_eval` answers a suite at a chosen number of frames,
or blind (every frame blank: the text-only control).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from vlm_primer.backbones.data import prompt_ids
from vlm_primer.backbones.inference import decode_reply, left_pad
from vlm_primer.backbones.stages import train_stage
from vlm_primer.text import Tokenizer
from vlm_primer.training import TrainConfig
from vlm_primer.training.recipes import RecipeArgs, TrainJob, register_recipe
from vlm_primer.validate import check_choice
from vlm_primer.video.data import VideoChatDataset, frame_indices, video_collate
from vlm_primer.video.llava_next_video import LlavaNextVideo, LlavaNextVideoConfig
from vlm_primer.world.video import render_clip

__all__ = ["FRAME_COUNTS", "VIDEO_WORLD", "ask_videos", "tiny_video_llava", "train_video", "video_chat_data",
           "video_qa_eval", "video_qa_set"]

VIDEO_WORLD = dict(image_size=48, sizes=("large",))  # the zoo towers' 48 px world
VIDEO_OBJECTS = (1, 2)  # one or two objects: which one a question means is easy, when it moved is not
NUM_FRAMES = 9  # odd: the middle frame is shared by a clip and its reversal
FRAME_COUNTS = (1, 2, 3, 5, 9)
PARTS = ("standard", "temporal", "caption")


def tiny_video_llava(num_frames: int = NUM_FRAMES) -> tuple[LlavaNextVideo, Callable[[torch.Tensor], torch.Tensor]]:
    """The zoo's ``llava-next-tiny`` as a :class:`LlavaNextVideo` reading up to ``num_frames`` frames (no new
    weights: frames go through its tower, pooled 2 x 2, and its connector); returns it and the tower's transform."""
    from vlm_primer import zoo

    base = zoo.load("llava-next-tiny")
    model = LlavaNextVideo(LlavaNextVideoConfig(**dict(base.cfg.to_dict(), num_frames=num_frames)))
    model.load_state_dict(base.state_dict())
    return model, zoo.preprocess("clip-tiny-pairs")


def video_qa_set(suite: str, size: int = 300, *, split: str = "test", seed: int = 0, num_frames: int = NUM_FRAMES,
                 world: dict[str, Any] | None = None):
    """Held-out clips of the tiny video world (or ``world``) with one ``suite`` question each (``standard`` or
    ``temporal``)."""
    from vlm_primer.world import WorldConfig
    from vlm_primer.world.video_qa import VideoQADataset

    return VideoQADataset(split, size, WorldConfig(**(world or VIDEO_WORLD)), seed, suite=suite,
                          num_frames=num_frames, num_objects=VIDEO_OBJECTS)


def video_chat_data(size: int, transform: Callable | None, *, seed: int = 0,
                    parts: Sequence[str] = PARTS, **clips: Any) -> torch.utils.data.Dataset:
    """Training conversations: ``size`` items split evenly over ``parts`` (a QA suite, or ``caption``: the clip's
    caption after :data:`~vlm_primer.video.data.CAPTION_VIDEO_REQUEST`), each part from its own seed; ``clips``:
    ``num_frames`` and ``world`` of :func:`video_qa_set`."""
    sets = []
    for i, part in enumerate(check_choice(p, PARTS, "part") for p in parts):
        suite = "standard" if part == "caption" else part
        qa = video_qa_set(suite, size // len(parts), split="train", seed=seed + i, **clips)
        sets.append(VideoChatDataset(qa, transform, captions=part == "caption"))
    return torch.utils.data.ConcatDataset(sets)


def train_video(model: LlavaNextVideo, data: torch.utils.data.Dataset, steps: int, *, batch: int = 32,
                lr: float = 1e-3, frame_counts: Sequence[int] = FRAME_COUNTS, train_vision: bool = False,
                seed: int = 0, progress: bool = False, **config: Any) -> list[dict[str, float]]:
    """LLaVA's stage 2 on video conversations (connector + LM; the tower too with ``train_vision``) for ``steps``
    batches, each batch at one of ``frame_counts`` frames (:func:`~vlm_primer.backbones.stages.train_stage` with
    :func:`~vlm_primer.video.data.video_collate`); returns the Trainer's history."""
    collate = video_collate(model.cfg.tokens_per_frame, frame_counts, pad_id=model.cfg.text.pad_token_id,
                            video_id=model.cfg.video_token_id)
    return train_stage(model, 2, data, steps, batch=batch, lr=lr, train_vision=train_vision, seed=seed,
                       progress=progress, collate_fn=collate, **config)


@torch.no_grad()
def ask_videos(model: LlavaNextVideo, transform: Callable, clips: Sequence[Any], questions: Sequence[str], *,
               frames: int | None = None, blind: bool = False, image_size: int = VIDEO_WORLD["image_size"],
               batch_size: int = 100, max_new_tokens: int = 10) -> list[str]:
    """Greedy replies to ``questions[i]`` about ``clips[i]`` (:class:`~vlm_primer.world.video.Clip` s of one length),
    each seen through ``frames`` evenly spaced frames rendered at ``image_size`` (default all; 1 is the middle
    frame), or ``blind``: the same number of blank frames. Prompts are left-padded within a batch."""
    if len(clips) != len(questions) or not clips:
        raise ValueError(f"one question per clip: got {len(clips)} clips and {len(questions)} questions")
    tokenizer = Tokenizer.load()
    keep = frame_indices(len(clips[0]), frames or len(clips[0]))
    slots = len(keep) * model.cfg.tokens_per_frame
    replies: list[str] = []
    for start in range(0, len(clips), batch_size):
        seqs = [prompt_ids(tokenizer, q, [slots], model.cfg.video_token_id)
                for q in questions[start:start + batch_size]]
        ids, mask = left_pad(seqs, tokenizer.pad_id)
        pixels = torch.stack([render_clip(clip, image_size)[keep] for clip in clips[start:start + batch_size]])
        videos = transform(torch.zeros_like(pixels) if blind else pixels)
        new = model.generate(ids, None, max_new_tokens, attention_mask=mask, pixel_values_videos=videos,
                             eos_token_id=tokenizer.end_id)
        replies += [decode_reply(tokenizer, row.tolist()) for row in new]
    return replies


def video_qa_eval(model: LlavaNextVideo, transform: Callable, questions, *, frames: int | None = None,
                  blind: bool = False, batch_size: int = 100, max_new_tokens: int = 10) -> dict[str, Any]:
    """Answer every question of ``questions`` (a :func:`video_qa_set`) with :func:`ask_videos` from ``frames``
    evenly spaced frames of its clip (default all; 1 is the middle frame), or ``blind`` (the text-only control).
    Returns ``predictions``, exact-match ``accuracy`` per question type and ``"all"`` and the ``questions``."""
    from vlm_primer.world import accuracy_by_type

    drawn = [questions.item(i) for i in range(len(questions))]
    qs = [q for _, q in drawn]
    preds = ask_videos(model, transform, [clip for clip, _ in drawn], [q.question for q in qs], frames=frames,
                       blind=blind, image_size=questions.config.image_size, batch_size=batch_size,
                       max_new_tokens=max_new_tokens)
    return {"predictions": preds, "accuracy": accuracy_by_type(qs, preds), "questions": qs}

OPTIONS = ("init", "train_vision", "train_size", "frames")


@register_recipe("video_llava", help="Video-LLaVA-style stage 2 on Shapes World clips: QA and captions (chapter 08)")
def video_llava_recipe(args: RecipeArgs) -> TrainJob:
    """LLaVA-NeXT-Video's recipe: connector + LM (``--set train_vision=1``: the tower too) on video QA (both suites)
    and captions, every batch at one of ``--set frames=1,2,3,5,9`` evenly spaced frames. ``--preset tiny`` starts
    from the zoo's ``llava-next-tiny`` (:func:`tiny_video_llava`); ``base`` builds LLaVA-NeXT-Video-7B's shapes with
    random weights (load real ones with ``--set init=PATH``, e.g. a converted checkpoint's safetensors)."""
    from vlm_primer.backbones.recipes import _init

    args.check_options(OPTIONS)
    if args.preset == "tiny":
        model, transform = tiny_video_llava()
        world = VIDEO_WORLD
    else:
        from vlm_primer.world import WorldConfig

        model, transform = LlavaNextVideo(LlavaNextVideoConfig.from_preset(args.preset)), None
        world = WorldConfig.from_preset(args.preset, image_size=model.cfg.vision.image_size).to_dict()
    _init(model, args.options.get("init"))
    frames = args.options.get("frames", ",".join(map(str, FRAME_COUNTS)))
    try:
        counts = tuple(int(k) for k in frames.split(","))
    except ValueError:
        raise ValueError(f"--set frames={frames}: expected whole numbers separated by commas, e.g. 1,2,4") from None
    if max(counts) > model.cfg.num_frames or min(counts) < 1:
        raise ValueError(f"--set frames={counts}: each count must be in [1, num_frames={model.cfg.num_frames}]")
    model.set_stage(2, train_vision=args.option("train_vision", False))
    data = video_chat_data(args.option("train_size", 30_000), transform, seed=args.seed,
                           num_frames=max(model.cfg.num_frames, 2), world=world)
    train = TrainConfig.from_preset(args.preset, lr=1e-3, weight_decay=0.0)
    if args.batch_size is not None:
        train = train.replace(batch_size=args.batch_size)
    collate = video_collate(model.cfg.tokens_per_frame, counts, pad_id=model.cfg.text.pad_token_id,
                            video_id=model.cfg.video_token_id)
    return TrainJob(model, data, train, collate_fn=collate)
