"""BLIP-2's stage 1: the three losses run and train the right parts, ITG is causal over the text and blind
to nothing it should see, and hard negatives are never the positive pair."""

from __future__ import annotations

import pytest
import torch

from vlm_primer.backbones import QFormer, QFormerConfig
from vlm_primer.backbones.blip2 import Blip2Stage1, hard_negatives

CFG = QFormerConfig.from_preset("tiny")


def _batch(batch=4, length=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, 9, CFG.vision_dim, generator=g)
    ids = torch.randint(6, CFG.vocab_size, (batch, length), generator=g)
    ids[:, 0] = 2
    mask = torch.ones_like(ids)
    mask[0, 4:] = 0
    return image, ids, mask


def test_the_three_losses_train_the_queries_the_heads_and_the_temperature():
    torch.manual_seed(0)
    stage1 = Blip2Stage1(QFormer(CFG))
    out = stage1(*_batch(), generator=torch.Generator().manual_seed(0))
    assert all(torch.isfinite(out[k]) for k in ("loss", "itc", "itm", "itg"))
    assert out["loss"].item() == pytest.approx((out["itc"] + out["itm"] + out["itg"]).item(), rel=1e-5)
    out["loss"].backward()
    q = stage1.qformer
    for name, p in [("query_tokens", q.query_tokens), ("cross-attention", q.layers[0].xattn.q.weight),
                    ("text FFN", q.layers[1].mlp_text.fc1.weight), ("ITM head", q.itm_head.weight),
                    ("ITC projection", q.vision_proj.weight), ("ITG head", stage1.lm_head.dense.weight),
                    ("temperature", stage1.temperature)]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert stage1.lm_head.word_emb.weight is q.word_emb.weight   # tied, not copied


def test_a_few_steps_lower_every_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    stage1 = Blip2Stage1(QFormer(CFG))
    opt = torch.optim.AdamW(stage1.parameters(), lr=2e-3)
    batch = _batch(batch=8)
    first = None
    for step in range(40):
        out = stage1(*batch, generator=torch.Generator().manual_seed(step))
        first = first or {k: out[k].item() for k in ("itc", "itm", "itg")}
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert out["itc"] < first["itc"] and out["itg"] < first["itg"] and out["itm"] < first["itm"] + 0.1


@torch.no_grad()
def test_itg_is_causal_over_the_text_and_the_queries_never_see_it():
    model = QFormer(CFG).eval()
    image, ids, mask = _batch()
    changed = ids.clone()
    changed[:, -1] = (ids[:, -1] + 1) % CFG.vocab_size
    a = model(image, ids, mask, mask="multimodal_causal")
    b = model(image, changed, mask, mask="multimodal_causal")
    nq = CFG.num_queries
    torch.testing.assert_close(a[:, :-1], b[:, :-1])                 # queries and earlier text untouched
    assert not torch.allclose(a[:, -1], b[:, -1])
    torch.testing.assert_close(a[:, :nq], model(image))              # queries see only queries
    bi = model(image, changed, mask, mask="bidirectional")
    assert not torch.allclose(bi[:, :nq], model(image, ids, mask, mask="bidirectional")[:, :nq])  # ITM: they do


def test_hard_negatives_are_never_the_pair_or_a_marked_match():
    scores = torch.eye(4) * 10 + torch.randn(4, 4)
    same = torch.zeros(4, 4, dtype=torch.bool)
    same[0, 1] = True
    for seed in range(20):
        neg = hard_negatives(scores, same, torch.Generator().manual_seed(seed))
        assert (neg != torch.arange(4)).all() and neg[0] != 1
    all_same = torch.ones(3, 3, dtype=torch.bool)
    assert (hard_negatives(torch.zeros(3, 3), all_same) != torch.arange(3)).all()
    with pytest.raises(ValueError, match="at least 2"):
        hard_negatives(torch.zeros(1, 1))


def test_hard_negatives_of_non_finite_scores():
    """Checked (the first step), NaN scores are refused by name; unchecked (no value read on a GPU), they still draw
    a negative that is not the pair, and finite scores draw what they drew before."""
    from vlm_primer.validate import validation

    scores = torch.randn(4, 4)
    scores[1, 2], scores[2, 0] = float("nan"), float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        hard_negatives(scores)
    with validation(False):
        for seed in range(10):
            assert (hard_negatives(scores, generator=torch.Generator().manual_seed(seed)) != torch.arange(4)).all()
    finite = torch.randn(4, 4)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    weights = torch.softmax(finite, 1).masked_fill(torch.eye(4, dtype=torch.bool), 0.0) + (1 - torch.eye(4)) * 1e-8
    assert torch.equal(hard_negatives(finite, generator=g()), torch.multinomial(weights, 1, generator=g()).squeeze(1))


def test_bad_batches_name_the_problem():
    stage1 = Blip2Stage1(QFormer(CFG))
    image, ids, mask = _batch()
    with pytest.raises(ValueError, match="at least 2 real tokens"):
        stage1(image, ids[:, :1])
    with pytest.raises(ValueError, match="at least 2 real tokens"):
        stage1(image, ids, mask.masked_fill(torch.arange(6) > 0, 0))
    with pytest.raises(ValueError, match="4 images but 3 texts"):
        stage1(image, ids[:3])
    with pytest.raises(ValueError, match=r"image must be float features \(B, N, 64\)"):
        stage1(image[..., :5], ids)
    with pytest.raises(ValueError, match="hard negatives need a batch of at least 2"):
        stage1(image[:1], ids[:1])
    with pytest.raises(ValueError, match="text_input=True and stage1_heads=True"):
        Blip2Stage1(QFormer(QFormerConfig.from_preset("tiny", stage1_heads=False)))


def test_query_attention_maps_are_the_weights_the_forward_uses():
    from einops import rearrange

    q = QFormer(CFG).eval()
    image = torch.randn(2, 9, CFG.vision_dim)
    maps = q.query_attention(image)
    assert maps.shape == (2, CFG.num_queries, 9)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, CFG.num_queries))
    # the same weights, per head, reproduce the cross-attention's output
    xattn, seen = q.layers[0].xattn, {}
    handle = xattn.register_forward_hook(lambda m, args, kwargs, out: seen.update(x=args[0], out=out),
                                         with_kwargs=True)
    with torch.no_grad():
        q(image)
        handle.remove()
        weights = xattn.attention_weights(seen["x"], image)
        values = rearrange(xattn.v(image), "b n (h d) -> b h n d", h=xattn.heads)
        torch.testing.assert_close(xattn.out(rearrange(weights @ values, "b h n d -> b n (h d)")), seen["out"])
    with pytest.raises(ValueError, match="layer 1 has no cross-attention"):
        q.query_attention(image, layer=1)
