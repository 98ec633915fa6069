"""CLIP (Radford et al., 2021): an image tower and a text tower trained so matching pairs align.

Explained in notebook 02, §CLIP. Survey §2.2: each tower ends in a linear projection (no bias)
into a shared ``embed_dim`` space, embeddings are L2-normalised, and a learnable temperature
``logit_scale`` (stored as a log, initialised to ``log(1/0.07)``, clamped to ``[0, log 100]``)
scales the cosine similarities that enter the symmetric InfoNCE loss
(:class:`~vlm_primer.contrastive.losses.ClipLoss`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vlm_primer.config import PresetConfig
from vlm_primer.contrastive.losses import ClipLoss
from vlm_primer.nn import TextConfig, TextTransformer, ViT, ViTConfig
from vlm_primer.validate import check_images, check_same_batch, check_tokens

__all__ = ["CLIP", "CLIPConfig", "CLIPOutput", "SHAPES_SMALL", "SHAPES_TEXT", "check_pair_batch"]

# CLIP's image tower: CLS token, ln_pre after the embeddings, ln_post on the pooled CLS token.
_CLIP_VISION = dict(pre_norm=True, final_norm_on="pooled", pool="cls", cls_token=True, patch_bias=False, eps=1e-5)
# The project's tokenizer (vlm_primer.text): <pad>=0, <eos>=3; the text is pooled at <eos>.
SHAPES_TEXT = dict(eos_token_id=3, pad_token_id=0)
# Shapes World stays at 64 px at the small scale (vlm_primer.world.WorldConfig): 8 px patches, 64 tokens.
SHAPES_SMALL = dict(image_size=64, patch_size=8)


def check_pair_batch(
    model: nn.Module, pixel_values: torch.Tensor, input_ids: Any, attention_mask: Any | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Check that images and captions form one batch; return the ids as a tensor on the model's device.

    Only what the pair adds is checked here (matching batch sizes); each tower checks its own input
    in full (ids in range, the mask) when it runs, so no value is read twice.
    """
    cfg, device = model.cfg, next(model.parameters()).device
    check_images(pixel_values, channels=cfg.vision.channels, size=cfg.vision.image_size, name="pixel_values",
                 device=device)
    input_ids = check_tokens(input_ids, max_len=cfg.text.context_length, device=device)
    check_same_batch(pixel_values=pixel_values, input_ids=input_ids)
    return pixel_values, input_ids, attention_mask


@dataclass
class CLIPConfig(PresetConfig):
    """CLIP = image tower + text tower + projections + temperature.

    ``vision``/``text`` accept a config or a dict of its fields (a dict replaces the whole tower
    config, unspecified fields take the tower's defaults).
    """

    vision: ViTConfig = field(default_factory=lambda: ViTConfig(**ViTConfig.PRESETS["tiny"], **_CLIP_VISION))
    text: TextConfig = field(default_factory=lambda: TextConfig(**TextConfig.PRESETS["tiny"], **SHAPES_TEXT))
    embed_dim: int = 64
    init_logit_scale: float = math.log(1 / 0.07)
    max_logit_scale: float = math.log(100)

    PRESETS: ClassVar[dict] = {
        # 64 px Shapes World images, trains on a laptop CPU in minutes
        "tiny": dict(vision=dict(ViTConfig.PRESETS["tiny"], **_CLIP_VISION),
                     text=dict(TextConfig.PRESETS["tiny"], **SHAPES_TEXT), embed_dim=64),
        "small": dict(vision=dict(ViTConfig.PRESETS["small"], **_CLIP_VISION, **SHAPES_SMALL),
                      text=dict(TextConfig.PRESETS["small"], **SHAPES_TEXT), embed_dim=256),
        # OpenAI CLIP ViT-B/16 and ViT-B/32 (the paper's configs, as in transformers' CLIPModel)
        "base": dict(vision=dict(ViTConfig.PRESETS["clip_b16"]), text=dict(TextConfig.PRESETS["clip"]), embed_dim=512),
        "b32": dict(vision=dict(ViTConfig.PRESETS["clip_b16"], patch_size=32), text=dict(TextConfig.PRESETS["clip"]),
                    embed_dim=512),
    }

    BOUNDS: ClassVar[dict] = dict(embed_dim=">0", max_logit_scale=">=0")

    def validate(self) -> None:
        self.coerce_parts(vision=ViTConfig, text=TextConfig)
        if self.vision.pool == "none":
            raise ValueError("CLIP needs a pooled image embedding: vision.pool must not be 'none'")
        if self.embed_dim < 1:
            raise ValueError(f"embed_dim must be >= 1, got {self.embed_dim}")
        if not 0 <= self.init_logit_scale <= self.max_logit_scale:
            raise ValueError(
                f"init_logit_scale={self.init_logit_scale} must lie in [0, max_logit_scale={self.max_logit_scale}]"
            )


@dataclass
class CLIPOutput:
    loss: torch.Tensor | None              # symmetric InfoNCE (None if return_loss=False)
    logits_per_image: torch.Tensor          # (B_img, B_txt) = scale * cos
    logits_per_text: torch.Tensor           # (B_txt, B_img), the transpose
    image_embeds: torch.Tensor              # (B, embed_dim), L2-normalised
    text_embeds: torch.Tensor               # (B, embed_dim), L2-normalised


class CLIP(nn.Module):
    """CLIP: ``ViT`` + ``TextTransformer``, bias-free projections, learnable ``logit_scale``.

    Explained in notebook 02, §CLIP. ``forward`` computes the symmetric InfoNCE loss over the batch
    (across ranks under ``torch.distributed``, see :class:`ClipLoss`); call :meth:`post_step` after
    each optimizer step to clamp the temperature like the paper (the Trainer does).
    """

    def __init__(self, cfg: CLIPConfig | None = None) -> None:
        super().__init__()
        cfg = cfg if cfg is not None else CLIPConfig()
        self.cfg = cfg
        self.vision = ViT(cfg.vision)
        self.text = TextTransformer(cfg.text)
        self.visual_projection = nn.Linear(cfg.vision.dim, cfg.embed_dim, bias=False)
        self.text_projection = nn.Linear(cfg.text.dim, cfg.embed_dim, bias=False)
        nn.init.normal_(self.visual_projection.weight, std=cfg.vision.dim**-0.5)
        nn.init.normal_(self.text_projection.weight, std=cfg.text.dim**-0.5)
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.init_logit_scale)))
        self.loss_fn = ClipLoss()

    def encode_image(self, pixel_values: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> embeddings ``(B, embed_dim)``."""
        x = self.visual_projection(self.vision(pixel_values).pooled)
        return F.normalize(x, dim=-1) if normalize else x

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, normalize: bool = True
    ) -> torch.Tensor:
        """Token ids ``(B, L)`` (``attention_mask`` 1 = real token) -> embeddings ``(B, embed_dim)``."""
        x = self.text_projection(self.text(input_ids, attention_mask).pooled)
        return F.normalize(x, dim=-1) if normalize else x

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        return_loss: bool = True,
    ) -> CLIPOutput:
        """Image ``i`` and caption ``i`` are a positive pair; every other pairing is a negative."""
        pixel_values, input_ids, attention_mask = check_pair_batch(self, pixel_values, input_ids, attention_mask)
        image_embeds = self.encode_image(pixel_values)
        text_embeds = self.encode_text(input_ids, attention_mask)
        scale = self.logit_scale.exp()
        logits_per_image = scale * image_embeds @ text_embeds.t()
        loss = self.loss_fn(image_embeds, text_embeds, scale) if return_loss else None
        return CLIPOutput(loss, logits_per_image, logits_per_image.t(), image_embeds, text_embeds)

    @torch.no_grad()
    def post_step(self) -> None:
        """Clamp ``logit_scale`` to ``[0, max_logit_scale]``, as in CLIP: the inverse temperature ``1/τ`` stays
        in ``[1, 100]``, i.e. ``τ ≥ 0.01``."""
        self.logit_scale.clamp_(0.0, self.cfg.max_logit_scale)
