"""Convert ``transformers``' VisualBERT and BERT to our :class:`~vlm_primer.masking.visualbert.VisualBert`.

``VisualBertForPreTraining`` (MLM + sentence-image head) converts with the visual embeddings; ``BertForPreTraining``
(MLM + next-sentence head) and ``BertForMaskedLM`` (MLM only) are the same network without them (``visual=False``;
``itm_head=False`` for ``BertForMaskedLM``, which has no pooler). The renames: ``embeddings.{word,position,
token_type}_embeddings`` -> ``{word,pos,type}_emb``, ``visual_projection`` / ``visual_position_embeddings`` /
``visual_token_type_embeddings`` -> ``visual_proj`` / ``visual_pos_emb`` / ``visual_type_emb``, and per layer
``attention.self.{query,key,value}`` / ``attention.output.dense`` -> ``attn.{q,k,v,out}``, ``attention.output.LayerNorm``
-> ``ln1``, ``intermediate.dense`` / ``output.dense`` -> ``mlp.fc1`` / ``mlp.fc2``, ``output.LayerNorm`` -> ``ln2``
(our post-LN :class:`~vlm_primer.nn.TransformerBlock`); the LM head ``cls.predictions.transform`` -> ``lm_head.{dense,
ln}`` with its decoder tied to the word embeddings.

One convention differs: ``transformers``' 2-way head (``cls.seq_relationship``) has class 0 = "the text matches"
(BERT's IsNext), ours has class 1 = "matches", as BLIP's ITM head in this book. The converter swaps the head's two
rows, so our ``itm_logits`` are theirs flipped and ``itm_labels = 1 - sentence_image_labels``.
Explained in notebook 03, §VisualBERT.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vlm_primer.interop import StrictSource, convert_pairs, hf_act_to_ours, load_strict, state_dict_of
from vlm_primer.interop.clip import _ln as _weight_bias
from vlm_primer.masking.visualbert import VisualBert, VisualBertConfig

__all__ = ["visual_bert_config_from_hf", "visual_bert_from_hf"]

# transformers class -> (prefix of the encoder's weights, visual embeddings?, pooler + 2-way head?)
_KINDS = {"VisualBertForPreTraining": ("visual_bert.", True, True), "BertForPreTraining": ("bert.", False, True),
          "BertForMaskedLM": ("bert.", False, False)}


def visual_bert_config_from_hf(hf_config: Any, *, visual: bool = True, itm_head: bool = True,
                               **token_ids: int) -> VisualBertConfig:
    """``transformers.VisualBertConfig`` (or ``BertConfig`` with ``visual=False``) -> :class:`VisualBertConfig`.
    Their configs do not name ``[MASK]``/``[CLS]``/``[SEP]``: BERT's ids (103/101/102) are used where the vocabulary
    holds them, else 0, unless given as keywords (``mask_token_id=...``)."""
    if getattr(hf_config, "bypass_transformer", False):
        raise ValueError("bypass_transformer=True (text-only layers, then one joint layer) is not supported")
    if getattr(hf_config, "is_decoder", False) or getattr(hf_config, "add_cross_attention", False):
        raise ValueError("a BERT decoder (is_decoder / add_cross_attention) is not an MLM encoder")
    vocab = hf_config.vocab_size
    ids = {name: i if i < vocab else 0 for name, i in (("mask_token_id", 103), ("cls_token_id", 101),
                                                      ("sep_token_id", 102))}
    return VisualBertConfig(
        vocab_size=vocab, dim=hf_config.hidden_size, depth=hf_config.num_hidden_layers,
        heads=hf_config.num_attention_heads, mlp_dim=hf_config.intermediate_size,
        max_positions=hf_config.max_position_embeddings, type_vocab_size=hf_config.type_vocab_size,
        visual_dim=getattr(hf_config, "visual_embedding_dim", VisualBertConfig.visual_dim),
        act=hf_act_to_ours(hf_config.hidden_act), eps=hf_config.layer_norm_eps, dropout=hf_config.hidden_dropout_prob,
        visual=visual, itm_head=itm_head, pad_token_id=hf_config.pad_token_id or 0, **{**ids, **token_ids})


def _encoder_pairs(cfg: VisualBertConfig, prefix: str) -> list[tuple[str, str]]:
    emb = prefix + "embeddings."
    pairs = [("word_emb.weight", emb + "word_embeddings.weight"), ("pos_emb.weight", emb + "position_embeddings.weight"),
             ("type_emb.weight", emb + "token_type_embeddings.weight"), *_weight_bias("ln_embed", emb + "LayerNorm")]
    if cfg.visual:
        pairs += [*_weight_bias("visual_proj", emb + "visual_projection"),
                  ("visual_pos_emb.weight", emb + "visual_position_embeddings.weight"),
                  ("visual_type_emb.weight", emb + "visual_token_type_embeddings.weight")]
    names = [("attn.q", "attention.self.query"), ("attn.k", "attention.self.key"), ("attn.v", "attention.self.value"),
             ("attn.out", "attention.output.dense"), ("ln1", "attention.output.LayerNorm"),
             ("mlp.fc1", "intermediate.dense"), ("mlp.fc2", "output.dense"), ("ln2", "output.LayerNorm")]
    for i in range(cfg.depth):
        pairs += [p for o, t in names for p in _weight_bias(f"encoder.blocks.{i}.{o}", f"{prefix}encoder.layer.{i}.{t}")]
    if cfg.itm_head:
        pairs += _weight_bias("pooler", prefix + "pooler.dense")
    lm = "cls.predictions."
    return pairs + [*_weight_bias("lm_head.dense", lm + "transform.dense"),
                    *_weight_bias("lm_head.ln", lm + "transform.LayerNorm"), ("lm_head.bias", lm + "bias")]


def _tied(src: StrictSource, key: str, like: torch.Tensor) -> None:
    """Take the tied copy ``key`` (the LM decoder's weight or bias) if the state dict lists it; it must equal ``like``."""
    if key in src and not torch.equal(src[key], like):
        raise ValueError(f"{src.name}: {key} is not tied to the word embeddings / LM bias; our MLM head ties them")


def visual_bert_from_hf(hf_model: nn.Module) -> VisualBert:
    """Our :class:`VisualBert` with the weights of a ``transformers`` ``VisualBertForPreTraining``,
    ``BertForPreTraining`` or ``BertForMaskedLM`` (the last two text-only: ``visual=False``), in eval mode."""
    kind = type(hf_model).__name__
    if kind not in _KINDS:
        raise ValueError(f"visual_bert_from_hf converts {sorted(_KINDS)}, got {kind}")
    prefix, visual, itm_head = _KINDS[kind]
    cfg = visual_bert_config_from_hf(hf_model.config, visual=visual, itm_head=itm_head)
    src = StrictSource(state_dict_of(hf_model), kind)
    sd = convert_pairs(src, _encoder_pairs(cfg, prefix))
    sd["lm_head.word_emb.weight"] = sd["word_emb.weight"]
    _tied(src, "cls.predictions.decoder.weight", sd["word_emb.weight"])
    _tied(src, "cls.predictions.decoder.bias", sd["lm_head.bias"])
    if itm_head:  # their class 0 = "matches" (IsNext), ours 1: swap the two rows
        sd |= {k: v.flip(0) for k, v in convert_pairs(src, _weight_bias("itm_head", "cls.seq_relationship")).items()}
    src.finish()
    return load_strict(VisualBert(cfg), sd, f"VisualBert (from {kind})").eval()
