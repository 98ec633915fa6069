"""Pre-LN transformer block and a stack of them (encoder, causal decoder, optional cross-attention).

Explained in notebook 02, §Transformer blocks.
"""

from __future__ import annotations

import torch
from torch import nn

from vlm_primer.nn.attention import Attention, KVCache
from vlm_primer.nn.mlp import MLP
from vlm_primer.nn.norm import make_norm
from vlm_primer.nn.pos import RotaryEmbedding


class TransformerBlock(nn.Module):
    """Pre-LN block: ``x + attn(ln1(x))``, [``x + xattn(ln_x(x), context)``], ``x + mlp(ln2(x))``.

    ``post_norm=True`` gives BERT's post-LN block instead, each sub-layer normalised *after* its residual
    sum: ``ln1(x + attn(x))``, [``ln_x(x + xattn(x, context))``], ``ln2(x + mlp(x))``; same parameters.
    ``cross_attn=True`` adds a cross-attention sub-layer over ``context`` (``context_dim`` wide).
    ``gated_xattn=True`` multiplies the cross-attention output by ``tanh(gate)`` with ``gate``
    initialised to zero (Flamingo-style), so the block starts out as the plain language-model block.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float = 4.0,
        *,
        act: str = "gelu",
        causal: bool = False,
        cross_attn: bool = False,
        context_dim: int | None = None,
        norm: str = "layernorm",
        eps: float = 1e-5,
        qkv_bias: bool = True,
        out_bias: bool = True,
        mlp_bias: bool = True,
        mlp_dim: int | None = None,
        dim_head: int | None = None,
        kv_heads: int | None = None,
        dropout: float = 0.0,
        rope: RotaryEmbedding | None = None,
        gated_xattn: bool = False,
        post_norm: bool = False,
    ) -> None:
        super().__init__()
        self.post_norm = post_norm
        self.ln1 = make_norm(norm, dim, eps)
        self.attn = Attention(
            dim, heads, dim_head, kv_heads=kv_heads, qkv_bias=qkv_bias, out_bias=out_bias,
            causal=causal, dropout=dropout, rope=rope,
        )
        self.cross_attn = cross_attn
        if cross_attn:
            self.ln_x = make_norm(norm, dim, eps)
            self.xattn = Attention(
                dim, heads, dim_head, kv_dim=context_dim or dim, qkv_bias=qkv_bias, out_bias=out_bias, dropout=dropout
            )
            self.xattn_gate = nn.Parameter(torch.zeros(1)) if gated_xattn else None
        self.ln2 = make_norm(norm, dim, eps)
        self.mlp = MLP(dim, mlp_dim or int(dim * mlp_ratio), act=act, bias=mlp_bias)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``key_padding_mask`` (B, Lk) masks self-attention keys; ``context_mask`` (B, Lc) masks the
        cross-attention context (True = real)."""
        x = self._residual(x, self.ln1, lambda h: self.attn(h, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                                                           kv_cache=kv_cache, position_ids=position_ids))
        if self.cross_attn:
            if context is None:
                raise ValueError("this block has cross-attention: pass context=(B, Lc, context_dim)")

            def xattn(h: torch.Tensor) -> torch.Tensor:
                h = self.xattn(h, context=context, key_padding_mask=context_mask,
                               kv_cache=kv_cache.cross if kv_cache is not None else None)
                return h if self.xattn_gate is None else torch.tanh(self.xattn_gate) * h
            x = self._residual(x, self.ln_x, xattn)
        return self._residual(x, self.ln2, self.mlp)

    def _residual(self, x: torch.Tensor, ln: nn.Module, f) -> torch.Tensor:
        """One sub-layer and its residual: ``x + f(ln(x))`` (pre-LN) or ``ln(x + f(x))`` (post-LN)."""
        return ln(x + self.drop(f(x))) if self.post_norm else x + self.drop(f(ln(x)))


class Transformer(nn.Module):
    """A stack of ``depth`` :class:`TransformerBlock` s in ``self.blocks``.

    ``cross_attn_every=n`` (> 0) puts cross-attention in every ``n``-th block (blocks ``n-1, 2n-1, ...``);
    ``cross_attn=True`` puts it in every block. Other keyword arguments go to each block.
    ``inserted`` (empty unless a model adds to it) holds layers run *before* block ``int(key)`` with
    ``(x, context, context_mask)``: Flamingo's gated cross-attention between a frozen LM's blocks.
    """

    def __init__(self, depth: int, dim: int, heads: int, mlp_ratio: float = 4.0, *, cross_attn: bool = False,
                 cross_attn_every: int = 0, **block_kwargs) -> None:
        super().__init__()
        def has_x(i: int) -> bool:
            return cross_attn or (cross_attn_every > 0 and (i + 1) % cross_attn_every == 0)
        self.blocks = nn.ModuleList(
            [TransformerBlock(dim, heads, mlp_ratio, cross_attn=has_x(i), **block_kwargs) for i in range(depth)]
        )
        self.inserted = nn.ModuleDict()

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        kv_caches: list[KVCache] | None = None,
        position_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """Returns ``(x, hidden_states)``; ``hidden_states`` is the input followed by every block's
        output (``depth + 1`` tensors) when ``output_hidden_states``, else ``None``."""
        hidden = [x] if output_hidden_states else None
        for i, block in enumerate(self.blocks):
            if str(i) in self.inserted:
                x = self.inserted[str(i)](x, context, context_mask)
            x = block(x, context=context, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                      context_mask=context_mask, kv_cache=kv_caches[i] if kv_caches is not None else None,
                      position_ids=position_ids)
            if hidden is not None:
                hidden.append(x)
        return x, tuple(hidden) if hidden is not None else None


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """GPT-2/ViT-style init, applied with ``model.apply(init_weights)``: Linear and Embedding weights
    N(0, std^2), Linear biases zero. Norms, CLS tokens, probes and gates keep their own init."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=std)
