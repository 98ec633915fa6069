"""Our SigLIP equals transformers' SiglipModel (tiny random config, eager attention) and converts both ways."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from vlm_primer.contrastive import SigLIP, SigLIPConfig  # noqa: E402
from vlm_primer.interop.siglip import siglip_config_to_hf, siglip_from_hf, siglip_to_hf  # noqa: E402

TOL = dict(atol=1e-5, rtol=1e-5)


def _hf_siglip():
    cfg = transformers.SiglipConfig(
        text_config=dict(vocab_size=99, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=16, projection_size=48,
                         pad_token_id=1, eos_token_id=1),
        vision_config=dict(hidden_size=48, intermediate_size=56, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8),
    )
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    hf = transformers.SiglipModel(cfg).eval()
    assert hf.text_model.encoder.layers[0].self_attn.config._attn_implementation == "eager"
    with torch.no_grad():  # randomise everything: the MAP probe, norms, biases, scale and bias
        for p in hf.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
        hf.logit_scale.fill_(1.1)
        hf.logit_bias.fill_(-2.5)
    return hf


def _inputs():
    gen = torch.Generator().manual_seed(1)
    pixels = torch.randn(3, 3, 32, 32, generator=gen)
    ids = torch.randint(2, 99, (3, 16), generator=gen)
    mask = torch.ones(3, 16, dtype=torch.long)
    ids[1, 9:] = 1  # padded to the full context with the pad id, as SigLIP was trained
    mask[1, 9:] = 0
    return pixels, ids, mask


@pytest.mark.parametrize("use_mask", [False, True], ids=["no-mask", "mask"])
def test_siglip_matches_transformers(use_mask):
    hf = _hf_siglip()
    ours = siglip_from_hf(hf).eval()
    assert ours.logit_bias.item() == pytest.approx(-2.5)
    pixels, ids, mask = _inputs()
    mask = mask if use_mask else None
    with torch.no_grad():
        theirs = hf(input_ids=ids, pixel_values=pixels, attention_mask=mask, return_loss=True)
        out = ours(pixels, ids, mask)
    torch.testing.assert_close(out.image_embeds, theirs.image_embeds, **TOL)
    torch.testing.assert_close(out.text_embeds, theirs.text_embeds, **TOL)
    torch.testing.assert_close(out.logits_per_image, theirs.logits_per_image, **TOL)
    torch.testing.assert_close(out.logits_per_text, theirs.logits_per_text, **TOL)
    torch.testing.assert_close(out.loss, theirs.loss, **TOL)
    with torch.no_grad():
        fresh = SigLIP(ours.cfg).eval()(pixels, ids, mask)
    assert (fresh.logits_per_image - theirs.logits_per_image).abs().max() > 1e-2


def test_siglip_round_trip():
    hf = _hf_siglip()
    ours = siglip_from_hf(hf)
    back = siglip_to_hf(ours)
    hf_sd, back_sd = hf.state_dict(), back.state_dict()
    assert hf_sd.keys() == back_sd.keys()
    for k in hf_sd:
        assert torch.equal(hf_sd[k], back_sd[k]), k
    again = siglip_from_hf(back)
    sd, sd2 = ours.state_dict(), again.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)


def test_our_preset_converts_to_transformers():
    cfg = SigLIPConfig.from_preset("tiny")
    cfg = cfg.replace(vision=cfg.vision.replace(depth=1, image_size=32), text=cfg.text.replace(depth=1))
    torch.manual_seed(0)
    ours = SigLIP(cfg).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    hf = siglip_to_hf(ours, attn_implementation="eager")
    assert hf.vision_model.encoder.layers[0].self_attn.config._attn_implementation == "eager"
    pixels, ids, _ = _inputs()
    with torch.no_grad():
        theirs = hf(input_ids=ids, pixel_values=pixels, return_loss=True)
        out = ours(pixels, ids)
    torch.testing.assert_close(out.logits_per_image, theirs.logits_per_image, **TOL)
    torch.testing.assert_close(out.loss, theirs.loss, **TOL)


def test_conversion_errors():
    with pytest.raises(TypeError, match="SiglipModel"):
        siglip_from_hf(torch.nn.Linear(2, 2))
    cfg = SigLIPConfig.from_preset("tiny")
    with pytest.raises(ValueError, match="cannot be written as a transformers checkpoint"):
        siglip_config_to_hf(cfg.replace(text=cfg.text.replace(causal=True)))
