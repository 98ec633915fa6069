"""Multi-head attention (self, causal, cross) on top of ``F.scaled_dot_product_attention``.

The projections are four separate ``nn.Linear`` layers named ``q``, ``k``, ``v`` and ``out`` so
that converting weights from ``transformers`` (CLIP, SigLIP, Llama) is a rename.
Explained in notebook 02, §Attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from vlm_primer.nn.norm import make_norm
from vlm_primer.nn.pos import RotaryEmbedding


class KVCache:
    """Keys and values of one attention layer for incremental decoding, shaped ``(B, kv_heads, L, d)``.

    A self-attention cache grows by the new tokens at every step. ``cross`` is the same layer's
    cross-attention cache: the context (an image) does not change while a caption is decoded, so its keys
    and values are computed at the first step and reused after (a cache belongs to one context).
    :meth:`reorder` keeps the rows a beam search continues. Explained in notebook 04, §KV cache.
    """

    def __init__(self) -> None:
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self._cross: KVCache | None = None

    @property
    def cross(self) -> "KVCache":
        if self._cross is None:
            self._cross = KVCache()
        return self._cross

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows ``index`` (in that order), here and in the cross-attention cache."""
        if self.k is not None:
            self.k, self.v = self.k.index_select(0, index), self.v.index_select(0, index)
        if self._cross is not None:
            self._cross.reorder(index)

    def __len__(self) -> int:
        return 0 if self.k is None else self.k.shape[2]

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the new keys/values and return everything cached so far."""
        self.k = k if self.k is None else torch.cat([self.k, k], dim=2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
        return self.k, self.v


def build_attention_mask(
    *,
    batch: int,
    q_len: int,
    k_len: int,
    device: torch.device,
    causal: bool = False,
    attn_mask: torch.Tensor | None = None,
    key_padding_mask: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """Combine a causal mask, a key padding mask and an explicit mask into one SDPA mask.

    Boolean masks use True = "may attend". A float ``attn_mask`` is additive. The causal mask is
    aligned to the *end* of the keys, so with a KV cache query ``i`` sees keys ``<= k_len - q_len + i``.
    Rows with no visible key (boolean all False, or additive all ``-inf``) would give NaN in SDPA; they
    are allowed to see every key instead (their outputs are padding and are ignored downstream). Returns ``None`` when nothing is masked.
    """
    mask: torch.Tensor | None = None  # bool, broadcastable to (B, 1|H, Lq, Lk)
    if causal:
        mask = torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(diagonal=k_len - q_len)
        mask = rearrange(mask, "q k -> 1 1 q k")
    if key_padding_mask is not None:
        if key_padding_mask.shape != (batch, k_len):
            raise ValueError(
                f"key_padding_mask must have shape (B, Lk) = {(batch, k_len)}, got {tuple(key_padding_mask.shape)}"
            )
        kpm = rearrange(key_padding_mask.bool(), "b k -> b 1 1 k")
        mask = kpm if mask is None else mask & kpm
    additive = None
    if attn_mask is not None:
        if attn_mask.ndim == 3:
            attn_mask = rearrange(attn_mask, "b q k -> b 1 q k")
        if attn_mask.ndim not in (2, 4) or attn_mask.shape[-2:] != (q_len, k_len):
            raise ValueError(
                f"attn_mask must be (Lq, Lk), (B, Lq, Lk) or (B, H, Lq, Lk) with Lq={q_len}, Lk={k_len}, "
                f"got {tuple(attn_mask.shape)}"
            )
        if attn_mask.dtype == torch.bool:
            mask = attn_mask if mask is None else mask & attn_mask
        else:
            additive = attn_mask
    if mask is not None:
        mask = mask | ~mask.any(dim=-1, keepdim=True)  # fully masked rows: see everything, avoid NaN
        if additive is None:
            return mask
        additive = additive.masked_fill(~mask, torch.finfo(additive.dtype).min)
    if additive is not None:  # a float row of only -inf gives NaN too: it sees every key, as above
        additive = additive.masked_fill(torch.isneginf(additive).all(dim=-1, keepdim=True), 0.0)
    return additive


class Attention(nn.Module):
    """Multi-head attention: self-attention, causal self-attention or cross-attention.

    ``forward(x, context=None, ...)``: queries from ``x`` ``(B, Lq, dim)``; keys and values from
    ``context`` ``(B, Lk, kv_dim)`` (cross-attention) or from ``x`` (self-attention).
    ``kv_heads < heads`` gives grouped-query attention (Llama-2/3), ``rope`` a
    :class:`~vlm_primer.nn.pos.RotaryEmbedding` applied to queries and keys; ``qk_norm``
    (``"layernorm"`` or ``"rmsnorm"``) normalises each head's queries and keys before the dot product
    (``q_norm``, ``k_norm``; IDEFICS' cross-attention and perceiver).
    Explained in notebook 02, §Attention.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        dim_head: int | None = None,
        *,
        kv_dim: int | None = None,
        kv_heads: int | None = None,
        qkv_bias: bool = True,
        out_bias: bool = True,
        causal: bool = False,
        dropout: float = 0.0,
        rope: RotaryEmbedding | None = None,
        qk_norm: str | None = None,
        qk_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if dim_head is None:
            if dim % heads:
                raise ValueError(f"dim={dim} is not divisible by heads={heads}; pass dim_head explicitly")
            dim_head = dim // heads
        kv_heads = heads if kv_heads is None else kv_heads
        if heads % kv_heads:
            raise ValueError(f"heads={heads} must be a multiple of kv_heads={kv_heads}")
        kv_dim = dim if kv_dim is None else kv_dim
        self.heads, self.kv_heads, self.dim_head = heads, kv_heads, dim_head
        self.causal, self.dropout = causal, dropout
        self.q = nn.Linear(dim, heads * dim_head, bias=qkv_bias)
        self.k = nn.Linear(kv_dim, kv_heads * dim_head, bias=qkv_bias)
        self.v = nn.Linear(kv_dim, kv_heads * dim_head, bias=qkv_bias)
        self.out = nn.Linear(heads * dim_head, dim, bias=out_bias)
        self.rope = rope
        self.q_norm = make_norm(qk_norm, dim_head, qk_eps) if qk_norm else None
        self.k_norm = make_norm(qk_norm, dim_head, qk_eps) if qk_norm else None

    def attention_weights(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """The softmax weights ``(B, heads, Lq, Lk)`` of queries from ``x`` over keys from ``context`` (or ``x``),
        as ``forward`` computes them without masks, RoPE or a cache: what the plots of attention maps show."""
        src = x if context is None else context
        q = rearrange(self.q(x), "b n (h d) -> b h n d", h=self.heads)
        k = rearrange(self.k(src), "b n (h d) -> b h n d", h=self.kv_heads)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        k = repeat(k, "b h n d -> b (h r) n d", r=self.heads // self.kv_heads)
        return torch.softmax(q @ k.transpose(-1, -2) * self.dim_head**-0.5, dim=-1)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        position_ids: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``key_padding_mask`` ``(B, Lk)`` bool, True = real token; with a ``kv_cache`` it covers
        the cached keys plus the new ones. ``position_ids`` ``(B, Lq)`` are used by RoPE (default:
        ``len(kv_cache) + arange(Lq)``). ``value``: cross-attention whose values differ from its keys
        (``context``), e.g. keys with positions added and values without (Qwen-VL's resampler).
        Cross-attention with a ``kv_cache``: the context's keys/values are computed once, then reused."""
        if x.ndim != 3:
            raise ValueError(f"attention input must be (B, L, dim), got shape {tuple(x.shape)}")
        is_cross = context is not None
        src = context if is_cross else x
        q = rearrange(self.q(x), "b n (h d) -> b h n d", h=self.heads)
        if self.q_norm is not None:
            q = self.q_norm(q)
        if is_cross and kv_cache is not None and kv_cache.k is not None:
            k, v = kv_cache.k, kv_cache.v  # the context's keys/values from the first step
        else:
            k = rearrange(self.k(src), "b n (h d) -> b h n d", h=self.kv_heads)
            v = rearrange(self.v(src if value is None else value), "b n (h d) -> b h n d", h=self.kv_heads)
            if self.k_norm is not None:
                k = self.k_norm(k)
            if is_cross and kv_cache is not None:
                kv_cache.update(k, v)

        if self.rope is not None and not is_cross:
            if position_ids is None:
                past = len(kv_cache) if kv_cache is not None else 0
                position_ids = torch.arange(past, past + x.shape[1], device=x.device).expand(x.shape[0], -1)
            cos, sin = self.rope(position_ids, dtype=q.dtype)
            q, k = RotaryEmbedding.rotate(q, cos, sin), RotaryEmbedding.rotate(k, cos, sin)
        if kv_cache is not None and not is_cross:
            k, v = kv_cache.update(k, v)
        if self.kv_heads != self.heads:  # grouped-query attention: share each k/v head
            k = repeat(k, "b h n d -> b (h r) n d", r=self.heads // self.kv_heads)
            v = repeat(v, "b h n d -> b (h r) n d", r=self.heads // self.kv_heads)

        causal = self.causal and not is_cross
        q_len, k_len = q.shape[2], k.shape[2]
        dropout_p = self.dropout if self.training else 0.0
        if causal and attn_mask is None and key_padding_mask is None and q_len == k_len:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p)
        else:
            mask = build_attention_mask(
                batch=x.shape[0], q_len=q_len, k_len=k_len, device=x.device, causal=causal,
                attn_mask=attn_mask, key_padding_mask=key_padding_mask,
            )
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        return self.out(rearrange(out, "b h n d -> b n (h d)"))
