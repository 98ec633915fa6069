"""Turning a token sequence into one vector: CLS, mean, and multi-head attention pooling (MAP).

Explained in notebook 02, §Pooling.
"""

from __future__ import annotations

import torch
from einops import repeat
from torch import nn

from vlm_primer.nn.attention import Attention
from vlm_primer.nn.mlp import MLP


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over dim 1 of ``x`` ``(B, L, D)``, counting only positions where ``mask`` ``(B, L)`` is true."""
    if mask is None:
        return x.mean(dim=1)
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


class AttentionPool(nn.Module):
    """Multi-head attention pooling (MAP) head, as in SigLIP / ViT-g (Zhai et al., 2022).

    A learned ``probe`` query attends over the tokens; then ``h + mlp(norm(h))``. The layout matches
    ``transformers``' ``SiglipMultiheadAttentionPoolingHead`` (``probe``, ``attention``, ``layernorm``,
    ``mlp``) with our ``attn``/``norm``/``mlp`` names; its packed ``in_proj_weight`` splits into
    ``attn.q/k/v``. Returns ``(B, D)`` for one query, ``(B, num_queries, D)`` otherwise.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float = 4.0,
        *,
        act: str = "gelu_tanh",
        eps: float = 1e-6,
        num_queries: int = 1,
        mlp_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.num_queries = num_queries
        self.probe = nn.Parameter(torch.randn(1, num_queries, dim) * dim**-0.5)
        self.attn = Attention(dim, heads)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.mlp = MLP(dim, mlp_dim or int(dim * mlp_ratio), act=act)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        probe = repeat(self.probe, "1 q d -> b q d", b=x.shape[0])
        h = self.attn(probe, context=x, key_padding_mask=key_padding_mask)
        h = h + self.mlp(self.norm(h))
        return h[:, 0] if self.num_queries == 1 else h
