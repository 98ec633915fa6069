"""Positional encodings: learned tables, 2-D sin-cos (MAE-style) and rotary embeddings (RoPE).

Explained in notebook 02, §Positions.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn


def learned_positions(num_positions: int, dim: int, std: float = 0.02) -> nn.Parameter:
    """A learned position table ``(num_positions, dim)``, initialised N(0, std^2)."""
    return nn.Parameter(torch.randn(num_positions, dim) * std)


def sincos_1d(positions: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """Transformer sin-cos features of shape ``(len(positions), dim)``: first half sin, second half cos."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding dim must be even, got {dim}")
    omega = 1.0 / base ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.double()[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def sincos_2d(grid_h: int, grid_w: int, dim: int, cls_token: bool = False) -> torch.Tensor:
    """Fixed 2-D sin-cos positions as in MAE: half the channels encode the row, half the column.

    Returns ``(grid_h * grid_w [+1], dim)`` in row-major patch order; the CLS position (first row,
    when ``cls_token``) is all zeros, as in MAE.
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding dim must be divisible by 4, got {dim}")
    ys, xs = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    # MAE puts the width coordinate first, then the height coordinate.
    emb = torch.cat([sincos_1d(xs.flatten(), dim // 2), sincos_1d(ys.flatten(), dim // 2)], dim=1)
    if cls_token:
        emb = torch.cat([torch.zeros(1, dim), emb], dim=0)
    return emb


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``[x1, x2] -> [-x2, x1]`` on the last dim (Llama / GPT-NeoX convention)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (Su et al., 2021) with ``transformers``' Llama convention.

    ``forward(position_ids)`` gives ``cos, sin`` of shape ``(B, L, dim_head)``; :meth:`rotate`
    rotates queries or keys shaped ``(B, heads, L, dim_head)``. Holds no learnable weights.
    """

    def __init__(self, dim_head: int, theta: float = 10000.0) -> None:
        super().__init__()
        if dim_head % 2:
            raise ValueError(f"RoPE needs an even head dim, got {dim_head}")
        self.dim_head = dim_head
        self.theta = theta
        self.register_buffer("inv_freq", self._inv_freq(), persistent=False)

    def _inv_freq(self, device: torch.device | str | None = None) -> torch.Tensor:
        return 1.0 / self.theta ** (torch.arange(0, self.dim_head, 2, dtype=torch.float, device=device) / self.dim_head)

    def _apply(self, fn, recurse=True):
        """Moves follow the module, casts do not: ``model.to(torch.bfloat16)`` keeps ``inv_freq`` in float32 (as
        ``transformers`` does); rounded to bf16 it puts far positions at the wrong angles."""
        super()._apply(fn, recurse)
        if self.inv_freq.dtype != torch.float32:
            self.inv_freq = self._inv_freq(self.inv_freq.device)
        return self

    def forward(self, position_ids: torch.Tensor,
                dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq.to(position_ids.device)
        emb = torch.cat([freqs, freqs], dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)

    @staticmethod
    def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        cos, sin = rearrange(cos, "b n d -> b 1 n d"), rearrange(sin, "b n d -> b 1 n d")
        return x * cos + rotate_half(x) * sin

    def extra_repr(self) -> str:
        return f"dim_head={self.dim_head}, theta={self.theta}"
