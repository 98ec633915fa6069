"""Tiny random ``transformers`` LLaVA-family models, the reference side of the LLaVA and video parity tests."""

from __future__ import annotations

import torch


def tiny_llava_hf(name: str, image_token_index: int, max_position_embeddings: int = 256, **extra):
    """A tiny random ``transformers`` ``{name}ForConditionalGeneration`` (``name``: Llava, LlavaNext, VideoLlava or
    LlavaNextVideo; a 3-block CLIP tower at 32 px with 8 px patches, a 2-block Llama of width 48 over 100 ids) with
    every weight moved off its init (norms off 1, biases off 0); ``extra``: the config's own fields."""
    import transformers
    from transformers import CLIPVisionConfig, LlamaConfig

    torch.manual_seed(0)
    cfg = getattr(transformers, f"{name}Config")(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                       image_size=32, patch_size=8),
        text_config=LlamaConfig(vocab_size=100, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2,
                                max_position_embeddings=max_position_embeddings,
                                bos_token_id=1, eos_token_id=2, pad_token_id=0),
        image_token_index=image_token_index, **extra)
    model = getattr(transformers, f"{name}ForConditionalGeneration")(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model
