"""BLIP against ``transformers``: a captioner (``BlipForConditionalGeneration``: logits and loss) and a retrieval
model (``BlipForImageTextRetrieval``: ITM logits, ITC similarities), tiny random configs with every parameter
perturbed; and our greedy, beam and nucleus decoding against ``generate()`` on the same weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlm_primer.interop.blip import blip_from_hf

EOS = 3


def _config(vocab=60, bos=58):
    from transformers import BlipConfig, BlipTextConfig, BlipVisionConfig

    vision = BlipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              image_size=32, patch_size=8)
    text = BlipTextConfig(vocab_size=vocab, hidden_size=32, encoder_hidden_size=32, intermediate_size=64,
                          num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=40, bos_token_id=bos,
                          sep_token_id=EOS, eos_token_id=EOS, pad_token_id=0)
    return BlipConfig(vision_config=vision.to_dict(), text_config=text.to_dict(), image_text_hidden_size=16)


def _perturbed(cls, seed=0, scale=0.1, eos_bias=0.0):
    torch.manual_seed(seed)
    model = cls(_config()).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
        if eos_bias:
            model.text_decoder.cls.predictions.bias[EOS] += eos_bias
    return model


def _inputs(batch=3, length=7):
    g = torch.Generator().manual_seed(1)
    pixels = torch.randn(batch, 3, 32, 32, generator=g)
    ids = torch.randint(4, 55, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, 4:] = 0
    return pixels, ids, mask


@torch.no_grad()
def test_captioner_logits_and_loss_match_transformers():
    from transformers import BlipForConditionalGeneration

    hf = _perturbed(BlipForConditionalGeneration)
    ours = blip_from_hf(hf)
    assert not ours.cfg.heads and ours.text.lm_head is not None
    pixels, ids, mask = _inputs()
    labels = ids.masked_fill(mask == 0, -100)
    want = hf(pixel_values=pixels, input_ids=ids, attention_mask=mask, labels=labels)
    hidden = ours.text(ids, mask, ours.image_features(pixels), mode="decoder")
    logits = ours.text.logits(hidden)
    torch.testing.assert_close(logits, want.logits, atol=1e-5, rtol=1e-5)
    from vlm_primer.nn import causal_lm_loss
    torch.testing.assert_close(causal_lm_loss(logits, labels), want.loss, atol=1e-5, rtol=1e-5)
    # the checkpoint's label smoothing reaches our captioning loss (transformers' default is 0)
    assert ours.cfg.label_smoothing == hf.config.text_config.label_smoothing
    smoothed = causal_lm_loss(logits, labels, label_smoothing=ours.cfg.label_smoothing)  # what lm_loss applies
    torch.testing.assert_close(smoothed, want.loss, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_retrieval_itm_and_itc_match_transformers():
    from transformers import BlipForImageTextRetrieval

    hf = _perturbed(BlipForImageTextRetrieval)
    ours = blip_from_hf(hf)
    pixels, ids, mask = _inputs()
    image = ours.image_features(pixels)
    itm = ours.itm_head(ours.text(ids, mask, image, mode="grounded")[:, 0])
    want = hf(input_ids=ids, pixel_values=pixels, attention_mask=mask).itm_score
    torch.testing.assert_close(itm, want, atol=1e-5, rtol=1e-5)
    image_emb = F.normalize(ours.vision_proj(image[:, 0]), dim=-1)
    text_emb = F.normalize(ours.text_proj(ours.text(ids, mask, mode="text")[:, 0]), dim=-1)
    want = hf(input_ids=ids, pixel_values=pixels, attention_mask=mask, use_itm_head=False).itm_score
    torch.testing.assert_close(ours.similarity(image_emb, text_emb), want, atol=1e-5, rtol=1e-5)
    # our itm_logits swaps the first token for [Encode], as BLIP does: with it already there, the same numbers
    enc = ids.clone()
    enc[:, 0] = ours.cfg.text.enc_token_id
    torch.testing.assert_close(ours.itm_logits(image, ids, mask), hf(input_ids=enc, pixel_values=pixels,
                               attention_mask=mask).itm_score, atol=1e-5, rtol=1e-5)


def test_conversion_fails_when_a_weight_is_not_copied():
    from transformers import BlipForConditionalGeneration

    hf = _perturbed(BlipForConditionalGeneration)
    sd = hf.state_dict()
    ours = blip_from_hf(hf)
    # every tensor of ours comes from theirs: re-initialising any one of theirs changes our copy
    with torch.no_grad():
        sd["text_decoder.bert.encoder.layer.1.crossattention.self.value.weight"].add_(1.0)
    again = blip_from_hf(hf)
    assert not torch.equal(ours.text.layers[1].xattn.v.weight, again.text.layers[1].xattn.v.weight)
    with pytest.raises(ValueError, match="converts"):
        blip_from_hf(torch.nn.Linear(2, 2))


def _clean(ids: torch.Tensor) -> list[list[int]]:
    """Each row up to and including its first <eos> (what follows is padding, which the two fill differently)."""
    out = []
    for row in ids.tolist():
        out.append(row[:row.index(EOS) + 1] if EOS in row else row)
    return out


@pytest.mark.parametrize("seed, eos_bias", [(1, 4.0), (3, 3.0)])
@torch.no_grad()
def test_greedy_and_beam_search_equal_generate(seed, eos_bias):
    from transformers import BlipForConditionalGeneration

    hf = _perturbed(BlipForConditionalGeneration, seed=seed, scale=0.3, eos_bias=eos_bias)
    ours = blip_from_hf(hf)
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    ended = 0
    for beams in (1, 2, 4):
        want = hf.generate(pixel_values=pixels, max_new_tokens=12, num_beams=beams, do_sample=False)[:, 1:]
        got = ours.generate(pixels, "greedy" if beams == 1 else "beam", max_new_tokens=12, num_beams=beams)
        assert _clean(got) == _clean(want), beams
        ended += sum(EOS in row for row in _clean(got))
    assert 0 < ended < 9  # some captions end early, some run to the limit: both paths are exercised


@torch.no_grad()
def test_nucleus_sampling_equals_generate_with_the_same_seed():
    from transformers import BlipForConditionalGeneration

    hf = _perturbed(BlipForConditionalGeneration, seed=5, scale=0.3, eos_bias=2.5)
    ours = blip_from_hf(hf)
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for top_p, temperature in ((0.9, 0.7), (0.5, 1.3)):
        torch.manual_seed(123)
        want = hf.generate(pixel_values=pixels, max_new_tokens=12, do_sample=True, top_p=top_p, top_k=0,
                           temperature=temperature)[:, 1:]
        torch.manual_seed(123)
        got = ours.generate(pixels, "nucleus", max_new_tokens=12, top_p=top_p, temperature=temperature)
        assert _clean(got) == _clean(want)
