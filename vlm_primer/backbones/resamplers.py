"""Learned-query bottlenecks: a fixed number of queries read a variable number of image features.

Explained in notebook 05b, §The connector family tree. Both turn ``(B, N, vision_dim)`` patch features into
``num_queries`` tokens, so the language model's cost no longer grows with the image's resolution:

* :class:`PerceiverResampler` (Flamingo, Alayrac et al. 2022, §2.1; ``transformers``' Idefics layout): a stack
  of pre-LN blocks in which learned latents attend to ``[features; latents]``, each block followed by an MLP
  (images only: Flamingo adds learned time embeddings to a video's frames first, IDEFICS has none);
* :class:`QwenResampler` (Qwen-VL, Bai et al. 2023, §2.1): **one** cross-attention layer; the learned queries
  (256 in the paper) and the keys both get fixed 2-D sin-cos positions, so a query knows where it looks.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from vlm_primer.nn import MLP, Attention, sincos_2d

__all__ = ["PerceiverResampler", "QwenResampler", "grid_positions"]


class PerceiverBlock(nn.Module):
    """One perceiver block: ``latents += attn(LN(latents), [LN(features); LN(latents)])``, then
    ``latents += MLP(LN(latents))`` (ReLU, 4x wide, no biases)."""

    def __init__(self, dim: int, heads: int, dim_head: int, qk_norm: bool, eps: float) -> None:
        super().__init__()
        self.ln_context = nn.LayerNorm(dim, eps=eps)
        self.ln_latents = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads, dim_head, qkv_bias=False, out_bias=False,
                              qk_norm="layernorm" if qk_norm else None, qk_eps=eps)
        self.ln_mlp = nn.LayerNorm(dim, eps=eps)
        self.mlp = MLP(dim, 4 * dim, act="relu", bias=False)

    def forward(self, features: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        lat = self.ln_latents(latents)
        latents = latents + self.attn(lat, context=torch.cat([self.ln_context(features), lat], dim=1))
        return latents + self.mlp(self.ln_mlp(latents))


class PerceiverResampler(nn.Module):
    """Flamingo's perceiver resampler: ``num_latents`` learned latents, ``depth`` :class:`PerceiverBlock` s over
    the same image features, a final LayerNorm. Works at the features' width ``dim``; ``qk_norm`` adds IDEFICS'
    per-head LayerNorms on queries and keys. Weight for weight ``transformers``' ``IdeficsPerceiverResampler``."""

    def __init__(self, dim: int, depth: int = 6, num_latents: int = 64, heads: int = 16, dim_head: int = 96,
                 qk_norm: bool = False, eps: float = 1e-5) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.randn(num_latents, dim))
        self.blocks = nn.ModuleList(PerceiverBlock(dim, heads, dim_head, qk_norm, eps) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, N, dim)`` features of any length -> ``(B, num_latents, dim)``."""
        features = _check_features(features, self.latents.shape[1])
        latents = repeat(self.latents, "q d -> b q d", b=features.shape[0])
        for block in self.blocks:
            latents = block(features, latents)
        return self.norm(latents)


def _check_features(features: Any, dim: int) -> torch.Tensor:
    if not isinstance(features, torch.Tensor) or features.ndim != 3 or features.shape[-1] != dim \
            or not features.is_floating_point() or 0 in features.shape:
        raise ValueError(f"features must be float image features (B, N, {dim}), got "
                         f"{tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__}")
    return features


def grid_positions(table: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """A square position table ``(g*g, D)`` resized to ``num_tokens`` = ``s*s`` positions by bicubic
    interpolation (Qwen-VL's ``get_abs_pos``); returned unchanged when ``s == g``."""
    g, s = math.isqrt(table.shape[0]), math.isqrt(num_tokens)
    if g * g != table.shape[0] or s * s != num_tokens:
        raise ValueError(f"2-D positions need square grids, got {table.shape[0]} and {num_tokens} tokens")
    if g == s:
        return table
    grid = rearrange(table, "(h w) d -> 1 d h w", h=g)
    return rearrange(F.interpolate(grid.float(), size=(s, s), mode="bicubic", align_corners=False),
                     "1 d h w -> (h w) d").to(table.dtype)


class QwenResampler(nn.Module):
    """Qwen-VL's position-aware adapter: ``num_queries`` (a square number) learned queries, one cross-attention
    over the projected, normalised features, then ``ln_post`` and a projection into the LM's width.

    ``attn(LN_q(queries) + pos_q, keys=LN_kv(W x) + pos_k, values=LN_kv(W x))``: positions are added to queries
    and keys only. The resampler works at the LM's width ``dim`` (4,096 in the paper, 128-wide heads).
    """

    def __init__(self, vision_dim: int, dim: int, num_queries: int = 256, heads: int | None = None,
                 eps: float = 1e-6) -> None:
        super().__init__()
        grid = math.isqrt(num_queries)
        if grid * grid != num_queries:
            raise ValueError(f"Qwen-VL's queries sit on a square grid: num_queries={num_queries} is not a square")
        heads = heads or max(1, dim // 128)
        self.query = nn.Parameter(torch.randn(num_queries, dim) * 0.02)
        self.register_buffer("pos", sincos_2d(grid, grid, dim), persistent=False)
        self.kv_proj = nn.Linear(vision_dim, dim, bias=False)
        self.ln_q = nn.LayerNorm(dim, eps=eps)
        self.ln_kv = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads)
        self.ln_post = nn.LayerNorm(dim, eps=eps)
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, N, vision_dim)`` on a square grid -> ``(B, num_queries, dim)``."""
        x = self.ln_kv(self.kv_proj(_check_features(features, self.kv_proj.in_features)))
        queries = repeat(self.ln_q(self.query) + self.pos, "q d -> b q d", b=x.shape[0])
        keys = x + grid_positions(self.pos, x.shape[1]).to(x.dtype)
        return self.proj(self.ln_post(self.attn(queries, context=keys, value=x)))
