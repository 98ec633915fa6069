"""Convert SigLIP's towers between ``transformers`` (``SiglipVisionModel``, ``SiglipTextModel``) and ours.

SigLIP's image tower is our :class:`~vlm_primer.nn.ViT` without a CLS token or ``ln_pre``, with the
final norm on every token and a MAP head (:class:`~vlm_primer.nn.AttentionPool`). The head's packed
``nn.MultiheadAttention.in_proj_weight`` is split into our ``attn.q/k/v``. The text tower is our bidirectional
:class:`~vlm_primer.nn.TextTransformer` pooled at the last position, plus a linear ``head``.
Explained in notebook 02, §SigLIP.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from vlm_primer.interop import (StrictSource, convert_pairs, hf_act_to_ours, load_strict, ours_act_to_hf,
                                state_dict_of)
from vlm_primer.interop.clip import _clip_text_pairs, _ln, _require, encoder_block_pairs, tower_source
from vlm_primer.nn import TextConfig, TextTransformer, ViT, ViTConfig


def vit_config_from_hf_siglip_vision(hf_config: Any) -> ViTConfig:
    """``SiglipVisionConfig`` -> :class:`ViTConfig` (no CLS, final norm on tokens, MAP head or no pooling)."""
    return ViTConfig(
        image_size=hf_config.image_size, patch_size=hf_config.patch_size, channels=hf_config.num_channels,
        dim=hf_config.hidden_size, depth=hf_config.num_hidden_layers, heads=hf_config.num_attention_heads,
        mlp_dim=hf_config.intermediate_size, act=hf_act_to_ours(hf_config.hidden_act), cls_token=False,
        pos_emb="learned", pre_norm=False, final_norm=True, final_norm_on="tokens",
        pool="map" if getattr(hf_config, "vision_use_head", True) else "none",
        eps=hf_config.layer_norm_eps, qkv_bias=True, patch_bias=True,
    )


def _siglip_vision_pairs(cfg: ViTConfig) -> list[tuple[str, str]]:
    pairs = [("patch_embed.weight", "embeddings.patch_embedding.weight"),
             ("patch_embed.bias", "embeddings.patch_embedding.bias"),
             ("pos_emb", "embeddings.position_embedding.weight")]
    for i in range(cfg.depth):
        pairs += encoder_block_pairs(f"transformer.blocks.{i}.", f"encoder.layers.{i}.")
    pairs += _ln("norm", "post_layernorm")
    if cfg.pool == "map":
        pairs += [("head.probe", "head.probe"), ("head.attn.out.weight", "head.attention.out_proj.weight"),
                  ("head.attn.out.bias", "head.attention.out_proj.bias"), *_ln("head.norm", "head.layernorm"),
                  *[(f"head.mlp.{f}.{p}", f"head.mlp.{f}.{p}") for f in ("fc1", "fc2") for p in ("weight", "bias")]]
    return pairs


def vit_from_hf_siglip_vision(hf_model_or_state_dict: nn.Module | Mapping[str, torch.Tensor],
                              hf_config: Any = None) -> ViT:
    """Build our :class:`ViT` with the weights of a ``transformers`` ``SiglipVisionModel``."""
    hf_config, src = tower_source(hf_model_or_state_dict, hf_config, "vision", "SiglipVisionConfig", "SigLIP vision")
    cfg = vit_config_from_hf_siglip_vision(hf_config)
    ours = convert_pairs(src, _siglip_vision_pairs(cfg))
    if cfg.pool == "map":  # nn.MultiheadAttention packs q, k, v into one projection
        for p in ("weight", "bias"):
            q, k, v = src[f"head.attention.in_proj_{p}"].detach().clone().chunk(3, dim=0)
            ours.update({f"head.attn.q.{p}": q, f"head.attn.k.{p}": k, f"head.attn.v.{p}": v})
    src.finish()
    return load_strict(ViT(cfg), ours, "ViT (from SigLIP vision)")


def siglip_vision_config_from_vit(cfg: ViTConfig, **extra: Any):
    """:class:`ViTConfig` -> ``transformers.SiglipVisionConfig`` (SigLIP-style configs only)."""
    from transformers import SiglipVisionConfig

    _require(not cfg.cls_token and not cfg.pre_norm and cfg.final_norm and cfg.final_norm_on == "tokens"
             and cfg.pool in ("map", "none") and cfg.pos_emb == "learned" and cfg.patch_bias and cfg.qkv_bias
             and cfg.act != "swiglu",
             "SigLIP's vision tower has no CLS and no ln_pre, a final norm on tokens, a MAP head (or none), "
             "learned positions, patch and qkv biases and a non-gated MLP")
    return SiglipVisionConfig(
        hidden_size=cfg.dim, intermediate_size=cfg.mlp_dim or int(cfg.dim * cfg.mlp_ratio),
        num_hidden_layers=cfg.depth, num_attention_heads=cfg.heads, num_channels=cfg.channels,
        image_size=cfg.image_size, patch_size=cfg.patch_size, hidden_act=ours_act_to_hf(cfg.act),
        layer_norm_eps=cfg.eps, vision_use_head=cfg.pool == "map", **extra,
    )


def vit_to_hf_siglip_vision(model: ViT) -> dict[str, torch.Tensor]:
    """Our :class:`ViT` -> a state dict for ``transformers.SiglipVisionModel``."""
    siglip_vision_config_from_vit(model.cfg)
    src = StrictSource(model.state_dict(), "ViT state dict")
    out = convert_pairs(src, [(t, o) for o, t in _siglip_vision_pairs(model.cfg)])
    if model.cfg.pool == "map":
        for p in ("weight", "bias"):
            out[f"head.attention.in_proj_{p}"] = torch.cat(
                [src[f"head.attn.{n}.{p}"].detach() for n in ("q", "k", "v")], dim=0).clone()
    src.finish()
    return out


# --------------------------------------------------------------------------- text


def text_config_from_hf_siglip_text(hf_config: Any) -> TextConfig:
    """``SiglipTextConfig`` -> :class:`TextConfig` (bidirectional, pooled at the last position)."""
    eos = hf_config.eos_token_id[0] if isinstance(hf_config.eos_token_id, (list, tuple)) else hf_config.eos_token_id
    return TextConfig(
        vocab_size=hf_config.vocab_size, context_length=hf_config.max_position_embeddings,
        dim=hf_config.hidden_size, depth=hf_config.num_hidden_layers, heads=hf_config.num_attention_heads,
        mlp_dim=hf_config.intermediate_size, act=hf_act_to_ours(hf_config.hidden_act), causal=False, pool="last",
        eos_token_id=eos if eos is not None else 1,
        pad_token_id=hf_config.pad_token_id if hf_config.pad_token_id is not None else 1,
        eps=hf_config.layer_norm_eps, final_norm=True, qkv_bias=True,
    )


def text_from_hf_siglip_text(hf_model_or_state_dict: nn.Module | Mapping[str, torch.Tensor],
                             hf_config: Any = None) -> tuple[TextTransformer, nn.Linear]:
    """Our :class:`TextTransformer` plus the projection ``head`` (``nn.Linear``) of a ``SiglipTextModel``.

    ``transformers``' pooled output is ``head(ours(ids).pooled)``.
    """
    hf_config, src = tower_source(hf_model_or_state_dict, hf_config, "text", "SiglipTextConfig", "SigLIP text")
    cfg = text_config_from_hf_siglip_text(hf_config)
    ours = convert_pairs(src, _clip_text_pairs(cfg))
    head_sd = convert_pairs(src, [("weight", "head.weight"), ("bias", "head.bias")])
    src.finish()
    head = nn.Linear(head_sd["weight"].shape[1], head_sd["weight"].shape[0])
    load_strict(head, head_sd, "SigLIP text head")
    return load_strict(TextTransformer(cfg), ours, "TextTransformer (from SigLIP text)"), head


def siglip_text_config_from_text(cfg: TextConfig, projection_size: int | None = None, **extra: Any):
    """:class:`TextConfig` -> ``transformers.SiglipTextConfig`` (bidirectional, last-token pooling)."""
    from transformers import SiglipTextConfig

    _require(not cfg.causal and cfg.pool == "last" and cfg.final_norm and cfg.qkv_bias and cfg.act != "swiglu",
             "SigLIP's text tower is bidirectional, pools the last token, has a final norm and qkv biases")
    return SiglipTextConfig(
        vocab_size=cfg.vocab_size, max_position_embeddings=cfg.context_length, hidden_size=cfg.dim,
        intermediate_size=cfg.mlp_dim or int(cfg.dim * cfg.mlp_ratio), num_hidden_layers=cfg.depth,
        num_attention_heads=cfg.heads, hidden_act=ours_act_to_hf(cfg.act), layer_norm_eps=cfg.eps,
        eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id, projection_size=projection_size, **extra,
    )


def text_to_hf_siglip_text(model: TextTransformer, head: nn.Linear) -> dict[str, torch.Tensor]:
    """Our :class:`TextTransformer` and projection ``head`` -> a state dict for ``transformers.SiglipTextModel``."""
    siglip_text_config_from_text(model.cfg)
    src = StrictSource(model.state_dict(), "TextTransformer state dict")
    out = convert_pairs(src, [(t, o) for o, t in _clip_text_pairs(model.cfg)])
    src.finish()
    out.update({"head.weight": head.weight.detach().clone(), "head.bias": head.bias.detach().clone()})
    return out


# --------------------------------------------------------------------------- the whole model
# (vlm_primer.contrastive.SigLIP <-> transformers.SiglipModel)


def siglip_config_from_hf(hf_config: Any):
    """``transformers.SiglipConfig`` -> our :class:`~vlm_primer.contrastive.SigLIPConfig`."""
    from vlm_primer.contrastive import SigLIPConfig

    vision = vit_config_from_hf_siglip_vision(hf_config.vision_config)
    if vision.pool != "map":
        raise ValueError("SigLIP's image embedding is the MAP head output: vision_use_head must be True")
    if hf_config.text_config.projection_size != vision.dim:
        raise ValueError(f"text projection_size={hf_config.text_config.projection_size} must equal the vision "
                         f"hidden_size={vision.dim} (SigLIP has no image projection)")
    return SigLIPConfig(vision=vision, text=text_config_from_hf_siglip_text(hf_config.text_config))


def siglip_from_hf(hf_model: nn.Module):
    """Our :class:`~vlm_primer.contrastive.SigLIP` with the weights of a ``transformers.SiglipModel`` (strict)."""
    from vlm_primer.contrastive import SigLIP

    hf_config = getattr(hf_model, "config", None)
    if hf_config is None or not hasattr(hf_config, "vision_config") or not hasattr(hf_model, "logit_bias"):
        raise TypeError(f"expected a transformers SiglipModel, got {type(hf_model).__name__}")
    sd = state_dict_of(hf_model)
    model = SigLIP(siglip_config_from_hf(hf_config))
    model.vision = vit_from_hf_siglip_vision(sd, hf_config.vision_config)
    model.text, model.text_head = text_from_hf_siglip_text(sd, hf_config.text_config)
    src = StrictSource({k: v for k, v in sd.items() if not k.startswith(("vision_model.", "text_model."))},
                       "SiglipModel state dict")
    rest = convert_pairs(src, [("logit_scale", "logit_scale"), ("logit_bias", "logit_bias")])
    src.finish()
    with torch.no_grad():
        model.logit_scale.copy_(rest["logit_scale"].reshape(()))
        model.logit_bias.copy_(rest["logit_bias"].reshape(()))
    return model


def siglip_config_to_hf(cfg: Any, **extra: Any):
    """Our :class:`~vlm_primer.contrastive.SigLIPConfig` -> ``transformers.SiglipConfig``."""
    from transformers import SiglipConfig

    return SiglipConfig(
        text_config=siglip_text_config_from_text(cfg.text, cfg.embed_dim).to_dict(),
        vision_config=siglip_vision_config_from_vit(cfg.vision).to_dict(), **extra,
    )


def siglip_to_hf(model: nn.Module, **config_extra: Any):
    """A ``transformers.SiglipModel`` with the weights of our :class:`~vlm_primer.contrastive.SigLIP`."""
    from transformers import SiglipModel

    hf = SiglipModel(siglip_config_to_hf(model.cfg, **config_extra))
    sd = {f"vision_model.{k}": v for k, v in vit_to_hf_siglip_vision(model.vision).items()}
    sd.update({f"text_model.{k}": v for k, v in text_to_hf_siglip_text(model.text, model.text_head).items()})
    sd["logit_scale"] = model.logit_scale.detach().clone().reshape(hf.logit_scale.shape)
    sd["logit_bias"] = model.logit_bias.detach().clone().reshape(hf.logit_bias.shape)
    return load_strict(hf, sd, "SiglipModel (from ours)").eval()


def load_siglip_pretrained(name: str = "google/siglip-base-patch16-224", **from_pretrained_kwargs: Any):
    """Download (or read from the local cache) a SigLIP checkpoint and convert it to our SigLIP.

    Calls ``transformers.SiglipModel.from_pretrained(name)``, which needs the Hugging Face hub or a
    cached copy (CI runs offline and never calls this). SigLIP was trained on captions padded to the
    full context (``padding="max_length"``) without an attention mask: tokenize the same way with
    ``transformers.AutoProcessor.from_pretrained(name)``. Returns the model in eval mode.
    """
    from transformers import SiglipModel

    return siglip_from_hf(SiglipModel.from_pretrained(name, **from_pretrained_kwargs)).eval()
