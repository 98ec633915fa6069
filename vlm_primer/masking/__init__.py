"""Masking objectives (survey §2.1 and §2.3): hide part of the input and reconstruct it.

Explained in notebook 03. ``masks`` holds the masking utilities (BERT's 80/10/10 corruption, MAE's per-sample
shuffle, block and span masks); ``mae`` the masked auto-encoder; ``visualbert`` single-stream early fusion with
MLM (and BERT itself, text only); ``flava`` FLAVA's three encoders and five losses; ``maskvlm`` MaskVLM's joint
masking of pixels and words.
"""

from vlm_primer.masking.flava import Flava, FlavaConfig, FlavaOutput, mismatch_pairs
from vlm_primer.masking.mae import MAE, MAE_VIT, MAEConfig, MAEOutput
from vlm_primer.masking.maskvlm import MaskVLM, MaskVLMConfig, MaskVLMOutput
from vlm_primer.masking.masks import (
    IGNORE_INDEX, MaskedPatches, bert_mask_tokens, block_mask, mask_to_noise, patchify, random_masking, span_mask,
    unpatchify,
)
from vlm_primer.masking.visualbert import VisualBert, VisualBertConfig, VisualBertOutput, region_features

__all__ = [
    "Flava", "FlavaConfig", "FlavaOutput", "mismatch_pairs",
    "MAE", "MAE_VIT", "MAEConfig", "MAEOutput",
    "MaskVLM", "MaskVLMConfig", "MaskVLMOutput",
    "IGNORE_INDEX", "MaskedPatches", "bert_mask_tokens", "block_mask", "mask_to_noise", "patchify", "random_masking",
    "span_mask", "unpatchify",
    "VisualBert", "VisualBertConfig", "VisualBertOutput", "region_features",
]
