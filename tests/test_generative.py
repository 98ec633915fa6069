"""BLIP's pieces: the MED's three modes and what they share, the losses (ITC with soft targets, momentum update,
hard negatives), a training step that learns, cached captions equal to recomputed ones, and bad input."""

from __future__ import annotations

import pytest
import torch

from vlm_primer.contrastive.losses import clip_loss
from vlm_primer.generative import MED, Blip, BlipConfig, MEDConfig, itc_loss, momentum_update

CFG = MEDConfig.from_preset("tiny", depth=2)


def _batch(batch=4, length=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(batch, 3, 64, 64, generator=g)
    ids = torch.randint(6, 800, (batch, length), generator=g)
    ids[:, 0], ids[:, -1] = 2, 3
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    return pixels, ids, mask


def test_encoder_and_decoder_share_everything_but_self_attention():
    med = MED(CFG)
    uses = med.shared_parameters()
    enc, dec = set(uses["grounded"]), set(uses["decoder"])
    only_dec, only_enc = dec - enc, enc - dec
    assert only_dec and all(".attn_dec." in n or ".ln_attn_dec." in n or n.startswith("lm_head.") for n in only_dec)
    assert only_enc and all(".attn." in n or ".ln_attn." in n for n in only_enc)
    assert set(uses["text"]) < enc and not any("xattn" in n for n in uses["text"])
    one = MED(MEDConfig.from_preset("tiny", depth=2, decoder_self_attn=False))
    u = one.shared_parameters()
    assert set(u["grounded"]) - set(u["decoder"]) == set()


@torch.no_grad()
def test_modes_see_what_they_should():
    torch.manual_seed(0)
    med = MED(CFG).eval()
    ids = torch.randint(6, 800, (2, 6))
    image, other = torch.randn(2, 5, 64), torch.randn(2, 5, 64)
    # the unimodal encoder ignores the image; the grounded encoder and the decoder read it
    torch.testing.assert_close(med(ids, mode="text"), med(ids, image=image, mode="text"))
    assert not torch.allclose(med(ids, image=image, mode="grounded"), med(ids, image=other, mode="grounded"))
    # the decoder is causal: a later token does not change earlier outputs; the encoder is not
    changed = ids.clone()
    changed[:, -1] = 7
    dec = med(ids, image=image, mode="decoder")
    torch.testing.assert_close(dec[:, :-1], med(changed, image=image, mode="decoder")[:, :-1])
    enc = med(ids, image=image, mode="grounded")
    assert not torch.allclose(enc[:, :-1], med(changed, image=image, mode="grounded")[:, :-1])
    # one token at a time through the cache = the whole sequence at once
    cache = med.new_cache()
    steps = [med(ids[:, i:i + 1], image=image, mode="decoder", cache=cache) for i in range(ids.shape[1])]
    torch.testing.assert_close(torch.cat(steps, 1), dec, atol=1e-5, rtol=1e-5)


def test_itc_soft_targets():
    g = torch.Generator().manual_seed(0)
    logits, teacher = torch.randn(5, 5, generator=g), torch.randn(5, 5, generator=g)
    torch.testing.assert_close(itc_loss(logits, teacher, alpha=0.0), clip_loss(logits))
    torch.testing.assert_close(itc_loss(logits), clip_loss(logits))
    # alpha = 1: cross-entropy against the teacher's softmax, by hand, both directions
    def ce(a, b):
        return -(a.log_softmax(1) * b.softmax(1)).sum(1).mean()
    torch.testing.assert_close(itc_loss(logits, teacher, alpha=1.0), (ce(logits, teacher) + ce(logits.t(), teacher.t())) / 2)
    with pytest.raises(ValueError, match="alpha"):
        itc_loss(logits, teacher, alpha=1.5)


def test_momentum_update_is_an_ema():
    a, b = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
    want = 0.9 * b.weight.detach() + 0.1 * a.weight.detach()
    momentum_update([(a, b)], 0.9)
    torch.testing.assert_close(b.weight, want)


@pytest.mark.parametrize("distill", [False, True])
def test_blip_training_step_lowers_all_three_losses(distill):
    torch.manual_seed(0)
    model = Blip(BlipConfig.from_preset("tiny", text=dict(MEDConfig.PRESETS["tiny"], depth=2), distill=distill))
    pixels, ids, mask = _batch()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    first = None
    for _ in range(15):
        out = model(pixels, ids, mask, generator=torch.Generator().manual_seed(0))
        first = first or {k: float(out[k]) for k in ("itc", "itm", "lm")}
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert float(out["lm"]) < first["lm"] - 1.0 and float(out["itc"]) < first["itc"]
    if distill:  # the momentum encoder moved toward the trained one, and took no gradient
        assert all(p.grad is None for p in model.momentum.parameters())
        assert not torch.equal(model.momentum["text_proj"].weight, model.text_proj.weight)


@torch.no_grad()
def test_blip_captions_are_deterministic_and_padded():
    torch.manual_seed(0)
    model = Blip(BlipConfig.from_preset("tiny"))
    pixels, _, _ = _batch()
    greedy = model.generate(pixels, max_new_tokens=6)
    torch.testing.assert_close(greedy, model.generate(pixels, max_new_tokens=6))
    assert model.generate(pixels, "beam", max_new_tokens=6, num_beams=2).shape[0] == 4
    g = torch.Generator().manual_seed(0)
    assert model.generate(pixels, "nucleus", max_new_tokens=6, repeats=3, generator=g).shape[0] == 12
    model.train()
    model.generate(pixels, max_new_tokens=2)
    assert model.training


def test_bad_input_is_named():
    model = Blip(BlipConfig.from_preset("tiny"))
    pixels, ids, mask = _batch()
    with pytest.raises(ValueError, match="mode"):
        model.text(ids, mode="encoder")
    with pytest.raises(ValueError, match="image features"):
        model.text(ids, mode="grounded")
    with pytest.raises(ValueError, match="4 images but 3"):
        model(pixels, ids[:3], mask[:3])
    with pytest.raises(ValueError, match="strategy"):
        model.generate(pixels, "sampling")
    with pytest.raises(ValueError, match="positions"):
        model.generate(pixels, max_new_tokens=100)
    with pytest.raises(ValueError, match="2 real tokens"):
        model(pixels, ids, torch.zeros_like(mask).index_fill(1, torch.tensor([0]), 1))
    with pytest.raises(ValueError, match="vision_dim|wide"):
        BlipConfig.from_preset("tiny", text=dict(MEDConfig.PRESETS["tiny"], vision_dim=32))
    captioner = Blip(BlipConfig.from_preset("tiny", heads=False))
    with pytest.raises(ValueError, match="captioner only"):
        captioner.encode_text(ids)
    with pytest.raises(ValueError, match="LM head"):
        MED(MEDConfig.from_preset("tiny", lm_head=False)).logits(torch.zeros(1, 2, 64))
