"""Convert a ``transformers`` ``LlamaForCausalLM`` to and from our :class:`~vlm_primer.nn.DecoderLM`.

Our Llama-style preset (RMSNorm, RoPE with ``rotate_half``, SwiGLU, no biases, untied head, GQA via
``kv_heads``) has the same weights: ``q_proj/k_proj/v_proj/o_proj`` -> ``attn.q/k/v/out``,
``gate_proj/up_proj/down_proj`` -> ``mlp.fc1/fc3/fc2``. LLaVA (notebook 05) loads its language model here.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from vlm_primer.interop import StrictSource, convert_pairs, hf_act_to_ours, load_strict, state_dict_of
from vlm_primer.interop.clip import _require
from vlm_primer.nn import DecoderConfig, DecoderLM


def decoder_config_from_hf_llama(hf_config: Any) -> DecoderConfig:
    """``LlamaConfig`` -> :class:`DecoderConfig` (default RoPE only; ``mlp_bias`` must equal ``attention_bias``). Only
    the first of several ``eos_token_id`` is kept (Llama 3's ``<|eot_id|>`` would not stop ``generate``); the model
    is built in float32 whatever the checkpoint's dtype (cast it after loading)."""
    hf_config = getattr(hf_config, "text_config", hf_config)
    if getattr(hf_config, "model_type", "llama") not in ("llama", "idefics"):  # Mistral, Qwen2: other layouts
        raise ValueError(f"Llama conversion expects a LlamaConfig, got model_type={hf_config.model_type!r}")
    if hf_act_to_ours(hf_config.hidden_act) != "silu":
        raise ValueError(f"Llama conversion expects hidden_act='silu' (SwiGLU), got {hf_config.hidden_act!r}")
    rope = getattr(hf_config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"only default RoPE is supported, got rope_type={rope.get('rope_type')!r}")
    if bool(getattr(hf_config, "mlp_bias", False)) != bool(hf_config.attention_bias):
        raise ValueError("Llama conversion needs mlp_bias == attention_bias")
    heads = hf_config.num_attention_heads
    head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // heads
    return DecoderConfig(
        vocab_size=hf_config.vocab_size, context_length=hf_config.max_position_embeddings,
        dim=hf_config.hidden_size, depth=hf_config.num_hidden_layers, heads=heads,
        kv_heads=hf_config.num_key_value_heads,
        dim_head=head_dim if head_dim * heads != hf_config.hidden_size else None,
        mlp_dim=hf_config.intermediate_size, act="swiglu", norm="rmsnorm", pos_emb="rope",
        rope_theta=float(rope.get("rope_theta", getattr(hf_config, "rope_theta", 10000.0))),
        bias=bool(hf_config.attention_bias), tie_embeddings=bool(hf_config.tie_word_embeddings),
        eps=hf_config.rms_norm_eps, bos_token_id=hf_config.bos_token_id, eos_token_id=_first(hf_config.eos_token_id),
        pad_token_id=hf_config.pad_token_id if hf_config.pad_token_id is not None else 0,
    )


def _first(x):
    return x[0] if isinstance(x, (list, tuple)) else x


def _llama_pairs(cfg: DecoderConfig, prefix: str = "model.") -> list[tuple[str, str]]:
    names = [("ln1", "input_layernorm", False), ("attn.q", "self_attn.q_proj", True),
             ("attn.k", "self_attn.k_proj", True), ("attn.v", "self_attn.v_proj", True),
             ("attn.out", "self_attn.o_proj", True), ("ln2", "post_attention_layernorm", False),
             ("mlp.fc1", "mlp.gate_proj", True), ("mlp.fc3", "mlp.up_proj", True), ("mlp.fc2", "mlp.down_proj", True)]
    pairs = [("tok_emb.weight", f"{prefix}embed_tokens.weight")]
    for i in range(cfg.depth):
        for ours, theirs, linear in names:
            pairs.append((f"transformer.blocks.{i}.{ours}.weight", f"{prefix}layers.{i}.{theirs}.weight"))
            if linear and cfg.bias:
                pairs.append((f"transformer.blocks.{i}.{ours}.bias", f"{prefix}layers.{i}.{theirs}.bias"))
    pairs.append(("norm.weight", f"{prefix}norm.weight"))
    if not cfg.tie_embeddings:
        pairs.append(("lm_head.weight", "lm_head.weight"))
    return pairs


def decoder_from_hf_llama(hf_model_or_state_dict: nn.Module | Mapping[str, torch.Tensor],
                          hf_config: Any = None, *, prefix: str = "model.") -> DecoderLM:
    """Build our :class:`DecoderLM` with the weights of a ``transformers`` ``LlamaForCausalLM``.

    ``prefix`` is where the ``LlamaModel`` sits in the state dict (``"model."`` for ``LlamaForCausalLM``).
    """
    hf_config = hf_config if hf_config is not None else getattr(hf_model_or_state_dict, "config", None)
    if hf_config is None:
        raise ValueError("pass hf_config (a LlamaConfig) together with a state dict")
    cfg = decoder_config_from_hf_llama(hf_config)
    sd = state_dict_of(hf_model_or_state_dict)
    src = StrictSource(sd, "Llama state dict", ignore=("rotary_emb.inv_freq",))
    ours = convert_pairs(src, _llama_pairs(cfg, prefix))
    if cfg.tie_embeddings:
        if "lm_head.weight" in src:  # a tied head may be saved too; it must be the embedding
            if not torch.equal(src["lm_head.weight"], ours["tok_emb.weight"]):
                raise ValueError("tie_word_embeddings=True but lm_head.weight differs from embed_tokens.weight")
        ours["lm_head.weight"] = ours["tok_emb.weight"]
    src.finish()
    model = load_strict(DecoderLM(cfg), ours, "DecoderLM (from Llama)")
    if cfg.tie_embeddings:
        model.lm_head.weight = model.tok_emb.weight
    return model


def llama_config_from_decoder(cfg: DecoderConfig, **extra: Any):
    """:class:`DecoderConfig` -> ``transformers.LlamaConfig`` (Llama-style configs only)."""
    from transformers import LlamaConfig

    _require(cfg.norm == "rmsnorm" and cfg.pos_emb == "rope" and cfg.act == "swiglu"
             and cfg.cross_attn_every == 0,
             "Llama needs norm='rmsnorm', pos_emb='rope', act='swiglu' and no cross-attention")
    return LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.dim, intermediate_size=cfg.mlp_dim or int(cfg.dim * cfg.mlp_ratio),
        num_hidden_layers=cfg.depth, num_attention_heads=cfg.heads, num_key_value_heads=cfg.kv_heads or cfg.heads,
        head_dim=cfg.head_dim, max_position_embeddings=cfg.context_length, rms_norm_eps=cfg.eps,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta}, attention_bias=cfg.bias,
        mlp_bias=cfg.bias, tie_word_embeddings=cfg.tie_embeddings, hidden_act="silu",
        bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id, **extra,
    )


def decoder_to_hf_llama(model: DecoderLM) -> dict[str, torch.Tensor]:
    """Our :class:`DecoderLM` -> a state dict for ``transformers.LlamaForCausalLM``."""
    cfg = model.cfg
    llama_config_from_decoder(cfg)
    sd = model.state_dict()
    if cfg.tie_embeddings:
        sd = {k: v for k, v in sd.items() if k != "lm_head.weight"}
    src = StrictSource(sd, "DecoderLM state dict")
    out = convert_pairs(src, [(t, o) for o, t in _llama_pairs(cfg)])
    src.finish()
    if cfg.tie_embeddings:
        out["lm_head.weight"] = out["model.embed_tokens.weight"]
    return out
