"""CoCa has no ``transformers`` counterpart: each piece against a computation written here -- the attentional
pooler against ``torch.nn.MultiheadAttention``, the decoder split (unimodal layers never see the image, ``[CLS]``
sees every real token and no padding), the two losses by hand, and cached decoding against recomputation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlm_primer.generative.coca import AttentionalPooler, CoCa, CoCaConfig


def _model(seed=0):
    torch.manual_seed(seed)
    return CoCa(CoCaConfig.from_preset("tiny")).eval()


def _batch(batch=3, length=8):
    g = torch.Generator().manual_seed(1)
    pixels = torch.randn(batch, 3, 64, 64, generator=g)
    ids = torch.randint(6, 800, (batch, length), generator=g)
    ids[:, 0] = 2
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    return pixels, ids, mask


@torch.no_grad()
def test_attentional_pooler_equals_multihead_attention():
    torch.manual_seed(0)
    pool = AttentionalPooler(32, 48, heads=4, num_queries=5)
    for p in pool.parameters():
        p.add_(torch.randn_like(p) * 0.1)
    ref = torch.nn.MultiheadAttention(32, 4, kdim=48, vdim=48, batch_first=True)
    ref.q_proj_weight.copy_(pool.attn.q.weight)
    ref.k_proj_weight.copy_(pool.attn.k.weight)
    ref.v_proj_weight.copy_(pool.attn.v.weight)
    ref.in_proj_bias.copy_(torch.cat([pool.attn.q.bias, pool.attn.k.bias, pool.attn.v.bias]))
    ref.out_proj.weight.copy_(pool.attn.out.weight)
    ref.out_proj.bias.copy_(pool.attn.out.bias)
    tokens = torch.randn(2, 7, 48)
    q = F.layer_norm(pool.query, (32,), pool.ln_q.weight, pool.ln_q.bias).expand(2, -1, -1)
    k = F.layer_norm(tokens, (48,), pool.ln_k.weight, pool.ln_k.bias)
    torch.testing.assert_close(pool(tokens), ref(q, k, k, need_weights=False)[0], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_decoder_split_and_cls():
    model = _model()
    pixels, ids, mask = _batch()
    image = model.image_features(pixels)
    emb, tokens = model.text_outputs(ids, mask)
    # the unimodal layers are text only: their outputs do not depend on the image
    assert tokens.shape == (3, 8, 64) and len(model.unimodal.blocks) == 2 and len(model.multimodal.blocks) == 2
    assert all(not b.cross_attn for b in model.unimodal.blocks) and all(b.cross_attn for b in model.multimodal.blocks)
    # the multimodal layers read the image
    other = model.image_features(torch.randn_like(pixels))
    assert not torch.allclose(model.caption_logits(tokens, image), model.caption_logits(tokens, other))
    # [CLS] sees every real token and no padding: changing a padded id leaves row 1's embedding alone
    changed = ids.clone()
    changed[1, 6] = 7
    torch.testing.assert_close(model.text_outputs(changed, mask)[0][1], emb[1])
    changed[1, 2] = 7
    assert not torch.allclose(model.text_outputs(changed, mask)[0][1], emb[1])


def test_losses_by_hand():
    model = _model()
    pixels, ids, mask = _batch()
    out = model(pixels, ids, mask)
    with torch.no_grad():
        image_emb, image_tokens = model.image_outputs(pixels)
        text_emb, tokens = model.text_outputs(ids, mask)
        logits = image_emb @ text_emb.t() / model.temperature
        labels = torch.arange(3)
        contrastive = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
        lm = model.caption_logits(tokens, image_tokens, mask.bool())
        targets = ids.masked_fill(mask == 0, -100)[:, 1:]
        caption = F.cross_entropy(lm[:, :-1].reshape(-1, lm.shape[-1]), targets.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out["contrastive"], contrastive, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["caption"], caption, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["loss"], 1.0 * contrastive + 2.0 * caption, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_cached_greedy_equals_recomputation():
    model = _model()
    pixels, _, _ = _batch()
    got = model.generate(pixels, max_new_tokens=6)
    image, seq = model.image_features(pixels), torch.full((3, 1), 2)
    for _ in range(6):
        seq = torch.cat([seq, model.caption_logits(model.text_outputs(seq)[1], image)[:, -1:].argmax(-1)], 1)
    assert torch.equal(got, seq[:, 1:])


def test_bad_input_is_named():
    model = _model()
    pixels, ids, mask = _batch()
    with pytest.raises(ValueError, match="3 images but 2"):
        model(pixels, ids[:2], mask[:2])
    with pytest.raises(ValueError, match="context|long"):
        model.text_outputs(torch.full((1, 40), 5))
    with pytest.raises(ValueError, match="divisible"):
        CoCaConfig.from_preset("tiny", embed_dim=30)
