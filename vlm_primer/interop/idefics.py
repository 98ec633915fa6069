"""Convert ``transformers``' ``IdeficsForVisionText2Text`` (IDEFICS, the open Flamingo) to and from our
:class:`~vlm_primer.backbones.flamingo.Flamingo`.

IDEFICS' parts are ones the book already converts: a CLIP vision tower (``model.vision_model``, CLIP's key
names), a Llama LM (``model.layers``, ``model.norm``, ``lm_head``); new are ``model.perceiver_resampler``
(``blocks.i.0`` attention, ``blocks.i.1`` MLP) and ``model.gated_cross_attn_layers.j``, which runs before LM
block ``j * cross_layer_interval`` (ours sits in the LM's ``transformer.inserted`` under that block's index).
IDEFICS' extra vocabulary (``additional_vocab_size``, decoupled embeddings) is not supported.
Explained in notebook 05b, §Parity.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from torch import nn

from vlm_primer.backbones.flamingo import Flamingo, FlamingoConfig
from vlm_primer.backbones.llava import _CLIP_TOWER
from vlm_primer.interop import StrictSource, convert_pairs, hf_act_to_ours, load_strict, ours_act_to_hf, state_dict_of
from vlm_primer.interop.clip import _clip_vision_pairs, _ln, _require
from vlm_primer.interop.llama import _llama_pairs, decoder_config_from_hf_llama
from vlm_primer.nn import ViTConfig

__all__ = ["flamingo_config_from_hf", "flamingo_config_to_hf", "flamingo_from_hf", "flamingo_to_hf"]


def _pairs(cfg: FlamingoConfig) -> list[tuple[str, str]]:
    """``(ours, theirs)`` key of every tensor of the model."""
    pairs = [("vision_tower." + o, "model.vision_model." + t) for o, t in _clip_vision_pairs(cfg.vision)]
    pairs += [("language_model." + o, t) for o, t in _llama_pairs(cfg.text)]
    for j, i in enumerate(range(0, cfg.text.depth, cfg.cross_every)):
        ours, theirs = f"language_model.transformer.inserted.{i}.", f"model.gated_cross_attn_layers.{j}."
        names = [("alpha_xattn", "alpha_cross_attn"), ("alpha_mlp", "alpha_dense"),
                 ("ln_xattn.weight", "input_layernorm.weight"), ("ln_mlp.weight", "post_attention_layernorm.weight")]
        names += [(f"xattn.{a}.weight", f"cross_attn.{b}_proj.weight") for a, b in zip(("q", "k", "v", "out"), "qkvo")]
        names += [(f"mlp.{a}.weight", f"mlp.{b}_proj.weight") for a, b in (("fc1", "gate"), ("fc3", "up"), ("fc2", "down"))]
        if cfg.xattn_qk_norm:
            names += [(f"xattn.{a}_norm.weight", f"cross_attn.{a}_layer_norm.weight") for a in "qk"]
        pairs += [(ours + o, theirs + t) for o, t in names]
    if cfg.use_perceiver:
        ours, theirs = "perceiver.", "model.perceiver_resampler."
        pairs += [(ours + "latents", theirs + "latents"), *_ln(ours + "norm", theirs + "layer_norm")]
        for i in range(cfg.perceiver_depth):
            o, t = f"{ours}blocks.{i}.", f"{theirs}blocks.{i}."
            pairs += [*_ln(o + "ln_context", t + "0.context_layer_norm"), *_ln(o + "ln_latents", t + "0.latents_layer_norm"),
                      *_ln(o + "ln_mlp", t + "1.ln"), (o + "mlp.fc1.weight", t + "1.fc.weight"),
                      (o + "mlp.fc2.weight", t + "1.c_proj.weight"), (o + "attn.out.weight", t + "0.output_proj.weight")]
            pairs += [(f"{o}attn.{p}.weight", f"{t}0.{p}_proj.weight") for p in "qkv"]
            if cfg.perceiver_qk_norm:
                pairs += [p for a in "qk" for p in _ln(f"{o}attn.{a}_norm", f"{t}0.{a}_layer_norm")]
    return pairs


def flamingo_config_from_hf(hf_config: Any) -> FlamingoConfig:
    """``transformers.IdeficsConfig`` -> :class:`FlamingoConfig`."""
    if hf_config.additional_vocab_size:
        raise ValueError(f"IDEFICS' extra vocabulary (additional_vocab_size={hf_config.additional_vocab_size}) "
                         "is not supported: convert a model without it")
    v, p = hf_config.vision_config, hf_config.perceiver_config
    vision = ViTConfig(image_size=v.image_size, patch_size=v.patch_size, channels=v.num_channels, dim=v.embed_dim,
                       depth=v.num_hidden_layers, heads=v.num_attention_heads, mlp_dim=v.intermediate_size,
                       act=hf_act_to_ours(v.hidden_act), **{**_CLIP_TOWER, "eps": v.layer_norm_eps})
    if hf_config.tie_word_embeddings:
        raise ValueError("IDEFICS with tied embeddings is not supported (its checkpoints untie them)")
    # the LM is a Llama without grouped-query attention or biases
    llama = SimpleNamespace(**{**hf_config.to_dict(), "num_key_value_heads": hf_config.num_attention_heads,
                               "attention_bias": False, "mlp_bias": False})
    text = decoder_config_from_hf_llama(llama).replace(dropout=hf_config.dropout)
    return FlamingoConfig(vision=vision, text=text, use_perceiver=hf_config.use_resampler,
                          num_latents=p.resampler_n_latents, perceiver_depth=p.resampler_depth,
                          perceiver_heads=p.resampler_n_heads, perceiver_dim_head=p.resampler_head_dim,
                          perceiver_qk_norm=p.qk_layer_norms_perceiver, cross_every=hf_config.cross_layer_interval,
                          xattn_qk_norm=hf_config.qk_layer_norms, alpha_type=hf_config.alpha_type)


def flamingo_config_to_hf(cfg: FlamingoConfig):
    """:class:`FlamingoConfig` -> ``transformers.IdeficsConfig`` (Llama-style LM without grouped-query attention,
    CLIP-layout tower)."""
    from transformers import IdeficsConfig

    t, v = cfg.text, cfg.vision
    _require(t.norm == "rmsnorm" and t.pos_emb == "rope" and t.act == "swiglu" and not t.bias
             and t.kv_heads in (None, t.heads) and t.dim_head in (None, t.dim // t.heads) and t.cross_attn_every == 0
             and not t.tie_embeddings,
             "IDEFICS' LM is a Llama without grouped-query attention (kv_heads == heads), biases or tied embeddings")
    _require((v.cls_token, v.pre_norm, v.final_norm_on, v.patch_bias, v.pos_emb) == (True, True, "pooled", False,
                                                                                     "learned"),
             "IDEFICS' tower has CLIP's layout (CLS, ln_pre, final norm on the pooled token, no patch bias)")
    vision = dict(embed_dim=v.dim, image_size=v.image_size, patch_size=v.patch_size, num_channels=v.channels,
                  num_hidden_layers=v.depth, num_attention_heads=v.heads, layer_norm_eps=v.eps,
                  intermediate_size=v.mlp_dim or int(v.dim * v.mlp_ratio), hidden_act=ours_act_to_hf(v.act))
    perceiver = dict(use_resampler=cfg.use_perceiver, resampler_n_latents=cfg.num_latents,
                     resampler_depth=cfg.perceiver_depth, resampler_n_heads=cfg.perceiver_heads,
                     resampler_head_dim=cfg.perceiver_dim_head, qk_layer_norms_perceiver=cfg.perceiver_qk_norm)
    return IdeficsConfig(
        vocab_size=t.vocab_size, additional_vocab_size=0, hidden_size=t.dim, num_hidden_layers=t.depth,
        intermediate_size=t.mlp_dim or int(t.dim * t.mlp_ratio), num_attention_heads=t.heads, dropout=t.dropout,
        hidden_act="silu", rms_norm_eps=t.eps, max_position_embeddings=t.context_length,
        rope_parameters={"rope_type": "default", "rope_theta": t.rope_theta}, tie_word_embeddings=t.tie_embeddings,
        pad_token_id=t.pad_token_id, bos_token_id=t.bos_token_id, eos_token_id=t.eos_token_id,
        cross_layer_interval=cfg.cross_every, qk_layer_norms=cfg.xattn_qk_norm, alpha_type=cfg.alpha_type,
        alpha_initializer="zeros", use_resampler=cfg.use_perceiver, vision_config=vision, perceiver_config=perceiver,
        freeze_text_layers=False, freeze_lm_head=False, freeze_vision_layers=False)


def flamingo_from_hf(hf_model: nn.Module) -> Flamingo:
    """Our :class:`Flamingo` with the weights of a ``transformers`` ``IdeficsForVisionText2Text`` (eval mode)."""
    cfg = flamingo_config_from_hf(hf_model.config)
    src = StrictSource(state_dict_of(hf_model), type(hf_model).__name__)
    sd = convert_pairs(src, _pairs(cfg))
    src.finish()
    return load_strict(Flamingo(cfg), sd, "Flamingo (from IDEFICS)").eval()


def flamingo_to_hf(model: Flamingo):
    """A ``transformers`` ``IdeficsForVisionText2Text`` with our weights (eval mode)."""
    from transformers import IdeficsForVisionText2Text

    hf = IdeficsForVisionText2Text(flamingo_config_to_hf(model.cfg))
    src = StrictSource(model.state_dict(), "Flamingo state dict")
    sd = convert_pairs(src, [(t, o) for o, t in _pairs(model.cfg)])
    src.finish()
    return load_strict(hf, sd, "IdeficsForVisionText2Text").eval()
