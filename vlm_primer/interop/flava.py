"""Convert ``transformers``' ``FlavaForPreTraining`` into our :class:`~vlm_primer.masking.flava.Flava`.

The renames, per encoder layer (``flava.{image,text,multimodal}_model.encoder.layer.i.``):
``layernorm_before`` / ``layernorm_after`` -> ``ln1`` / ``ln2``, ``attention.attention.{query,key,value}`` ->
``attn.{q,k,v}``, ``attention.output.dense`` -> ``attn.out``, ``intermediate.dense`` / ``output.dense`` ->
``mlp.fc1`` / ``mlp.fc2``; each model's ``layernorm`` -> ``norm``. The embeddings: the image's ``cls_token``,
``position_embeddings``, ``mask_token`` and patch ``projection``; the text's ``word_`` / ``position_`` /
``token_type_embeddings`` and their ``LayerNorm`` (``ln_embed``). The heads: ``transform.dense`` /
``transform.LayerNorm`` -> ``dense`` / ``ln``, ``decoder`` -> the head's own output table ``word_emb`` and
``bias`` (``transformers`` ties ``head.bias`` to ``head.decoder.bias``: the copy is checked, not used twice); ITM's
``seq_relationship`` -> ``classifier``.

The image tokenizer ``image_codebook.*`` (DALL-E's dVAE, ``FlavaImageCodebook``) is skipped on purpose: it is a
separate pretrained model that turns images into ``mim_labels``, and ours takes those labels as input.
Explained in notebook 03, §FLAVA.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vlm_primer.interop import StrictSource, convert_pairs, hf_act_to_ours, load_strict, state_dict_of
from vlm_primer.interop.clip import _ln as _weight_bias
from vlm_primer.masking.flava import FLAVA_TEXT, FLAVA_VIT, Flava, FlavaConfig, FlavaMultimodalConfig
from vlm_primer.nn import TextConfig, ViTConfig

__all__ = ["flava_config_from_hf", "flava_from_hf"]

_CODEBOOK = "image_codebook."
_HEADS = ("mim_head", "mlm_head", "mmm_image_head", "mmm_text_head")


def _square(value: Any, name: str) -> int:
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise ValueError(f"FLAVA's {name} {tuple(value)} is not square; ours needs square images and patches")
        value = value[0]
    return int(value)


def flava_config_from_hf(hf_config: Any) -> FlavaConfig:
    """``transformers.FlavaConfig`` -> our :class:`FlavaConfig` (loss weights included).

    ``mask_token_id`` and ``special_token_ids`` are the tokenizer's, which the config does not record: BERT's
    (103; 0, 100, 101, 102) for a BERT-sized vocabulary, ours otherwise.
    """
    img, txt, mm = hf_config.image_config, hf_config.text_config, hf_config.multimodal_config
    if not getattr(mm, "use_cls_token", True):
        raise ValueError("this FLAVA's multimodal encoder has no CLS token (use_cls_token=False); ours always has one")
    if not getattr(img, "mask_token", True):
        raise ValueError("this FLAVA's image encoder has no mask token (image_config.mask_token=False)")
    if hf_config.ce_ignore_index != -100:
        raise ValueError(f"ce_ignore_index={hf_config.ce_ignore_index}: ours ignores -100 (IGNORE_INDEX)")
    # transformers builds the MMM heads from the image and text configs and the ITM head from the top-level
    # hidden_size, then applies them to the multimodal encoder's states: all must agree for the weights to fit.
    def shape(c: Any) -> tuple:
        return c.hidden_size, c.hidden_act, c.layer_norm_eps

    for name, sub in (("image_config", img), ("text_config", txt)):
        if shape(sub) != shape(mm):
            raise ValueError(f"{name} (hidden_size, hidden_act, layer_norm_eps) = {shape(sub)} differs from the "
                             f"multimodal encoder's {shape(mm)}: transformers' MMM heads read the multimodal states "
                             "with the unimodal shapes")
    if hf_config.hidden_size != mm.hidden_size:
        raise ValueError(f"hidden_size={hf_config.hidden_size} (the ITM head) differs from the multimodal "
                         f"encoder's {mm.hidden_size}")
    image = ViTConfig(**{**FLAVA_VIT, "eps": img.layer_norm_eps}, image_size=_square(img.image_size, "image_size"),
                      patch_size=_square(img.patch_size, "patch_size"), channels=img.num_channels,
                      dim=img.hidden_size, depth=img.num_hidden_layers, heads=img.num_attention_heads,
                      mlp_dim=img.intermediate_size, act=hf_act_to_ours(img.hidden_act), qkv_bias=img.qkv_bias)
    pad = txt.pad_token_id if txt.pad_token_id is not None else 0
    text = TextConfig(**{**FLAVA_TEXT, "eps": txt.layer_norm_eps, "type_vocab_size": txt.type_vocab_size},
                      vocab_size=txt.vocab_size, context_length=txt.max_position_embeddings, dim=txt.hidden_size,
                      depth=txt.num_hidden_layers, heads=txt.num_attention_heads, mlp_dim=txt.intermediate_size,
                      act=hf_act_to_ours(txt.hidden_act), qkv_bias=txt.qkv_bias, pad_token_id=pad,
                      eos_token_id=102 if txt.vocab_size > 102 else 3)
    multimodal = FlavaMultimodalConfig(dim=mm.hidden_size, depth=mm.num_hidden_layers, heads=mm.num_attention_heads,
                                       mlp_dim=mm.intermediate_size, act=hf_act_to_ours(mm.hidden_act),
                                       eps=mm.layer_norm_eps, qkv_bias=mm.qkv_bias)
    bert = txt.vocab_size > 103
    weights = {f"{k}_weight": getattr(hf_config, f"{k}_weight")
               for k in ("mim", "mlm", "global_contrastive", "itm", "mmm_image", "mmm_text")}
    return FlavaConfig(image=image, text=text, multimodal=multimodal, codebook_size=img.vocab_size,
                       embed_dim=hf_config.projection_dim,
                       # our config wants a start value in [0, log 100]; the actual value is copied later
                       init_logit_scale=min(max(float(hf_config.logit_scale_init_value), 0.0),
                                            FlavaConfig.max_logit_scale),
                       mask_token_id=103 if bert else FlavaConfig.mask_token_id,
                       special_token_ids=(0, 100, 101, 102) if bert else FlavaConfig.special_token_ids, **weights)


def _block_pairs(ours: str, theirs: str) -> list[tuple[str, str]]:
    """(our key, transformers key) for one FLAVA encoder layer."""
    names = [("ln1", "layernorm_before"), ("attn.q", "attention.attention.query"),
             ("attn.k", "attention.attention.key"), ("attn.v", "attention.attention.value"),
             ("attn.out", "attention.output.dense"), ("ln2", "layernorm_after"), ("mlp.fc1", "intermediate.dense"),
             ("mlp.fc2", "output.dense")]
    return [p for a, b in names for p in _weight_bias(ours + a, theirs + b)]


def _pairs(cfg: FlavaConfig) -> list[tuple[str, str]]:
    img, txt, mm = "flava.image_model.", "flava.text_model.", "flava.multimodal_model."
    pairs = [("image.patch_embed.weight", img + "embeddings.patch_embeddings.projection.weight"),
             ("image.patch_embed.bias", img + "embeddings.patch_embeddings.projection.bias"),
             ("image.cls", img + "embeddings.cls_token"), ("mask_token", img + "embeddings.mask_token"),
             ("image.pos_emb", img + "embeddings.position_embeddings"),
             *_weight_bias("image.norm", img + "layernorm"), *_weight_bias("image_pooler.dense", img + "pooler.dense"),
             ("text.tok_emb.weight", txt + "embeddings.word_embeddings.weight"),
             ("text.pos_emb", txt + "embeddings.position_embeddings.weight"),
             ("text.type_emb.weight", txt + "embeddings.token_type_embeddings.weight"),
             *_weight_bias("text.ln_embed", txt + "embeddings.LayerNorm"),
             *_weight_bias("text.norm", txt + "layernorm"),
             *_weight_bias("text_pooler.dense", txt + "pooler.dense"),
             ("multimodal.cls", mm + "cls_token"), *_weight_bias("multimodal.norm", mm + "layernorm"),
             *_weight_bias("multimodal.pooler.dense", mm + "pooler.dense"),
             *_weight_bias("multimodal.image_to_mm", "flava.image_to_mm_projection"),
             *_weight_bias("multimodal.text_to_mm", "flava.text_to_mm_projection"),
             *_weight_bias("image_projection", "flava.image_projection"),
             *_weight_bias("text_projection", "flava.text_projection"), ("logit_scale", "flava.logit_scale"),
             *_weight_bias("itm_head.pooler.dense", "itm_head.pooler.dense"),
             *_weight_bias("itm_head.classifier", "itm_head.seq_relationship")]
    for ours, theirs, depth in (("image.", img, cfg.image.depth), ("text.", txt, cfg.text.depth),
                                ("multimodal.", mm, cfg.multimodal.depth)):
        for i in range(depth):
            pairs += _block_pairs(f"{ours}transformer.blocks.{i}.", f"{theirs}encoder.layer.{i}.")
    for head in _HEADS:
        pairs += [*_weight_bias(f"{head}.dense", f"{head}.transform.dense"),
                  *_weight_bias(f"{head}.ln", f"{head}.transform.LayerNorm"),
                  (f"{head}.word_emb.weight", f"{head}.decoder.weight"), (f"{head}.bias", f"{head}.decoder.bias")]
    return pairs


def flava_from_hf(hf_model: nn.Module) -> Flava:
    """Our :class:`Flava` with the weights of a ``transformers.FlavaForPreTraining``, in eval mode.

    Strict: every tensor is used exactly once (a missing or left-over key is a ``ValueError``), except the image
    codebook ``image_codebook.*``, which is left out on purpose (see the module docstring), and each head's
    ``bias``, a tied copy of its ``decoder.bias`` that is checked to be equal.
    """
    if type(hf_model).__name__ != "FlavaForPreTraining":
        raise ValueError(f"flava_from_hf converts a transformers FlavaForPreTraining, got {type(hf_model).__name__}")
    cfg = flava_config_from_hf(hf_model.config)
    src = StrictSource({k: v for k, v in state_dict_of(hf_model).items() if not k.startswith(_CODEBOOK)},
                       "FlavaForPreTraining state dict")
    ours = convert_pairs(src, _pairs(cfg))
    for head in _HEADS:  # the tied copy of decoder.bias
        if f"{head}.bias" in src and not torch.equal(src[f"{head}.bias"], ours[f"{head}.bias"]):
            raise ValueError(f"{src.name}: {head}.bias differs from {head}.decoder.bias; transformers ties them")
    src.finish()
    for key in ("image.cls", "mask_token", "multimodal.cls"):  # (1, 1, dim) -> (dim,)
        ours[key] = ours[key].reshape(-1)
    ours["image.pos_emb"] = ours["image.pos_emb"].reshape(-1, cfg.image.dim)
    ours["logit_scale"] = ours["logit_scale"].reshape(())
    return load_strict(Flava(cfg), ours, "Flava (from FlavaForPreTraining)").eval()
