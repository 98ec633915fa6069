"""The shared blocks against independent references: attention, masks, KV cache, RoPE, sin-cos,
norms, activations, gated cross-attention."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vlm_primer.nn import (MLP, Attention, KVCache, RMSNorm, RotaryEmbedding, Transformer, TransformerBlock,
                           build_attention_mask, masked_mean, sincos_2d)


def reference_attention(attn: Attention, x, context=None, mask=None):
    """Textbook multi-head attention with an explicit softmax; ``mask`` (B, Lq, Lk) bool, True = attend."""
    src = x if context is None else context
    b, n, _ = x.shape
    q = attn.q(x).view(b, n, attn.heads, -1).transpose(1, 2)
    k = attn.k(src).view(b, src.shape[1], attn.kv_heads, -1).transpose(1, 2)
    v = attn.v(src).view(b, src.shape[1], attn.kv_heads, -1).transpose(1, 2)
    k = k.repeat_interleave(attn.heads // attn.kv_heads, dim=1)
    v = v.repeat_interleave(attn.heads // attn.kv_heads, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None], float("-inf"))
    out = scores.softmax(-1) @ v
    return attn.out(out.transpose(1, 2).reshape(b, n, -1))


def test_self_cross_causal_and_padded_attention_match_reference():
    x, ctx = torch.randn(2, 6, 16), torch.randn(2, 4, 24)
    kpm = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    causal = torch.ones(6, 6, dtype=torch.bool).tril()

    plain = Attention(16, 4)
    torch.testing.assert_close(plain(x), reference_attention(plain, x))
    torch.testing.assert_close(plain(x, key_padding_mask=kpm),
                               reference_attention(plain, x, mask=kpm[:, None].expand(2, 6, 6)))

    cau = Attention(16, 4, causal=True)
    torch.testing.assert_close(cau(x), reference_attention(cau, x, mask=causal.expand(2, 6, 6)))
    torch.testing.assert_close(cau(x, key_padding_mask=kpm), reference_attention(cau, x, mask=causal & kpm[:, None]))

    cross = Attention(16, 2, dim_head=12, kv_dim=24)
    cmask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    torch.testing.assert_close(cross(x, context=ctx, key_padding_mask=cmask),
                               reference_attention(cross, x, ctx, mask=cmask[:, None].expand(2, 6, 4)))

    gqa = Attention(16, 4, kv_heads=2, qkv_bias=False, out_bias=False, causal=True)
    assert gqa.k.weight.shape == (8, 16) and gqa.q.bias is None
    torch.testing.assert_close(gqa(x), reference_attention(gqa, x, mask=causal.expand(2, 6, 6)))

    # explicit boolean and additive masks
    rnd = torch.rand(2, 6, 6) > 0.3
    rnd[..., 0] = True
    torch.testing.assert_close(plain(x, attn_mask=rnd), reference_attention(plain, x, mask=rnd))
    additive = torch.zeros(2, 6, 6).masked_fill(~rnd, float("-inf"))
    torch.testing.assert_close(plain(x, attn_mask=additive), reference_attention(plain, x, mask=rnd))


def test_fully_masked_rows_stay_finite():
    mask = build_attention_mask(batch=1, q_len=2, k_len=3, device=torch.device("cpu"),
                                key_padding_mask=torch.zeros(1, 3, dtype=torch.bool))
    assert mask.all()
    out = Attention(8, 2)(torch.randn(1, 3, 8), key_padding_mask=torch.zeros(1, 3, dtype=torch.bool))
    assert torch.isfinite(out).all()
    # the same with an additive mask: a row of only -inf sees everything, the other rows are unchanged
    attn, x = Attention(8, 2), torch.randn(2, 3, 8)
    additive = torch.zeros(2, 3, 3)
    additive[0, 1] = float("-inf")
    additive[1, :, 2] = float("-inf")
    keep = additive.isfinite()
    keep[0, 1] = True
    for extra in ({}, {"key_padding_mask": torch.ones(2, 3, dtype=torch.bool)}):
        out = attn(x, attn_mask=additive, **extra)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, attn(x, attn_mask=keep, **extra))


@pytest.mark.parametrize("rope", [False, True])
def test_kv_cache_matches_full_causal_attention(rope):
    attn = Attention(16, 4, causal=True, rope=RotaryEmbedding(4) if rope else None).eval()
    x = torch.randn(2, 7, 16)
    full = attn(x)
    cache = KVCache()
    parts = [attn(x[:, :3], kv_cache=cache)] + [attn(x[:, t:t + 1], kv_cache=cache) for t in range(3, 7)]
    assert len(cache) == 7
    torch.testing.assert_close(torch.cat(parts, dim=1), full)


def test_rope_matches_transformers_llama():
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    rope = RotaryEmbedding(8, theta=500.0)
    pos = torch.tensor([[0, 1, 2, 5], [3, 4, 5, 6]])
    q, k = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 4, 8)
    cos, sin = rope(pos)
    inv = 1.0 / 500.0 ** (torch.arange(0, 8, 2).float() / 8)
    freqs = pos[..., None].float() * inv
    emb = torch.cat([freqs, freqs], -1)
    q_ref, k_ref = apply_rotary_pos_emb(q, k, emb.cos(), emb.sin())
    torch.testing.assert_close(RotaryEmbedding.rotate(q, cos, sin), q_ref)
    torch.testing.assert_close(RotaryEmbedding.rotate(k, cos, sin), k_ref)
    # relative: scores depend only on position differences
    a, b = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    def score(i, j):
        ci, si = rope(torch.tensor([[i]]))
        cj, sj = rope(torch.tensor([[j]]))
        return (RotaryEmbedding.rotate(a, ci, si) * RotaryEmbedding.rotate(b, cj, sj)).sum()
    torch.testing.assert_close(score(3, 1), score(10, 8))
    # a cast model keeps its angles in float32 (transformers does too); a bf16 table misplaces far positions
    assert torch.equal(rope.to(torch.bfloat16).inv_freq, inv) and rope.inv_freq.dtype == torch.float32
    assert rope(torch.tensor([[2000]]), torch.bfloat16)[0].dtype == torch.bfloat16


def mae_2d_sincos(embed_dim, grid_size, cls_token=False):
    """MAE's get_2d_sincos_pos_embed (facebookresearch/mae, util/pos_embed.py), in NumPy."""
    def from_grid_1d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)
    grid = np.meshgrid(np.arange(grid_size, dtype=np.float32), np.arange(grid_size, dtype=np.float32))
    grid = np.stack(grid, axis=0).reshape([2, 1, grid_size, grid_size])
    emb = np.concatenate([from_grid_1d(embed_dim // 2, grid[0]), from_grid_1d(embed_dim // 2, grid[1])], axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros([1, embed_dim]), emb], axis=0)
    return emb


def test_sincos_2d_matches_mae():
    ours = sincos_2d(5, 5, 32, cls_token=True)
    np.testing.assert_allclose(ours.numpy(), mae_2d_sincos(32, 5, cls_token=True), atol=1e-6)


def test_norms_and_activations():
    from transformers.activations import ACT2FN

    x = torch.randn(3, 5, 16)
    ours, ref = RMSNorm(16, eps=1e-6), torch.nn.RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        ours.weight.normal_()
        ref.weight.copy_(ours.weight)
    torch.testing.assert_close(ours(x), ref(x))

    pairs = [("quick_gelu", "quick_gelu"), ("gelu_tanh", "gelu_pytorch_tanh"), ("gelu", "gelu"), ("relu", "relu")]
    for act, hf in pairs:
        mlp = MLP(16, 32, act=act)
        torch.testing.assert_close(mlp(x), mlp.fc2(ACT2FN[hf](mlp.fc1(x))))
    swi = MLP(16, 24, act="swiglu", bias=False)
    torch.testing.assert_close(swi(x), swi.fc2(F.silu(swi.fc1(x)) * swi.fc3(x)))


def test_gated_cross_attention_starts_closed():
    block = TransformerBlock(16, 4, cross_attn=True, context_dim=24, gated_xattn=True).eval()
    plain = TransformerBlock(16, 4).eval()
    plain.load_state_dict({k: v for k, v in block.state_dict().items() if k in plain.state_dict()})
    x, ctx = torch.randn(2, 5, 16), torch.randn(2, 3, 24)
    torch.testing.assert_close(block(x, context=ctx), plain(x))
    with torch.no_grad():
        block.xattn_gate.fill_(1.0)
    assert (block(x, context=ctx) - plain(x)).abs().max() > 1e-3


def test_transformer_stack_and_masked_mean():
    t = Transformer(3, 16, 4, cross_attn_every=2, context_dim=8)
    assert [b.cross_attn for b in t.blocks] == [False, True, False]
    y, hidden = t(torch.randn(2, 5, 16), context=torch.randn(2, 2, 8), output_hidden_states=True)
    assert len(hidden) == 4 and torch.equal(hidden[-1], y)
    x = torch.randn(2, 4, 3)
    m = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    torch.testing.assert_close(masked_mean(x, m), torch.stack([x[0, :2].mean(0), x[1].mean(0)]))
