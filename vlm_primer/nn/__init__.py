"""Shared neural-network blocks: attention, MLP, transformer blocks, ViT, text encoder, decoder LM,
pooling and positional encodings. Explained in notebook 02 (blocks and towers) and 04 (the decoder LM)."""

from vlm_primer.nn.attention import Attention, KVCache, build_attention_mask
from vlm_primer.nn.heads import BertLMHead
from vlm_primer.nn.decoder import DecoderConfig, DecoderLM, DecoderOutput, causal_lm_items, causal_lm_loss
from vlm_primer.nn.mlp import ACTIVATIONS, MLP, activation, quick_gelu
from vlm_primer.nn.norm import RMSNorm, make_norm
from vlm_primer.nn.pooling import AttentionPool, masked_mean
from vlm_primer.nn.pos import RotaryEmbedding, learned_positions, rotate_half, sincos_1d, sincos_2d
from vlm_primer.nn.text import TextConfig, TextOutput, TextTransformer, pool_positions
from vlm_primer.nn.transformer import Transformer, TransformerBlock, init_weights
from vlm_primer.nn.vit import ViT, ViTConfig, ViTOutput

__all__ = [
    "ACTIVATIONS", "Attention", "AttentionPool", "BertLMHead", "DecoderConfig", "DecoderLM", "DecoderOutput", "KVCache", "MLP",
    "RMSNorm", "RotaryEmbedding", "TextConfig", "TextOutput", "TextTransformer", "Transformer",
    "TransformerBlock", "ViT", "ViTConfig", "ViTOutput", "activation", "build_attention_mask", "causal_lm_items",
    "causal_lm_loss", "init_weights", "learned_positions", "make_norm", "masked_mean", "pool_positions", "quick_gelu",
    "rotate_half", "sincos_1d", "sincos_2d",
]
