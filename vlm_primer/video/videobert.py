"""VideoBERT (Sun et al. 2019, "VideoBERT: A Joint Model for Video and Language Representation Learning"; survey §5).
Explained in notebook 08, §VideoBERT.

Video becomes *words*, then one BERT reads words and video together:

* a frozen visual encoder turns each clip (the paper: S3D over 1.5 s windows; here any per-frame feature, e.g. a
  frozen CLIP tower's pooled output) into a vector, and k-means turns the vectors into ``k`` **visual words**
  (:class:`VisualVocabulary`; the paper: hierarchical k-means, 4 levels of 12, 12^4 = 20,736 words);
* the visual words are **appended to BERT's word-embedding table**, as in the paper: text ids ``[0, V)``, visual word
  ``j`` at ``V + j``; one more row ``V + k`` is a visual [MASK] of our own (visual id ``k``; the paper's example
  masks video with the ordinary [MASK]);
* one post-LN BERT reads ``[CLS] text [>] visual words [SEP]`` (``[>]`` is the paper's token between the
  modalities), token type 0 for ``[CLS] text [>]`` and 1 for ``video [SEP]``, positions running over both;
* **masked modelling on both modalities**: BERT's 80/10/10 corruption (:func:`~vlm_primer.masking.bert_mask_tokens`)
  of words and of visual words; the tied MLM head scores a text position over the ``V`` words and a video position
  over the ``k`` visual words (each modality's own slice of the joint vocabulary: a masked frame is never a word);
* **linguistic-visual alignment**: BERT's pooler + a 2-way head on [CLS], class 1 = the text goes with the video.

The paper also trains on text alone and on video alone (masked completion only); every sequence here holds both,
the objectives summed with equal weights.

Laid out weight for weight as ``transformers``' ``BertForPreTraining`` over the joint vocabulary (its next-sentence
head is our alignment head with the two rows swapped), so the test checks it against that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vlm_primer.config import PresetConfig
from vlm_primer.masking.codebook import kmeans
from vlm_primer.masking.flava import ITMHead, masked_prediction
from vlm_primer.masking.masks import bert_mask_tokens
from vlm_primer.nn import BertLMHead, Transformer, init_weights
from vlm_primer.validate import (as_tensor, check_choice, check_labels, check_mask, check_same_batch, check_tokens,
                                 value_checks_enabled)

__all__ = ["VideoBert", "VideoBertConfig", "VideoBertOutput", "VisualVocabulary"]


class VisualVocabulary:
    """``k`` visual words: the k-means centroids ``(k, D)`` of frame features (flat k-means; the paper's is
    hierarchical). :meth:`encode` maps each feature to its nearest centroid's id, :meth:`decode` an id back to its
    centroid. Explained in notebook 08, §VideoBERT."""

    def __init__(self, centroids: torch.Tensor) -> None:
        if not isinstance(centroids, torch.Tensor) or not centroids.is_floating_point() or centroids.ndim != 2 \
                or len(centroids) < 2:
            raise ValueError(f"centroids must be a float (k, D) tensor with k >= 2, got "
                             f"{getattr(centroids, 'dtype', type(centroids).__name__)} "
                             f"{tuple(getattr(centroids, 'shape', ()))}")
        self.centroids = centroids

    @classmethod
    def fit(cls, features: torch.Tensor, k: int, iters: int = 20, seed: int = 0) -> "VisualVocabulary":
        """k-means (:func:`~vlm_primer.masking.codebook.kmeans`) on the rows of ``features`` ``(N, D)``
        (or ``(..., D)``, flattened)."""
        x = cls._check_features(features, None)
        return cls(kmeans(rearrange(x, "... d -> (...) d").float(), k, iters, seed))

    @property
    def k(self) -> int:
        return len(self.centroids)

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        """Features ``(..., D)`` (e.g. ``(B, T, D)``, one per frame) -> visual-word ids ``(...)``, nearest centroid."""
        x = self._check_features(features, self.centroids.shape[1])
        flat = rearrange(x, "... d -> (...) d").to(self.centroids)
        return torch.cdist(flat, self.centroids).argmin(-1).reshape(x.shape[:-1])

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """Visual-word ids ``(...)`` -> their centroids ``(..., D)``."""
        return self.centroids[torch.as_tensor(ids, dtype=torch.long, device=self.centroids.device)]

    @staticmethod
    def _check_features(features: Any, dim: int | None) -> torch.Tensor:
        if not isinstance(features, torch.Tensor) or not features.is_floating_point():
            raise TypeError(f"features must be a float tensor (..., D), got "
                            f"{getattr(features, 'dtype', type(features).__name__)}")
        if features.ndim < 2 or (dim is not None and features.shape[-1] != dim):
            raise ValueError(f"features must have shape (..., {dim or 'D'}), got {tuple(features.shape)}")
        return features


@dataclass
class VideoBertConfig(PresetConfig):
    """A post-LN BERT over ``vocab_size`` words + ``visual_vocab_size`` visual words (+ the visual [MASK])."""

    vocab_size: int = 30522
    visual_vocab_size: int = 20736
    dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_dim: int = 3072
    max_positions: int = 512
    type_vocab_size: int = 2
    act: str = "gelu"
    eps: float = 1e-12
    dropout: float = 0.0
    mlm_prob: float = 0.15  # BERT's share of masked tokens, words and visual words alike
    cls_token_id: int = 101
    sep_token_id: int = 102
    mask_token_id: int = 103
    pad_token_id: int = 0
    boundary_token_id: int = 1  # [>]; BERT's vocabulary has none, so [unused0]
    special_token_ids: tuple[int, ...] = (0, 1, 100, 101, 102)  # never masked

    PRESETS: ClassVar[dict] = {
        # Shapes World with the project's tokenizer: <bos> plays [CLS], <eos> [SEP], <image> the [>] before the video.
        "tiny": dict(vocab_size=814, visual_vocab_size=64, dim=64, depth=2, heads=4, mlp_dim=256, max_positions=128,
                     cls_token_id=2, sep_token_id=3, mask_token_id=4, pad_token_id=0, boundary_token_id=5,
                     special_token_ids=tuple(range(10))),
        # BERT-base shapes and the paper's 12^4 = 20,736 visual words (hierarchical k-means, 4 levels of 12).
        "base": dict(),
        # The paper's: BERT-large (24 layers, 1024 wide, 16 heads), initialised from text-only BERT.
        "large": dict(dim=1024, depth=24, heads=16, mlp_dim=4096),
    }
    BOUNDS: ClassVar[dict] = dict(vocab_size=">0", visual_vocab_size=">0", dim=">0", depth=">0", heads=">0",
                                  mlp_dim=">0", max_positions=">0", type_vocab_size=">0", eps=">0",
                                  dropout="[0, 1)", mlm_prob="[0, 1]", cls_token_id=">=0", sep_token_id=">=0",
                                  mask_token_id=">=0", pad_token_id=">=0", boundary_token_id=">=0")

    def validate(self) -> None:
        if self.dim % self.heads:
            raise ValueError(f"VideoBertConfig.dim={self.dim} must be divisible by heads={self.heads}")
        check_choice(self.act, ("gelu", "gelu_tanh", "quick_gelu", "relu", "silu"), "VideoBertConfig.act")
        if self.visual_vocab_size < 2:
            raise ValueError(f"VideoBertConfig.visual_vocab_size={self.visual_vocab_size}: k-means needs k >= 2 words")
        if self.type_vocab_size < 2:
            raise ValueError("VideoBertConfig.type_vocab_size must be >= 2: the video has token type 1")
        if self.max_positions < 5:
            raise ValueError(f"VideoBertConfig.max_positions={self.max_positions} cannot hold [CLS] word [>] "
                             "visual word [SEP] (5 tokens)")
        for name in ("cls_token_id", "sep_token_id", "mask_token_id", "pad_token_id", "boundary_token_id"):
            if getattr(self, name) >= self.vocab_size:
                raise ValueError(f"VideoBertConfig.{name}={getattr(self, name)} is outside the text vocabulary "
                                 f"[0, {self.vocab_size})")

    @property
    def joint_vocab_size(self) -> int:
        """Rows of the word-embedding table: words, visual words, the visual [MASK]."""
        return self.vocab_size + self.visual_vocab_size + 1

    @property
    def visual_mask_id(self) -> int:
        """The visual [MASK], in visual-id space (``visual_vocab_size``)."""
        return self.visual_vocab_size


@dataclass
class VideoBertOutput:
    """``text_logits`` ``(B, L, vocab_size)``, ``visual_logits`` ``(B, T, visual_vocab_size)``, ``align_logits``
    ``(B, 2)`` (1 = the text goes with the video), ``hidden`` ``(B, L + T + 3, dim)`` over ``[CLS] text [>] video
    [SEP]``. Each loss is set when its labels are given; ``loss`` is their sum."""

    loss: torch.Tensor | None
    text_loss: torch.Tensor | None
    visual_loss: torch.Tensor | None
    align_loss: torch.Tensor | None
    text_logits: torch.Tensor
    visual_logits: torch.Tensor
    align_logits: torch.Tensor
    hidden: torch.Tensor


class VideoBert(nn.Module):
    """VideoBERT: one joint embedding table, a post-LN transformer, the tied MLM head and the alignment head.
    Explained in notebook 08, §VideoBERT."""

    def __init__(self, cfg: VideoBertConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.word_emb = nn.Embedding(cfg.joint_vocab_size, cfg.dim)  # words, then visual words, then visual [MASK]
        self.pos_emb = nn.Embedding(cfg.max_positions, cfg.dim)
        self.type_emb = nn.Embedding(cfg.type_vocab_size, cfg.dim)
        self.ln_embed = nn.LayerNorm(cfg.dim, eps=cfg.eps)
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = Transformer(cfg.depth, cfg.dim, cfg.heads, mlp_dim=cfg.mlp_dim, post_norm=True, eps=cfg.eps,
                                   act=cfg.act, dropout=cfg.dropout)
        self.lm_head = BertLMHead(self.word_emb, cfg.act, cfg.eps)
        self.align_head = ITMHead(cfg.dim)  # tanh(pooler([CLS])) -> 2 logits
        self.apply(init_weights)

    def joint_inputs(self, input_ids: torch.Tensor, visual_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                     visual_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(ids, token_types, mask)`` of ``[CLS] text [>] video [SEP]`` for checked inputs; visual word ``j`` is
        joint id ``vocab_size + j``."""
        cfg, (b, n), t = self.cfg, input_ids.shape, visual_ids.shape[1]
        col = lambda i: input_ids.new_full((b, 1), i)  # noqa: E731
        ids = torch.cat([col(cfg.cls_token_id), input_ids, col(cfg.boundary_token_id), visual_ids + cfg.vocab_size,
                         col(cfg.sep_token_id)], dim=1)
        types = torch.cat([torch.zeros_like(ids[:, :n + 2]), torch.ones_like(ids[:, n + 2:])], dim=1)
        if attention_mask is None and visual_mask is None:
            return ids, types, None
        one = torch.ones(b, 1, dtype=torch.bool, device=ids.device)
        text = one.expand(b, n) if attention_mask is None else attention_mask
        video = one.expand(b, t) if visual_mask is None else visual_mask
        return ids, types, torch.cat([one, text, one, video, one], dim=1)

    def forward(self, input_ids: Any, visual_ids: Any, attention_mask: Any = None, visual_mask: Any = None,
                text_labels: Any = None, visual_labels: Any = None, align_labels: Any = None) -> VideoBertOutput:
        """``input_ids`` ``(B, L)`` the words (no [CLS]/[SEP]: the model adds them); ``visual_ids`` ``(B, T)`` visual
        words in ``[0, k)``, or ``k`` (the visual [MASK]); masks 1 = real. ``text_labels`` / ``visual_labels``: the
        original ids at masked positions, ``-100`` elsewhere (:meth:`mask_inputs`); ``align_labels`` ``(B,)`` 0/1."""
        cfg = self.cfg
        ids, vis, mask, vmask = self._check_inputs(input_ids, visual_ids, attention_mask, visual_mask)
        (b, n), t = ids.shape, vis.shape[1]
        joint, types, key_mask = self.joint_inputs(ids, vis, mask, vmask)
        positions = torch.arange(joint.shape[1], device=joint.device)
        x = self.drop(self.ln_embed(self.word_emb(joint) + self.pos_emb(positions) + self.type_emb(types)))
        hidden, _ = self.encoder(x, key_padding_mask=key_mask)
        # the tied head scores each modality over its own slice of the joint vocabulary
        words = slice(0, cfg.vocab_size)
        visual_words = slice(cfg.vocab_size, cfg.vocab_size + cfg.visual_vocab_size)
        text_logits = self.lm_head(hidden[:, 1:1 + n])[..., words]
        visual_logits = self.lm_head(hidden[:, n + 2:n + 2 + t])[..., visual_words]
        align_logits = self.align_head(hidden)
        text_loss = visual_loss = align_loss = None
        if text_labels is not None:  # cross-entropy over the labelled (masked) positions only; 0 when none is
            text_labels = check_labels(text_labels, shape=(b, n), vocab_size=cfg.vocab_size, name="text_labels",
                                       device=ids.device)
            text_loss = masked_prediction(nn.Identity(), text_logits, text_labels)[1]
        if visual_labels is not None:
            visual_labels = check_labels(visual_labels, shape=(b, t), vocab_size=cfg.visual_vocab_size,
                                         name="visual_labels", device=ids.device)
            visual_loss = masked_prediction(nn.Identity(), visual_logits, visual_labels)[1]
        if align_labels is not None:
            align_loss = F.cross_entropy(align_logits, self._check_align_labels(align_labels, b, ids.device))
        losses = [x for x in (text_loss, visual_loss, align_loss) if x is not None]
        return VideoBertOutput(sum(losses) if losses else None, text_loss, visual_loss, align_loss,
                               text_logits, visual_logits, align_logits, hidden)

    def mask_inputs(self, input_ids: Any, visual_ids: Any, attention_mask: Any = None, visual_mask: Any = None,
                    prob: float | None = None, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """BERT's 80/10/10 corruption of ``prob`` (default ``cfg.mlm_prob``) of the real words and of the real visual
        words (a masked one becomes the visual [MASK] ``k``, a random one another visual word). Returns the keyword
        arguments ``input_ids, visual_ids, text_labels, visual_labels`` for :meth:`forward`."""
        cfg = self.cfg
        prob = cfg.mlm_prob if prob is None else prob
        ids, vis, mask, vmask = self._check_inputs(input_ids, visual_ids, attention_mask, visual_mask)
        ids, text_labels = bert_mask_tokens(ids, mask_token_id=cfg.mask_token_id, vocab_size=cfg.vocab_size, prob=prob,
                                            special_ids=cfg.special_token_ids, candidates=mask, generator=generator)
        vis, visual_labels = bert_mask_tokens(vis, mask_token_id=cfg.visual_mask_id, vocab_size=cfg.visual_mask_id + 1,
                                              prob=prob, special_ids=(), candidates=vmask, generator=generator)
        return dict(input_ids=ids, visual_ids=vis, text_labels=text_labels, visual_labels=visual_labels)

    def align_scores(self, input_ids: Any, visual_ids: Any, attention_mask: Any = None,
                     visual_mask: Any = None) -> torch.Tensor:
        """``(B,)`` probability that each text goes with its video (the alignment head's class 1), e.g. to rank
        candidate captions for a clip."""
        return self(input_ids, visual_ids, attention_mask, visual_mask).align_logits.softmax(-1)[:, 1]

    # ---------------------------------------------------------------- input checks

    def _check_inputs(self, input_ids: Any, visual_ids: Any, attention_mask: Any, visual_mask: Any):
        cfg, device = self.cfg, self.word_emb.weight.device
        ids = check_tokens(input_ids, vocab_size=cfg.vocab_size, device=device)
        vis = check_tokens(visual_ids, name="visual_ids", device=device)
        b, n, t = check_same_batch(input_ids=ids, visual_ids=vis), ids.shape[1], vis.shape[1]
        if n + t + 3 > cfg.max_positions:
            raise ValueError(f"the sequence [CLS] text [>] video [SEP] has {n} + {t} + 3 = {n + t + 3} tokens, longer "
                             f"than max_positions={cfg.max_positions}")
        if value_checks_enabled() and bool(((vis < 0) | (vis > cfg.visual_mask_id)).any()):
            raise ValueError(f"visual_ids must be visual words in [0, {cfg.visual_vocab_size}) or {cfg.visual_mask_id} "
                             f"(the visual [MASK]), got min {int(vis.min())}, max {int(vis.max())}")
        mask = None if attention_mask is None else check_mask(attention_mask, shape=(b, n), device=device)
        vmask = None if visual_mask is None else check_mask(visual_mask, shape=(b, t), name="visual_mask",
                                                            like="visual_ids", desc="(B, T)", device=device)
        return ids, vis, mask, vmask

    @staticmethod
    def _check_align_labels(labels: Any, batch: int, device: torch.device) -> torch.Tensor:
        labels = as_tensor(labels, "align_labels", f"a ({batch},) tensor of 0/1")
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise TypeError(f"align_labels must be integers 0/1, got dtype {labels.dtype}")
        if tuple(labels.shape) != (batch,):
            raise ValueError(f"align_labels must have shape (B,) = ({batch},), got {tuple(labels.shape)}")
        if value_checks_enabled() and bool(((labels != 0) & (labels != 1)).any()):
            raise ValueError(f"align_labels must be 0 (the text does not go with the video) or 1, "
                             f"got {labels.tolist()}")
        return labels.to(device).long()
