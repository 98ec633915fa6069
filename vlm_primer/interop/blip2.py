"""Convert ``transformers``' BLIP-2 to and from ours: the Q-Former (:class:`~vlm_primer.backbones.QFormer`), the
EVA-style vision tower (our :class:`~vlm_primer.nn.ViT`) and the whole stage-2 model
(:class:`~vlm_primer.backbones.blip2.Blip2`, with a Llama LM), and InstructBLIP's
(:class:`~vlm_primer.backbones.blip2.InstructBlip`: the same layers, its Q-Former holding the text embeddings).

``Blip2ForImageTextRetrieval`` holds everything stage 1 trains: ``query_tokens``, the text ``embeddings``,
the ``qformer`` (its ``layernorm`` is our ``ln_embed``) and the ITC/ITM heads. The renames, layer by layer:
``attention.attention.{query,key,value}`` / ``attention.output.dense`` -> ``attn.{q,k,v,out}``,
``crossattention.*`` -> ``xattn.*``, ``intermediate_query`` / ``output_query`` -> ``mlp_query.fc1/fc2``,
``intermediate`` / ``output`` -> ``mlp_text.fc1/fc2``, each sub-layer's ``LayerNorm`` -> ``ln_*``.
Explained in notebook 05b, §Parity.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vlm_primer.backbones.blip2 import _EVA_TOWER, Blip2, Blip2Config, InstructBlip, InstructBlipConfig
from vlm_primer.backbones.qformer import QFormer, QFormerConfig
from vlm_primer.interop import StrictSource, convert_pairs, hf_act_to_ours, load_strict, ours_act_to_hf, state_dict_of
from vlm_primer.interop.clip import _ln as _weight_bias
from vlm_primer.interop.llama import decoder_from_hf_llama, decoder_to_hf_llama, llama_config_from_decoder
from vlm_primer.nn import ViT, ViTConfig

__all__ = ["blip2_from_hf", "blip2_to_hf", "qformer_config_from_hf", "qformer_config_to_hf", "qformer_from_hf",
           "qformer_to_hf", "vit_from_hf_blip2_vision", "vit_to_hf_blip2_vision"]

_HEADS = (("vision_proj", "vision_projection"), ("text_proj", "text_projection"), ("itm_head", "itm_head"))


# Where the text embeddings and the embedding LayerNorm live: BLIP-2 keeps them beside its Q-Former
# (Blip2ForImageTextRetrieval), InstructBLIP inside it.
_EMBEDDINGS = {False: ("embeddings.", "qformer.layernorm"), True: ("qformer.embeddings.", "qformer.embeddings.layernorm")}


def _pairs(cfg: QFormerConfig, instruct: bool = False) -> list[tuple[str, str]]:
    """``(ours, theirs)`` key of every tensor of the Q-Former: with ``text_input`` also the text embeddings, with
    ``stage1_heads`` the ITC/ITM heads of ``Blip2ForImageTextRetrieval``; ``instruct``: InstructBLIP's names."""
    emb, ln = _EMBEDDINGS[instruct]
    pairs = [("query_tokens", "query_tokens"), *_weight_bias("ln_embed", ln)]
    if cfg.text_input:
        pairs += [("word_emb.weight", emb + "word_embeddings.weight"),
                  ("pos_emb.weight", emb + "position_embeddings.weight")]
    if cfg.text_input and cfg.stage1_heads:
        pairs += [p for ours, theirs in _HEADS for p in _weight_bias(ours, theirs)]
    for i in range(cfg.depth):
        ours, theirs = f"layers.{i}.", f"qformer.encoder.layer.{i}."
        blocks = [("attn", "attention")] + ([("xattn", "crossattention")] if i % cfg.cross_attention_freq == 0 else [])
        names = []
        for o, t in blocks:
            names += [(f"{o}.{p}", f"{t}.attention.{q}") for p, q in zip("qkv", ("query", "key", "value"))]
            names += [(f"{o}.out", f"{t}.output.dense"), (f"ln_{o}", f"{t}.output.LayerNorm")]
        for o, t in [("query", "_query")] + ([("text", "")] if cfg.text_input else []):
            names += [(f"mlp_{o}.fc1", f"intermediate{t}.dense"), (f"mlp_{o}.fc2", f"output{t}.dense"),
                      (f"ln_{o}", f"output{t}.LayerNorm")]
        pairs += [p for o, t in names for p in _weight_bias(ours + o, theirs + t)]
    return pairs


def _is_instruct(hf_config: Any) -> bool:
    return hf_config.model_type == "instructblip"


def qformer_config_from_hf(hf_config: Any) -> QFormerConfig:
    """``transformers.Blip2Config`` or ``InstructBlipConfig`` (with its ``qformer_config``) -> :class:`QFormerConfig`
    (InstructBLIP's Q-Former always reads text and has no stage-1 heads)."""
    q, instruct = hf_config.qformer_config, _is_instruct(hf_config)
    text_input = instruct or bool(q.use_qformer_text_input)
    return QFormerConfig(dim=q.hidden_size, depth=q.num_hidden_layers, heads=q.num_attention_heads,
                         mlp_dim=q.intermediate_size, num_queries=hf_config.num_query_tokens,
                         vision_dim=q.encoder_hidden_size, cross_attention_freq=q.cross_attention_frequency,
                         vocab_size=q.vocab_size, max_positions=q.max_position_embeddings,
                         embed_dim=getattr(hf_config, "image_text_hidden_size", QFormerConfig.embed_dim),
                         act=hf_act_to_ours(q.hidden_act), eps=q.layer_norm_eps, text_input=text_input,
                         stage1_heads=text_input and not instruct,
                         dropout=q.hidden_dropout_prob)  # one rate for ours: attention dropout takes the same


def qformer_from_hf(hf_model: nn.Module) -> QFormer:
    """Our :class:`QFormer` with the weights of a ``transformers`` ``Blip2ForImageTextRetrieval`` (its vision
    model is left out: the Q-Former reads its features)."""
    cfg = qformer_config_from_hf(hf_model.config)
    src = StrictSource({k: v for k, v in state_dict_of(hf_model).items() if not k.startswith("vision_model.")},
                       type(hf_model).__name__)
    sd = convert_pairs(src, _pairs(cfg))
    src.finish()
    return load_strict(QFormer(cfg), sd, "QFormer (from transformers)").eval()


def _hf_classes(instruct: bool) -> dict[str, Any]:
    """``transformers``' config and model classes of BLIP-2 or InstructBLIP."""
    import transformers

    name = "InstructBlip" if instruct else "Blip2"
    return {part: getattr(transformers, name + part) for part in
            ("Config", "VisionConfig", "QFormerConfig", "ForConditionalGeneration")}


def qformer_config_to_hf(cfg: QFormerConfig, vision_config: Any | None = None, instruct: bool = False):
    """:class:`QFormerConfig` -> ``transformers.Blip2Config`` (``InstructBlipConfig`` with ``instruct``); the
    vision config defaults to a tiny one of ``vision_dim`` width (it sets the Q-Former's ``encoder_hidden_size``)."""
    hf = _hf_classes(instruct)
    vision = vision_config or hf["VisionConfig"](hidden_size=cfg.vision_dim, intermediate_size=2 * cfg.vision_dim,
                                                 num_hidden_layers=1, num_attention_heads=max(1, cfg.vision_dim // 32),
                                                 image_size=32, patch_size=8)
    if vision.hidden_size != cfg.vision_dim:
        raise ValueError(f"the vision config is {vision.hidden_size} wide, the Q-Former reads {cfg.vision_dim}")
    if instruct and (not cfg.text_input or cfg.stage1_heads):
        raise ValueError("InstructBLIP's Q-Former reads text and has no stage-1 heads: text_input=True, "
                         "stage1_heads=False")
    qformer = hf["QFormerConfig"](
        hidden_size=cfg.dim, num_hidden_layers=cfg.depth, num_attention_heads=cfg.heads, intermediate_size=cfg.mlp_dim,
        hidden_act=ours_act_to_hf(cfg.act), cross_attention_frequency=cfg.cross_attention_freq,
        vocab_size=cfg.vocab_size, max_position_embeddings=cfg.max_positions, layer_norm_eps=cfg.eps,
        encoder_hidden_size=cfg.vision_dim, hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout,
        **({} if instruct else dict(use_qformer_text_input=cfg.text_input)))
    extra = {} if instruct else dict(image_text_hidden_size=cfg.embed_dim)
    return hf["Config"](vision_config=vision.to_dict(), qformer_config=qformer.to_dict(),
                        num_query_tokens=cfg.num_queries, **extra)


def qformer_to_hf(model: QFormer, vision_model: nn.Module | None = None):
    """A ``transformers`` ``Blip2ForImageTextRetrieval`` with our Q-Former's weights; its vision model is
    ``vision_model``'s weights if given (a ``Blip2VisionModel``), else freshly initialised."""
    from transformers import Blip2ForImageTextRetrieval

    cfg = model.cfg
    hf = Blip2ForImageTextRetrieval(qformer_config_to_hf(cfg, None if vision_model is None else vision_model.config))
    ours = model.state_dict()
    sd = {t: ours[o].detach().clone() for o, t in _pairs(cfg)}
    vision = (vision_model or hf.vision_model).state_dict()
    sd |= {"vision_model." + k: v for k, v in vision.items()}
    return load_strict(hf, sd, "Blip2ForImageTextRetrieval").eval()



# --------------------------------------------------------------------------- the vision tower (EVA-CLIP layout)


def vit_config_from_hf_blip2_vision(hf_config: Any) -> ViTConfig:
    """``Blip2VisionConfig`` -> :class:`ViTConfig` (CLS, no ``ln_pre``, LayerNorm on every output token)."""
    if not getattr(hf_config, "qkv_bias", True):
        raise ValueError("our ViT with qkv_bias=False has no k bias either; BLIP-2's tower has q and v biases")
    return ViTConfig(image_size=hf_config.image_size, patch_size=hf_config.patch_size, dim=hf_config.hidden_size,
                     depth=hf_config.num_hidden_layers, heads=hf_config.num_attention_heads,
                     mlp_dim=hf_config.intermediate_size, act=hf_act_to_ours(hf_config.hidden_act),
                     **{**_EVA_TOWER, "eps": hf_config.layer_norm_eps})


def _vision_pairs(cfg: ViTConfig) -> list[tuple[str, str]]:
    pairs = [("patch_embed.weight", "embeddings.patch_embedding.weight"),
             ("patch_embed.bias", "embeddings.patch_embedding.bias"), ("norm.weight", "post_layernorm.weight"),
             ("norm.bias", "post_layernorm.bias")]
    for i in range(cfg.depth):
        ours, theirs = f"transformer.blocks.{i}.", f"encoder.layers.{i}."
        pairs += [(f"{ours}{a}.{p}", f"{theirs}{b}.{p}") for a, b in (("ln1", "layer_norm1"), ("ln2", "layer_norm2"),
                  ("attn.out", "self_attn.projection"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2"))
                  for p in ("weight", "bias")]
    return pairs


def vit_from_hf_blip2_vision(hf_vision: nn.Module) -> ViT:
    """Our :class:`ViT` with the weights of a ``transformers`` ``Blip2VisionModel``: the fused ``qkv`` projection
    (one bias vector laid out ``[q; k; v]``) split into ``q``, ``k``, ``v``."""
    cfg = vit_config_from_hf_blip2_vision(hf_vision.config)
    src = StrictSource(state_dict_of(hf_vision), "Blip2VisionModel")
    sd = {o: src[t].detach().clone() for o, t in _vision_pairs(cfg)}
    sd["cls"] = src["embeddings.class_embedding"].detach().reshape(cfg.dim).clone()
    sd["pos_emb"] = src["embeddings.position_embedding"].detach().reshape(-1, cfg.dim).clone()
    for i in range(cfg.depth):
        theirs = f"encoder.layers.{i}.self_attn.qkv."
        for p in ("weight", "bias"):
            for name, part in zip("qkv", src[theirs + p].detach().chunk(3)):
                sd[f"transformer.blocks.{i}.attn.{name}.{p}"] = part.clone()
    src.finish()
    return load_strict(ViT(cfg), sd, "ViT (from Blip2VisionModel)")


def vit_to_hf_blip2_vision(model: ViT) -> dict[str, torch.Tensor]:
    """Our :class:`ViT` (EVA layout) -> a state dict for ``transformers.Blip2VisionModel``."""
    cfg, sd = model.cfg, model.state_dict()
    if (cfg.pre_norm, cfg.final_norm_on, cfg.cls_token, cfg.patch_bias) != (False, "tokens", True, True):
        raise ValueError("BLIP-2's tower has a CLS token, patch bias, no ln_pre and a LayerNorm on every token")
    out = {t: sd[o].clone() for o, t in _vision_pairs(cfg)}
    out["embeddings.class_embedding"] = sd["cls"].reshape(1, 1, -1).clone()
    out["embeddings.position_embedding"] = sd["pos_emb"].reshape(1, -1, cfg.dim).clone()
    for i in range(cfg.depth):
        for p in ("weight", "bias"):
            out[f"encoder.layers.{i}.self_attn.qkv.{p}"] = torch.cat(
                [sd[f"transformer.blocks.{i}.attn.{n}.{p}"] for n in "qkv"])
    return out


# --------------------------------------------------------------------------- the whole model (stage 2)


_PARTS = ("vision_model.", "qformer.", "query_tokens", "language_projection.", "language_model.")


def blip2_from_hf(hf_model: nn.Module) -> Blip2:
    """Our :class:`Blip2` with the weights of a ``transformers`` ``Blip2ForConditionalGeneration`` whose LM is
    a Llama (``LlamaForCausalLM``); from an ``InstructBlipForConditionalGeneration``, our :class:`InstructBlip`."""
    hf_config = hf_model.config
    lm = getattr(hf_config.text_config, "model_type", None)
    if lm != "llama":  # refused before the (large) vision tower is converted
        raise ValueError(f"only a Llama language model is supported (text_config.model_type 'llama'), got {lm!r}: "
                         "the OPT and Flan-T5 checkpoints of BLIP-2 / InstructBLIP do not convert")
    instruct = _is_instruct(hf_config)
    sd = state_dict_of(hf_model)
    stray = sorted(k for k in sd if not k.startswith(_PARTS))
    if stray:
        raise ValueError(f"{type(hf_model).__name__} holds weights this converter does not know: {stray[:5]}")
    vision = vit_from_hf_blip2_vision(hf_model.vision_model)
    text = decoder_from_hf_llama(hf_model.language_model)
    qcfg = qformer_config_from_hf(hf_config)
    src = StrictSource({k: v for k, v in sd.items() if k.startswith(("qformer.", "query_tokens"))}, "Q-Former")
    qformer = convert_pairs(src, _pairs(qcfg, instruct))
    src.finish()
    cls, cfg_cls = (InstructBlip, InstructBlipConfig) if instruct else (Blip2, Blip2Config)
    model = cls(cfg_cls(vision=vision.cfg, qformer=qcfg, text=text.cfg, image_token_id=hf_config.image_token_id))
    model.vision_tower.load_state_dict(vision.state_dict())
    model.language_model.load_state_dict(text.state_dict())
    load_strict(model.qformer, qformer, f"Q-Former (from {type(hf_model).__name__})")
    load_strict(model.language_projection, {p: sd[f"language_projection.{p}"] for p in ("weight", "bias")})
    return model.eval()


def blip2_to_hf(model: Blip2):
    """A ``transformers`` ``Blip2ForConditionalGeneration`` (Llama LM) with our weights (eval mode); from our
    :class:`InstructBlip`, an ``InstructBlipForConditionalGeneration``."""
    cfg, instruct = model.cfg, isinstance(model, InstructBlip)
    classes = _hf_classes(instruct)
    v = cfg.vision
    vision = classes["VisionConfig"](hidden_size=v.dim, intermediate_size=v.mlp_dim or int(v.dim * v.mlp_ratio),
                                     num_hidden_layers=v.depth, num_attention_heads=v.heads, image_size=v.image_size,
                                     patch_size=v.patch_size, hidden_act=ours_act_to_hf(v.act), layer_norm_eps=v.eps)
    base = qformer_config_to_hf(cfg.qformer, vision, instruct)
    hf_config = classes["Config"](vision_config=base.vision_config.to_dict(),
                                  qformer_config=base.qformer_config.to_dict(),
                                  text_config=llama_config_from_decoder(cfg.text).to_dict(),
                                  num_query_tokens=cfg.qformer.num_queries, image_token_index=cfg.image_token_id)
    hf = classes["ForConditionalGeneration"](hf_config)
    q = model.qformer.state_dict()
    sd = {t: q[o].clone() for o, t in _pairs(cfg.qformer, instruct)}
    sd |= {"vision_model." + k: v for k, v in vit_to_hf_blip2_vision(model.vision_tower).items()}
    sd |= {"language_model." + k: v for k, v in decoder_to_hf_llama(model.language_model).items()}
    sd |= {f"language_projection.{k}": v.clone() for k, v in model.language_projection.state_dict().items()}
    theirs = hf.state_dict()
    if "language_model.lm_head.weight" in theirs and "language_model.lm_head.weight" not in sd:
        sd["language_model.lm_head.weight"] = sd["language_model.model.embed_tokens.weight"]
    return load_strict(hf, sd, type(hf).__name__).eval()
