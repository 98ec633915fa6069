"""Text transformer encoder (CLIP / SigLIP text towers): tokens + learned positions, blocks, pool.

Explained in notebook 02, §Text encoder. Two options make it BERT-like (FLAVA's text encoder, masked language
modelling; explained in notebook 03, §MLM): a token-type (segment) table added to the embeddings
(``type_vocab_size``) and a LayerNorm on the embedding sum (``embed_norm``). Both are off by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from vlm_primer.config import PresetConfig
from vlm_primer.nn.pooling import masked_mean
from vlm_primer.nn.pos import learned_positions
from vlm_primer.nn.transformer import Transformer, init_weights
from vlm_primer.validate import check_choice, check_mlp_width, check_mask, check_tokens

TEXT_POOLS = ("eos", "argmax", "last", "cls", "mean")


@dataclass
class TextConfig(PresetConfig):
    vocab_size: int = 1024
    context_length: int = 32
    dim: int = 64
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    mlp_dim: int | None = None    # overrides dim * mlp_ratio (transformers' intermediate_size)
    act: str = "gelu"
    causal: bool = True           # CLIP's text tower is causal; SigLIP's is bidirectional
    pool: str = "eos"             # eos | argmax (legacy CLIP) | last (SigLIP) | cls | mean
    eos_token_id: int = 3         # the project tokenizer's <eos> (vlm_primer.text)
    pad_token_id: int = 0
    eps: float = 1e-5
    final_norm: bool = True
    qkv_bias: bool = True
    dropout: float = 0.0
    type_vocab_size: int = 0      # BERT's token-type (segment) table; 0 = none
    embed_norm: bool = False      # BERT's LayerNorm on word + type + position embeddings

    PRESETS: ClassVar[dict] = {
        "tiny": dict(context_length=32, dim=64, depth=4, heads=4),
        "small": dict(context_length=64, dim=256, depth=6, heads=4),
        "base": dict(vocab_size=49408, context_length=77, dim=512, depth=12, heads=8),
        # OpenAI CLIP ViT-B text tower, pooled at the end-of-text id 49407 (the largest id, so this is
        # the same position as legacy CLIP's argmax pooling)
        "clip": dict(vocab_size=49408, context_length=77, dim=512, depth=12, heads=8, act="quick_gelu",
                     pool="eos", eos_token_id=49407, pad_token_id=49407),
        # SigLIP B/16 text tower (bidirectional, last-token pooling; projection head lives in the model)
        "siglip": dict(vocab_size=32000, context_length=64, dim=768, depth=12, heads=12, act="gelu_tanh",
                       causal=False, pool="last", eos_token_id=1, pad_token_id=1, eps=1e-6),
    }

    BOUNDS: ClassVar[dict] = dict(vocab_size=">0", context_length=">0", dim=">0", depth=">0", heads=">0",
                                  mlp_ratio="(0, 64]", mlp_dim=">0", eps=">0", dropout="[0, 1)",
                                  eos_token_id=">=0", pad_token_id=">=0", type_vocab_size=">=0")

    def validate(self) -> None:
        check_mlp_width(self)
        check_choice(self.pool, TEXT_POOLS, "pool")
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} is not divisible by heads={self.heads}")


@dataclass
class TextOutput:
    last_hidden_state: torch.Tensor             # (B, L, dim)
    pooled: torch.Tensor                        # (B, dim)
    hidden_states: tuple[torch.Tensor, ...] | None = None


def pool_positions(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, pool: str,
                   eos_token_id: int) -> torch.Tensor | None:
    """Index of the token each row is pooled at, ``(B,)`` (``None`` for ``mean``).

    ``eos``: first occurrence of ``eos_token_id`` (rows without one fall back to their last real
    token); ``argmax``: the largest id (legacy CLIP: end-of-text has the largest id); ``last``: the
    last position (SigLIP, whose text is padded to the full length); ``cls``: position 0.
    """
    b, n = input_ids.shape
    if pool == "cls":
        return torch.zeros(b, dtype=torch.long, device=input_ids.device)
    if pool == "last":
        return torch.full((b,), n - 1, dtype=torch.long, device=input_ids.device)
    if pool == "argmax":
        return input_ids.to(torch.long).argmax(dim=-1)
    if pool == "eos":
        is_eos = input_ids == eos_token_id
        first = is_eos.int().argmax(dim=-1)
        n_real = attention_mask.long().sum(-1) if attention_mask is not None else torch.full_like(first, n)
        return torch.where(is_eos.any(dim=-1), first, (n_real - 1).clamp_min(0))
    return None


class TextTransformer(nn.Module):
    """Transformer text encoder. Explained in notebook 02, §Text encoder."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.dim)
        nn.init.normal_(self.tok_emb.weight, std=0.02)
        self.pos_emb = learned_positions(cfg.context_length, cfg.dim, std=0.01)
        self.type_emb = nn.Embedding(cfg.type_vocab_size, cfg.dim) if cfg.type_vocab_size else None
        self.ln_embed = nn.LayerNorm(cfg.dim, eps=cfg.eps) if cfg.embed_norm else None
        self.transformer = Transformer(cfg.depth, cfg.dim, cfg.heads, cfg.mlp_ratio, act=cfg.act, eps=cfg.eps,
                                       causal=cfg.causal, qkv_bias=cfg.qkv_bias, mlp_dim=cfg.mlp_dim,
                                       dropout=cfg.dropout)
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.eps) if cfg.final_norm else None
        self.apply(init_weights)

    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Checked ids ``(B, L)`` -> ``word [+ token type] + position`` embeddings ``(B, L, dim)`` [then LayerNorm].

        Without ``token_type_ids`` every token has type 0 (as in BERT)."""
        x = self.tok_emb(input_ids)
        if self.type_emb is not None:
            x = x + self.type_emb(token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids))
        x = x + self.pos_emb[: input_ids.shape[1]]
        return self.ln_embed(x) if self.ln_embed is not None else x

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                output_hidden_states: bool = False, token_type_ids: torch.Tensor | None = None) -> TextOutput:
        """``input_ids`` ``(B, L)`` with ``L <= context_length``; ``attention_mask`` ``(B, L)``, 1 = real token;
        ``token_type_ids`` ``(B, L)`` in ``[0, type_vocab_size)`` (only with a token-type table).

        All may be tensors or array-likes; ids of any integer dtype (see :mod:`vlm_primer.validate`).
        """
        cfg, device = self.cfg, self.tok_emb.weight.device
        input_ids = check_tokens(input_ids, max_len=cfg.context_length, vocab_size=cfg.vocab_size, device=device)
        if attention_mask is not None:
            attention_mask = check_mask(attention_mask, shape=tuple(input_ids.shape), device=device)
        if token_type_ids is not None:
            if self.type_emb is None:
                raise ValueError("token_type_ids were given but this text encoder has no token-type table "
                                 "(TextConfig.type_vocab_size=0)")
            token_type_ids = check_tokens(token_type_ids, vocab_size=cfg.type_vocab_size, name="token_type_ids",
                                          device=device)
            if token_type_ids.shape != input_ids.shape:
                raise ValueError(f"token_type_ids must have the shape of input_ids {tuple(input_ids.shape)}, "
                                 f"got {tuple(token_type_ids.shape)}")
        x = self.embed(input_ids, token_type_ids)
        x, hidden = self.transformer(x, key_padding_mask=attention_mask, output_hidden_states=output_hidden_states)
        if self.norm is not None:
            x = self.norm(x)
        idx = pool_positions(input_ids, attention_mask, cfg.pool, cfg.eos_token_id)
        if idx is None:
            pooled = masked_mean(x, attention_mask)
        else:
            pooled = x[torch.arange(x.shape[0], device=x.device), idx]
        return TextOutput(last_hidden_state=x, pooled=pooled, hidden_states=hidden)
