"""BLIP-2's Q-Former against ``transformers``' ``Blip2ForImageTextRetrieval`` (tiny random config, every
parameter perturbed, including the zero-initialised query tokens): ITC similarities, ITM logits, the
queries' outputs, and the converters both ways; and the three stage-1 masks are what the paper says."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlm_primer.backbones import MASK_KINDS, QFormer, QFormerConfig, qformer_mask
from vlm_primer.interop.blip2 import qformer_config_to_hf, qformer_from_hf, qformer_to_hf

CFG = QFormerConfig.from_preset("tiny", depth=3, vision_dim=48)  # cross-attention in layers 0 and 2


@pytest.fixture(scope="module")
def hf():
    from transformers import Blip2ForImageTextRetrieval

    torch.manual_seed(0)
    model = Blip2ForImageTextRetrieval(qformer_config_to_hf(CFG)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def _inputs(batch=3, length=7):
    g = torch.Generator().manual_seed(1)
    pixels = torch.randn(batch, 3, 32, 32, generator=g)
    ids = torch.randint(6, CFG.vocab_size, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, 4:] = 0
    return pixels, ids, mask


@torch.no_grad()
def test_itc_and_itm_match_transformers(hf):
    ours = qformer_from_hf(hf)
    from vlm_primer.interop.blip2 import qformer_config_from_hf
    from transformers import Blip2Config
    assert qformer_config_from_hf(Blip2Config()).dropout == Blip2Config().qformer_config.hidden_dropout_prob == 0.1
    pixels, ids, mask = _inputs()
    image = hf.vision_model(pixel_values=pixels)[0]
    # ITC: queries alone and text alone; the image-text score is the best query's similarity
    queries = ours(image)
    text = ours(input_ids=ids, attention_mask=mask, queries=False)
    image_emb = F.normalize(ours.vision_proj(queries), dim=-1)
    text_emb = F.normalize(ours.text_proj(text[:, 0]), dim=-1)
    sim = torch.einsum("iqd,td->iqt", image_emb, text_emb).amax(1)
    want = hf(pixel_values=pixels, input_ids=ids, attention_mask=mask).logits_per_image
    torch.testing.assert_close(sim, want, atol=1e-5, rtol=1e-5)
    # ITM: queries and text together, every position sees every other; the head reads the queries
    joint = ours(image, ids, mask, mask="bidirectional")
    itm = ours.itm_head(joint[:, :CFG.num_queries]).mean(1)
    want = hf(pixel_values=pixels, input_ids=ids, attention_mask=mask, use_image_text_matching_head=True)
    torch.testing.assert_close(itm, want.logits_per_image, atol=1e-5, rtol=1e-5)
    # the uni-modal mask on the joint sequence is the same as the two separate passes
    uni = ours(image, ids, mask, mask="unimodal")
    torch.testing.assert_close(uni[:, :CFG.num_queries], queries, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(uni[:, CFG.num_queries][mask[:, 0].bool()], text[:, 0], atol=1e-5, rtol=1e-5)


def test_converters_round_trip_and_notice_uncopied_weights(hf):
    ours = qformer_from_hf(hf)
    back = qformer_to_hf(ours, hf.vision_model)
    want = hf.state_dict()
    for k, v in back.state_dict().items():
        torch.testing.assert_close(v, want[k], msg=k)
    fresh = QFormer(CFG).eval()
    pixels, ids, mask = _inputs()
    with torch.no_grad():
        image = hf.vision_model(pixel_values=pixels)[0]
        assert not torch.allclose(fresh(image, ids, mask), ours(image, ids, mask), atol=1e-3)


def test_the_three_masks_are_the_papers():
    text_mask = torch.tensor([[1, 1, 1, 0]])
    nq = 2
    uni, bi, causal = (qformer_mask(kind, nq, text_mask)[0] for kind in MASK_KINDS)
    q, t = slice(0, nq), slice(nq, nq + 3)
    assert uni[q, q].all() and uni[t, t].all() and not uni[q, t].any() and not uni[t, q].any()   # ITC
    assert bi[:, :nq + 3].all()                                                                 # ITM
    assert causal[q, q].all() and not causal[q, t].any() and causal[t, q].all()                 # ITG
    assert torch.equal(causal[t, t], torch.ones(3, 3, dtype=torch.bool).tril())
    assert not uni[:, -1].any() and not bi[:, -1].any() and not causal[:, -1].any()             # padding unseen
    with pytest.raises(ValueError, match="kind"):
        qformer_mask("causal", nq, text_mask)


def test_bad_inputs_name_the_problem():
    model = QFormer(CFG)
    image = torch.randn(2, 5, CFG.vision_dim)
    with pytest.raises(ValueError, match=r"image features \(B, N, 48\)"):
        model(torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match="2 images but 3 texts"):
        model(image, torch.ones(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="more than the Q-Former's 64 positions"):
        model(image, torch.ones(2, 65, dtype=torch.long))
    with pytest.raises(ValueError, match="nothing to encode"):
        model(queries=False)
    with pytest.raises(ValueError, match="text_input=False"):
        QFormer(QFormerConfig.from_preset("tiny", text_input=False, vision_dim=48))(image, torch.ones(2, 3).long())


@pytest.fixture(scope="module")
def hf_blip2():
    from vlm_primer.backbones.blip2 import Blip2, Blip2Config
    from vlm_primer.interop.blip2 import blip2_to_hf

    torch.manual_seed(0)
    model = blip2_to_hf(Blip2(Blip2Config.from_preset("tiny")))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _blip2_inputs(cfg):
    g = torch.Generator().manual_seed(2)
    prompt = torch.randint(6, cfg.text.vocab_size, (2, 6), generator=g)
    ids = torch.cat([torch.full((2, cfg.tokens_per_image), cfg.image_token_id), prompt], dim=1)
    labels = ids.masked_fill(ids == cfg.image_token_id, -100)
    labels[:, :cfg.tokens_per_image + 2] = -100
    return ids, labels, torch.rand(2, 3, 48, 48, generator=g)


@torch.no_grad()
def test_blip2_logits_loss_and_generation_match_transformers(hf_blip2):
    from vlm_primer.interop.blip2 import blip2_from_hf, blip2_to_hf

    ours = blip2_from_hf(hf_blip2)
    ids, labels, pixels = _blip2_inputs(ours.cfg)
    want = hf_blip2(input_ids=ids, pixel_values=pixels, labels=labels)
    got = ours(ids, pixels, labels=labels)
    torch.testing.assert_close(got.logits, want.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.loss, want.loss, atol=1e-5, rtol=1e-5)
    new = ours.generate(ids, pixels, max_new_tokens=5)
    theirs = hf_blip2.generate(input_ids=ids, pixel_values=pixels, max_new_tokens=5, do_sample=False)
    assert torch.equal(new, theirs[:, -5:])
    back = blip2_to_hf(ours).state_dict()
    for k, v in hf_blip2.state_dict().items():
        torch.testing.assert_close(back[k], v, msg=k)


def test_an_opt_language_model_is_refused_before_the_tower_converts(hf_blip2, monkeypatch):
    from transformers import Blip2Config as HFBlip2Config, Blip2ForConditionalGeneration, OPTConfig

    import vlm_primer.interop.blip2 as interop

    c = hf_blip2.config
    opt = OPTConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2,
                    word_embed_proj_dim=16)
    hf = Blip2ForConditionalGeneration(HFBlip2Config(vision_config=c.vision_config.to_dict(), text_config=opt.to_dict(),
                                                     qformer_config=c.qformer_config.to_dict()))
    monkeypatch.setattr(interop, "vit_from_hf_blip2_vision", lambda *a: pytest.fail("the tower was converted"))
    with pytest.raises(ValueError, match="only a Llama language model is supported .* got 'opt'"):
        interop.blip2_from_hf(hf)


@pytest.fixture(scope="module")
def hf_instructblip():
    from vlm_primer.backbones.blip2 import InstructBlip, InstructBlipConfig
    from vlm_primer.interop.blip2 import blip2_to_hf

    torch.manual_seed(1)
    model = blip2_to_hf(InstructBlip(InstructBlipConfig.from_preset("tiny")))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@torch.no_grad()
def test_instructblip_logits_loss_and_generation_match_transformers(hf_instructblip):
    from transformers import InstructBlipForConditionalGeneration

    from vlm_primer.backbones.blip2 import InstructBlip
    from vlm_primer.interop.blip2 import blip2_from_hf, blip2_to_hf

    assert isinstance(hf_instructblip, InstructBlipForConditionalGeneration)
    ours = blip2_from_hf(hf_instructblip)
    assert isinstance(ours, InstructBlip)
    ids, labels, pixels = _blip2_inputs(ours.cfg)
    g = torch.Generator().manual_seed(3)
    instruction = torch.randint(6, ours.cfg.qformer.vocab_size, (2, 5), generator=g)
    imask = torch.ones_like(instruction)
    imask[0, 3:] = 0
    kw = dict(qformer_input_ids=instruction, qformer_attention_mask=imask)
    want = hf_instructblip(input_ids=ids, pixel_values=pixels, labels=labels, **kw)
    got = ours(ids, pixels, labels=labels, **kw)
    torch.testing.assert_close(got.logits, want.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.loss, want.loss, atol=1e-5, rtol=1e-5)
    # the instruction changes what the queries extract: another instruction, other logits
    other = ours(ids, pixels, qformer_input_ids=instruction.flip(1)).logits
    assert not torch.allclose(other, got.logits, atol=1e-3)
    new = ours.generate(ids, pixels, max_new_tokens=5, **kw)
    theirs = hf_instructblip.generate(input_ids=ids, pixel_values=pixels, max_new_tokens=5, do_sample=False, **kw)
    assert torch.equal(new, theirs[:, -5:])
    back = blip2_to_hf(ours).state_dict()
    for k, v in hf_instructblip.state_dict().items():
        torch.testing.assert_close(back[k], v, msg=k)
    with pytest.raises(ValueError, match="pass qformer_input_ids"):
        ours(ids, pixels)


def test_blip2_qformer_model_alone_matches_ours(hf):
    """Blip2QFormerModel (the Q-Former without embeddings or heads) on query embeddings: our queries-only pass."""
    ours = qformer_from_hf(hf)
    pixels, _, _ = _inputs()
    with torch.no_grad():
        image = hf.vision_model(pixel_values=pixels)[0]
        want = hf.qformer(query_embeds=hf.query_tokens.expand(len(image), -1, -1), encoder_hidden_states=image)
        torch.testing.assert_close(ours(image), want.last_hidden_state, atol=1e-5, rtol=1e-5)
