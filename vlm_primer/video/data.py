"""Video conversations for the LLM-based video models: a clip's frames, sampled evenly, spliced into a chat.

Explained in notebook 08, §Video-LLaVA on Shapes World. Video-LLaVA samples 8 frames evenly from a clip; here a
:class:`VideoChatDataset` item is a Shapes World clip (rendered, ``transform`` applied per frame), one user turn
(``<image>`` + a question of :class:`~vlm_primer.world.VideoQADataset`, or the caption request) and the answer (or
:func:`~vlm_primer.world.describe_clip`'s caption). :func:`video_collate` picks how many frames a batch sees
(:func:`frame_indices`: evenly spaced, one frame is the middle one) and expands the ``<image>`` placeholder into
``frames x tokens_per_frame`` video placeholders, so one model learns from 1 to ``T`` frames and can be read at
any of them (the single-frame baseline of §5.4 and the cost-of-frames curve of §5.5 come from the same weights).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from vlm_primer.backbones.data import image_turn, llava_collate
from vlm_primer.backbones.llava import IMAGE_TOKEN_ID, expand_image_tokens
from vlm_primer.text import Tokenizer, encode_chat
from vlm_primer.validate import check_int
from vlm_primer.world.video import describe_clip

__all__ = ["CAPTION_VIDEO_REQUEST", "VideoChatDataset", "frame_indices", "video_collate"]

CAPTION_VIDEO_REQUEST = "what happens in the video?"


def frame_indices(num_frames: int, k: int) -> list[int]:
    """``k`` frame indices spread evenly over ``num_frames`` frames, first and last included (``k=1``: the middle
    frame, the one a clip shares with its reversal when ``num_frames`` is odd)."""
    check_int(k, "k", 1, num_frames, hint="at most num_frames")
    if k == 1:
        return [num_frames // 2]
    return [int(i) for i in np.round(np.linspace(0, num_frames - 1, k))]


class VideoChatDataset(torch.utils.data.Dataset):
    """Chat items over ``questions`` (a :class:`~vlm_primer.world.VideoQADataset`): ``input_ids`` with one
    ``<image>`` placeholder (expanded by :func:`video_collate`), ``target`` (True on the answer), ``frames``
    ``(T, 3, H, W)`` after ``transform``, ``index``, ``qtype``. With ``captions=True`` every item asks
    :data:`CAPTION_VIDEO_REQUEST` and the answer is the clip's caption (``qtype`` "caption")."""

    def __init__(self, questions: Any, transform: Callable | None = None, *, captions: bool = False,
                 tokenizer: Tokenizer | None = None) -> None:
        self.questions, self.transform, self.captions = questions, transform, captions
        self.tokenizer = tokenizer or Tokenizer.load()

    def __len__(self) -> int:
        return len(self.questions)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.questions[index]
        ask, answer = (CAPTION_VIDEO_REQUEST, describe_clip(item["clip"])) if self.captions else \
            (item["question"], item["answer"])
        ids, target = encode_chat(self.tokenizer, image_turn(ask, answer), add_bos=True)
        frames = item["frames"] if self.transform is None else self.transform(item["frames"])
        return {"input_ids": ids, "target": target, "frames": frames, "index": item["index"],
                "qtype": "caption" if self.captions else item["qtype"]}


def video_collate(tokens_per_frame: int, frame_counts: Sequence[int], *, pad_id: int = 0,
                  video_id: int = IMAGE_TOKEN_ID) -> Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]:
    """Batch :class:`VideoChatDataset` items: the batch sees ``k`` evenly spaced frames (:func:`frame_indices`),
    ``k`` taken from ``frame_counts`` by the batch's item indices (so a resumed run draws the same), each
    ``<image>`` expanded into ``k * tokens_per_frame`` video placeholders; returns :func:`llava_collate`'s
    ``input_ids``, ``attention_mask``, ``labels`` and ``pixel_values_videos`` ``(B, k, 3, H, W)``."""
    counts = [int(k) for k in frame_counts]
    if not counts or min(counts) < 1:
        raise ValueError(f"frame_counts must be positive frame counts, got {frame_counts!r}")
    pad = llava_collate(pad_id)

    def collate(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        k = counts[sum(int(it["index"]) for it in items) % len(counts)]
        keep = frame_indices(items[0]["frames"].shape[0], k)
        expanded = []
        for it in items:
            ids, target = expand_image_tokens(it["input_ids"], video_id, k * tokens_per_frame, it["target"])
            expanded.append({"input_ids": ids, "target": target, "image": it["frames"][keep]})
        batch = pad(expanded)
        batch["pixel_values_videos"] = batch.pop("pixel_values")
        return batch

    return collate
