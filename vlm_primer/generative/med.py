"""BLIP's multimodal mixture of encoder-decoder (MED): one BERT-style text transformer, three ways to run it.

Explained in notebook 04, §The MED (Li et al. 2022, "BLIP", §3.1). A post-LN BERT over word + position
embeddings; every layer is ``self-attention -> [cross-attention to the image] -> feed-forward``, each sub-layer
``LN(x + f(x))``. The mode picks the path:

* ``text`` -- **unimodal text encoder**: bidirectional self-attention, no cross-attention; the ``[CLS]`` token's
  output is the caption's embedding for ITC;
* ``grounded`` -- **image-grounded text encoder**: bidirectional self-attention and cross-attention to the image
  in every layer; the first token (``[Encode]``) feeds the ITM head;
* ``decoder`` -- **image-grounded text decoder**: *causal* self-attention and cross-attention; the first token is
  ``[Decode]`` and BERT's LM head predicts each next token.

BLIP shares every parameter between encoder and decoder except the self-attention layers, so with
``decoder_self_attn=True`` each layer holds a second, causal self-attention (``attn_dec``) that only the decoder
uses. ``transformers``' fine-tuned BLIP models keep one text model per task (a captioner's ``text_decoder``, a
retrieval model's ``text_encoder``): those load with ``decoder_self_attn=False``, one self-attention for every mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from vlm_primer.config import PresetConfig
from vlm_primer.nn import MLP, Attention, BertLMHead, KVCache, build_attention_mask, init_weights
from vlm_primer.validate import check_choice, check_mask, check_tokens

__all__ = ["MED", "MEDConfig", "MEDLayer", "MED_MODES"]

MED_MODES = ("text", "grounded", "decoder")


@dataclass
class MEDConfig(PresetConfig):
    """The text transformer's shapes and BLIP's three task tokens: ``cls_token_id`` (ITC), ``enc_token_id``
    (``[Encode]``, ITM), ``dec_token_id`` (``[Decode]``, the decoder's first token); ``sep_token_id`` ends a
    caption. ``lm_head``: BERT's LM head (tied to the word embeddings) for the decoder."""

    vocab_size: int = 30524
    dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_dim: int = 3072
    max_positions: int = 512
    vision_dim: int = 768
    act: str = "gelu"
    eps: float = 1e-12
    dropout: float = 0.0
    decoder_self_attn: bool = True
    lm_head: bool = True
    cls_token_id: int = 101
    enc_token_id: int = 30523
    dec_token_id: int = 30522
    sep_token_id: int = 102
    pad_token_id: int = 0

    PRESETS: ClassVar[dict] = {
        # Shapes World: the project's 814 tokens + [Encode] and [Decode], as BLIP adds two tokens to BERT's;
        # <bos> plays [CLS] and <eos> [SEP].
        "tiny": dict(vocab_size=816, dim=64, depth=4, heads=4, mlp_dim=256, max_positions=64, vision_dim=64,
                     cls_token_id=2, enc_token_id=814, dec_token_id=815, sep_token_id=3, pad_token_id=0),
        # BLIP's: BERT-base over ViT-B/16 features.
        "base": dict(),
    }
    BOUNDS: ClassVar[dict] = dict(vocab_size=">0", dim=">0", depth=">0", heads=">0", mlp_dim=">0", max_positions=">0",
                                  vision_dim=">0", eps=">0", dropout="[0, 1)", cls_token_id=">=0", enc_token_id=">=0",
                                  dec_token_id=">=0", sep_token_id=">=0", pad_token_id=">=0")

    def validate(self) -> None:
        if self.dim % self.heads:
            raise ValueError(f"MEDConfig.dim={self.dim} must be divisible by heads={self.heads}")
        for name in ("cls_token_id", "enc_token_id", "dec_token_id", "sep_token_id", "pad_token_id"):
            if getattr(self, name) >= self.vocab_size:
                raise ValueError(f"MEDConfig.{name}={getattr(self, name)} is outside the vocabulary "
                                 f"[0, {self.vocab_size})")

    @property
    def context_length(self) -> int:
        return self.max_positions


class MEDLayer(nn.Module):
    """One post-LN layer: self-attention (the decoder's own, causal, when it has one), cross-attention to the
    image (not in ``text`` mode), feed-forward."""

    def __init__(self, cfg: MEDConfig) -> None:
        super().__init__()
        self.attn = Attention(cfg.dim, cfg.heads, dropout=cfg.dropout)
        self.ln_attn = nn.LayerNorm(cfg.dim, eps=cfg.eps)
        if cfg.decoder_self_attn:
            self.attn_dec = Attention(cfg.dim, cfg.heads, dropout=cfg.dropout)
            self.ln_attn_dec = nn.LayerNorm(cfg.dim, eps=cfg.eps)
        self.xattn = Attention(cfg.dim, cfg.heads, kv_dim=cfg.vision_dim, dropout=cfg.dropout)
        self.ln_xattn = nn.LayerNorm(cfg.dim, eps=cfg.eps)
        self.mlp = MLP(cfg.dim, cfg.mlp_dim, act=cfg.act)
        self.ln_mlp = nn.LayerNorm(cfg.dim, eps=cfg.eps)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mode: str, mask: torch.Tensor | None, image: torch.Tensor | None,
                image_mask: torch.Tensor | None, cache: KVCache | None) -> torch.Tensor:
        own = mode == "decoder" and hasattr(self, "attn_dec")
        attn, ln = (self.attn_dec, self.ln_attn_dec) if own else (self.attn, self.ln_attn)
        x = ln(x + self.drop(attn(x, attn_mask=mask, kv_cache=cache)))
        if mode != "text":
            h = self.xattn(x, context=image, key_padding_mask=image_mask,
                           kv_cache=cache.cross if cache is not None else None)
            x = self.ln_xattn(x + self.drop(h))
        return self.ln_mlp(x + self.drop(self.mlp(x)))


class MED(nn.Module):
    """The MED text transformer. ``forward(input_ids, attention_mask, image, mode=...)`` -> hidden states
    ``(B, L, dim)``; :meth:`logits` applies the LM head. Weight for weight ``transformers``' ``BlipTextModel``
    (:mod:`vlm_primer.interop.blip`)."""

    def __init__(self, cfg: MEDConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.word_emb = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.pos_emb = nn.Embedding(cfg.max_positions, cfg.dim)
        self.ln_embed = nn.LayerNorm(cfg.dim, eps=cfg.eps)
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(MEDLayer(cfg) for _ in range(cfg.depth))
        self.apply(init_weights)
        self.lm_head = BertLMHead(self.word_emb, cfg.act, cfg.eps) if cfg.lm_head else None
        if self.lm_head is not None:
            init_weights(self.lm_head.dense)

    def new_cache(self) -> list[KVCache]:
        """An empty cache for decoding: one :class:`~vlm_primer.nn.KVCache` per layer (with its cross-attention's)."""
        return [KVCache() for _ in self.layers]

    def shared_parameters(self) -> dict[str, list[str]]:
        """Which parameters each mode uses, by name: what notebook 04 draws as the MED diagram."""
        uses = {mode: [] for mode in MED_MODES}
        for name, _ in self.named_parameters():
            for mode in MED_MODES:
                if ".attn_dec." in name or ".ln_attn_dec." in name:
                    used = mode == "decoder"
                elif ".attn." in name or ".ln_attn." in name:
                    used = mode != "decoder" or not self.cfg.decoder_self_attn
                elif "xattn" in name:
                    used = mode != "text"
                elif name.startswith("lm_head."):
                    used = mode == "decoder"
                else:
                    used = True
                if used:
                    uses[mode].append(name)
        return uses

    def forward(self, input_ids: Any, attention_mask: torch.Tensor | None = None, image: torch.Tensor | None = None,
                image_mask: torch.Tensor | None = None, *, mode: str = "text",
                cache: list[KVCache] | None = None) -> torch.Tensor:
        """``input_ids`` ``(B, L)``; ``attention_mask`` ``(B, L)`` (``(B, past + L)`` with a ``cache``), 1 = real;
        ``image`` ``(B, N, vision_dim)`` for ``grounded`` and ``decoder``; ``cache`` (decoder only, from
        :meth:`new_cache`) holds the keys/values of earlier tokens and the image's, computed once."""
        cfg = self.cfg
        check_choice(mode, MED_MODES, "mode")
        device = self.word_emb.weight.device
        ids = check_tokens(input_ids, vocab_size=cfg.vocab_size, device=device)
        batch, n = ids.shape
        if cache is not None and (mode != "decoder" or len(cache) != cfg.depth):
            raise ValueError(f"a cache is for the decoder and holds one KVCache per layer ({cfg.depth})")
        past = len(cache[0]) if cache is not None else 0
        if past + n > cfg.max_positions:
            raise ValueError(f"input_ids: {past + n} tokens ({past} cached), more than the MED's "
                             f"{cfg.max_positions} positions")
        if mode != "text":
            if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[-1] != cfg.vision_dim \
                    or len(image) != batch:
                raise ValueError(f"mode {mode!r} reads the image: pass image features ({batch}, N, {cfg.vision_dim}), "
                                 f"got {tuple(image.shape) if isinstance(image, torch.Tensor) else image}")
        if attention_mask is not None:
            attention_mask = check_mask(attention_mask, shape=(batch, past + n), device=device)
        mask = build_attention_mask(batch=batch, q_len=n, k_len=past + n, device=device, causal=mode == "decoder",
                                    key_padding_mask=attention_mask)
        if mask is not None:
            mask = mask.expand(batch, 1, n, past + n)
        x = self.word_emb(ids) + self.pos_emb(torch.arange(past, past + n, device=device))
        x = self.drop(self.ln_embed(x))
        for i, layer in enumerate(self.layers):
            x = layer(x, mode, mask, image, image_mask, cache[i] if cache is not None else None)
        return x

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-token logits ``(B, L, vocab)`` from decoder hidden states."""
        if self.lm_head is None:
            raise ValueError("this MED has no LM head (lm_head=False): it encodes, it does not generate")
        return self.lm_head(hidden)
