"""Fitting frames into a context: MiniGPT4-Video's token merging, average pooling, and the token budget of a clip.

Explained in notebook 08, §The cost of frames. An LLM reads a clip as ``frames x tokens per frame`` visual tokens plus
the text, and all of it must fit its context. Three ways to spend the budget, per frame:

* **every token** (Video-LLaVA, :class:`~vlm_primer.video.VideoLlava`): 8 frames of 257 tokens = 2,056 tokens;
* **average pooling** (:func:`pool_tokens`): ``m`` times fewer tokens, each the mean of ``m`` neighbours, so what
  told them apart is gone before the LLM sees it. :func:`pool_tokens` averages runs of ``m`` tokens of the
  flattened sequence (``1 x m`` strips of the grid), the comparison with merging below; LLaVA-NeXT-Video pools
  ``2 x 2`` squares of the patch grid (:class:`~vlm_primer.video.LlavaNextVideo`), the same count;
* **concatenation merging** (:func:`merge_tokens`, :class:`TokenMerger`; MiniGPT4-Video, Ataallah et al. 2024,
  after MiniGPT-v2): every ``m`` consecutive tokens are concatenated into one ``m * D`` vector and one linear layer
  maps it to the LLM's width (``m = 4``: 256 -> 64 tokens per frame). As few tokens as pooling, but nothing is
  averaged away: the linear layer *learns* what to keep, and pooling is the special case whose weights are ``I/m``
  blocks (tested). :func:`~vlm_primer.backbones.connectors.pixel_shuffle` is the same idea on ``f x f`` squares of
  the grid (Idefics3); MiniGPT4-Video merges runs of the flattened sequence.

:func:`token_budget` and :func:`frames_that_fit` do the arithmetic the chapter plots (tokens against frames).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from einops import rearrange, reduce
from torch import nn

from vlm_primer.backbones.connectors import LinearConnector
from vlm_primer.validate import check_int

__all__ = ["TokenBudget", "TokenMerger", "frames_that_fit", "merge_tokens", "pool_tokens", "token_budget"]


def _check_tokens(tokens: Any, m: int) -> None:
    if not isinstance(tokens, torch.Tensor):
        raise TypeError(f"tokens must be a torch.Tensor (B, N, D), got {type(tokens).__name__}")
    if tokens.ndim != 3:
        raise ValueError(f"tokens must have shape (B, N, D), got shape {tuple(tokens.shape)}")
    check_int(m, "m")
    if tokens.shape[1] % m:
        raise ValueError(f"tokens: N={tokens.shape[1]} tokens per frame is not divisible by m={m}: the last group "
                         f"would have {tokens.shape[1] % m} tokens")


def merge_tokens(tokens: torch.Tensor, m: int) -> torch.Tensor:
    """``(B, N, D)`` -> ``(B, N / m, m * D)``: each run of ``m`` consecutive tokens concatenated, in order (token
    ``i * m`` fills the first ``D`` channels of output ``i``). Lossless: :func:`einops.rearrange` undoes it."""
    _check_tokens(tokens, m)
    return rearrange(tokens, "b (n m) d -> b n (m d)", m=m)


def pool_tokens(tokens: torch.Tensor, m: int) -> torch.Tensor:
    """``(B, N, D)`` -> ``(B, N / m, D)``: each run of ``m`` consecutive tokens averaged (the same token count as
    :func:`merge_tokens`, a ``D``-wide token instead of an ``m * D``-wide one)."""
    _check_tokens(tokens, m)
    return reduce(tokens, "b (n m) d -> b n d", "mean", m=m)


class TokenMerger(nn.Module):
    """MiniGPT4-Video's connector: :func:`merge_tokens` by ``m``, then one linear layer ``m * in_dim -> out_dim``
    (EVA-CLIP ViT-g's 1,408-wide tokens, ``m = 4``: a 5,632 -> 4,096 linear for Llama 2)."""

    def __init__(self, in_dim: int, out_dim: int, m: int = 4) -> None:
        super().__init__()
        self.in_dim, self.m = check_int(in_dim, "in_dim"), check_int(m, "m")
        self.proj = LinearConnector(m * in_dim, check_int(out_dim, "out_dim"))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, N, in_dim)`` -> ``(B, N / m, out_dim)``."""
        if isinstance(tokens, torch.Tensor) and tokens.ndim == 3 and tokens.shape[-1] != self.in_dim:
            raise ValueError(f"tokens must be {self.in_dim} wide (B, N, {self.in_dim}), got shape "
                             f"{tuple(tokens.shape)}")
        return self.proj(merge_tokens(tokens, self.m))


@dataclass(frozen=True)
class TokenBudget:
    tokens_per_frame: int   # after merging or pooling
    visual_tokens: int      # every frame's visual tokens
    total_tokens: int       # visual + per-frame subtitles + text
    context_length: int
    fits: bool              # total_tokens <= context_length
    max_frames: int         # the most frames that fit beside the same text


def frames_that_fit(tokens_per_frame: int, merge: int = 1, context_length: int = 4096, text_tokens: int = 0,
                    subtitle_tokens_per_frame: int = 0) -> int:
    """The most frames whose ``tokens_per_frame / merge`` visual tokens (and ``subtitle_tokens_per_frame`` subtitle
    tokens, as MiniGPT4-Video interleaves each frame with its subtitle) fit in ``context_length`` beside
    ``text_tokens`` of prompt and answer; 0 when not even one does."""
    subtitles = check_int(subtitle_tokens_per_frame, "subtitle_tokens_per_frame", 0)
    per_frame = _per_frame(tokens_per_frame, merge) + subtitles
    room = check_int(context_length, "context_length") - check_int(text_tokens, "text_tokens", 0)
    return max(room, 0) // per_frame


def token_budget(num_frames: int, tokens_per_frame: int, merge: int = 1, context_length: int = 4096,
                 text_tokens: int = 0, subtitle_tokens_per_frame: int = 0) -> TokenBudget:
    """What ``num_frames`` frames of ``tokens_per_frame`` tokens, reduced ``merge``-fold (merging or pooling: the
    same count), cost in a context of ``context_length`` beside ``text_tokens``; see :class:`TokenBudget`."""
    per_frame = _per_frame(tokens_per_frame, merge)
    visual = check_int(num_frames, "num_frames") * per_frame
    subtitles = num_frames * check_int(subtitle_tokens_per_frame, "subtitle_tokens_per_frame", 0)
    total = visual + subtitles + check_int(text_tokens, "text_tokens", 0)
    return TokenBudget(tokens_per_frame=per_frame, visual_tokens=visual, total_tokens=total,
                       context_length=check_int(context_length, "context_length"), fits=total <= context_length,
                       max_frames=frames_that_fit(tokens_per_frame, merge, context_length, text_tokens,
                                                  subtitle_tokens_per_frame))


def _per_frame(tokens_per_frame: int, merge: int) -> int:
    check_int(tokens_per_frame, "tokens_per_frame")
    if tokens_per_frame % check_int(merge, "merge"):
        raise ValueError(f"tokens_per_frame={tokens_per_frame} is not divisible by merge={merge}")
    return tokens_per_frame // merge
