"""SigLIP (Zhai et al., 2023): CLIP with a pairwise sigmoid loss instead of the softmax.

Explained in notebook 02, §SigLIP. Survey §2.2: every image-text pair of the batch is an
independent binary classification (match / no match), so the loss needs no normalisation over the
batch and works well at small batch sizes. Architecture, as in ``transformers``' ``SiglipModel``:

* image tower: ViT without CLS token or ``ln_pre``, final norm on every token, then a multi-head
  attention pooling (MAP) head; its output *is* the image embedding (no projection);
* text tower: bidirectional transformer pooled at the last token, then a ``Linear`` head (with bias)
  into the image embedding size;
* learnable ``logit_scale`` (log of ``t``, initialised to ``log 10``) and ``logit_bias`` ``b``
  (initialised to ``-10`` so that the many negatives start with a small loss).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vlm_primer.config import PresetConfig
from vlm_primer.contrastive.clip import SHAPES_SMALL, SHAPES_TEXT, check_pair_batch
from vlm_primer.contrastive.losses import SigLipLoss
from vlm_primer.nn import TextConfig, TextTransformer, ViT, ViTConfig

__all__ = ["SigLIP", "SigLIPConfig", "SigLIPOutput"]

_SIGLIP_VISION = dict(cls_token=False, pool="map", pre_norm=False, final_norm_on="tokens", patch_bias=True,
                      act="gelu_tanh")
_SIGLIP_TEXT = dict(causal=False, pool="last", act="gelu_tanh", eps=1e-6, **SHAPES_TEXT)


@dataclass
class SigLIPConfig(PresetConfig):
    """SigLIP = MAP-pooled ViT + last-token text tower with a head + sigmoid loss.

    The embedding size is the image tower's width (``vision.dim``); the text head maps to it.
    """

    vision: ViTConfig = field(default_factory=lambda: ViTConfig(**ViTConfig.PRESETS["tiny"], **_SIGLIP_VISION))
    text: TextConfig = field(default_factory=lambda: TextConfig(**TextConfig.PRESETS["tiny"], **_SIGLIP_TEXT))
    init_logit_scale: float = math.log(10.0)
    init_logit_bias: float = -10.0

    PRESETS: ClassVar[dict] = {
        "tiny": dict(vision=dict(ViTConfig.PRESETS["tiny"], **_SIGLIP_VISION),
                     text=dict(TextConfig.PRESETS["tiny"], **_SIGLIP_TEXT)),
        "small": dict(vision=dict(ViTConfig.PRESETS["small"], **_SIGLIP_VISION, **SHAPES_SMALL),
                      text=dict(TextConfig.PRESETS["small"], **_SIGLIP_TEXT)),
        # SigLIP B/16 at 224 px (google/siglip-base-patch16-224)
        "base": dict(vision=dict(ViTConfig.PRESETS["siglip_b16"]), text=dict(TextConfig.PRESETS["siglip"])),
    }

    def validate(self) -> None:
        self.coerce_parts(vision=ViTConfig, text=TextConfig)
        if self.vision.pool == "none":
            raise ValueError("SigLIP needs a pooled image embedding: vision.pool must not be 'none' (use 'map')")

    @property
    def embed_dim(self) -> int:
        return self.vision.dim


@dataclass
class SigLIPOutput:
    loss: torch.Tensor | None              # pairwise sigmoid loss (None if return_loss=False)
    logits_per_image: torch.Tensor          # (B_img, B_txt) = t * cos + b
    logits_per_text: torch.Tensor           # (B_txt, B_img)
    image_embeds: torch.Tensor              # (B, embed_dim), L2-normalised
    text_embeds: torch.Tensor               # (B, embed_dim), L2-normalised


class SigLIP(nn.Module):
    """SigLIP: sigmoid-loss CLIP. Explained in notebook 02, §SigLIP.

    ``sigmoid(logits_per_image[i, j])`` is the model's probability that image ``i`` and caption
    ``j`` match. Same interface as :class:`~vlm_primer.contrastive.CLIP`.
    """

    def __init__(self, cfg: SigLIPConfig | None = None) -> None:
        super().__init__()
        cfg = cfg if cfg is not None else SigLIPConfig()
        self.cfg = cfg
        self.vision = ViT(cfg.vision)
        self.text = TextTransformer(cfg.text)
        self.text_head = nn.Linear(cfg.text.dim, cfg.embed_dim)
        nn.init.normal_(self.text_head.weight, std=cfg.text.dim**-0.5)
        nn.init.zeros_(self.text_head.bias)
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.init_logit_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(float(cfg.init_logit_bias)))
        self.loss_fn = SigLipLoss()

    def encode_image(self, pixel_values: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> embeddings ``(B, embed_dim)`` (the MAP head's output)."""
        x = self.vision(pixel_values).pooled
        return F.normalize(x, dim=-1) if normalize else x

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, normalize: bool = True
    ) -> torch.Tensor:
        """Token ids ``(B, L)`` -> embeddings ``(B, embed_dim)``: last token, then the head.

        SigLIP was trained on captions padded to the full context without a mask; pass
        ``attention_mask`` to let the pad tokens ignore each other (the last token still sees the text).
        """
        x = self.text_head(self.text(input_ids, attention_mask).pooled)
        return F.normalize(x, dim=-1) if normalize else x

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        return_loss: bool = True,
    ) -> SigLIPOutput:
        pixel_values, input_ids, attention_mask = check_pair_batch(self, pixel_values, input_ids, attention_mask)
        image_embeds = self.encode_image(pixel_values)
        text_embeds = self.encode_text(input_ids, attention_mask)
        scale = self.logit_scale.exp()
        logits_per_image = scale * image_embeds @ text_embeds.t() + self.logit_bias
        loss = self.loss_fn(image_embeds, text_embeds, scale, self.logit_bias) if return_loss else None
        return SigLIPOutput(loss, logits_per_image, logits_per_image.t(), image_embeds, text_embeds)

    def post_step(self) -> None:
        """Nothing to clamp: SigLIP learns ``t`` and ``b`` freely (kept for the Trainer's protocol)."""
