"""Convert ``transformers``' video LLaVAs to and from ours: ``VideoLlavaForConditionalGeneration`` <->
:class:`~vlm_primer.video.VideoLlava` (the LLaVA conversion of :mod:`vlm_primer.interop.llava` with the image tower
under ``image_tower`` and a second CLIP vision tower under ``video_tower``) and
``LlavaNextVideoForConditionalGeneration`` <-> :class:`~vlm_primer.video.LlavaNextVideo` (the LLaVA-NeXT conversion;
the average pooler has no weights). Explained in notebook 08, §Video-LLaVA on Shapes World."""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from vlm_primer.interop import load_strict, state_dict_of
from vlm_primer.interop.clip import vit_from_hf_clip_vision, vit_to_hf_clip_vision
from vlm_primer.interop.llava import _part, llava_config_to_hf, llava_from_hf
from vlm_primer.video import LlavaNextVideo, LlavaNextVideoConfig, VideoLlava, VideoLlavaConfig

IMAGE, VIDEO = "model.image_tower.", "model.video_tower."

__all__ = ["llava_next_video_from_hf", "llava_next_video_to_hf", "video_llava_from_hf", "video_llava_to_hf"]


def _renamed(sd: dict, old: str, new: str) -> dict:
    return {(new + k[len(old):] if k.startswith(old) else k): v for k, v in sd.items()}


def video_llava_from_hf(hf_model: nn.Module, num_frames: int | None = None) -> VideoLlava:
    """Our :class:`VideoLlava` with the weights of a ``VideoLlavaForConditionalGeneration`` (``num_frames``: the
    frames per clip it will be given; default the config's ``num_frames``, else 8)."""
    hf_config = hf_model.config
    sd = state_dict_of(hf_model)
    llava_sd = _renamed({k: v for k, v in sd.items() if not k.startswith(VIDEO)}, IMAGE, "model.vision_tower.")
    base = llava_from_hf(_StateDict(llava_sd, hf_config))
    cfg = VideoLlavaConfig(**{f.name: getattr(base.cfg, f.name) for f in dataclasses.fields(base.cfg)},
                           video_token_id=hf_config.video_token_index,
                           num_frames=num_frames or getattr(hf_config, "num_frames", 8))
    model = VideoLlava(cfg)
    model.load_state_dict(base.state_dict(), strict=False)
    model.video_tower.load_state_dict(vit_from_hf_clip_vision(_part(sd, VIDEO), hf_config.vision_config).state_dict())
    missing = {k for k in model.state_dict() if not k.startswith("video_tower.")} - set(base.state_dict())
    if missing:
        raise ValueError(f"Video-LLaVA conversion left {sorted(missing)[:5]} unset")
    return model.eval()


class _StateDict(nn.Module):
    """A state dict and a config, in the shape :func:`llava_from_hf` reads a model."""

    def __init__(self, sd: dict, config: Any) -> None:
        super().__init__()
        self._sd, self.config = sd, config

    def state_dict(self, *args: Any, **kwargs: Any) -> dict:
        return dict(self._sd)


def video_llava_to_hf(model: VideoLlava):
    """A ``transformers`` ``VideoLlavaForConditionalGeneration`` with our weights (eval mode)."""
    from transformers import VideoLlavaConfig as HFConfig
    from transformers import VideoLlavaForConditionalGeneration

    from vlm_primer.interop.llava import llava_to_hf

    if not isinstance(model, VideoLlava):
        raise TypeError(f"model must be a VideoLlava, got {type(model).__name__}")
    llava_cfg = llava_config_to_hf(model.cfg)
    hf_config = HFConfig(vision_config=llava_cfg.vision_config, text_config=llava_cfg.text_config,
                         image_token_index=model.cfg.image_token_id, video_token_index=model.cfg.video_token_id,
                         projector_hidden_act=llava_cfg.projector_hidden_act,
                         vision_feature_layer=model.cfg.select_layer,
                         vision_feature_select_strategy=llava_cfg.vision_feature_select_strategy,
                         image_seq_length=model.cfg.tokens_per_image, video_seq_length=model.cfg.tokens_per_video)
    plain = _renamed(state_dict_of(llava_to_hf(_as_llava(model))), "model.vision_tower.", IMAGE)
    plain |= {VIDEO + k: v for k, v in vit_to_hf_clip_vision(model.video_tower).items()}
    return load_strict(VideoLlavaForConditionalGeneration(hf_config), plain, "VideoLlavaForConditionalGeneration").eval()


def _as_llava(model: VideoLlava):
    from vlm_primer.backbones import Llava, LlavaConfig

    cfg = LlavaConfig(**{f.name: getattr(model.cfg, f.name) for f in dataclasses.fields(LlavaConfig)})
    plain = Llava(cfg)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("video_tower.")})
    return plain


def llava_next_video_from_hf(hf_model: nn.Module, num_frames: int | None = None) -> LlavaNextVideo:
    """Our :class:`LlavaNextVideo` with the weights of a ``LlavaNextVideoForConditionalGeneration`` (average
    pooling only; ``num_frames`` as in :func:`video_llava_from_hf`)."""
    hf_config = hf_model.config
    if hf_config.spatial_pool_mode != "average":
        raise ValueError(f"only spatial_pool_mode='average' is supported, got {hf_config.spatial_pool_mode!r}")
    base = llava_from_hf(_StateDict(state_dict_of(hf_model), hf_config))
    cfg = LlavaNextVideoConfig(**{f.name: getattr(base.cfg, f.name) for f in dataclasses.fields(base.cfg)},
                               video_token_id=hf_config.video_token_index, pool_stride=hf_config.spatial_pool_stride,
                               num_frames=num_frames or getattr(hf_config, "num_frames", 8))
    model = LlavaNextVideo(cfg)
    model.load_state_dict(base.state_dict())
    return model.eval()


def llava_next_video_to_hf(model: LlavaNextVideo):
    """A ``transformers`` ``LlavaNextVideoForConditionalGeneration`` with our weights (eval mode)."""
    from transformers import LlavaNextVideoConfig as HFConfig
    from transformers import LlavaNextVideoForConditionalGeneration

    from vlm_primer.backbones import LlavaNext, LlavaNextConfig
    from vlm_primer.interop.llava import llava_to_hf

    if not isinstance(model, LlavaNextVideo):
        raise TypeError(f"model must be a LlavaNextVideo, got {type(model).__name__}")
    plain = LlavaNext(LlavaNextConfig(**{f.name: getattr(model.cfg, f.name) for f in dataclasses.fields(LlavaNextConfig)}))
    plain.load_state_dict(model.state_dict())
    hf_plain = llava_to_hf(plain)
    c = hf_plain.config
    hf_config = HFConfig(vision_config=c.vision_config, text_config=c.text_config,
                         image_token_index=model.cfg.image_token_id, video_token_index=model.cfg.video_token_id,
                         projector_hidden_act=c.projector_hidden_act, vision_feature_layer=c.vision_feature_layer,
                         vision_feature_select_strategy=c.vision_feature_select_strategy,
                         image_grid_pinpoints=c.image_grid_pinpoints, spatial_pool_mode="average",
                         spatial_pool_stride=model.cfg.pool_stride, image_seq_length=model.cfg.tokens_per_image,
                         video_seq_length=model.cfg.tokens_per_video)
    return load_strict(LlavaNextVideoForConditionalGeneration(hf_config), state_dict_of(hf_plain),
                       "LlavaNextVideoForConditionalGeneration").eval()
