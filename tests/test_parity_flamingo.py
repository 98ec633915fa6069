"""Flamingo against ``transformers``' ``IdeficsForVisionText2Text`` (tiny random configs, every parameter
perturbed, the zero-initialised gates included): logits, loss and greedy generation with two interleaved images
per sequence, the converters both ways, the media mask against IDEFICS' processor, and the zero gate."""

from __future__ import annotations

import pytest
import torch

from vlm_primer.backbones.flamingo import Flamingo, FlamingoConfig, media_mask
from vlm_primer.interop.idefics import flamingo_from_hf, flamingo_to_hf

IMG, EOS = 5, 3


def _cfg(**kw):
    text = dict(FlamingoConfig.PRESETS["tiny"]["text"], kv_heads=None, depth=4)
    vision = dict(FlamingoConfig.PRESETS["tiny"]["vision"], image_size=24, dim=48, mlp_dim=96)
    return FlamingoConfig.from_preset("tiny", text=text, vision=vision, **kw)


VARIANTS = {  # the two layouts IDEFICS allows: per-channel gates with q/k norms in the cross-attention, and
    "vector_xattn_qknorm": dict(alpha_type="vector", xattn_qk_norm=True),                      # per-layer gates
    "float_perceiver_qknorm": dict(alpha_type="float", perceiver_qk_norm=True, cross_every=4),  # with perceiver norms
    "no_perceiver": dict(use_perceiver=False),
}


def _perturbed_hf(cfg, seed=0):
    torch.manual_seed(seed)
    hf = flamingo_to_hf(Flamingo(cfg))
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return hf


def _inputs(cfg):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(6, cfg.text.vocab_size, (2, 12), generator=g)
    ids[0, [2, 7]] = IMG           # two images, the first after two text tokens
    ids[1, [0, 9]] = IMG
    ids[1, 5] = EOS                # tokens after an eos see no image until the next <image>
    pixels = torch.randn(2, 2, 3, cfg.vision.image_size, cfg.vision.image_size, generator=g)
    return ids, pixels, media_mask(ids, IMG, 2, EOS).long()


@pytest.mark.parametrize("variant", list(VARIANTS))
@torch.no_grad()
def test_logits_loss_and_generation_match_idefics(variant):
    cfg = _cfg(**VARIANTS[variant])
    hf = _perturbed_hf(cfg)
    ours = flamingo_from_hf(hf)
    ids, pixels, mask = _inputs(cfg)
    want = hf(input_ids=ids, pixel_values=pixels, image_attention_mask=mask, labels=ids)
    got = ours(ids, pixels, image_attention_mask=mask, labels=ids)
    torch.testing.assert_close(got.logits, want.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.loss, want.loss, atol=1e-5, rtol=1e-5)
    # the default mask is the media mask of the ids
    torch.testing.assert_close(ours(ids, pixels).logits, want.logits, atol=1e-5, rtol=1e-5)
    new = ours.generate(ids, pixels, max_new_tokens=5, image_attention_mask=mask, eos_token_id=-1)
    theirs = hf.generate(input_ids=ids, pixel_values=pixels, image_attention_mask=mask, max_new_tokens=5,
                         do_sample=False, eos_token_id=None)
    assert torch.equal(new, theirs[:, ids.shape[1]:])
    back = flamingo_to_hf(ours).state_dict()
    for k, v in hf.state_dict().items():
        torch.testing.assert_close(back[k], v, msg=k)
    fresh = Flamingo(cfg).eval()
    assert not torch.allclose(fresh(ids, pixels).logits, got.logits, atol=1e-3)


def test_media_mask_is_the_idefics_processors():
    from transformers.models.idefics.processing_idefics import (image_attention_mask_for_packed_input_ids,
                                                                incremental_to_binary_attention_mask)

    class Tok:
        eos_token_id = EOS

        def convert_tokens_to_ids(self, token):
            return {"<image>": IMG}[token]

    g = torch.Generator().manual_seed(4)
    for _ in range(20):
        ids = torch.randint(3, 9, (3, 15), generator=g)  # many images and eos tokens
        incremental, _ = image_attention_mask_for_packed_input_ids(ids.clone(), Tok(), "pt")
        want = incremental_to_binary_attention_mask(incremental, return_tensors="pt", num_classes=3)
        assert torch.equal(media_mask(ids, IMG, 3, EOS).long(), want)


@torch.no_grad()
def test_zero_gates_leave_the_frozen_lm_exactly_unchanged():
    cfg = _cfg()
    model = Flamingo(cfg).eval()
    ids, pixels, _ = _inputs(cfg)
    plain = model.language_model.transformer.inserted
    with_images = model(ids, pixels).logits
    model.language_model.transformer.inserted = torch.nn.ModuleDict()
    alone = model(ids).logits
    model.language_model.transformer.inserted = plain
    assert torch.equal(with_images, alone)
    for layer in model.gated_layers:
        layer.alpha_xattn.fill_(0.5)
    assert not torch.equal(model(ids, pixels).logits, alone)


def test_bad_inputs_name_the_problem():
    cfg = _cfg()
    model = Flamingo(cfg)
    ids, pixels, mask = _inputs(cfg)
    with pytest.raises(ValueError, match=r"image_attention_mask must be \(B, T, N\)"):
        model(ids, pixels, image_attention_mask=mask[:, :, :1])
    with pytest.raises(ValueError, match=r"\(B, N, 3, H, W\)"):
        model(ids, pixels[0, 0, 0])
    with pytest.raises(ValueError, match="cross_every=3 must divide"):
        _cfg(cross_every=3)
    with pytest.raises(ValueError, match="grouped-query"):
        flamingo_to_hf(Flamingo(FlamingoConfig.from_preset("tiny")))


def test_few_shot_prompts_give_each_example_its_own_image():
    from vlm_primer.backbones.data import prompt_ids
    from vlm_primer.backbones.fewshot import few_shot_ids, few_shot_vqa
    from vlm_primer.text import Tokenizer
    from vlm_primer.world import ShapesVQADataset, WorldConfig

    tok = Tokenizer.load()
    assert few_shot_ids(tok, [], "what color is it?") == prompt_ids(tok, "what color is it?", 1)
    ids = torch.tensor([few_shot_ids(tok, [("how many?", "two"), ("is there a star?", "yes")], "what shape?")])
    seen = media_mask(ids, IMG, 3, tok.eos_id)[0]
    image_at = (ids[0] == IMG).nonzero().flatten().tolist()
    eos_at = (ids[0] == tok.eos_id).nonzero().flatten().tolist()
    for n, (start, end) in enumerate(zip(image_at, eos_at + [ids.shape[1] - 1])):
        assert seen[start:end + 1, n].all() and seen[start:end + 1].sum() == end + 1 - start
    assert not seen[:image_at[0]].any() and not seen[eos_at[0] + 1:image_at[1]].any()
    model = Flamingo(FlamingoConfig.from_preset("tiny")).eval()
    world = WorldConfig(image_size=48, sizes=("large",))
    qs, support = ShapesVQADataset("test", 3, config=world), ShapesVQADataset("train", 5, config=world)
    out = few_shot_vqa(model, lambda x: x, qs, support, 2, batch_size=2)
    assert len(out["predictions"]) == 3 and 0 <= out["accuracy"]["all"] <= 1
    with pytest.raises(ValueError, match="support set holds 5"):
        few_shot_vqa(model, lambda x: x, qs, support, 6)
