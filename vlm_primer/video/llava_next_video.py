"""LLaVA-NeXT-Video: LLaVA-NeXT's model reading videos, each frame's patch tokens average-pooled 2 x 2.

Explained in notebook 08, §Video-LLaVA on Shapes World (survey §5.5). LLaVA-NeXT-Video (Zhang et al. 2024) keeps
LLaVA-NeXT's single tower and AnyRes images, and sends a video's frames through the same tower: the hidden state of
``select_layer`` without its CLS token, laid out on the patch grid, pooled by a ``pool_stride`` x ``pool_stride``
average (a quarter of the tokens at stride 2), projected, frames in order. The layout equals ``transformers``'
``LlavaNextVideoForConditionalGeneration`` (``spatial_pool_mode="average"``; tested, converters in
:mod:`vlm_primer.interop.video_llava`). """

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange

from vlm_primer.backbones.llava_next import LlavaNext, LlavaNextConfig
from vlm_primer.video.video_llava import VideoInputs, check_video_config

__all__ = ["LlavaNextVideo", "LlavaNextVideoConfig"]


@dataclass
class LlavaNextVideoConfig(LlavaNextConfig):
    """:class:`~vlm_primer.backbones.LlavaNextConfig` plus the video placeholder, the frames per clip and the
    pooling stride over each frame's patch grid."""

    video_token_id: int = 5
    num_frames: int = 8
    pool_stride: int = 2

    PRESETS: ClassVar[dict] = {
        "tiny": dict(LlavaNextConfig.PRESETS["tiny"], num_frames=8),
        # llava-hf/LLaVA-NeXT-Video-7B-hf: LLaVA-NeXT-7B's shapes, <video> = 32000 (<image> 32001), 2 x 2 pooling
        "base": dict(LlavaNextConfig.PRESETS["base"], image_token_id=32001, video_token_id=32000, num_frames=8),
    }
    BOUNDS: ClassVar[dict] = dict(LlavaNextConfig.BOUNDS, video_token_id=">=0", num_frames="[1, 1024]",
                                  pool_stride=">0")

    def validate(self) -> None:
        super().validate()
        check_video_config(self)
        if self.select_feature != "patch" or self.vision.grid % self.pool_stride:
            raise ValueError(f"LLaVA-NeXT-Video pools the patch grid: it needs select_feature='patch' and a grid "
                             f"({self.vision.grid}) divisible by pool_stride={self.pool_stride}")

    @property
    def tokens_per_frame(self) -> int:
        return (self.vision.grid // self.pool_stride) ** 2

    @property
    def tokens_per_video(self) -> int:
        return self.num_frames * self.tokens_per_frame


class LlavaNextVideo(VideoInputs, LlavaNext):
    """:class:`~vlm_primer.backbones.LlavaNext` that also reads videos (:class:`~vlm_primer.video.VideoInputs`)."""

    CONFIG: ClassVar[type] = LlavaNextVideoConfig

    def video_features(self, pixel_values_videos: torch.Tensor) -> torch.Tensor:
        """Videos ``(B, T, 3, H, W)`` -> ``(B, T * tokens_per_frame, text_dim)``: each frame's patch tokens of
        ``select_layer`` average-pooled ``pool_stride`` x ``pool_stride`` on the grid, then projected."""
        b, t = pixel_values_videos.shape[:2]
        hidden = self.vision_tower(pixel_values_videos.flatten(0, 1), output_hidden_states=True).hidden_states
        patches = hidden[self.cfg.select_layer][:, int(self.cfg.vision.cls_token):]
        grid = rearrange(patches, "n (h w) d -> n d h w", h=self.cfg.vision.grid)
        pooled = rearrange(F.avg_pool2d(grid, self.cfg.pool_stride), "n d h w -> n (h w) d")
        return self.connector(pooled).reshape(b, -1, self.cfg.text.dim)
