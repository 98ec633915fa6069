"""Convert ``transformers``' ``ViTMAEForPreTraining`` to our :class:`~vlm_primer.masking.MAE` (and back).

Renames, layer by layer (encoder ``vit.layers.i.`` and decoder ``decoder.decoder_layers.i.``): ``layernorm_before`` /
``layernorm_after`` -> ``ln1`` / ``ln2``, ``attention.{q,k,v,o}_proj`` -> ``attn.{q,k,v,out}``, ``mlp.fc1/fc2`` ->
``mlp.fc1/fc2``. The fixed sin-cos position tables ``position_embeddings`` and ``decoder_pos_embed`` are stored in
``transformers``' state dict; ours computes them, so the converter checks they are MAE's table (a checkpoint with
other positions is refused, not silently changed). Explained in notebook 03, §Parity.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vlm_primer.interop import StrictSource, convert_pairs, hf_act_to_ours, load_strict, ours_act_to_hf, state_dict_of
from vlm_primer.interop.clip import _ln
from vlm_primer.masking.mae import MAE, MAE_VIT, MAEConfig
from vlm_primer.nn import ViTConfig, sincos_2d

__all__ = ["mae_config_from_hf", "mae_from_hf", "mae_to_hf"]


def mae_config_from_hf(hf_config: Any) -> MAEConfig:
    """``transformers.ViTMAEConfig`` -> :class:`MAEConfig`."""
    if not getattr(hf_config, "qkv_bias", True):
        raise ValueError("ViTMAEConfig.qkv_bias=False is not supported: our attention has q, k and v biases")
    encoder = ViTConfig(image_size=hf_config.image_size, patch_size=hf_config.patch_size,
                        channels=hf_config.num_channels, dim=hf_config.hidden_size, depth=hf_config.num_hidden_layers,
                        heads=hf_config.num_attention_heads, mlp_dim=hf_config.intermediate_size,
                        act=hf_act_to_ours(hf_config.hidden_act), eps=hf_config.layer_norm_eps, **MAE_VIT)
    return MAEConfig(encoder=encoder, decoder_dim=hf_config.decoder_hidden_size,
                     decoder_depth=hf_config.decoder_num_hidden_layers,
                     decoder_heads=hf_config.decoder_num_attention_heads,
                     decoder_mlp_dim=hf_config.decoder_intermediate_size, mask_ratio=hf_config.mask_ratio,
                     norm_pix_loss=bool(hf_config.norm_pix_loss))


def _layer_pairs(ours: str, theirs: str) -> list[tuple[str, str]]:
    names = [("ln1", "layernorm_before"), ("ln2", "layernorm_after"), ("attn.q", "attention.q_proj"),
             ("attn.k", "attention.k_proj"), ("attn.v", "attention.v_proj"), ("attn.out", "attention.o_proj"),
             ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")]
    return [(f"{ours}{a}.{p}", f"{theirs}{b}.{p}") for a, b in names for p in ("weight", "bias")]


def _pairs(cfg: MAEConfig) -> list[tuple[str, str]]:
    pairs = [("encoder.patch_embed.weight", "vit.embeddings.patch_embeddings.projection.weight"),
             ("encoder.patch_embed.bias", "vit.embeddings.patch_embeddings.projection.bias"),
             *_ln("encoder.norm", "vit.layernorm"), *_ln("decoder_embed", "decoder.decoder_embed"),
             *_ln("decoder_norm", "decoder.decoder_norm"), *_ln("decoder_pred", "decoder.decoder_pred")]
    for i in range(cfg.encoder.depth):
        pairs += _layer_pairs(f"encoder.transformer.blocks.{i}.", f"vit.layers.{i}.")
    for i in range(cfg.decoder_depth):
        pairs += _layer_pairs(f"decoder.blocks.{i}.", f"decoder.decoder_layers.{i}.")
    return pairs


def _check_positions(src: StrictSource, key: str, grid: int, dim: int) -> None:
    want = sincos_2d(grid, grid, dim, cls_token=True)
    got = src[key].detach().reshape(-1, dim).float()
    if got.shape != want.shape or not torch.allclose(got, want, atol=1e-5):
        raise ValueError(f"{src.name}: {key} is not MAE's fixed 2-D sin-cos table (ours computes it; a checkpoint "
                         "with other positions cannot be converted)")


def mae_from_hf(hf_model: nn.Module) -> MAE:
    """Our :class:`MAE` with the weights of a ``transformers`` ``ViTMAEForPreTraining``, in eval mode."""
    if type(hf_model).__name__ != "ViTMAEForPreTraining":
        raise ValueError(f"mae_from_hf converts a ViTMAEForPreTraining, got {type(hf_model).__name__}")
    cfg = mae_config_from_hf(hf_model.config)
    src = StrictSource(state_dict_of(hf_model), "ViTMAEForPreTraining")
    sd = convert_pairs(src, _pairs(cfg))
    sd["encoder.cls"] = src["vit.embeddings.cls_token"].detach().reshape(-1).clone()
    sd["mask_token"] = src["decoder.mask_token"].detach().reshape(-1).clone()
    _check_positions(src, "vit.embeddings.position_embeddings", cfg.encoder.grid, cfg.encoder.dim)
    _check_positions(src, "decoder.decoder_pos_embed", cfg.encoder.grid, cfg.decoder_dim)
    src.finish()
    return load_strict(MAE(cfg), sd, "MAE (from ViTMAEForPreTraining)").eval()


def mae_to_hf(model: MAE) -> nn.Module:
    """A ``transformers`` ``ViTMAEForPreTraining`` with our MAE's weights (eval mode, eager attention)."""
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    cfg, enc = model.cfg, model.cfg.encoder
    hf_cfg = ViTMAEConfig(image_size=enc.image_size, patch_size=enc.patch_size, num_channels=enc.channels,
                          hidden_size=enc.dim, num_hidden_layers=enc.depth, num_attention_heads=enc.heads,
                          intermediate_size=enc.mlp_dim or int(enc.dim * enc.mlp_ratio),
                          hidden_act=ours_act_to_hf(enc.act), layer_norm_eps=enc.eps, qkv_bias=enc.qkv_bias,
                          decoder_hidden_size=cfg.decoder_dim, decoder_num_hidden_layers=cfg.decoder_depth,
                          decoder_num_attention_heads=cfg.decoder_heads,
                          decoder_intermediate_size=cfg.decoder_mlp_dim or 4 * cfg.decoder_dim,
                          mask_ratio=cfg.mask_ratio, norm_pix_loss=cfg.norm_pix_loss, attn_implementation="eager")
    hf = ViTMAEForPreTraining(hf_cfg).eval()
    ours = model.state_dict()
    sd = {theirs: ours[o].clone() for o, theirs in _pairs(cfg)}
    sd["vit.embeddings.cls_token"] = ours["encoder.cls"].reshape(1, 1, -1).clone()
    sd["decoder.mask_token"] = ours["mask_token"].reshape(1, 1, -1).clone()
    sd["vit.embeddings.position_embeddings"] = sincos_2d(enc.grid, enc.grid, enc.dim, cls_token=True)[None]
    sd["decoder.decoder_pos_embed"] = sincos_2d(enc.grid, enc.grid, cfg.decoder_dim, cls_token=True)[None]
    hf.load_state_dict(sd, strict=True)
    return hf
