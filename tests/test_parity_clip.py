"""Our CLIP equals transformers' CLIPModel (tiny random config, eager attention) and converts both ways."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from vlm_primer.contrastive import CLIP, CLIPConfig  # noqa: E402
from vlm_primer.interop.clip import clip_config_to_hf, clip_from_hf, clip_to_hf  # noqa: E402

TOL = dict(atol=1e-5, rtol=1e-5)


def _hf_clip(eos_token_id: int, act: str = "quick_gelu"):
    cfg = transformers.CLIPConfig(
        text_config=dict(vocab_size=99, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=16, hidden_act=act,
                         eos_token_id=eos_token_id, pad_token_id=0, bos_token_id=1),
        vision_config=dict(hidden_size=48, intermediate_size=56, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8, hidden_act=act),
        projection_dim=24,
    )
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    hf = transformers.CLIPModel(cfg).eval()
    assert hf.text_model.encoder.layers[0].self_attn.config._attn_implementation == "eager"
    with torch.no_grad():  # randomise everything, including norms, biases and the temperature
        for p in hf.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
        hf.logit_scale.fill_(1.3)
    return hf


def _inputs(eos_token_id: int):
    gen = torch.Generator().manual_seed(1)
    pixels = torch.randn(3, 3, 32, 32, generator=gen)
    ids = torch.randint(4, 90, (3, 10), generator=gen)
    lengths = [10, 7, 4]
    mask = torch.zeros(3, 10, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, n - 1] = eos_token_id
        ids[i, n:] = 0
        mask[i, :n] = 1
    return pixels, ids, mask


@pytest.mark.parametrize("eos_token_id,act", [(3, "quick_gelu"), (2, "gelu")], ids=["eos-pool", "argmax-pool"])
def test_clip_matches_transformers(eos_token_id, act):
    hf = _hf_clip(eos_token_id, act)
    ours = clip_from_hf(hf).eval()
    assert ours.cfg.text.pool == ("argmax" if eos_token_id == 2 else "eos")
    pixels, ids, mask = _inputs(eos_token_id if eos_token_id != 2 else 95)  # argmax pools at the largest id
    if eos_token_id == 2:
        ids[ids == 95] = 98
    with torch.no_grad():
        theirs = hf(input_ids=ids, pixel_values=pixels, attention_mask=mask, return_loss=True)
        out = ours(pixels, ids, mask)
    torch.testing.assert_close(out.image_embeds, theirs.image_embeds, **TOL)
    torch.testing.assert_close(out.text_embeds, theirs.text_embeds, **TOL)
    torch.testing.assert_close(out.logits_per_image, theirs.logits_per_image, **TOL)
    torch.testing.assert_close(out.logits_per_text, theirs.logits_per_text, **TOL)
    torch.testing.assert_close(out.loss, theirs.loss, **TOL)
    # The check can fail: a freshly initialised model with the same config disagrees.
    with torch.no_grad():
        fresh = CLIP(ours.cfg).eval()(pixels, ids, mask)
    assert (fresh.logits_per_image - theirs.logits_per_image).abs().max() > 1e-2


def test_clip_round_trip():
    hf = _hf_clip(3)
    ours = clip_from_hf(hf)
    back = clip_to_hf(ours)
    hf_sd, back_sd = hf.state_dict(), back.state_dict()
    assert hf_sd.keys() == back_sd.keys()
    for k in hf_sd:
        assert torch.equal(hf_sd[k], back_sd[k]), k
    again = clip_from_hf(back)
    sd, sd2 = ours.state_dict(), again.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)


def test_our_preset_converts_to_transformers():
    """Starting from our side: a random tiny CLIP -> CLIPModel gives the same outputs."""
    cfg = CLIPConfig.from_preset("tiny")
    cfg = cfg.replace(vision=cfg.vision.replace(depth=1, image_size=32), text=cfg.text.replace(depth=1))
    torch.manual_seed(0)
    ours = CLIP(cfg).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    hf = clip_to_hf(ours, attn_implementation="eager")
    assert hf.vision_model.encoder.layers[0].self_attn.config._attn_implementation == "eager"
    pixels, ids, mask = _inputs(3)
    with torch.no_grad():
        theirs = hf(input_ids=ids, pixel_values=pixels, attention_mask=mask, return_loss=True)
        out = ours(pixels, ids, mask)
    torch.testing.assert_close(out.logits_per_image, theirs.logits_per_image, **TOL)
    torch.testing.assert_close(out.loss, theirs.loss, **TOL)


def test_conversion_errors():
    with pytest.raises(TypeError, match="CLIPModel"):
        clip_from_hf(torch.nn.Linear(2, 2))
    cfg = CLIPConfig.from_preset("tiny")
    bad = cfg.replace(vision=cfg.vision.replace(pre_norm=False))
    with pytest.raises(ValueError, match="cannot be written as a transformers checkpoint"):
        clip_config_to_hf(bad)


def test_paper_presets_convert_to_transformers_configs():
    """The base/b32 paper presets describe models transformers can hold (no weights are built)."""
    from vlm_primer.contrastive import CLIPConfig
    from vlm_primer.interop.clip import clip_config_to_hf

    for name in ("base", "b32"):
        hf = clip_config_to_hf(CLIPConfig.from_preset(name))
        assert hf.text_config.eos_token_id == 49407 and hf.vision_config.hidden_size == 768
        # the towers' own configs size CLIP{Vision,Text}ModelWithProjection's projection
        assert hf.vision_config.projection_dim == hf.text_config.projection_dim == hf.projection_dim == 512
        assert hf.vision_config.patch_size == (16 if name == "base" else 32)
    wide = clip_config_to_hf(CLIPConfig.from_preset("base", embed_dim=768))
    assert wide.vision_config.projection_dim == wide.text_config.projection_dim == 768
