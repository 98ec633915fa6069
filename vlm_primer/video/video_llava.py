"""Video-LLaVA: a LLaVA that reads images and videos, each frame through a video tower, every frame's tokens kept.

Explained in notebook 08, §Video-LLaVA on Shapes World (survey §5). Video-LLaVA (Lin et al. 2023) aligns an image
encoder and a video encoder (LanguageBind's, both CLIP ViT-L/14 shaped) to one language space *before* projection,
so one MLP projector serves both, and the LLM learns from images and videos together. A video of ``T`` frames
becomes ``T`` times the frame's tokens: every frame goes through the video tower, the hidden state of
``select_layer`` is taken with its CLS token (``transformers`` keeps it for videos, while images drop it under the
``default`` strategy), projected, and spliced in order where the prompt's ``<video>`` placeholders are. Images work
as in :class:`~vlm_primer.backbones.Llava`.

The layout equals ``transformers``' ``VideoLlavaForConditionalGeneration`` (tested on tiny random configs, every
weight perturbed; converters in :mod:`vlm_primer.interop.video_llava`). The cost is the point of §5.5: 8 frames of
257 tokens are 2,056 visual tokens per clip, against 256 for an image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from vlm_primer.backbones.llava import Llava, LlavaConfig
from vlm_primer.nn import ViT
from vlm_primer.validate import check_images, check_tokens, value_checks_enabled

__all__ = ["VideoInputs", "VideoLlava", "VideoLlavaConfig", "check_video_config"]


def check_video_config(cfg: Any) -> None:
    """What every video config needs: a video placeholder in the vocabulary and a per-token connector."""
    if cfg.connector not in ("mlp", "linear"):
        raise ValueError(f"{type(cfg).__name__}: a video model projects every frame token: connector must be mlp or "
                         f"linear, got {cfg.connector!r}")
    if cfg.video_token_id >= cfg.text.vocab_size:
        raise ValueError(f"{type(cfg).__name__}.video_token_id={cfg.video_token_id} is not in the vocabulary of "
                         f"{cfg.text.vocab_size} tokens")


@dataclass
class VideoLlavaConfig(LlavaConfig):
    """:class:`~vlm_primer.backbones.LlavaConfig` plus the video placeholder and the frames per clip (the image and
    video towers share ``vision``'s shape). ``video_token_id`` may equal ``image_token_id`` (the project's
    tokenizer has one ``<image>`` placeholder): then a prompt holds images or a video, not both."""

    video_token_id: int = 5
    num_frames: int = 8

    PRESETS: ClassVar[dict] = {
        "tiny": dict(LlavaConfig.PRESETS["tiny"], num_frames=8),
        # LanguageBind/Video-LLaVA-7B (video-llava-7b-hf): CLIP ViT-L/14 towers at 224 px, Vicuna-7B, 8 frames
        "base": dict(LlavaConfig.PRESETS["base"], vision=dict(LlavaConfig.PRESETS["base"]["vision"], image_size=224),
                     video_token_id=32001, num_frames=8),
    }
    BOUNDS: ClassVar[dict] = dict(LlavaConfig.BOUNDS, video_token_id=">=0", num_frames="[1, 1024]")

    def validate(self) -> None:
        super().validate()
        check_video_config(self)

    @property
    def tokens_per_frame(self) -> int:
        return self.vision.num_patches + int(self.vision.cls_token)

    @property
    def tokens_per_video(self) -> int:
        return self.num_frames * self.tokens_per_frame


class VideoInputs:
    """The video half of a video LLaVA: ``forward``/``generate``/``embed`` also take ``pixel_values_videos``
    ``(B_videos, T, 3, H, W)`` (``T`` from 1 to ``num_frames``; ``T x tokens_per_frame`` placeholders per video),
    whose :meth:`video_features` fill the ``video_token_id`` placeholders in order (images go to the model's own
    ``embed``). Mixed in before :class:`~vlm_primer.backbones.Llava` or
    :class:`~vlm_primer.backbones.LlavaNext`; subclasses define ``video_features``."""

    IMAGE_INPUTS: ClassVar[tuple[str, ...]] = ("pixel_values_videos",)

    @property
    def tokens_per_video(self) -> int:
        return self.cfg.tokens_per_video

    def video_features(self, pixel_values_videos: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def embed(self, input_ids: Any, pixel_values: torch.Tensor | None = None, image_sizes: Any = None,
              pixel_values_videos: torch.Tensor | None = None) -> torch.Tensor:
        """Text embeddings with image placeholders replaced by the images' tokens and video placeholders by the
        videos' frame tokens, each in order."""
        cfg = self.cfg
        if pixel_values_videos is None:
            if cfg.video_token_id != cfg.image_token_id and isinstance(input_ids, torch.Tensor) and bool(
                    (input_ids == cfg.video_token_id).any()):
                raise ValueError(f"input_ids hold video placeholders (id {cfg.video_token_id}) but no "
                                 "pixel_values_videos were given")
            return super().embed(input_ids, pixel_values, image_sizes)
        if not isinstance(pixel_values_videos, torch.Tensor) or pixel_values_videos.ndim != 5:
            raise ValueError("pixel_values_videos must be a (videos, frames, 3, H, W) tensor, got "
                             f"{getattr(pixel_values_videos, 'shape', type(pixel_values_videos).__name__)}")
        if not 1 <= pixel_values_videos.shape[1] <= cfg.num_frames:
            raise ValueError(f"pixel_values_videos has {pixel_values_videos.shape[1]} frames per video; the model "
                             f"takes 1 to num_frames={cfg.num_frames}")
        if pixel_values is not None and cfg.video_token_id == cfg.image_token_id:
            raise ValueError("images and videos share one placeholder id: pass pixel_values or pixel_values_videos, "
                             "not both")
        ids = check_tokens(input_ids, vocab_size=cfg.text.vocab_size, device=self.language_model.tok_emb.weight.device)
        check_images(pixel_values_videos.flatten(0, 1), channels=cfg.vision.channels, size=cfg.vision.image_size,
                     name="pixel_values_videos frames", device=ids.device)
        videos, frames = pixel_values_videos.shape[:2]
        need = videos * frames * cfg.tokens_per_frame
        # counting reads a value (a synchronisation on a GPU): only while value checks are on
        slots = int((ids == cfg.video_token_id).sum()) if value_checks_enabled() else need
        if slots != need:
            raise ValueError(f"input_ids hold {slots} video placeholders (id {cfg.video_token_id}), but "
                             f"{videos} video(s) of {frames} frames x {cfg.tokens_per_frame} tokens need {need}")
        if ids.shape[1] > cfg.text.context_length:
            raise ValueError(f"input_ids: {ids.shape[1]} tokens after expanding the video placeholders, longer than the "
                             f"language model's context of {cfg.text.context_length}: sample fewer frames")
        embeds = super().embed(ids, pixel_values, image_sizes) if pixel_values is not None else \
            self.language_model.tok_emb(ids)
        features = self.video_features(pixel_values_videos).flatten(0, 1)
        return embeds.masked_scatter((ids == cfg.video_token_id)[..., None], features.to(embeds.dtype))


class VideoLlava(VideoInputs, Llava):
    """:class:`~vlm_primer.backbones.Llava` with a second tower for videos (:class:`VideoInputs`)."""

    CONFIG: ClassVar[type] = VideoLlavaConfig

    def __init__(self, cfg: VideoLlavaConfig) -> None:
        super().__init__(cfg)
        self.video_tower = ViT(cfg.vision)

    def video_features(self, pixel_values_videos: torch.Tensor) -> torch.Tensor:
        """Videos ``(B, T, 3, H, W)`` -> ``(B, T * tokens_per_frame, text_dim)``: every frame's hidden state of
        ``select_layer``, CLS included, projected; frames in order."""
        b, t = pixel_values_videos.shape[:2]
        frames = pixel_values_videos.flatten(0, 1)
        hidden = self.video_tower(frames, output_hidden_states=True).hidden_states[self.cfg.select_layer]
        return self.connector(hidden).reshape(b, t * hidden.shape[1], -1)
