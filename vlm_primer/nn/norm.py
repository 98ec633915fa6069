"""Normalisation layers: LayerNorm (GPT/CLIP/ViT) and RMSNorm (Llama).

Explained in notebook 02, §Transformer blocks.
"""

from __future__ import annotations

import torch
from torch import nn

from vlm_primer.validate import check_choice

NORMS = ("layernorm", "rmsnorm")


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich, 2019) as in Llama: ``w * x / sqrt(mean(x^2) + eps)``.

    Computed in float32 and cast back, like ``transformers``' ``LlamaRMSNorm``.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.eps}"


def make_norm(kind: str, dim: int, eps: float = 1e-5) -> nn.Module:
    """``"layernorm"`` -> ``nn.LayerNorm``, ``"rmsnorm"`` -> :class:`RMSNorm`."""
    check_choice(kind, NORMS, "norm")
    return nn.LayerNorm(dim, eps=eps) if kind == "layernorm" else RMSNorm(dim, eps=eps)
