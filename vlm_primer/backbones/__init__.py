"""Pretrained backbones joined by a connector (survey §2.5): LLaVA, LLaVA-NeXT (notebook 05), the connectors, and the
learned bottlenecks of notebook 05b: BLIP-2's Q-Former, InstructBLIP, Flamingo's perceiver and gated cross-attention,
Qwen-VL's resampler."""

from vlm_primer.backbones.blip2 import Blip2, Blip2Config, Blip2Stage1, InstructBlip, InstructBlipConfig
from vlm_primer.backbones.connectors import (CONNECTORS, QUERY_CONNECTORS, LinearConnector, MLPConnector,
                                             PixelShuffleConnector, QueryConnector, build_connector, pixel_shuffle)
from vlm_primer.backbones.flamingo import Flamingo, FlamingoConfig, GatedCrossAttentionLayer, media_mask
from vlm_primer.backbones.llava import IMAGE_TOKEN_ID, Llava, LlavaConfig, expand_image_tokens
from vlm_primer.backbones.llava_next import (LlavaNext, LlavaNextConfig, anyres_tiles, anyres_view,
                                             fitted_size, select_best_resolution, unpadded_shape)
from vlm_primer.backbones.qformer import MASK_KINDS, QFormer, QFormerConfig, qformer_mask
from vlm_primer.backbones.resamplers import PerceiverResampler, QwenResampler

__all__ = [
    "Blip2", "Blip2Config", "Blip2Stage1", "CONNECTORS", "Flamingo", "FlamingoConfig", "GatedCrossAttentionLayer",
    "IMAGE_TOKEN_ID", "InstructBlip", "InstructBlipConfig", "LinearConnector", "Llava", "LlavaConfig", "LlavaNext",
    "LlavaNextConfig", "MASK_KINDS", "MLPConnector", "PerceiverResampler", "PixelShuffleConnector", "QFormer",
    "QFormerConfig", "QUERY_CONNECTORS", "QueryConnector", "QwenResampler", "anyres_tiles", "anyres_view",
    "build_connector", "expand_image_tokens", "fitted_size", "media_mask", "pixel_shuffle", "qformer_mask",
    "select_best_resolution", "unpadded_shape",
]
