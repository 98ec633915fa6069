"""Convert CLIP's towers between ``transformers`` (``CLIPVisionModel``, ``CLIPTextModel``) and ours.

Our :class:`~vlm_primer.nn.ViT` and :class:`~vlm_primer.nn.TextTransformer` use the same layout, so
conversion is a rename: ``encoder.layers.i.self_attn.q_proj`` <-> ``transformer.blocks.i.attn.q``...
State dicts of ``CLIPModel`` work too (the ``vision_model.`` / ``text_model.`` prefix is stripped).
Explained in notebook 02, §Loading real checkpoints.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import nn

from vlm_primer.interop import (StrictSource, convert_pairs, hf_act_to_ours, load_strict, ours_act_to_hf,
                                state_dict_of)
from vlm_primer.nn import TextConfig, TextTransformer, ViT, ViTConfig


def encoder_block_pairs(ours: str, theirs: str) -> list[tuple[str, str]]:
    """(our key, transformers key) for one CLIP/SigLIP encoder layer (pre-LN, q/k/v/out, fc1/fc2)."""
    names = [("ln1", "layer_norm1"), ("attn.q", "self_attn.q_proj"), ("attn.k", "self_attn.k_proj"),
             ("attn.v", "self_attn.v_proj"), ("attn.out", "self_attn.out_proj"), ("ln2", "layer_norm2"),
             ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")]
    return [(f"{ours}{a}.{p}", f"{theirs}{b}.{p}") for a, b in names for p in ("weight", "bias")]


def _ln(ours: str, theirs: str) -> list[tuple[str, str]]:
    return [(f"{ours}.weight", f"{theirs}.weight"), (f"{ours}.bias", f"{theirs}.bias")]


def _auto_prefix(sd: Mapping[str, torch.Tensor], first_key: str, candidates: tuple[str, ...]) -> str:
    if first_key in sd:
        return ""
    for p in candidates:
        if p + first_key in sd:
            return p
    return ""


_TOWERS = {  # sub-config attribute, first weight name, prefix inside a full CLIPModel/SiglipModel
    "vision": ("vision_config", "embeddings.patch_embedding.weight", "vision_model."),
    "text": ("text_config", "embeddings.token_embedding.weight", "text_model."),
}


def tower_source(hf_model_or_state_dict: nn.Module | Mapping[str, torch.Tensor], hf_config: Any, tower: str,
                 config_class: str, name: str) -> tuple[Any, StrictSource]:
    """The tower's config and a strict reader of its weights, from a tower model, a full model or a state dict."""
    sub_config, first_key, prefix = _TOWERS[tower]
    hf_config = hf_config if hf_config is not None else getattr(hf_model_or_state_dict, "config", None)
    if hf_config is None:
        raise ValueError(f"pass hf_config (a {config_class}) together with a state dict")
    sd = state_dict_of(hf_model_or_state_dict)
    src = StrictSource(sd, f"{name} state dict", prefix=_auto_prefix(sd, first_key, (prefix,)))
    return getattr(hf_config, sub_config, hf_config), src


# --------------------------------------------------------------------------- vision


def vit_config_from_hf_clip_vision(hf_config: Any) -> ViTConfig:
    """``CLIPVisionConfig`` -> :class:`ViTConfig` (CLS, ``ln_pre``, ``ln_post`` on the pooled CLS token)."""
    return ViTConfig(
        image_size=hf_config.image_size, patch_size=hf_config.patch_size, channels=hf_config.num_channels,
        dim=hf_config.hidden_size, depth=hf_config.num_hidden_layers, heads=hf_config.num_attention_heads,
        mlp_dim=hf_config.intermediate_size, act=hf_act_to_ours(hf_config.hidden_act), cls_token=True,
        pos_emb="learned", pre_norm=True, final_norm=True, final_norm_on="pooled", pool="cls",
        eps=hf_config.layer_norm_eps, qkv_bias=True, patch_bias=False,
    )


def _clip_vision_pairs(cfg: ViTConfig) -> list[tuple[str, str]]:
    pairs = [("patch_embed.weight", "embeddings.patch_embedding.weight"), ("cls", "embeddings.class_embedding"),
             ("pos_emb", "embeddings.position_embedding.weight"), *_ln("ln_pre", "pre_layrnorm")]
    for i in range(cfg.depth):
        pairs += encoder_block_pairs(f"transformer.blocks.{i}.", f"encoder.layers.{i}.")
    return pairs + _ln("norm", "post_layernorm")


def vit_from_hf_clip_vision(hf_model_or_state_dict: nn.Module | Mapping[str, torch.Tensor],
                            hf_config: Any = None) -> ViT:
    """Build our :class:`ViT` with the weights of a ``transformers`` ``CLIPVisionModel``.

    ``hf_config`` (a ``CLIPVisionConfig``) may be omitted when a model is passed.
    """
    hf_config, src = tower_source(hf_model_or_state_dict, hf_config, "vision", "CLIPVisionConfig", "CLIP vision")
    cfg = vit_config_from_hf_clip_vision(hf_config)
    ours = convert_pairs(src, _clip_vision_pairs(cfg))
    src.finish()
    return load_strict(ViT(cfg), ours, "ViT (from CLIP vision)")


def _require(cond: bool, what: str) -> None:
    if not cond:
        raise ValueError(f"this model cannot be written as a transformers checkpoint: {what}")


def clip_vision_config_from_vit(cfg: ViTConfig, **extra: Any):
    """:class:`ViTConfig` -> ``transformers.CLIPVisionConfig`` (CLIP-style configs only)."""
    from transformers import CLIPVisionConfig

    _require(cfg.cls_token and cfg.pre_norm and cfg.final_norm and cfg.final_norm_on == "pooled"
             and cfg.pool == "cls" and cfg.pos_emb == "learned" and not cfg.patch_bias and cfg.qkv_bias
             and cfg.act != "swiglu",
             "CLIP's vision tower needs cls_token, pre_norm, final_norm_on='pooled', pool='cls', "
             "learned positions, patch_bias=False, qkv_bias=True and a non-gated MLP")
    return CLIPVisionConfig(
        hidden_size=cfg.dim, intermediate_size=cfg.mlp_dim or int(cfg.dim * cfg.mlp_ratio),
        num_hidden_layers=cfg.depth, num_attention_heads=cfg.heads, num_channels=cfg.channels,
        image_size=cfg.image_size, patch_size=cfg.patch_size, hidden_act=ours_act_to_hf(cfg.act),
        layer_norm_eps=cfg.eps, **extra,
    )


def vit_to_hf_clip_vision(model: ViT) -> dict[str, torch.Tensor]:
    """Our :class:`ViT` -> a state dict for ``transformers.CLIPVisionModel``.

    Build the matching config with :func:`clip_vision_config_from_vit`.
    """
    clip_vision_config_from_vit(model.cfg)  # validates the layout
    src = StrictSource(model.state_dict(), "ViT state dict")
    out = convert_pairs(src, [(t, o) for o, t in _clip_vision_pairs(model.cfg)])
    src.finish()
    return out


# --------------------------------------------------------------------------- text


def text_config_from_hf_clip_text(hf_config: Any) -> TextConfig:
    """``CLIPTextConfig`` -> :class:`TextConfig`. ``eos_token_id == 2`` selects legacy argmax pooling,
    exactly as ``transformers`` does; any other id pools at the first occurrence of that id."""
    return TextConfig(
        vocab_size=hf_config.vocab_size, context_length=hf_config.max_position_embeddings,
        dim=hf_config.hidden_size, depth=hf_config.num_hidden_layers, heads=hf_config.num_attention_heads,
        mlp_dim=hf_config.intermediate_size, act=hf_act_to_ours(hf_config.hidden_act), causal=True,
        pool="argmax" if hf_config.eos_token_id == 2 else "eos", eos_token_id=hf_config.eos_token_id,
        pad_token_id=hf_config.pad_token_id if hf_config.pad_token_id is not None else 0,
        eps=hf_config.layer_norm_eps, final_norm=True, qkv_bias=True,
    )


def _clip_text_pairs(cfg: TextConfig) -> list[tuple[str, str]]:
    pairs = [("tok_emb.weight", "embeddings.token_embedding.weight"),
             ("pos_emb", "embeddings.position_embedding.weight")]
    for i in range(cfg.depth):
        pairs += encoder_block_pairs(f"transformer.blocks.{i}.", f"encoder.layers.{i}.")
    return pairs + _ln("norm", "final_layer_norm")


def text_from_hf_clip_text(hf_model_or_state_dict: nn.Module | Mapping[str, torch.Tensor],
                           hf_config: Any = None) -> TextTransformer:
    """Build our :class:`TextTransformer` with the weights of a ``transformers`` ``CLIPTextModel``."""
    hf_config, src = tower_source(hf_model_or_state_dict, hf_config, "text", "CLIPTextConfig", "CLIP text")
    cfg = text_config_from_hf_clip_text(hf_config)
    ours = convert_pairs(src, _clip_text_pairs(cfg))
    src.finish()
    return load_strict(TextTransformer(cfg), ours, "TextTransformer (from CLIP text)")


def clip_text_config_from_text(cfg: TextConfig, **extra: Any):
    """:class:`TextConfig` -> ``transformers.CLIPTextConfig`` (causal, final norm, argmax/eos pooling)."""
    from transformers import CLIPTextConfig

    _require(cfg.causal and cfg.final_norm and cfg.qkv_bias and cfg.act != "swiglu",
             "CLIP's text tower is causal with a final norm, qkv biases and a non-gated MLP")
    _require((cfg.pool == "argmax") == (cfg.eos_token_id == 2) and cfg.pool in ("argmax", "eos"),
             f"transformers pools with argmax iff eos_token_id == 2 "
             f"(got pool={cfg.pool!r}, eos_token_id={cfg.eos_token_id})")
    return CLIPTextConfig(
        vocab_size=cfg.vocab_size, max_position_embeddings=cfg.context_length, hidden_size=cfg.dim,
        intermediate_size=cfg.mlp_dim or int(cfg.dim * cfg.mlp_ratio), num_hidden_layers=cfg.depth,
        num_attention_heads=cfg.heads, hidden_act=ours_act_to_hf(cfg.act), layer_norm_eps=cfg.eps,
        eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id, **{"bos_token_id": None, **extra},
    )


def text_to_hf_clip_text(model: TextTransformer) -> dict[str, torch.Tensor]:
    """Our :class:`TextTransformer` -> a state dict for ``transformers.CLIPTextModel``."""
    clip_text_config_from_text(model.cfg)
    src = StrictSource(model.state_dict(), "TextTransformer state dict")
    out = convert_pairs(src, [(t, o) for o, t in _clip_text_pairs(model.cfg)])
    src.finish()
    return out


# --------------------------------------------------------------------------- the whole CLIP model
# (vlm_primer.contrastive.CLIP <-> transformers.CLIPModel; the towers go through the functions above)


def clip_config_from_hf(hf_config: Any):
    """``transformers.CLIPConfig`` -> our :class:`~vlm_primer.contrastive.CLIPConfig`."""
    from vlm_primer.contrastive import CLIPConfig

    return CLIPConfig(
        vision=vit_config_from_hf_clip_vision(hf_config.vision_config),
        text=text_config_from_hf_clip_text(hf_config.text_config),
        embed_dim=hf_config.projection_dim,
        # our config insists on a start value in [0, log 100]; the actual value is copied later
        init_logit_scale=min(max(float(hf_config.logit_scale_init_value), 0.0), math.log(100)),
    )


def clip_from_hf(hf_model: nn.Module):
    """Our :class:`~vlm_primer.contrastive.CLIP` with the weights of a ``transformers.CLIPModel``.

    Every tensor of the source is used exactly once (strict): the towers via
    :func:`vit_from_hf_clip_vision` / :func:`text_from_hf_clip_text`, then the two projections and
    ``logit_scale``. Explained in notebook 02, §Loading real checkpoints.
    """
    from vlm_primer.contrastive import CLIP

    hf_config = getattr(hf_model, "config", None)
    if hf_config is None or not hasattr(hf_config, "vision_config") or not hasattr(hf_config, "projection_dim"):
        raise TypeError(f"expected a transformers CLIPModel, got {type(hf_model).__name__}")
    sd = state_dict_of(hf_model)
    model = CLIP(clip_config_from_hf(hf_config))
    model.vision = vit_from_hf_clip_vision(sd, hf_config.vision_config)
    model.text = text_from_hf_clip_text(sd, hf_config.text_config)
    head = StrictSource({k: v for k, v in sd.items() if not k.startswith(("vision_model.", "text_model."))},
                        "CLIPModel state dict")
    rest = convert_pairs(head, [("visual_projection.weight", "visual_projection.weight"),
                                ("text_projection.weight", "text_projection.weight"), ("logit_scale", "logit_scale")])
    head.finish()
    rest["logit_scale"] = rest["logit_scale"].reshape(())
    model.visual_projection.load_state_dict({"weight": rest["visual_projection.weight"]})
    model.text_projection.load_state_dict({"weight": rest["text_projection.weight"]})
    with torch.no_grad():
        model.logit_scale.copy_(rest["logit_scale"])
    return model


def clip_config_to_hf(cfg: Any, **extra: Any):
    """Our :class:`~vlm_primer.contrastive.CLIPConfig` -> ``transformers.CLIPConfig``."""
    from transformers import CLIPConfig as HFCLIPConfig

    return HFCLIPConfig(
        # the sub-configs carry projection_dim too: CLIP{Vision,Text}ModelWithProjection size their projection by it
        text_config=clip_text_config_from_text(cfg.text, bos_token_id=None, projection_dim=cfg.embed_dim).to_dict(),
        vision_config=clip_vision_config_from_vit(cfg.vision, projection_dim=cfg.embed_dim).to_dict(),
        projection_dim=cfg.embed_dim, logit_scale_init_value=cfg.init_logit_scale, **extra,
    )


def clip_to_hf(model: nn.Module, **config_extra: Any):
    """A ``transformers.CLIPModel`` with the weights of our :class:`~vlm_primer.contrastive.CLIP`.

    ``config_extra`` goes to ``transformers.CLIPConfig`` (e.g. ``attn_implementation="eager"``).
    Raises ``ValueError`` if a tower uses a layout ``transformers`` cannot express.
    """
    from transformers import CLIPModel

    hf = CLIPModel(clip_config_to_hf(model.cfg, **config_extra))
    sd = {f"vision_model.{k}": v for k, v in vit_to_hf_clip_vision(model.vision).items()}
    sd.update({f"text_model.{k}": v for k, v in text_to_hf_clip_text(model.text).items()})
    src = StrictSource({k: v for k, v in model.state_dict().items() if not k.startswith(("vision.", "text."))},
                       "CLIP state dict")
    pairs = [(k, k) for k in ("visual_projection.weight", "text_projection.weight", "logit_scale")]
    sd.update(convert_pairs(src, pairs))
    src.finish()
    sd["logit_scale"] = sd["logit_scale"].reshape(hf.logit_scale.shape)
    return load_strict(hf, sd, "CLIPModel (from ours)").eval()


def load_clip_pretrained(name: str = "openai/clip-vit-base-patch32", **from_pretrained_kwargs: Any):
    """Download (or read from the local cache) a CLIP checkpoint and convert it to our CLIP.

    Calls ``transformers.CLIPModel.from_pretrained(name)``, which needs the Hugging Face hub or a
    cached copy (CI runs offline and never calls this; the converters are tested on tiny random
    models instead). Pair it with the checkpoint's own tokenizer and image preprocessing
    (``transformers.CLIPProcessor.from_pretrained(name)``): e.g. ``openai/clip-vit-base-patch16``,
    ``openai/clip-vit-large-patch14``. Returns the model in eval mode.
    """
    from transformers import CLIPModel

    return clip_from_hf(CLIPModel.from_pretrained(name, **from_pretrained_kwargs)).eval()
