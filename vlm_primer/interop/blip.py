"""Convert ``transformers``' BLIP to ours: ``BlipForConditionalGeneration`` (a captioner: ViT + text decoder with
its LM head) and ``BlipForImageTextRetrieval`` (ViT + image-grounded text encoder + ITC/ITM heads), each into a
:class:`~vlm_primer.generative.Blip` with one self-attention per layer (``decoder_self_attn=False``), since
``transformers`` keeps one text model per task where BLIP's pre-training shares them.

The vision tower has BLIP-2's layout (:func:`~vlm_primer.interop.blip2.vit_from_hf_blip2_vision`). The text model's
renames, layer by layer: ``attention.self.{query,key,value}`` / ``attention.output.dense`` -> ``attn.{q,k,v,out}``,
``crossattention.*`` -> ``xattn.*``, ``intermediate.dense`` / ``output.dense`` -> ``mlp.fc1`` / ``mlp.fc2``, each
sub-layer's ``LayerNorm`` -> ``ln_attn`` / ``ln_xattn`` / ``ln_mlp``; the LM head ``cls.predictions.transform``
-> ``lm_head.{dense,ln}`` with its tied decoder. Explained in notebook 04, §Parity.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vlm_primer.generative.blip import Blip, BlipConfig
from vlm_primer.generative.med import MEDConfig
from vlm_primer.interop import StrictSource, convert_pairs, hf_act_to_ours, load_strict, state_dict_of
from vlm_primer.interop.blip2 import vit_from_hf_blip2_vision
from vlm_primer.interop.clip import _ln as _weight_bias

__all__ = ["blip_from_hf", "med_config_from_hf"]

_KINDS = {"BlipForConditionalGeneration": "text_decoder.bert.", "BlipForImageTextRetrieval": "text_encoder."}


def med_config_from_hf(text_config: Any, *, lm_head: bool, dec_token_id: int | None = None,
                       enc_token_id: int | None = None) -> MEDConfig:
    """``transformers.BlipTextConfig`` -> :class:`MEDConfig` with one self-attention (``decoder_self_attn=False``);
    BLIP's ``[Decode]`` is the config's ``bos_token_id`` and ``[Encode]`` the id after it (``bert-base`` + 2)."""
    if not text_config.is_decoder:
        raise ValueError("this BLIP text model has no cross-attention (is_decoder=False): the MED needs it")
    dec = text_config.bos_token_id if dec_token_id is None else dec_token_id
    enc = (dec + 1 if dec + 1 < text_config.vocab_size else 0) if enc_token_id is None else enc_token_id
    return MEDConfig(vocab_size=text_config.vocab_size, dim=text_config.hidden_size,
                     depth=text_config.num_hidden_layers, heads=text_config.num_attention_heads,
                     mlp_dim=text_config.intermediate_size, max_positions=text_config.max_position_embeddings,
                     vision_dim=text_config.encoder_hidden_size, act=hf_act_to_ours(text_config.hidden_act),
                     eps=text_config.layer_norm_eps, decoder_self_attn=False, lm_head=lm_head,
                     cls_token_id=101 if 101 < text_config.vocab_size else 0, enc_token_id=enc, dec_token_id=dec,
                     sep_token_id=text_config.sep_token_id, pad_token_id=text_config.pad_token_id)


def _med_pairs(cfg: MEDConfig, prefix: str) -> list[tuple[str, str]]:
    emb = prefix + "embeddings."
    pairs = [("word_emb.weight", emb + "word_embeddings.weight"), ("pos_emb.weight", emb + "position_embeddings.weight"),
             *_weight_bias("ln_embed", emb + "LayerNorm")]
    for i in range(cfg.depth):
        ours, theirs = f"layers.{i}.", f"{prefix}encoder.layer.{i}."
        names = []
        for o, t in (("attn", "attention"), ("xattn", "crossattention")):
            names += [(f"{o}.{p}", f"{t}.self.{q}") for p, q in zip("qkv", ("query", "key", "value"))]
            names += [(f"{o}.out", f"{t}.output.dense"), (f"ln_{o}", f"{t}.output.LayerNorm")]
        names += [("mlp.fc1", "intermediate.dense"), ("mlp.fc2", "output.dense"), ("ln_mlp", "output.LayerNorm")]
        pairs += [p for o, t in names for p in _weight_bias(ours + o, theirs + t)]
    return pairs


def _tied(src: StrictSource, key: str, like: torch.Tensor) -> None:
    """Take a tied copy ``key`` (the LM decoder's weight or bias) if the state dict lists it, checking it equals
    the tensor it is tied to."""
    if key in src and not torch.equal(src[key], like):
        raise ValueError(f"{src.name}: {key} is not tied to the word embeddings / LM bias; our MED ties them")


def blip_from_hf(hf_model: nn.Module) -> Blip:
    """Our :class:`Blip` with the weights of a ``transformers`` ``BlipForConditionalGeneration`` (``heads=False``,
    with the LM head) or ``BlipForImageTextRetrieval`` (ITC/ITM heads, no LM head), in eval mode."""
    kind = type(hf_model).__name__
    if kind not in _KINDS:
        raise ValueError(f"blip_from_hf converts {sorted(_KINDS)}, got {kind}")
    captioner, prefix = kind == "BlipForConditionalGeneration", _KINDS[kind]
    hf_config = hf_model.config
    vision = vit_from_hf_blip2_vision(hf_model.vision_model)
    text_cfg = med_config_from_hf(hf_config.text_config, lm_head=captioner)
    cfg = BlipConfig(vision=vision.cfg, text=text_cfg, heads=not captioner,
                     embed_dim=getattr(hf_config, "image_text_hidden_size", BlipConfig.embed_dim),
                     label_smoothing=getattr(hf_config.text_config, "label_smoothing", 0.0))  # the captioning loss
    src = StrictSource({k: v for k, v in state_dict_of(hf_model).items() if not k.startswith("vision_model.")}, kind)
    text = convert_pairs(src, _med_pairs(text_cfg, prefix))
    heads = {}
    if captioner:
        lm = "text_decoder.cls.predictions."
        text |= convert_pairs(src, [*_weight_bias("lm_head.dense", lm + "transform.dense"),
                                    *_weight_bias("lm_head.ln", lm + "transform.LayerNorm"), ("lm_head.bias", lm + "bias")])
        text["lm_head.word_emb.weight"] = text["word_emb.weight"]
        _tied(src, lm + "decoder.weight", text["word_emb.weight"])
        _tied(src, lm + "decoder.bias", text["lm_head.bias"])
    else:
        heads = convert_pairs(src, [p for name in ("vision_proj", "text_proj", "itm_head")
                                    for p in _weight_bias(name, name)])
    src.finish()
    model = Blip(cfg)
    model.vision.load_state_dict(vision.state_dict())
    load_strict(model.text, text, f"MED (from {kind})")
    for name in ("vision_proj", "text_proj", "itm_head") if heads else ():
        load_strict(getattr(model, name), {p: heads[f"{name}.{p}"] for p in ("weight", "bias")})
    return model.eval()
