"""Bad input to the shared blocks raises ValueError/TypeError naming the offending shape or value."""

import pytest
import torch

from vlm_primer.nn import (Attention, DecoderConfig, DecoderLM, MLP, TextConfig, TextTransformer, ViT, ViTConfig,
                           make_norm)


@pytest.fixture(scope="module")
def vit():
    return ViT(ViTConfig.from_preset("tiny", depth=1)).eval()


@pytest.fixture(scope="module")
def text():
    return TextTransformer(TextConfig.from_preset("tiny", depth=1, context_length=8)).eval()


@pytest.fixture(scope="module")
def lm():
    return DecoderLM(DecoderConfig.from_preset("tiny", depth=1, context_length=16)).eval()


def test_vit_rejects_bad_images(vit):
    with pytest.raises(ValueError, match=r"\(2, 64, 64\)"):
        vit(torch.rand(2, 64, 64))
    with pytest.raises(ValueError, match=r"channels.*\(2, 1, 64, 64\)"):
        vit(torch.rand(2, 1, 64, 64))
    with pytest.raises(TypeError, match="torch.uint8"):
        vit(torch.zeros(2, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"64x64.*\(2, 3, 32, 32\)"):
        vit(torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match="empty batch"):
        vit(torch.rand(0, 3, 64, 64))
    with pytest.raises(TypeError, match="ndarray"):
        vit(torch.rand(1, 3, 64, 64).numpy())


def test_text_rejects_bad_tokens(text):
    with pytest.raises(ValueError, match="length 9.*context of 8"):
        text(torch.ones(2, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="empty batch"):
        text(torch.ones(0, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.float32"):
        text(torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"input_ids=2, attention_mask=3"):
        text(torch.ones(2, 4, dtype=torch.long), torch.ones(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(2, 4\).*\(2, 5\)"):
        text(torch.ones(2, 4, dtype=torch.long), torch.ones(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="outside \\[0, 1024\\).*max 5000"):
        text(torch.full((1, 4), 5000))


def test_decoder_rejects_bad_input(lm):
    ids = torch.ones(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="17 tokens.*context of 16"):
        lm(torch.ones(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        lm()
    with pytest.raises(ValueError, match=r"\(B, L, 64\).*\(2, 4, 32\)"):
        lm(inputs_embeds=torch.zeros(2, 4, 32))
    with pytest.raises(ValueError, match="inputs=2, attention_mask=3"):
        lm(ids, attention_mask=torch.ones(3, 4))
    with pytest.raises(ValueError, match=r"labels must have shape.*\(2, 4\).*\(2, 3\)"):
        lm(ids, labels=torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="max_new_tokens=15 exceeds.*16"):
        lm.generate(ids, 15)
    with pytest.raises(ValueError, match=r"^max_new_tokens must be an int >= 0, got -1$"):
        lm.generate(ids, -1)
    with pytest.raises(TypeError, match=r"^max_new_tokens must be an int >= 0, got 2.0 \(float\)$"):
        lm.generate(ids, 2.0)
    with pytest.raises(ValueError, match="temperature must be >= 0, got -1"):
        lm.generate(ids, 2, temperature=-1.0)
    with pytest.raises(ValueError, match=r"position_ids must lie in \[0, 16\).*max 20"):
        lm(ids, position_ids=torch.full((2, 4), 20))
    with pytest.raises(ValueError, match="past_key_values must hold 1 caches.*got 3"):
        lm(ids, past_key_values=[None, None, None])
    with pytest.raises(ValueError, match="cross-attention: pass context"):
        DecoderLM(DecoderConfig.from_preset("tiny", depth=2, cross_attn_every=1))(ids)


def test_unknown_presets_and_bad_configs():
    for cls in (ViTConfig, TextConfig, DecoderConfig):
        with pytest.raises(ValueError, match="unknown preset 'huge'"):
            cls.from_preset("huge")
    with pytest.raises(TypeError, match="no field"):
        ViTConfig.from_preset("tiny", dimm=3)
    assert ViTConfig(image_size=60).grid == 7  # the last 4 px are not patched, as in transformers
    with pytest.raises(ValueError, match="patch_size=80 is larger than image_size=64"):
        ViTConfig(patch_size=80)
    with pytest.raises(ValueError, match="pool must be one of.*'avg'"):
        ViTConfig(pool="avg")
    with pytest.raises(ValueError, match="pool='cls' needs cls_token=True"):
        ViTConfig(cls_token=False, pool="cls")
    with pytest.raises(ValueError, match="pool must be one of.*'first'"):
        TextConfig(pool="first")
    with pytest.raises(ValueError, match="norm must be one of.*'batchnorm'"):
        DecoderConfig(norm="batchnorm")
    with pytest.raises(ValueError, match="heads=4 must be a multiple of kv_heads=3"):
        DecoderConfig(kv_heads=3)


def test_block_level_errors():
    with pytest.raises(ValueError, match="dim=10 is not divisible by heads=4"):
        Attention(10, 4)
    with pytest.raises(ValueError, match="act must be one of.*'gelu2'"):
        MLP(8, 16, act="gelu2")
    with pytest.raises(ValueError, match="norm must be one of.*'ln'"):
        make_norm("ln", 8)
    attn = Attention(8, 2)
    with pytest.raises(ValueError, match=r"\(B, L, dim\).*\(3, 8\)"):
        attn(torch.zeros(3, 8))
    with pytest.raises(ValueError, match=r"key_padding_mask.*\(2, 5\).*\(2, 4\)"):
        attn(torch.zeros(2, 5, 8), key_padding_mask=torch.ones(2, 4, dtype=torch.bool))
