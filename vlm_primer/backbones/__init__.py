"""Pretrained backbones joined by a connector (survey §2.5): LLaVA, LLaVA-NeXT (notebook 05), the connectors, and
BLIP-2's Q-Former (notebook 05b)."""

from vlm_primer.backbones.connectors import (CONNECTORS, LinearConnector, MLPConnector, PixelShuffleConnector,
                                             build_connector, pixel_shuffle)
from vlm_primer.backbones.llava import IMAGE_TOKEN_ID, Llava, LlavaConfig, expand_image_tokens
from vlm_primer.backbones.llava_next import (LlavaNext, LlavaNextConfig, anyres_tiles, anyres_view,
                                             select_best_resolution, unpadded_shape)
from vlm_primer.backbones.qformer import MASK_KINDS, QFormer, QFormerConfig, qformer_mask

__all__ = [
    "CONNECTORS", "IMAGE_TOKEN_ID", "MASK_KINDS", "LinearConnector", "Llava", "LlavaConfig", "LlavaNext",
    "LlavaNextConfig", "MLPConnector", "PixelShuffleConnector", "QFormer", "QFormerConfig", "anyres_tiles",
    "anyres_view", "build_connector", "expand_image_tokens", "pixel_shuffle", "qformer_mask",
    "select_best_resolution", "unpadded_shape",
]
