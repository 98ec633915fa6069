"""Vision Transformer (Dosovitskiy et al., 2021): patchify, add positions, pre-LN blocks, pool.

One class covers ViT, CLIP's image tower (CLS + ``ln_pre`` + ``ln_post`` on the pooled token) and
SigLIP's (no CLS, final norm on all tokens, MAP head). Explained in notebook 02, §ViT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from einops import rearrange, repeat
from torch import nn

from vlm_primer.config import PresetConfig
from vlm_primer.nn.pooling import AttentionPool
from vlm_primer.nn.pos import learned_positions, sincos_2d
from vlm_primer.nn.transformer import Transformer, init_weights
from vlm_primer.validate import check_choice, check_mlp_width, check_images


@dataclass
class ViTConfig(PresetConfig):
    image_size: int = 64
    patch_size: int = 8
    channels: int = 3
    dim: int = 64
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    mlp_dim: int | None = None    # overrides dim * mlp_ratio (transformers' intermediate_size)
    act: str = "gelu"             # gelu | quick_gelu (OpenAI CLIP) | gelu_tanh (SigLIP) | relu | swiglu
    cls_token: bool = True
    pos_emb: str = "learned"      # learned | sincos (fixed 2-D, MAE)
    pre_norm: bool = False        # CLIP's ln_pre after the embeddings
    final_norm: bool = True
    final_norm_on: str = "tokens"  # tokens: norm every output token | pooled: only the pooled vector (CLIP)
    pool: str = "cls"             # cls | mean | map | none
    eps: float = 1e-6
    qkv_bias: bool = True
    patch_bias: bool = True       # OpenAI CLIP's conv1 has no bias
    dropout: float = 0.0

    PRESETS: ClassVar[dict] = {
        "tiny": dict(image_size=64, patch_size=8, dim=64, depth=4, heads=4),
        "small": dict(image_size=128, patch_size=16, dim=384, depth=6, heads=6),
        "base": dict(image_size=224, patch_size=16, dim=768, depth=12, heads=12),
        "b32": dict(image_size=224, patch_size=32, dim=768, depth=12, heads=12),
        # OpenAI CLIP ViT-B/16 image tower (as in transformers' CLIPVisionModel)
        "clip_b16": dict(image_size=224, patch_size=16, dim=768, depth=12, heads=12, act="quick_gelu",
                         pre_norm=True, final_norm_on="pooled", eps=1e-5, patch_bias=False),
        # SigLIP ViT-B/16 image tower (as in transformers' SiglipVisionModel)
        "siglip_b16": dict(image_size=224, patch_size=16, dim=768, depth=12, heads=12, act="gelu_tanh",
                           cls_token=False, pool="map", eps=1e-6),
    }

    BOUNDS: ClassVar[dict] = dict(image_size=">0", patch_size=">0", channels=">0", dim=">0", depth=">0",
                                  heads=">0", mlp_ratio="(0, 64]", mlp_dim=">0", eps=">0", dropout="[0, 1)")

    def validate(self) -> None:
        check_mlp_width(self)
        check_choice(self.pos_emb, ("learned", "sincos"), "pos_emb")
        check_choice(self.pool, ("cls", "mean", "map", "none"), "pool")
        check_choice(self.final_norm_on, ("tokens", "pooled"), "final_norm_on")
        if self.patch_size > self.image_size:
            raise ValueError(f"patch_size={self.patch_size} is larger than image_size={self.image_size}")
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} is not divisible by heads={self.heads}")
        if self.pool == "cls" and not self.cls_token:
            raise ValueError("pool='cls' needs cls_token=True")
        if self.final_norm_on == "pooled" and self.pool == "none":
            raise ValueError("final_norm_on='pooled' needs a pool other than 'none'")

    @property
    def grid(self) -> int:
        """Patches per side. When ``patch_size`` does not divide ``image_size`` the patch convolution drops the
        last ``image_size % patch_size`` rows and columns, as ``transformers`` does (SigLIP so400m: 384 px in
        14 px patches, a 27 x 27 grid over the first 378 px); models that rebuild pixels refuse it
        (:meth:`check_whole_patches`)."""
        return self.image_size // self.patch_size

    def check_whole_patches(self, who: str) -> None:
        """Raise unless the patches tile the image exactly (what MAE's and MaskVLM's pixel targets need)."""
        if self.image_size % self.patch_size:
            raise ValueError(f"{who} rebuilds every pixel from patches: image_size={self.image_size} must be a "
                             f"multiple of patch_size={self.patch_size}")

    @property
    def num_patches(self) -> int:
        return self.grid**2


@dataclass
class ViTOutput:
    last_hidden_state: torch.Tensor            # (B, N [+1], dim)
    pooled: torch.Tensor | None                 # (B, dim), None for pool="none"
    hidden_states: tuple[torch.Tensor, ...] | None = None  # input to block 1, then every block's output


class ViT(nn.Module):
    """Vision Transformer image encoder. Explained in notebook 02, §ViT."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        # Patchify + linear projection in one strided convolution (same as Rearrange + Linear).
        self.patch_embed = nn.Conv2d(cfg.channels, d, kernel_size=cfg.patch_size, stride=cfg.patch_size,
                                     bias=cfg.patch_bias)
        self.cls = nn.Parameter(torch.randn(d) * d**-0.5) if cfg.cls_token else None
        n_pos = cfg.num_patches + int(cfg.cls_token)
        if cfg.pos_emb == "learned":
            self.pos_emb = learned_positions(n_pos, d)
        else:
            pos = sincos_2d(cfg.grid, cfg.grid, d, cls_token=cfg.cls_token)
            self.register_buffer("pos_emb", pos, persistent=False)
        self.ln_pre = nn.LayerNorm(d, eps=cfg.eps) if cfg.pre_norm else None
        self.transformer = Transformer(cfg.depth, d, cfg.heads, cfg.mlp_ratio, act=cfg.act, eps=cfg.eps,
                                       qkv_bias=cfg.qkv_bias, mlp_dim=cfg.mlp_dim, dropout=cfg.dropout)
        self.norm = nn.LayerNorm(d, eps=cfg.eps) if cfg.final_norm else None
        self.head = (AttentionPool(d, cfg.heads, cfg.mlp_ratio, act=cfg.act, eps=cfg.eps, mlp_dim=cfg.mlp_dim)
                     if cfg.pool == "map" else None)
        self.apply(init_weights)

    def embed(self, pixel_values: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> tokens ``(B, N [+1], dim)`` with positions (and ``ln_pre``). ``extra``
        ``(B, E, dim)``: learned tokens without a position (Llip's mixture tokens), appended after the positions
        and before ``ln_pre``, which normalises them as it does the CLS token."""
        x = self.patch_embed(pixel_values.to(self.patch_embed.weight.dtype))
        x = rearrange(x, "b d h w -> b (h w) d")
        if self.cls is not None:
            x = torch.cat([repeat(self.cls, "d -> b 1 d", b=x.shape[0]), x], dim=1)
        x = x + self.pos_emb.to(x.dtype)
        if extra is not None:
            if extra.ndim != 3 or extra.shape[0] != x.shape[0] or extra.shape[2] != x.shape[2]:
                raise ValueError(f"extra must be (B, E, dim) = ({x.shape[0]}, E, {x.shape[2]}) tokens, got "
                                 f"{tuple(extra.shape)}")
            x = torch.cat([x, extra.to(x.dtype)], dim=1)
        return self.ln_pre(x) if self.ln_pre is not None else x

    def pool(self, x: torch.Tensor) -> torch.Tensor | None:
        """One vector per image from the tokens: CLS token, mean of patch tokens, or the MAP head."""
        pool = self.cfg.pool
        if pool == "cls":
            return x[:, 0]
        if pool == "mean":
            return x[:, int(self.cfg.cls_token):].mean(dim=1)
        if pool == "map":
            return self.head(x)
        return None

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool = False) -> ViTOutput:
        """``pixel_values`` ``(B, channels, image_size, image_size)`` float -> :class:`ViTOutput`.

        ``hidden_states`` (when asked) are the block inputs followed by each block's output, as in
        ``transformers`` (LLaVA takes the penultimate one).
        """
        cfg = self.cfg
        check_images(pixel_values, channels=cfg.channels, size=cfg.image_size, name="pixel_values",
                     device=self.patch_embed.weight.device)
        x = self.embed(pixel_values)
        x, hidden = self.transformer(x, output_hidden_states=output_hidden_states)
        if self.norm is not None and cfg.final_norm_on == "tokens":
            x = self.norm(x)
        pooled = self.pool(x)
        if self.norm is not None and cfg.final_norm_on == "pooled":
            pooled = self.norm(pooled)
        return ViTOutput(last_hidden_state=x, pooled=pooled, hidden_states=hidden)
