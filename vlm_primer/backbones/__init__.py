"""Pretrained backbones joined by a connector (survey §2.5): LLaVA (notebook 05) and its connectors."""

from vlm_primer.backbones.connectors import (CONNECTORS, LinearConnector, MLPConnector, PixelShuffleConnector,
                                             build_connector, pixel_shuffle)
from vlm_primer.backbones.llava import IMAGE_TOKEN_ID, Llava, LlavaConfig

__all__ = [
    "CONNECTORS", "IMAGE_TOKEN_ID", "LinearConnector", "Llava", "LlavaConfig", "MLPConnector",
    "PixelShuffleConnector", "build_connector", "pixel_shuffle",
]
