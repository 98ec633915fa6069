"""The learned-query bottlenecks of notebook 05b against independent references: Qwen-VL's resampler against
its reference code's structure on ``torch.nn.MultiheadAttention``."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vlm_primer.backbones.resamplers import QwenResampler, grid_positions
from vlm_primer.nn import sincos_2d


class _QwenReference(nn.Module):
    """Qwen-VL's ``Resampler`` + the tower's ``ln_post`` and ``proj`` as its reference code writes them
    (sequence-first ``nn.MultiheadAttention``, ``get_abs_pos`` bicubic resizing)."""

    def __init__(self, grid, dim, heads, kv_dim):
        super().__init__()
        self.pos_embed = sincos_2d(grid, grid, dim)
        self.query = nn.Parameter(torch.randn(grid * grid, dim))
        self.kv_proj = nn.Linear(kv_dim, dim, bias=False)
        self.attn = nn.MultiheadAttention(dim, heads)
        self.ln_q, self.ln_kv, self.ln_post = (nn.LayerNorm(dim, eps=1e-6) for _ in range(3))
        self.proj = nn.Parameter(torch.randn(dim, dim) * dim**-0.5)

    def get_abs_pos(self, tgt_size):
        src, tgt = int(math.sqrt(self.pos_embed.size(0))), int(math.sqrt(tgt_size))
        if src == tgt:
            return self.pos_embed
        grid = self.pos_embed.float().reshape(1, src, src, -1).permute(0, 3, 1, 2)
        return F.interpolate(grid, size=(tgt, tgt), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).flatten(0, 2)

    def forward(self, x):
        pos_embed = self.get_abs_pos(x.size(1))
        x = self.ln_kv(self.kv_proj(x)).permute(1, 0, 2)
        n = x.shape[1]
        q = self.ln_q(self.query)
        out = self.attn(q.unsqueeze(1).repeat(1, n, 1) + self.pos_embed.unsqueeze(1), x + pos_embed.unsqueeze(1), x)[0]
        return self.ln_post(out.permute(1, 0, 2)) @ self.proj


@pytest.mark.parametrize("num_patches", [16, 64])  # the queries' own 4x4 grid, and an 8x8 one (resized positions)
@torch.no_grad()
def test_qwen_resampler_matches_the_reference_code(num_patches):
    torch.manual_seed(0)
    ref = _QwenReference(grid=4, dim=32, heads=4, kv_dim=24)
    for p in ref.parameters():
        p.add_(torch.randn_like(p) * 0.1)
    ours = QwenResampler(vision_dim=24, dim=32, num_queries=16, heads=4)
    q, k, v = ref.attn.in_proj_weight.chunk(3)
    qb, kb, vb = ref.attn.in_proj_bias.chunk(3)
    sd = {"query": ref.query, "kv_proj.weight": ref.kv_proj.weight, "proj.weight": ref.proj.t(),
          "attn.q.weight": q, "attn.k.weight": k, "attn.v.weight": v, "attn.q.bias": qb, "attn.k.bias": kb,
          "attn.v.bias": vb, "attn.out.weight": ref.attn.out_proj.weight, "attn.out.bias": ref.attn.out_proj.bias}
    for name in ("ln_q", "ln_kv", "ln_post"):
        sd |= {f"{name}.{p}": getattr(getattr(ref, name), p) for p in ("weight", "bias")}
    ours.load_state_dict(sd)
    x = torch.randn(3, num_patches, 24)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(QwenResampler(24, 32, 16, 4)(x), ref(x), atol=1e-3)


def test_positions_and_bad_inputs():
    table = sincos_2d(4, 4, 8)
    assert grid_positions(table, 16) is table
    assert grid_positions(table, 36).shape == (36, 8)
    with pytest.raises(ValueError, match="square grids"):
        grid_positions(table, 10)
    with pytest.raises(ValueError, match="not a square"):
        QwenResampler(8, 16, num_queries=10)


@pytest.mark.parametrize("kind", ["qformer", "perceiver", "resampler"])
def test_query_connectors_give_num_queries_tokens_to_llava(kind):
    from vlm_primer.backbones import Llava, LlavaConfig

    cfg = LlavaConfig.from_preset("tiny", connector=kind, num_queries=9)
    model = Llava(cfg)
    model.set_stage(1)
    assert cfg.tokens_per_image == 9
    ids = torch.tensor([[2] + [cfg.image_token_id] * 9 + [7, 8, 9]])
    out = model(ids, torch.rand(1, 3, 48, 48), labels=ids.masked_fill(ids == cfg.image_token_id, -100))
    assert out.logits.shape == (1, 13, cfg.text.vocab_size)
    out.loss.backward()
    grads = [p.grad for p in model.connector.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in model.language_model.parameters())


def test_query_connector_configs_name_the_problem():
    from vlm_primer.backbones import LlavaConfig

    with pytest.raises(ValueError, match="square num_queries"):
        LlavaConfig.from_preset("tiny", connector="resampler", num_queries=8)
    with pytest.raises(ValueError, match="connector_heads=3 must divide"):
        LlavaConfig.from_preset("tiny", connector="qformer", connector_heads=3)
