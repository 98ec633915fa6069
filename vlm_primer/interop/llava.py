"""Convert ``transformers``' ``LlavaForConditionalGeneration`` to and from our :class:`~vlm_primer.backbones.Llava`.

The three parts reuse the tower converters: the CLIP vision tower (:mod:`vlm_primer.interop.clip`), the
Llama language model (:mod:`vlm_primer.interop.llama`), and the projector ``linear_1``/``linear_2`` ->
our MLP connector's ``fc1``/``fc2``. A real checkpoint (``llava-hf/llava-1.5-7b-hf``) loads with
:func:`load_llava_pretrained` when the hub is reachable. Explained in notebook 05, §Parity.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from vlm_primer.backbones import Llava, LlavaConfig, LlavaNext, LlavaNextConfig
from vlm_primer.interop import StrictSource, load_strict, ours_act_to_hf, hf_act_to_ours, state_dict_of
from vlm_primer.interop.clip import (_require, clip_vision_config_from_vit, vit_config_from_hf_clip_vision,
                                     vit_from_hf_clip_vision, vit_to_hf_clip_vision)
from vlm_primer.interop.llama import (decoder_config_from_hf_llama, decoder_from_hf_llama, decoder_to_hf_llama,
                                      llama_config_from_decoder)

VISION, PROJECTOR, LANGUAGE = "model.vision_tower.", "model.multi_modal_projector.", "model.language_model."
NEWLINE = "model.image_newline"
_STRATEGY = {"default": "patch", "full": "cls_patch"}


def _part(sd: dict[str, torch.Tensor], prefix: str, new_prefix: str = "") -> dict[str, torch.Tensor]:
    return {new_prefix + k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def _text_config(hf_config: Any) -> Any:
    """The Llama config as the composite model uses it: the head is tied by the top-level
    ``tie_word_embeddings`` (``transformers`` copies a tied text config's flag up, never down)."""
    text = copy.copy(hf_config.text_config)
    text.tie_word_embeddings = bool(getattr(hf_config, "tie_word_embeddings", text.tie_word_embeddings))
    return text


def llava_config_from_hf(hf_config: Any) -> LlavaConfig:
    """``transformers.LlavaConfig`` -> :class:`LlavaConfig` (CLIP vision tower, Llama text, MLP projector);
    a ``LlavaNextConfig`` (it has ``image_grid_pinpoints``) -> :class:`LlavaNextConfig`."""
    tower = getattr(hf_config.vision_config, "model_type", None)
    if tower != "clip_vision_model":
        raise ValueError(f"only a CLIP vision tower is supported (vision_config.model_type 'clip_vision_model'), "
                         f"got {tower!r}")
    layer = hf_config.vision_feature_layer
    if not isinstance(layer, int):
        raise ValueError(f"only a single vision_feature_layer is supported, got {layer!r}")
    if hf_config.vision_feature_select_strategy not in _STRATEGY:
        raise ValueError(f"unknown vision_feature_select_strategy {hf_config.vision_feature_select_strategy!r}")
    if not getattr(hf_config, "multimodal_projector_bias", True):
        raise ValueError("our MLP connector has biases; multimodal_projector_bias=False is not supported")
    pinpoints = getattr(hf_config, "image_grid_pinpoints", None)
    cls, extra = (LlavaConfig, {}) if pinpoints is None else (LlavaNextConfig, {"grid_pinpoints": pinpoints})
    return cls(vision=vit_config_from_hf_clip_vision(hf_config.vision_config),
                       text=decoder_config_from_hf_llama(_text_config(hf_config)), connector="mlp",
                       connector_act=hf_act_to_ours(hf_config.projector_hidden_act), select_layer=layer,
                       select_feature=_STRATEGY[hf_config.vision_feature_select_strategy],
                       image_token_id=hf_config.image_token_index, **extra)


def llava_from_hf(hf_model: nn.Module) -> Llava:
    """Our :class:`Llava` with the weights of a ``transformers`` ``LlavaForConditionalGeneration``
    (or our :class:`LlavaNext` from a ``LlavaNextForConditionalGeneration``)."""
    cfg = llava_config_from_hf(hf_model.config)
    sd = state_dict_of(hf_model)
    vision = vit_from_hf_clip_vision(_part(sd, VISION), hf_model.config.vision_config)
    text_sd = _part(sd, LANGUAGE, "model.")
    if "lm_head.weight" in sd:
        text_sd["lm_head.weight"] = sd["lm_head.weight"]
    text = decoder_from_hf_llama(text_sd, _text_config(hf_model.config))
    src = StrictSource(_part(sd, PROJECTOR), "LLaVA projector")
    connector = {f"{ours}.{p}": src[f"{theirs}.{p}"] for ours, theirs in (("fc1", "linear_1"), ("fc2", "linear_2"))
                 for p in ("weight", "bias")}
    src.finish()
    known = (VISION, PROJECTOR, LANGUAGE, "lm_head.") + ((NEWLINE,) if isinstance(cfg, LlavaNextConfig) else ())
    unexpected = [k for k in sd if not k.startswith(known)]
    if unexpected:
        raise ValueError(f"LLaVA state dict: unexpected tensors {unexpected[:5]}")
    model = LlavaNext(cfg) if isinstance(cfg, LlavaNextConfig) else Llava(cfg)
    if isinstance(model, LlavaNext):
        with torch.no_grad():
            model.image_newline.copy_(sd[NEWLINE])
    model.vision_tower.load_state_dict(vision.state_dict())
    model.language_model.load_state_dict(text.state_dict())
    load_strict(model.connector, connector, "LLaVA connector")
    return model


def llava_config_to_hf(cfg: LlavaConfig, **extra: Any):
    """:class:`LlavaConfig` -> ``transformers.LlavaConfig`` (MLP connector only: ``transformers`` has no other)."""
    from transformers import LlavaConfig as HFLlavaConfig
    from transformers import LlavaNextConfig as HFLlavaNextConfig

    _require(cfg.connector == "mlp", f"transformers' LLaVA projector is the 2-layer MLP, not {cfg.connector!r}")
    if isinstance(cfg, LlavaNextConfig):
        hf_cls, extra = HFLlavaNextConfig, {"image_grid_pinpoints": [list(p) for p in cfg.grid_pinpoints], **extra}
    else:
        hf_cls = HFLlavaConfig
    return hf_cls(vision_config=clip_vision_config_from_vit(cfg.vision),
                         text_config=llama_config_from_decoder(cfg.text), image_token_index=cfg.image_token_id,
                         projector_hidden_act=ours_act_to_hf(cfg.connector_act),
                         vision_feature_layer=cfg.select_layer,
                         vision_feature_select_strategy={v: k for k, v in _STRATEGY.items()}[cfg.select_feature],
                         image_seq_length=cfg.tokens_per_image, **extra)


def llava_to_hf(model: Llava, **config_extra: Any):
    """A ``transformers`` ``LlavaForConditionalGeneration`` (``LlavaNextForConditionalGeneration`` for a
    :class:`LlavaNext`) with our weights (eval mode)."""
    from transformers import LlavaForConditionalGeneration, LlavaNextForConditionalGeneration

    hf_config = llava_config_to_hf(model.cfg, **config_extra)
    sd = {VISION + k: v for k, v in vit_to_hf_clip_vision(model.vision_tower).items()}
    for k, v in decoder_to_hf_llama(model.language_model).items():
        sd[LANGUAGE + k[len("model."):] if k.startswith("model.") else k] = v
    c = model.connector.state_dict()
    sd |= {f"{PROJECTOR}{theirs}.{p}": c[f"{ours}.{p}"] for ours, theirs in (("fc1", "linear_1"), ("fc2", "linear_2"))
           for p in ("weight", "bias")}
    hf_cls = LlavaForConditionalGeneration
    if isinstance(model, LlavaNext):
        sd[NEWLINE] = model.image_newline.detach().clone()
        hf_cls = LlavaNextForConditionalGeneration
    return load_strict(hf_cls(hf_config), sd, hf_cls.__name__).eval()


def load_llava_pretrained(name: str = "llava-hf/llava-1.5-7b-hf", **from_pretrained_kwargs: Any) -> Llava:
    """Download a LLaVA checkpoint from the hub and convert it (needs the network; not run in CI)."""
    from transformers import LlavaForConditionalGeneration

    return llava_from_hf(LlavaForConditionalGeneration.from_pretrained(name, **from_pretrained_kwargs))
