"""VisualBERT (Li et al. 2019): one BERT reads the words and the image together. Explained in notebook 03, §VisualBERT.

*Single stream, early fusion* (survey §2.1): the caption's tokens and the image's visual tokens (region or patch
features, each projected to the model width) are concatenated into **one sequence** and a single BERT encoder
runs over it, so every layer's self-attention mixes words and image regions. Two pre-training objectives:

* **masked language modelling conditioned on the image**: some words are hidden (BERT's 80/10/10 corruption,
  :func:`~vlm_primer.masking.bert_mask_tokens`) and predicted from the other words *and the image*; the visual
  tokens are never masked;
* **sentence-image prediction** (ITM): from the first token's pooled state, does the text match the image? (The
  paper's text is two captions, the second matching the first or random, with token types 0 and 1; here it is one
  caption, matched or not.)

With ``visual_embeds=None`` no visual token is added and the model is exactly BERT with its MLM head (Devlin et
al. 2019). Explained in notebook 03, §MLM.

Weight for weight ``transformers``' ``VisualBertForPreTraining`` (and ``BertForMaskedLM`` /
``BertForPreTraining`` with ``visual=False``), see :mod:`vlm_primer.interop.visual_bert`. The embeddings are
``VisualBertEmbeddings``' default path: text gets word + position + token-type embeddings; each visual token gets
``visual_proj(feature)`` + the visual token-type embedding of type 1 + the visual position embedding of position 0
(VisualBERT without a detector's word alignment gives every region position 0); one LayerNorm over the joint sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vlm_primer.config import PresetConfig
from vlm_primer.masking.masks import IGNORE_INDEX
from vlm_primer.nn import BertLMHead, Transformer, init_weights
from vlm_primer.validate import check_choice, check_labels, check_mask, check_tokens, value_checks_enabled

__all__ = ["VisualBert", "VisualBertConfig", "VisualBertOutput", "region_features"]


@dataclass
class VisualBertConfig(PresetConfig):
    """A post-LN BERT over text + visual tokens. ``visual=False`` leaves out the visual embeddings (plain BERT);
    ``itm_head=False`` leaves out the pooler and the 2-way sentence-image head (``BertForMaskedLM``'s layout)."""

    vocab_size: int = 30522
    dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_dim: int = 3072
    max_positions: int = 512
    type_vocab_size: int = 2
    visual_dim: int = 2048
    act: str = "gelu"
    eps: float = 1e-12
    dropout: float = 0.0
    visual: bool = True
    itm_head: bool = True
    mask_token_id: int = 103
    cls_token_id: int = 101
    sep_token_id: int = 102
    pad_token_id: int = 0

    PRESETS: ClassVar[dict] = {
        # Shapes World with the project's tokenizer: <bos> plays [CLS], <eos> [SEP]; 64-d visual tokens.
        "tiny": dict(vocab_size=814, dim=64, depth=4, heads=4, mlp_dim=256, max_positions=64, visual_dim=64,
                     mask_token_id=4, cls_token_id=2, sep_token_id=3, pad_token_id=0),
        # The paper's: BERT-base over 2048-d detector region features.
        "base": dict(),
    }
    BOUNDS: ClassVar[dict] = dict(vocab_size=">0", dim=">0", depth=">0", heads=">0", mlp_dim=">0", max_positions=">0",
                                  type_vocab_size=">0", visual_dim=">0", eps=">0", dropout="[0, 1)",
                                  mask_token_id=">=0", cls_token_id=">=0", sep_token_id=">=0", pad_token_id=">=0")

    def validate(self) -> None:
        if self.dim % self.heads:
            raise ValueError(f"VisualBertConfig.dim={self.dim} must be divisible by heads={self.heads}")
        check_choice(self.act, ("gelu", "gelu_tanh", "quick_gelu", "relu", "silu"), "VisualBertConfig.act")
        if self.visual and self.type_vocab_size < 2:
            raise ValueError("VisualBertConfig.type_vocab_size must be >= 2: visual tokens have token type 1")
        for name in ("mask_token_id", "cls_token_id", "sep_token_id", "pad_token_id"):
            if getattr(self, name) >= self.vocab_size:
                raise ValueError(f"VisualBertConfig.{name}={getattr(self, name)} is outside the vocabulary "
                                 f"[0, {self.vocab_size})")


@dataclass
class VisualBertOutput:
    """``mlm_logits`` ``(B, L, vocab)`` at the text positions; ``itm_logits`` ``(B, 2)`` (index 1 = the text matches
    the image; ``None`` without the head); ``hidden`` ``(B, L + N, dim)``, text then visual tokens. The losses are
    set when ``labels`` / ``itm_labels`` are given (``loss`` is their sum)."""

    mlm_logits: torch.Tensor
    itm_logits: torch.Tensor | None
    hidden: torch.Tensor
    loss: torch.Tensor | None = None
    mlm_loss: torch.Tensor | None = None
    itm_loss: torch.Tensor | None = None


class VisualBert(nn.Module):
    """VisualBERT: embeddings for words and visual tokens, one post-LN transformer over both, an MLM head tied to
    the word embeddings, and a pooler + sentence-image head on the first token."""

    def __init__(self, cfg: VisualBertConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.word_emb = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.pos_emb = nn.Embedding(cfg.max_positions, cfg.dim)
        self.type_emb = nn.Embedding(cfg.type_vocab_size, cfg.dim)
        if cfg.visual:  # the visual tokens' own tables, as in transformers (position 0 and type 1 are used)
            self.visual_proj = nn.Linear(cfg.visual_dim, cfg.dim)
            self.visual_pos_emb = nn.Embedding(cfg.max_positions, cfg.dim)
            self.visual_type_emb = nn.Embedding(cfg.type_vocab_size, cfg.dim)
        self.ln_embed = nn.LayerNorm(cfg.dim, eps=cfg.eps)
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = Transformer(cfg.depth, cfg.dim, cfg.heads, mlp_dim=cfg.mlp_dim, post_norm=True, eps=cfg.eps,
                                   act=cfg.act, dropout=cfg.dropout)
        if cfg.itm_head:
            self.pooler = nn.Linear(cfg.dim, cfg.dim)  # tanh(pooler(first token)), BERT's pooled output
            self.itm_head = nn.Linear(cfg.dim, 2)
        self.lm_head = BertLMHead(self.word_emb, cfg.act, cfg.eps)
        self.apply(init_weights)
        if cfg.visual:  # VisualBERT starts the visual tables as copies of the text ones
            with torch.no_grad():
                self.visual_pos_emb.weight.copy_(self.pos_emb.weight)
                self.visual_type_emb.weight.copy_(self.type_emb.weight)

    def embed(self, ids: torch.Tensor, token_type_ids: torch.Tensor,
              visual_embeds: torch.Tensor | None) -> torch.Tensor:
        """``(B, L [+ N], dim)``: text embeddings, then the visual tokens, through the embedding LayerNorm."""
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.word_emb(ids) + self.pos_emb(positions) + self.type_emb(token_type_ids)
        if visual_embeds is not None:
            # every visual token: its projected feature + visual position 0 + visual token type 1
            v = self.visual_proj(visual_embeds) + self.visual_pos_emb.weight[0] + self.visual_type_emb.weight[1]
            x = torch.cat([x, v], dim=1)
        return self.drop(self.ln_embed(x))

    def forward(self, input_ids: Any, attention_mask: Any = None, token_type_ids: Any = None,
                visual_embeds: torch.Tensor | None = None, visual_attention_mask: Any = None,
                labels: Any = None, itm_labels: Any = None) -> VisualBertOutput:
        """``input_ids`` ``(B, L)``; ``attention_mask`` ``(B, L)`` and ``visual_attention_mask`` ``(B, N)``, 1 = real;
        ``token_type_ids`` ``(B, L)`` (default 0); ``visual_embeds`` ``(B, N, visual_dim)`` or ``None`` (text only:
        BERT). ``labels`` ``(B, L)``: the original ids at masked positions, ``-100`` elsewhere; ``itm_labels`` ``(B,)``:
        1 if the text matches the image, 0 if not."""
        cfg = self.cfg
        device = self.word_emb.weight.device
        ids = check_tokens(input_ids, max_len=cfg.max_positions, vocab_size=cfg.vocab_size, device=device)
        batch, length = ids.shape
        types = torch.zeros_like(ids) if token_type_ids is None else check_tokens(
            token_type_ids, vocab_size=cfg.type_vocab_size, name="token_type_ids", device=device)
        if types.shape != ids.shape:
            raise ValueError(f"token_type_ids must have the shape of input_ids {tuple(ids.shape)}, "
                             f"got {tuple(types.shape)}")
        mask = None if attention_mask is None else check_mask(attention_mask, shape=(batch, length), device=device)
        if visual_embeds is not None:
            self._check_visual(visual_embeds, batch)
            visual_embeds = visual_embeds.to(device)
            if visual_attention_mask is not None or mask is not None:
                n = visual_embeds.shape[1]
                vmask = torch.ones(batch, n, dtype=torch.bool, device=device) if visual_attention_mask is None else \
                    check_mask(visual_attention_mask, shape=(batch, n), name="visual_attention_mask",
                               like="visual_embeds", desc="(B, N)", device=device)
                text_mask = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask
                mask = torch.cat([text_mask, vmask], dim=1)
        elif visual_attention_mask is not None:
            raise ValueError("visual_attention_mask was given without visual_embeds")

        hidden, _ = self.encoder(self.embed(ids, types, visual_embeds), key_padding_mask=mask)
        mlm_logits = self.lm_head(hidden[:, :length])  # words only: the visual tokens are never predicted
        itm_logits = self.itm_head(torch.tanh(self.pooler(hidden[:, 0]))) if cfg.itm_head else None
        out = VisualBertOutput(mlm_logits=mlm_logits, itm_logits=itm_logits, hidden=hidden)
        if labels is not None:
            labels = check_labels(labels, shape=(batch, length), vocab_size=cfg.vocab_size, device=device)
            out.mlm_loss = F.cross_entropy(mlm_logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
        if itm_labels is not None:
            if itm_logits is None:
                raise ValueError("itm_labels were given but this model has no sentence-image head (itm_head=False)")
            itm_labels = self._check_itm_labels(itm_labels, batch, device)
            out.itm_loss = F.cross_entropy(itm_logits, itm_labels)
        losses = [x for x in (out.mlm_loss, out.itm_loss) if x is not None]
        out.loss = sum(losses) if losses else None
        return out

    def _check_visual(self, visual_embeds: Any, batch: int) -> None:
        want = f"({batch}, N, {self.cfg.visual_dim})"
        if not self.cfg.visual:
            raise ValueError("this model has no visual embeddings (visual=False, plain BERT): pass visual_embeds=None")
        if not isinstance(visual_embeds, torch.Tensor) or not visual_embeds.is_floating_point():
            raise TypeError(f"visual_embeds must be a float tensor {want}, got "
                            f"{getattr(visual_embeds, 'dtype', type(visual_embeds).__name__)}")
        if visual_embeds.ndim != 3 or visual_embeds.shape[-1] != self.cfg.visual_dim or visual_embeds.shape[1] == 0:
            raise ValueError(f"visual_embeds must have shape {want}, got {tuple(visual_embeds.shape)}")
        if visual_embeds.shape[0] != batch:
            raise ValueError(f"mismatched batch sizes: input_ids={batch}, visual_embeds={visual_embeds.shape[0]}")

    @staticmethod
    def _check_itm_labels(itm_labels: Any, batch: int, device: torch.device) -> torch.Tensor:
        itm_labels = torch.as_tensor(itm_labels, device=device)
        if itm_labels.shape != (batch,) or itm_labels.is_floating_point() or itm_labels.dtype == torch.bool:
            raise ValueError(f"itm_labels must be ({batch},) integers 0/1, got shape {tuple(itm_labels.shape)}, "
                             f"dtype {itm_labels.dtype}")
        if value_checks_enabled() and bool(((itm_labels != 0) & (itm_labels != 1)).any()):
            raise ValueError(f"itm_labels must be 0 (no match) or 1 (match), got {itm_labels.tolist()}")
        return itm_labels.long()


def region_features(patch_tokens: torch.Tensor, boxes: list[torch.Tensor], patch_size: int,
                    whole: torch.Tensor | None = None, max_regions: int | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """VisualBERT's visual tokens from a ViT instead of a detector: one *region feature* per box, the mean of the
    patch tokens whose centres fall inside it (RoI pooling on the patch grid; the nearest patch when none does),
    and optionally the ``whole``-image token ``(B, D)`` (e.g. the [CLS] token) as a last region.

    ``patch_tokens`` ``(B, N, D)`` on a square grid, ``boxes[b]`` ``(R_b, 4)`` pixel ``x0, y0, x1, y1`` (the scene
    graph's, :func:`vlm_primer.world.scene_boxes`). Returns ``(features (B, R [+1], D), mask (B, R [+1]))`` padded
    to ``max_regions`` (default the most boxes of the batch), mask 1 = a real region. Explained in notebook 03,
    §VisualBERT."""
    b, n, d = patch_tokens.shape
    grid = int(round(n**0.5))
    if grid * grid != n or len(boxes) != b:
        raise ValueError(f"patch_tokens must be (B, grid^2, D) with one box list per image, got "
                         f"{tuple(patch_tokens.shape)} and {len(boxes)} box lists")
    r = max_regions if max_regions is not None else max((len(bx) for bx in boxes), default=0)
    centres = torch.arange(grid, dtype=torch.float32) * patch_size + patch_size / 2
    tokens = patch_tokens.reshape(b, grid, grid, d)
    feats = patch_tokens.new_zeros(b, r + int(whole is not None), d)
    mask = torch.zeros(b, feats.shape[1], dtype=torch.long)
    for i, bx in enumerate(boxes):
        if len(bx) > r:
            raise ValueError(f"image {i} has {len(bx)} boxes, more than max_regions={r}")
        for k, (x0, y0, x1, y1) in enumerate(torch.as_tensor(bx, dtype=torch.float32).tolist()):
            inside = ((centres[:, None] >= y0) & (centres[:, None] <= y1)) & ((centres >= x0) & (centres <= x1))
            if not inside.any():
                row = min(int((y0 + y1) / 2 // patch_size), grid - 1)
                col = min(int((x0 + x1) / 2 // patch_size), grid - 1)
                inside[row, col] = True
            feats[i, k], mask[i, k] = tokens[i][inside].mean(0), 1
    if whole is not None:
        feats[:, -1], mask[:, -1] = whole, 1
    return feats, mask
