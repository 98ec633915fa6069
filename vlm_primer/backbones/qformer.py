"""BLIP-2's Q-Former: learned queries that read a frozen image encoder, and the masks of its three objectives.

Explained in notebook 05b, §The Q-Former (Li et al. 2023, "BLIP-2", §3.1–3.2). A BERT-style post-LN encoder
over the sequence ``[queries; text]``:

* ``num_queries`` learned query embeddings come first, then the text's word + position embeddings; one
  LayerNorm over the whole sequence;
* every layer self-attends over the whole sequence under a mask that decides who sees whom
  (:func:`qformer_mask`);
* every ``cross_attention_freq``-th layer (0, 2, 4, ...) lets the **query positions only** cross-attend
  to the frozen image features;
* query and text positions have separate feed-forward weights. Everything starts random here; BLIP-2 starts
  self-attention and both feed-forwards from BERT-base, and only the cross-attention at random.

Stage 1 trains it with three objectives on the same inputs, each with its own self-attention mask:

* **ITC** (image-text contrastive), ``unimodal``: queries and text do not see each other, so the
  queries' outputs are an image embedding and the text's first token a text embedding;
* **ITM** (image-text matching), ``bidirectional``: every position sees every other, and a binary head on
  the queries' outputs says "match" or "no match";
* **ITG** (image-grounded text generation), ``multimodal_causal``: queries see the queries, text sees the
  queries and the text before it, so the text must be generated from what the queries extracted.

Weight for weight the same as ``transformers``' ``Blip2QFormerModel`` with the query tokens, text
embeddings and heads of ``Blip2ForImageTextRetrieval`` (:mod:`vlm_primer.interop.blip2`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from vlm_primer.config import PresetConfig
from vlm_primer.nn import MLP, Attention
from vlm_primer.validate import check_choice, check_tokens

__all__ = ["MASK_KINDS", "QFormer", "QFormerConfig", "QFormerLayer", "qformer_mask"]

MASK_KINDS = ("unimodal", "bidirectional", "multimodal_causal")


def qformer_mask(kind: str, num_queries: int, text_mask: torch.Tensor) -> torch.Tensor:
    """Who may attend to whom in a Q-Former over ``[num_queries queries; text]``: a bool ``(B, L, L)``, True
    where row position ``i`` may see column position ``j``. ``text_mask`` ``(B, T)`` marks real text tokens
    (padding is never seen). ``kind``: ``unimodal`` (ITC), ``bidirectional`` (ITM) or ``multimodal_causal`` (ITG)."""
    check_choice(kind, MASK_KINDS, "kind")
    batch, t = text_mask.shape
    is_query = torch.arange(num_queries + t, device=text_mask.device) < num_queries
    row_q, col_q = is_query[:, None], is_query[None, :]
    if kind == "bidirectional":
        allowed = torch.ones_like(row_q & col_q)
    elif kind == "unimodal":
        allowed = row_q == col_q
    else:  # queries see queries; text sees every query and the text up to itself
        earlier = torch.ones(len(is_query), len(is_query), dtype=torch.bool, device=text_mask.device).tril()
        allowed = (row_q & col_q) | (~row_q & (col_q | earlier))
    real = torch.cat([torch.ones(batch, num_queries, dtype=torch.bool, device=text_mask.device),
                      text_mask.bool()], dim=1)
    return allowed[None] & real[:, None, :]


@dataclass
class QFormerConfig(PresetConfig):
    """The Q-Former's shapes. ``vision_dim``: width of the frozen image features it reads; ``embed_dim``: the
    ITC embedding width; ``text_input``: text can enter (word and position embeddings, the text feed-forward);
    without it the Q-Former reads queries only, as BLIP-2's stage 2 and ``transformers``'
    ``Blip2ForConditionalGeneration`` keep it; ``stage1_heads``: with text input, also the ITC/ITM heads
    stage 1 trains (InstructBLIP's Q-Former reads its instruction without them)."""

    dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_dim: int = 3072
    num_queries: int = 32
    vision_dim: int = 1408
    cross_attention_freq: int = 2
    vocab_size: int = 30522
    max_positions: int = 512
    embed_dim: int = 256
    act: str = "gelu"
    eps: float = 1e-12
    dropout: float = 0.0
    text_input: bool = True
    stage1_heads: bool = True

    PRESETS: ClassVar[dict] = {
        # Shapes World: reads the zoo's 64-wide tiny towers, speaks the project's 814-token vocabulary.
        "tiny": dict(dim=64, depth=2, heads=4, mlp_dim=256, num_queries=8, vision_dim=64, vocab_size=814,
                     max_positions=64, embed_dim=32),
        # BLIP-2's: BERT-base shapes, 32 queries, EVA ViT-g/14 features (1,408 wide).
        "base": dict(),
    }
    BOUNDS: ClassVar[dict] = dict(dim=">0", depth=">0", heads=">0", mlp_dim=">0", num_queries=">0", vision_dim=">0",
                                  cross_attention_freq=">0", vocab_size=">0", max_positions=">0", embed_dim=">0",
                                  eps=">0", dropout="[0, 1)")

    def validate(self) -> None:
        if self.dim % self.heads:
            raise ValueError(f"QFormerConfig.dim={self.dim} must be divisible by heads={self.heads}")


class QFormerLayer(nn.Module):
    """One post-LN layer: self-attention over all positions, [cross-attention for the queries], then the
    queries' and the text's own feed-forward; each sub-layer is ``LN(x + f(x))`` as in BERT."""

    def __init__(self, cfg: QFormerConfig, cross: bool) -> None:
        super().__init__()
        self.attn = Attention(cfg.dim, cfg.heads, dropout=cfg.dropout)
        self.ln_attn = nn.LayerNorm(cfg.dim, eps=cfg.eps)
        self.xattn = Attention(cfg.dim, cfg.heads, kv_dim=cfg.vision_dim, dropout=cfg.dropout) if cross else None
        self.ln_xattn = nn.LayerNorm(cfg.dim, eps=cfg.eps) if cross else None
        self.mlp_query = MLP(cfg.dim, cfg.mlp_dim, act=cfg.act)
        self.ln_query = nn.LayerNorm(cfg.dim, eps=cfg.eps)
        self.mlp_text = MLP(cfg.dim, cfg.mlp_dim, act=cfg.act) if cfg.text_input else None
        self.ln_text = nn.LayerNorm(cfg.dim, eps=cfg.eps) if cfg.text_input else None
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, num_queries: int, image: torch.Tensor | None,
                mask: torch.Tensor | None) -> torch.Tensor:
        x = self.ln_attn(x + self.drop(self.attn(x, attn_mask=mask)))
        queries, text = x[:, :num_queries], x[:, num_queries:]
        parts = []
        if num_queries:
            if self.xattn is not None:
                queries = self.ln_xattn(queries + self.drop(self.xattn(queries, context=image)))
            parts.append(self.ln_query(queries + self.drop(self.mlp_query(queries))))
        if text.shape[1]:
            parts.append(self.ln_text(text + self.drop(self.mlp_text(text))))
        return torch.cat(parts, dim=1)


class QFormer(nn.Module):
    """The Q-Former with its learned ``query_tokens``; with ``text_input`` also the text embeddings, and with
    ``stage1_heads`` the heads: ``vision_proj`` / ``text_proj`` (ITC embeddings), ``itm_head`` (match / no match)."""

    def __init__(self, cfg: QFormerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.query_tokens = nn.Parameter(torch.randn(1, cfg.num_queries, cfg.dim) * 0.02)
        self.ln_embed = nn.LayerNorm(cfg.dim, eps=cfg.eps)
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(QFormerLayer(cfg, cross=i % cfg.cross_attention_freq == 0)
                                    for i in range(cfg.depth))
        if cfg.text_input:
            self.word_emb = nn.Embedding(cfg.vocab_size, cfg.dim)
            self.pos_emb = nn.Embedding(cfg.max_positions, cfg.dim)
        if cfg.text_input and cfg.stage1_heads:
            self.vision_proj = nn.Linear(cfg.dim, cfg.embed_dim)
            self.text_proj = nn.Linear(cfg.dim, cfg.embed_dim)
            self.itm_head = nn.Linear(cfg.dim, 2)

    @torch.no_grad()
    def query_attention(self, image: torch.Tensor, layer: int = 0) -> torch.Tensor:
        """Where each query looks: its cross-attention weights over the image tokens in layer ``layer`` (a
        cross-attention layer: 0, ``cross_attention_freq``, ...), averaged over heads, ``(B, num_queries, N)``.
        Notebook 05b, §What the queries look at."""
        block = self.layers[layer]
        if block.xattn is None:
            raise ValueError(f"layer {layer} has no cross-attention (every {self.cfg.cross_attention_freq}-th has)")
        seen = {}
        handle = block.xattn.register_forward_pre_hook(lambda module, args, kwargs: seen.update(
            x=args[0], context=kwargs["context"]), with_kwargs=True)
        try:
            self(image)
        finally:
            handle.remove()
        return block.xattn.attention_weights(seen["x"], seen["context"]).mean(1)

    def text_parameters(self):
        """The parameters only text positions or stage 1 use: text embeddings, the text feed-forwards and the
        ITC/ITM heads (frozen when the queries alone are trained, as in BLIP-2's stage 2)."""
        for name, p in self.named_parameters():
            if name.startswith(("word_emb.", "pos_emb.", "vision_proj.", "text_proj.", "itm_head.")) \
                    or ".mlp_text." in name or ".ln_text." in name:
                yield p

    def forward(self, image: torch.Tensor | None = None, input_ids: Any = None,
                attention_mask: torch.Tensor | None = None, *, mask: str = "bidirectional",
                queries: bool = True) -> torch.Tensor:
        """Hidden states ``(B, num_queries + T, dim)`` of ``[queries; text]`` (queries only without
        ``input_ids``; text only with ``queries=False``). ``image``: the frozen encoder's features
        ``(B, N, vision_dim)``, needed when there are queries; ``mask``: one of :data:`MASK_KINDS`."""
        cfg = self.cfg
        parts, batch = [], None
        if queries:
            if image is None or image.ndim != 3 or image.shape[-1] != cfg.vision_dim:
                raise ValueError(f"the queries read image features (B, N, {cfg.vision_dim}), got "
                                 f"{None if image is None else tuple(image.shape)}")
            batch = image.shape[0]
            parts.append(self.query_tokens.expand(batch, -1, -1))
        nq = cfg.num_queries if queries else 0
        if input_ids is not None:
            if not cfg.text_input:
                raise ValueError("this Q-Former reads queries only (text_input=False): it takes no input_ids")
            ids = check_tokens(input_ids, vocab_size=cfg.vocab_size, device=self.query_tokens.device)
            if ids.shape[1] > cfg.max_positions:
                raise ValueError(f"input_ids: {ids.shape[1]} tokens, more than the Q-Former's {cfg.max_positions} "
                                 "positions")
            if batch is not None and ids.shape[0] != batch:
                raise ValueError(f"{batch} images but {ids.shape[0]} texts: the Q-Former pairs them one to one")
            parts.append(self.word_emb(ids) + self.pos_emb(torch.arange(ids.shape[1], device=ids.device)))
            if attention_mask is not None and tuple(attention_mask.shape) != tuple(ids.shape):
                raise ValueError(f"attention_mask {tuple(attention_mask.shape)} must have input_ids' shape "
                                 f"{tuple(ids.shape)}")
            text_mask = torch.ones_like(ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        elif not queries:
            raise ValueError("nothing to encode: pass input_ids, or image features for the queries")
        else:
            text_mask = torch.ones(batch, 0, dtype=torch.bool, device=image.device)
        x = self.drop(self.ln_embed(torch.cat(parts, dim=1)))
        attn = qformer_mask(mask, nq, text_mask.to(x.device))[:, None]
        for layer in self.layers:
            x = layer(x, nq, image, attn)
        return x
