"""MiniGPT4-Video's token merging (vlm_primer.video.token_merging): concatenation by hand, the merger's shape and
size, pooling as the merger with fixed weights, the token budget's arithmetic, and bad input."""

from __future__ import annotations

import pytest
import torch

from vlm_primer.video import LlavaNextVideoConfig, VideoLlavaConfig
from vlm_primer.video.token_merging import (TokenBudget, TokenMerger, frames_that_fit, merge_tokens, pool_tokens,
                                            token_budget)


def test_merge_and_pool_by_hand():
    x = torch.randn(2, 12, 5)
    merged = merge_tokens(x, 4)
    assert merged.shape == (2, 3, 20)
    for i in range(3):  # output i is tokens 4i, 4i+1, 4i+2, 4i+3 side by side
        torch.testing.assert_close(merged[:, i], torch.cat([x[:, 4 * i + j] for j in range(4)], dim=-1))
    torch.testing.assert_close(merged, x.reshape(2, 3, 20))  # MiniGPT-v2's view(bs, n / 4, 4 * d)
    pooled = pool_tokens(x, 4)
    torch.testing.assert_close(pooled, torch.stack([x[:, 4 * i:4 * i + 4].mean(1) for i in range(3)], dim=1))
    # merging keeps everything, pooling does not: two frames that pool alike still merge apart
    y = x.clone()
    y[:, [0, 1]] = x[:, [1, 0]]
    torch.testing.assert_close(pool_tokens(y, 4), pooled)
    assert not torch.equal(merge_tokens(y, 4), merged)


def test_merger_shape_params_and_pooling_as_a_special_case():
    merger = TokenMerger(1408, 4096, m=4)  # EVA-CLIP ViT-g tokens into Llama 2
    assert sum(p.numel() for p in merger.parameters()) == 4 * 1408 * 4096 + 4096
    small = TokenMerger(8, 6, m=4)
    x = torch.randn(3, 256, 8)
    assert small(x).shape == (3, 64, 6)
    torch.testing.assert_close(small(x), small.proj.proj(merge_tokens(x, 4)))
    pool = TokenMerger(8, 8, m=4)
    with torch.no_grad():  # weights [I/4 I/4 I/4 I/4], no bias: the merger averages
        pool.proj.proj.weight.copy_(torch.eye(8).repeat(1, 4) / 4)
        pool.proj.proj.bias.zero_()
    torch.testing.assert_close(pool(x), pool_tokens(x, 4))


def test_budget_arithmetic():
    # MiniGPT4-Video: 256 tokens per frame merged by 4 -> 64; Llama 2's 4,096-token context
    b = token_budget(40, 256, merge=4, context_length=4096, text_tokens=100)
    assert b == TokenBudget(tokens_per_frame=64, visual_tokens=40 * 64, total_tokens=40 * 64 + 100, context_length=4096,
                            fits=True, max_frames=(4096 - 100) // 64)
    assert frames_that_fit(256, 4, 4096) == 64 and frames_that_fit(256, 1, 4096) == 16
    assert frames_that_fit(256, 4, 4096, text_tokens=256) == 60 and frames_that_fit(256, 1, 4096, text_tokens=256) == 15
    # with a 20-token subtitle after each frame, 84 tokens per frame
    assert frames_that_fit(256, 4, 4096, text_tokens=96, subtitle_tokens_per_frame=20) == 4000 // 84 == 47
    assert token_budget(48, 256, 4, 4096, 96, subtitle_tokens_per_frame=20).fits is False  # 48 * 84 + 96 = 4128
    assert frames_that_fit(256, 1, 200) == 0 and frames_that_fit(64, 1, 100, text_tokens=200) == 0
    # the chapter's three curves at the same 8 frames: every token, 2 x 2 pooling, merging by 4
    every = VideoLlavaConfig.from_preset("base")
    assert token_budget(every.num_frames, every.tokens_per_frame).visual_tokens == 8 * 257 == 2056
    pooled = LlavaNextVideoConfig.from_preset("base")
    assert pooled.tokens_per_frame == 576 // 4 == token_budget(1, 576, merge=4).visual_tokens
    assert token_budget(8, 256, 4).visual_tokens == 512


def test_bad_input():
    with pytest.raises(ValueError, match="N=10 .* not divisible by m=4"):
        merge_tokens(torch.randn(1, 10, 3), 4)
    with pytest.raises(ValueError, match=r"\(B, N, D\)"):
        pool_tokens(torch.randn(10, 3), 2)
    with pytest.raises(TypeError, match="torch.Tensor"):
        merge_tokens([[1.0]], 1)
    with pytest.raises(ValueError, match="m must be an int >= 1"):
        merge_tokens(torch.randn(1, 4, 3), 0)
    with pytest.raises(TypeError, match="m must be an int"):
        pool_tokens(torch.randn(1, 4, 3), 2.0)
    with pytest.raises(ValueError, match="8 wide"):
        TokenMerger(8, 4)(torch.randn(1, 4, 7))
    with pytest.raises(ValueError, match="tokens_per_frame=257 is not divisible by merge=4"):
        token_budget(8, 257, merge=4)
    with pytest.raises(ValueError, match="num_frames must be an int >= 1"):
        token_budget(0, 256)
    with pytest.raises(ValueError, match="text_tokens must be an int >= 0"):
        frames_that_fit(256, 4, text_tokens=-1)
    with pytest.raises(TypeError, match="context_length must be an int"):
        frames_that_fit(256, 4, context_length=4096.0)
