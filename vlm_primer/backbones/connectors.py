"""Connectors: what maps a vision tower's patch features into a language model's embedding space.

Explained in notebook 05, §Connectors (reused by 05b and 06). Each takes ``(B, N, vision_dim)`` patch
features and returns ``(B, N', text_dim)`` tokens for the language model:

* ``linear``: one linear map (LLaVA-1.0, Liu et al. 2023);
* ``mlp``: linear, GELU, linear (LLaVA-1.5; ``transformers``' ``LlavaMultiModalProjector``);
* ``pixel_shuffle``: fold each ``f x f`` block of patches into one token of ``f^2`` times the width,
  then the MLP: ``f^2`` times fewer image tokens (Idefics3, nanoVLM; both follow the shuffle with one bias-free
  linear layer instead of the MLP);
* learned-query bottlenecks, ``num_queries`` tokens whatever the image (notebook 05b): ``qformer`` (BLIP-2's
  Q-Former reading the patches, then a linear map), ``perceiver`` (Flamingo's perceiver resampler, then a
  linear map), ``resampler`` (Qwen-VL's one cross-attention layer with 2-D positions).
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import nn

from vlm_primer.nn.mlp import activation
from vlm_primer.validate import check_choice, check_int

__all__ = ["CONNECTORS", "QUERY_CONNECTORS", "LinearConnector", "MLPConnector", "PixelShuffleConnector",
           "QueryConnector", "build_connector", "pixel_shuffle"]

CONNECTORS = ("linear", "mlp", "pixel_shuffle", "qformer", "perceiver", "resampler")
QUERY_CONNECTORS = ("qformer", "perceiver", "resampler")


class LinearConnector(nn.Module):
    """LLaVA-1.0: ``W x + b``."""

    def __init__(self, vision_dim: int, text_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(vision_dim, text_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.proj(features)


class MLPConnector(nn.Module):
    """LLaVA-1.5: ``fc2(gelu(fc1(x)))``, both layers ``text_dim`` wide."""

    def __init__(self, vision_dim: int, text_dim: int, act: str = "gelu") -> None:
        super().__init__()
        self.fc1 = nn.Linear(vision_dim, text_dim)
        self.act = activation(act)
        self.fc2 = nn.Linear(text_dim, text_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(features)))


def pixel_shuffle(features: torch.Tensor, factor: int) -> torch.Tensor:
    """``(B, h*w, D)`` on a square grid -> ``(B, h*w / f^2, f^2 * D)``: each ``f x f`` block of
    neighbouring patches becomes one token (the channel order of Idefics3's ``pixel_shuffle``)."""
    check_int(factor, "pixel_shuffle's factor")
    n = features.shape[1]
    side = math.isqrt(n)
    if side * side != n or side % factor:
        raise ValueError(f"pixel_shuffle needs a square grid whose side is divisible by {factor}, got {n} tokens")
    return rearrange(features, "b (h s1 w s2) d -> b (h w) (s1 s2 d)", h=side // factor, s1=factor, s2=factor)


class PixelShuffleConnector(nn.Module):
    """Token compression: :func:`pixel_shuffle` by ``factor``, then the LLaVA-1.5 MLP."""

    def __init__(self, vision_dim: int, text_dim: int, factor: int = 2, act: str = "gelu") -> None:
        super().__init__()
        self.factor = factor
        self.mlp = MLPConnector(vision_dim * factor**2, text_dim, act)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(pixel_shuffle(features, self.factor))


class QueryConnector(nn.Module):
    """A learned-query bottleneck as LLaVA's connector: ``num_queries`` tokens, whatever the number of patches.
    ``kind``: ``qformer`` (a ``depth``-layer Q-Former of the LM's width reading the patches, then ``proj``),
    ``perceiver`` (a ``depth``-block perceiver resampler at the tower's width, then ``proj``) or ``resampler``
    (Qwen-VL's single cross-attention at the LM's width, its own projection)."""

    def __init__(self, kind: str, vision_dim: int, text_dim: int, *, num_queries: int, depth: int = 2,
                 heads: int = 4) -> None:
        super().__init__()
        from vlm_primer.backbones.qformer import QFormer, QFormerConfig
        from vlm_primer.backbones.resamplers import PerceiverResampler, QwenResampler

        check_choice(kind, QUERY_CONNECTORS, "connector")
        self.kind = kind
        if kind == "qformer":
            self.bottleneck = QFormer(QFormerConfig(dim=text_dim, depth=depth, heads=heads, mlp_dim=4 * text_dim,
                                                    num_queries=num_queries, vision_dim=vision_dim, text_input=False))
            self.proj = nn.Linear(text_dim, text_dim)
        elif kind == "perceiver":
            self.bottleneck = PerceiverResampler(vision_dim, depth, num_queries, heads, vision_dim // heads)
            self.proj = nn.Linear(vision_dim, text_dim)
        else:
            self.bottleneck = QwenResampler(vision_dim, text_dim, num_queries, heads)
            self.proj = nn.Identity()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.proj(self.bottleneck(features))


def build_connector(kind: str, vision_dim: int, text_dim: int, *, factor: int = 2, act: str = "gelu",
                    num_queries: int = 32, depth: int = 2, heads: int = 4) -> nn.Module:
    """The connector called ``kind`` (one of :data:`CONNECTORS`); ``num_queries``, ``depth`` and ``heads`` shape
    the learned-query ones (:class:`QueryConnector`)."""
    check_choice(kind, CONNECTORS, "connector")
    if kind in QUERY_CONNECTORS:
        return QueryConnector(kind, vision_dim, text_dim, num_queries=num_queries, depth=depth, heads=heads)
    if kind == "linear":
        return LinearConnector(vision_dim, text_dim)
    if kind == "mlp":
        return MLPConnector(vision_dim, text_dim, act)
    return PixelShuffleConnector(vision_dim, text_dim, factor, act)
