"""Answering video questions with a joint encoder over frame tokens and the question, as MERLOT answers them.

Explained in notebook 08, §Single-frame bias. MERLOT (Zellers et al. 2021) is fine-tuned for video QA by reading
the frames and the question in one bidirectional encoder and classifying the answer from its first token (VideoBERT,
Sun et al. 2019, reads frames and words in one encoder too, but is used zero-shot and for captioning, not
fine-tuned for QA). :class:`FrameQA` is that reader, small: each frame is a set of tokens, each token gets a
learned **time** embedding (its frame) and **space** embedding (its place in the frame), the question's tokens (if
given) get word and position embeddings, and a pre-norm transformer reads ``[CLS] question frames``; a linear head on
``[CLS]`` scores the answers of :func:`answer_classes`. The same model reads any number of frames up to
``max_frames``: given the middle frame alone it is the single-frame baseline of §5.4, given no frame the blind one.

A frame's tokens come from a frozen model, two ways:

* :func:`grid_features`: the vision tower's patch grid pooled 2 x 2 (16 tokens of 64 at the tiny scale), with the
  question read by the reader itself;
* :func:`grounded_tokens`: the question's own tokens after a grounder's cross-modal encoder (chapter 06b's X-VLM,
  ``grounder-tiny``) has read them against the frame, one set per frame: the words already bound to the objects they
  name, so the reader only has to compare frames. The benchmark of §Single-frame bias uses these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vlm_primer.config import PresetConfig
from vlm_primer.nn import Transformer
from vlm_primer.validate import check_labels, check_mask, check_same_batch, check_tokens

__all__ = ["FrameQA", "FrameQAConfig", "FrameQAOutput", "answer_classes", "answer_index", "grid_features",
           "grounded_tokens"]

FIRST, SECOND = "the first", "the second"  # "which happens first: A or B?" is classified as A or B


@torch.no_grad()
def grid_features(tower: nn.Module, frames: torch.Tensor, pool: int = 2, batch: int = 512) -> torch.Tensor:
    """Frames ``(B, T, 3, H, W)`` (normalised for ``tower``, a :class:`~vlm_primer.nn.ViT` with a CLS token) ->
    ``(B, T, (grid / pool)^2, D)``: the last layer's patch tokens, average-pooled ``pool x pool`` on the grid."""
    b = frames.shape[0]
    out = []
    for chunk in frames.flatten(0, 1).split(batch):
        patches = tower(chunk, output_hidden_states=True).hidden_states[-1][:, 1:]
        side = int(patches.shape[1] ** 0.5)
        if side % pool:
            raise ValueError(f"pool={pool} does not divide the tower's {side} x {side} patch grid")
        grid = rearrange(patches, "f (h w) d -> f d h w", h=side)
        out.append(rearrange(F.avg_pool2d(grid, pool), "f d h w -> f (h w) d"))
    return rearrange(torch.cat(out), "(b t) n d -> b t n d", b=b)


@torch.no_grad()
def grounded_tokens(grounder: nn.Module, frames: torch.Tensor, input_ids: torch.Tensor,
                    attention_mask: torch.Tensor | None = None, batch: int = 1024) -> torch.Tensor:
    """Frames ``(B, T, 3, H, W)`` (normalised for ``grounder``, a :class:`~vlm_primer.recipes.xvlm.Grounder`) and
    questions ``(B, L)`` -> ``(B, T, L, D)``: each question's tokens after the grounder's cross-modal encoder has read
    them against each frame (what :meth:`Grounder.fuse` pools, unpooled). The text tower reads a question longer than
    its context in consecutive windows of its context; the cross-modal encoder then reads the whole question."""
    clip = grounder.clip
    if not isinstance(frames, torch.Tensor) or frames.ndim != 5 or not frames.is_floating_point():
        raise ValueError(f"frames must be a float (B, T, 3, H, W) tensor, got {getattr(frames, 'shape', frames)}")
    ids = check_tokens(input_ids, vocab_size=clip.cfg.text.vocab_size, device=frames.device)
    b, t, n = frames.shape[0], frames.shape[1], ids.shape[1]
    mask = torch.ones_like(ids, dtype=torch.bool) if attention_mask is None else \
        check_mask(attention_mask, shape=(b, n), device=frames.device)
    check_same_batch(frames=frames, input_ids=ids)
    window, text = clip.cfg.text.context_length, []
    for k in range(0, n, window):
        part, keep = ids[:, k:k + window], mask[:, k:k + window].clone()
        empty = ~keep.any(1)
        keep[empty, 0] = True  # a window of padding only: read, then zeroed
        text.append(clip.text(part, keep).last_hidden_state.masked_fill(empty[:, None, None], 0))
    text = torch.cat(text, 1)
    out = []
    for chunk in range(0, b * t, batch):
        rows = torch.arange(chunk, min(chunk + batch, b * t), device=frames.device)
        image = clip.vision(frames.flatten(0, 1)[rows]).last_hidden_state + grounder.image_pos.to(frames.dtype)
        x, _ = grounder.fusion(text[rows // t], context=image, key_padding_mask=mask[rows // t])
        out.append(x)
    return rearrange(torch.cat(out), "(b t) l d -> b t l d", b=b)


def answer_index(clip: Any, question: Any) -> str:
    """The class of ``question``'s answer: the answer itself, or for "which happens first: A or B?" whether it is
    the first or the second option (so one head answers every clip's events)."""
    if question.qtype != "first_event":
        return question.answer
    first, second = question.question.split(": ", 1)[1].rstrip("?").rsplit(" or ", 1)
    if question.answer not in (first, second):
        raise ValueError(f"answer {question.answer!r} is neither option of {question.question!r}")
    return FIRST if question.answer == first else SECOND


def answer_classes(items: Sequence[tuple[Any, Any]]) -> list[str]:
    """The sorted answer classes of ``(clip, question)`` items (:func:`answer_index` of each)."""
    return sorted({answer_index(c, q) for c, q in items})


@dataclass
class FrameQAConfig(PresetConfig):
    """Frame tokens of ``feature_dim`` (``tokens_per_frame`` per frame, up to ``max_frames``), questions of up to
    ``max_question`` tokens of ``vocab_size``, ``num_answers`` classes; the encoder's shape."""

    feature_dim: int = 64
    tokens_per_frame: int = 16
    max_frames: int = 9
    vocab_size: int = 814
    max_question: int = 32
    num_answers: int = 32
    dim: int = 64
    depth: int = 3
    heads: int = 4
    mlp_ratio: float = 4.0

    PRESETS: ClassVar[dict] = {
        "tiny": dict(),
        # a BERT-base-sized reader over CLIP ViT-B/16 grids pooled 2 x 2 (7 x 7 of 768) of 16 frames
        "base": dict(feature_dim=768, tokens_per_frame=49, max_frames=16, vocab_size=32000, max_question=64,
                     num_answers=1000, dim=768, depth=12, heads=12),
    }
    BOUNDS: ClassVar[dict] = dict(feature_dim=">0", tokens_per_frame=">0", max_frames=">0", vocab_size=">0",
                                  max_question=">0", num_answers="[2, 1000000]", dim=">0", depth=">0", heads=">0",
                                  mlp_ratio="(0, 64]")

    def validate(self) -> None:
        if self.dim % self.heads:
            raise ValueError(f"FrameQAConfig.dim={self.dim} must be divisible by heads={self.heads}")


@dataclass
class FrameQAOutput:
    logits: torch.Tensor             # (B, num_answers)
    loss: torch.Tensor | None = None


class FrameQA(nn.Module):
    """``[CLS] question frame-tokens`` -> answer logits; explained in notebook 08, §Single-frame bias."""

    CONFIG: ClassVar[type] = FrameQAConfig

    def __init__(self, cfg: FrameQAConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or FrameQAConfig()
        cfg.validate()
        self.frame_in = nn.Linear(cfg.feature_dim, cfg.dim)
        self.time_emb = nn.Parameter(torch.randn(cfg.max_frames, 1, cfg.dim) * 0.02)
        self.space_emb = nn.Parameter(torch.randn(1, cfg.tokens_per_frame, cfg.dim) * 0.02)
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.pos_emb = nn.Parameter(torch.randn(cfg.max_question + 1, cfg.dim) * 0.02)  # [CLS] + the question
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.encoder = Transformer(cfg.depth, cfg.dim, cfg.heads, cfg.mlp_ratio)
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.num_answers)

    def forward(self, features: torch.Tensor | None, input_ids: Any = None, attention_mask: Any = None,
                labels: Any = None, frame_ids: Sequence[int] | None = None,
                feature_mask: Any = None) -> FrameQAOutput:
        """``features`` ``(B, T, N, feature_dim)``, ``N <= tokens_per_frame`` (:func:`grid_features` or
        :func:`grounded_tokens`; None: blind), ``input_ids`` ``(B, L)`` the question (None: it is in the features),
        ``labels`` ``(B,)`` answer classes; ``frame_ids``: which frame of the clip each of the ``T`` is (its time
        embedding; default ``0..T-1``); ``feature_mask`` ``(B, N)``: which of each frame's tokens are real."""
        cfg, device = self.cfg, self.cls.device
        if features is None and input_ids is None:
            raise ValueError("FrameQA needs frame features, a question (input_ids) or both; got neither")
        if features is not None and (not isinstance(features, torch.Tensor) or features.ndim != 4
                                     or not features.is_floating_point()
                                     or not 1 <= features.shape[2] <= cfg.tokens_per_frame
                                     or features.shape[3] != cfg.feature_dim):
            raise ValueError(f"features must be a float (B, T, N, {cfg.feature_dim}) tensor with 1 <= N <= "
                             f"tokens_per_frame={cfg.tokens_per_frame}, "
                             f"got {getattr(features, 'shape', type(features).__name__)}")
        if input_ids is None and attention_mask is not None:
            raise ValueError("attention_mask is the question's mask: pass input_ids with it")
        ids = None if input_ids is None else check_tokens(input_ids, max_len=cfg.max_question,
                                                          vocab_size=cfg.vocab_size, device=device)
        b = check_same_batch(features=features, input_ids=ids)
        parts, keeps = [self.cls.expand(b, -1, -1) + self.pos_emb[:1]], [torch.ones(b, 1, dtype=torch.bool, device=device)]
        if ids is not None:  # the question's tokens
            n = ids.shape[1]
            parts.append(self.tok_emb(ids) + self.pos_emb[1:n + 1])
            keeps.append(torch.ones(b, n, dtype=torch.bool, device=device) if attention_mask is None else
                        check_mask(attention_mask, shape=(b, n), device=device))
        if features is not None:  # then every frame's tokens, with its time and place
            t, n = features.shape[1:3]
            frame_ids = list(range(t)) if frame_ids is None else torch.as_tensor(frame_ids).tolist()
            if not isinstance(frame_ids, list) or not all(type(i) is int for i in frame_ids):
                raise ValueError(f"frame_ids must be integer frame indices, got {frame_ids}")
            if len(frame_ids) != t or not 1 <= t <= cfg.max_frames or not all(0 <= i < cfg.max_frames
                                                                                for i in frame_ids):
                raise ValueError(f"features hold {t} frames with frame_ids {frame_ids}; the model takes 1 to "
                                 f"max_frames={cfg.max_frames} frames with ids in [0, {cfg.max_frames})")
            real = torch.ones(b, n, dtype=torch.bool, device=device) if feature_mask is None else check_mask(
                feature_mask, shape=(b, n), device=device, name="feature_mask", like="features", desc="(B, N)")
            frames = self.frame_in(features.to(self.cls.dtype)) + self.time_emb[frame_ids] + self.space_emb[:, :n]
            parts.append(rearrange(frames, "b t n d -> b (t n) d"))
            keeps.append(real.repeat(1, t))
        x, keep = torch.cat(parts, 1), torch.cat(keeps, 1)
        hidden, _ = self.encoder(x, key_padding_mask=keep)
        logits = self.head(self.norm(hidden[:, 0]))
        loss = None
        if labels is not None:
            labels = check_labels(labels, shape=(b,), vocab_size=cfg.num_answers, device=device)
            loss = F.cross_entropy(logits, labels)
        return FrameQAOutput(logits, loss)
