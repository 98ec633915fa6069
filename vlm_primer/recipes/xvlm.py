"""An X-VLM-style grounder (survey §3.4): a referring expression reads the image and regresses the box it names.

Chapter 06b (survey §3.4) explains it. X-VLM (Zeng et al. 2021) puts a *cross-modal encoder* on top of an image
encoder and a text encoder: text tokens attend to each other and, through cross-attention, to the image tokens;
the fused ``[CLS]`` of the expression goes through :class:`~vlm_primer.recipes.grounding.BoxHead` and is trained
with :func:`~vlm_primer.recipes.grounding.box_loss` (L1 + GIoU). Here the two encoders are a CLIP's
(chapter 02), the expression's pooled token is CLIP's end-of-text token (its text tower is causal, so that is the
one position that has read the whole expression), and the image tokens carry fixed 2-D sine-cosine positions
added before every cross-attention, as DETR (Carion et al. 2020) adds them to the keys: the box is a position, and
a position the fusion can read off the attention weights directly is learnt in a few hundred steps where a
box read out of CLIP's mixed tokens alone is not.

    from vlm_primer import zoo
    grounder = zoo.load("grounder-tiny")
    boxes = grounder.predict(pixel_values, input_ids, attention_mask)   # (B, 4), normalised (x0, y0, x1, y1)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from vlm_primer.config import PresetConfig
from vlm_primer.contrastive.clip import CLIP, CLIPConfig, check_pair_batch
from vlm_primer.nn.pos import sincos_2d
from vlm_primer.nn.text import pool_positions
from vlm_primer.nn.transformer import Transformer
from vlm_primer.recipes.grounding import BoxHead, box_loss

__all__ = ["Grounder", "GrounderConfig", "GrounderOutput"]


@dataclass
class GrounderConfig(PresetConfig):
    """The encoders (a :class:`~vlm_primer.contrastive.CLIPConfig`) and the cross-modal encoder on top."""

    clip: CLIPConfig = field(default_factory=CLIPConfig)
    fusion_depth: int = 2                 # cross-modal blocks (X-VLM: 6)
    fusion_heads: int = 4
    l1_weight: float = 5.0                # DETR's weights of the two box losses
    giou_weight: float = 2.0

    PRESETS: ClassVar[dict] = {
        "tiny": dict(clip=CLIPConfig.PRESETS["tiny"], fusion_depth=2),
        "small": dict(clip=CLIPConfig.PRESETS["small"], fusion_depth=4),
        "base": dict(clip=CLIPConfig.PRESETS["base"], fusion_depth=6, fusion_heads=8),  # X-VLM's encoder depth
    }
    BOUNDS: ClassVar[dict] = dict(fusion_depth=">0", fusion_heads=">0", l1_weight=">=0", giou_weight=">=0")

    def validate(self) -> None:
        self.coerce_parts(clip=CLIPConfig)
        if self.clip.text.dim % self.fusion_heads:
            raise ValueError(f"fusion_heads={self.fusion_heads} must divide the text width {self.clip.text.dim}")
        if self.clip.vision.dim % 4:
            raise ValueError(f"the image width {self.clip.vision.dim} must be divisible by 4 (2-D sin-cos positions)")


@dataclass
class GrounderOutput:
    loss: torch.Tensor | None
    boxes: torch.Tensor          # (B, 4) normalised (x0, y0, x1, y1)


class Grounder(nn.Module):
    """CLIP's two towers + a cross-modal encoder (text queries, image keys and values) + X-VLM's box head.

    ``forward(pixel_values, input_ids, attention_mask, boxes=None)``: images ``(B, 3, S, S)`` (normalised like the
    CLIP's), one expression per image, and optionally the true boxes ``(B, 4)`` (normalised corners) for the loss.
    Chapter 06b (survey §3.4) explains it."""

    def __init__(self, cfg: GrounderConfig | None = None) -> None:
        super().__init__()
        cfg = cfg if cfg is not None else GrounderConfig()
        self.cfg = cfg
        self.clip = CLIP(cfg.clip)
        v, t = cfg.clip.vision, cfg.clip.text
        self.fusion = Transformer(cfg.fusion_depth, t.dim, cfg.fusion_heads, cross_attn=True, context_dim=v.dim)
        self.head = BoxHead(t.dim)
        self.register_buffer("image_pos", sincos_2d(v.grid, v.grid, v.dim, cls_token=v.cls_token), persistent=False)

    @classmethod
    def from_clip(cls, clip: CLIP, **changes) -> "Grounder":
        """A grounder whose encoders start as ``clip``'s (copied), the cross-modal encoder and head fresh."""
        if not isinstance(clip, CLIP):
            raise TypeError(f"clip must be a CLIP, got {type(clip).__name__}")
        model = cls(GrounderConfig(clip=clip.cfg, **changes))
        model.clip.load_state_dict(clip.state_dict())
        return model

    def fuse(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
             attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The expression's fused pooled token ``(B, D)``: its text tokens after the cross-modal encoder."""
        pixel_values, input_ids, attention_mask = check_pair_batch(self.clip, pixel_values, input_ids, attention_mask)
        image = self.clip.vision(pixel_values).last_hidden_state + self.image_pos.to(pixel_values.dtype)
        text = self.clip.text(input_ids, attention_mask).last_hidden_state
        x, _ = self.fusion(text, context=image, key_padding_mask=attention_mask)
        t = self.cfg.clip.text
        idx = pool_positions(input_ids, attention_mask, t.pool, t.eos_token_id)
        return x[torch.arange(len(x), device=x.device), idx] if idx is not None else x.mean(dim=1)

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                boxes: torch.Tensor | None = None) -> GrounderOutput:
        pred = self.head(self.fuse(pixel_values, input_ids, attention_mask))
        loss = None
        if boxes is not None:
            loss = box_loss(pred, boxes, self.cfg.l1_weight, self.cfg.giou_weight)
        return GrounderOutput(loss, pred)

    @torch.no_grad()
    def predict(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Boxes ``(B, 4)`` in eval mode, without gradients."""
        was = self.training
        self.eval()
        try:
            return self(pixel_values, input_ids, attention_mask).boxes
        finally:
            self.train(was)
