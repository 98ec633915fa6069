"""FLAVA against ``transformers``' ``FlavaForPreTraining``: a tiny random config with every parameter perturbed (the
zero-initialised ones too: logit scale, mask and CLS tokens, positions, biases), eager attention. Pair batches (ITM,
MMM, global contrastive; positives only when ``itm_labels`` are given), image-only batches (MIM), text-only batches
(MLM); the encoders, heads and losses to 1e-5. Then bad input, a failing comparison, and a short training run."""

from __future__ import annotations

import math

import pytest
import torch

from vlm_primer.contrastive import clip_loss
from vlm_primer.interop.flava import flava_config_from_hf, flava_from_hf
from vlm_primer.masking.flava import Flava, FlavaConfig, mismatch_pairs
from vlm_primer.nn import TextConfig, TextTransformer

B, L, N, CODES, VOCAB = 4, 9, 16, 20, 60
TOL = dict(atol=1e-5, rtol=1e-5)
WEIGHTS = dict(mim_weight=0.9, mlm_weight=1.1, global_contrastive_weight=0.7, itm_weight=2.0, mmm_image_weight=0.5,
               mmm_text_weight=1.3)
LOSSES = ("mim", "mlm", "mmm_image", "mmm_text", "itm", "global_contrastive")


def _config(init_codebook=False):
    from transformers import FlavaConfig as HFFlavaConfig

    shape = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    return HFFlavaConfig(
        image_config=dict(shape, image_size=32, patch_size=8, vocab_size=CODES),
        text_config=dict(shape, vocab_size=VOCAB, max_position_embeddings=16),
        multimodal_config=shape, hidden_size=32, projection_dim=24, init_codebook=init_codebook,
        image_codebook_config=dict(hidden_size=8, num_blocks_per_group=1, vocab_size=CODES),
        attn_implementation="eager", **WEIGHTS)


@pytest.fixture(scope="module")
def models():
    from transformers import FlavaForPreTraining

    torch.manual_seed(0)
    hf = FlavaForPreTraining(_config()).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return hf, flava_from_hf(hf)


def _batch():
    g = torch.Generator().manual_seed(1)
    pixels = torch.randn(B, 3, 32, 32, generator=g)
    ids = torch.randint(5, VOCAB, (B, L), generator=g)
    ids[:, 0] = 2
    mask = torch.ones(B, L, dtype=torch.long)
    mask[1, 6:] = 0
    mask[3, 4:] = 0
    picked = (torch.rand(B, L, generator=g) < 0.4) & mask.bool()
    picked[:, 0] = False
    picked[:, 1] = True  # every row has a masked word
    ids_masked = ids.masked_fill(picked, 4)
    mlm_labels = ids.masked_fill(~picked, -100)
    types = (torch.arange(L) >= 5).long().expand(B, L)
    bool_masked_pos = torch.rand(B, N, generator=g) < 0.4
    bool_masked_pos[:, 3] = True
    mim_labels = torch.randint(0, CODES, (B, N), generator=g)
    return dict(pixel_values=pixels, input_ids=ids, attention_mask=mask, input_ids_masked=ids_masked,
                mlm_labels=mlm_labels, token_type_ids=types, bool_masked_pos=bool_masked_pos, mim_labels=mim_labels)


def _hf(hf, batch, **extra):
    """transformers' output; label tensors are cloned because it writes -100 into mim_labels in place."""
    return hf(**{k: v.clone() for k, v in {**batch, **extra}.items()}, return_loss=True)


def _check_losses(got, want):
    for name in LOSSES:
        theirs = getattr(want.loss_info, name)
        assert (getattr(got, name) is None) == (theirs is None), name
        if theirs is not None:  # transformers reports them weighted, ours unweighted
            torch.testing.assert_close(getattr(got, name) * WEIGHTS[f"{name}_weight"], theirs, **TOL)
    torch.testing.assert_close(got.loss, want.loss, **TOL)


@pytest.mark.parametrize("itm_labels", [[1, 0, 1, 0], [0, 0, 0, 0], None], ids=["mixed", "no-positive", "none"])
@torch.no_grad()
def test_pair_batch_matches_transformers(models, itm_labels):
    hf, ours = models
    batch = _batch()
    extra = {} if itm_labels is None else dict(itm_labels=torch.tensor(itm_labels))
    want, got = _hf(hf, batch, **extra), ours(**batch, **extra)
    for a, b in (("image_hidden", "image_embeddings"), ("text_hidden", "text_embeddings"),
                 ("image_masked_hidden", "image_masked_embeddings"), ("text_masked_hidden", "text_masked_embeddings"),
                 ("itm_logits", "itm_logits"), ("mmm_image_logits", "mmm_image_logits"),
                 ("mmm_text_logits", "mmm_text_logits")):
        torch.testing.assert_close(getattr(got, a), getattr(want, b), **TOL, msg=a)
    keep = got.positive if got.positive is not None else slice(None)
    if itm_labels == [1, 0, 1, 0]:
        assert got.positive.tolist() == [True, False, True, False]
    torch.testing.assert_close(got.multimodal_masked_hidden[keep], want.multimodal_masked_embeddings, **TOL)
    torch.testing.assert_close(got.logits_per_image[keep], want.contrastive_logits_per_image, **TOL)
    torch.testing.assert_close(got.logits_per_text[keep], want.contrastive_logits_per_text, **TOL)
    assert got.mim is None and got.mlm is None and (got.itm is None) == (itm_labels is None)
    _check_losses(got, want)


@torch.no_grad()
def test_unimodal_batches_match_transformers(models):
    hf, ours = models
    batch = _batch()
    images = {k: batch[k] for k in ("pixel_values", "bool_masked_pos", "mim_labels")}
    want, got = _hf(hf, images), ours(**images)
    torch.testing.assert_close(got.image_masked_hidden, want.image_masked_embeddings, **TOL)
    torch.testing.assert_close(got.mim_logits, want.mim_logits, **TOL)
    assert got.mim_logits.shape == (int(batch["bool_masked_pos"].sum()), CODES)
    _check_losses(got, want)
    text = {k: batch[k] for k in ("input_ids", "attention_mask", "input_ids_masked", "mlm_labels", "token_type_ids")}
    want, got = _hf(hf, text), ours(**text)
    torch.testing.assert_close(got.text_hidden, want.text_embeddings, **TOL)
    torch.testing.assert_close(got.mlm_logits, want.mlm_logits, **TOL)
    _check_losses(got, want)
    assert got.global_contrastive is None and got.itm_logits is None


@torch.no_grad()
def test_encoders_and_contrastive_embeddings(models):
    hf, ours = models
    batch = _batch()
    image = ours.image_features(batch["pixel_values"])
    text = ours.text_features(batch["input_ids"], batch["attention_mask"])
    want = hf.flava(pixel_values=batch["pixel_values"], input_ids=batch["input_ids"],
                    attention_mask=batch["attention_mask"], skip_multimodal_encoder=False)
    torch.testing.assert_close(image.pooled, want.image_output.pooler_output, **TOL)
    torch.testing.assert_close(text.pooled, want.text_output.pooler_output, **TOL)
    mm = ours.multimodal_features(image, text, batch["attention_mask"])
    torch.testing.assert_close(mm.last_hidden_state, want.multimodal_embeddings, **TOL)
    torch.testing.assert_close(mm.pooled, want.multimodal_output.pooler_output, **TOL)
    # zero-shot tools read encode_image / encode_text; without negatives the loss is CLIP's
    img, txt = ours.encode_image(batch["pixel_values"]), ours.encode_text(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(B))
    out = ours(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(out.image_embeds, img)
    torch.testing.assert_close(out.text_embeds, txt)
    torch.testing.assert_close(out.global_contrastive, clip_loss(out.logits_per_image), **TOL)


@torch.no_grad()
def test_the_comparison_can_fail(models):
    hf, ours = models
    batch = _batch()
    want = _hf(hf, batch, itm_labels=torch.tensor([1, 1, 1, 1]))
    changed = flava_from_hf(hf)
    changed.mask_token.add_(0.5)  # a parameter transformers initialises to zero
    got = changed(**batch, itm_labels=torch.tensor([1, 1, 1, 1]))
    torch.testing.assert_close(got.image_hidden, want.image_embeddings, **TOL)  # unmasked: untouched
    with pytest.raises(AssertionError):
        torch.testing.assert_close(got.mmm_image_logits, want.mmm_image_logits, **TOL)
    with pytest.raises(ValueError, match="FlavaForPreTraining"):
        flava_from_hf(torch.nn.Linear(2, 2))


def test_the_image_codebook_is_skipped():
    from transformers import FlavaForPreTraining

    hf = FlavaForPreTraining(_config(init_codebook=True)).eval()
    assert any(k.startswith("image_codebook.") for k in hf.state_dict())
    cfg = flava_from_hf(hf).cfg
    assert (cfg.codebook_size, cfg.embed_dim, cfg.text.type_vocab_size, cfg.itm_weight) == (CODES, 24, 2, 2.0)
    assert flava_config_from_hf(hf.config).init_logit_scale == pytest.approx(2.6592)


def test_bad_input_is_named(models):
    _, ours = models
    b = _batch()
    px, ids, mask = b["pixel_values"], b["input_ids"], b["attention_mask"]
    cases = [
        (dict(), "pixel_values, input_ids"),
        (dict(input_ids=ids, bool_masked_pos=b["bool_masked_pos"]), "bool_masked_pos .*needs pixel_values"),
        (dict(pixel_values=px, mim_labels=b["mim_labels"]), "mim_labels need bool_masked_pos"),
        (dict(pixel_values=px, bool_masked_pos=b["bool_masked_pos"][:, :5]), r"bool_masked_pos must have shape"),
        (dict(pixel_values=px, input_ids=ids[:3]), "mismatched batch sizes"),
        (dict(pixel_values=px, input_ids=ids, itm_labels=torch.tensor([1, 2, 0, 1])), "itm_labels must hold"),
        (dict(pixel_values=px, input_ids=ids, itm_labels=torch.tensor([1, 0])), r"itm_labels must have shape"),
        (dict(pixel_values=px, itm_labels=torch.tensor([1, 0, 1, 0])), "pass pixel_values and input_ids"),
        (dict(pixel_values=px, bool_masked_pos=b["bool_masked_pos"], mim_labels=b["mim_labels"] + CODES),
         r"mim_labels must hold ids in \[0, 20\)"),
        (dict(input_ids=ids, input_ids_masked=ids[:, :5]), "input_ids_masked .* must have the shape"),
        (dict(input_ids=ids, attention_mask=mask, token_type_ids=mask + 1), r"token_type_ids has ids outside"),
        (dict(pixel_values=px[:, :, :16]), "32x32 pixels"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            ours(**kwargs)
    with pytest.raises(ValueError, match="bidirectional"):
        FlavaConfig(text=dict(TextConfig.PRESETS["tiny"], causal=True))
    with pytest.raises(ValueError, match="mask_token_id=900 is outside"):
        FlavaConfig.from_preset("tiny", mask_token_id=900)
    with pytest.raises(ValueError, match="no token-type table"):
        TextTransformer(TextConfig.from_preset("tiny"))([[2, 5, 3]], token_type_ids=[[0, 0, 0]])
    with pytest.raises(ValueError, match="at least 2 pairs"):
        mismatch_pairs(1)


def test_text_options_are_off_by_default():
    keys = set(TextTransformer(TextConfig.from_preset("tiny")).state_dict())
    assert not any(k.startswith(("type_emb", "ln_embed")) for k in keys)
    bert = TextTransformer(TextConfig.from_preset("tiny", type_vocab_size=2, embed_norm=True)).eval()
    ids = torch.tensor([[2, 7, 9, 3]])
    assert not torch.allclose(bert(ids).last_hidden_state, bert(ids, token_type_ids=[[0, 0, 1, 1]]).last_hidden_state)
    torch.testing.assert_close(bert(ids).last_hidden_state, bert(ids, token_type_ids=[[0] * 4]).last_hidden_state)


def test_presets_and_docstring():
    import vlm_primer.masking.flava as module

    assert module.__doc__.strip().endswith("Explained in notebook 03, §FLAVA.")
    base = FlavaConfig.from_preset("base")
    assert (base.image.dim, base.image.depth, base.text.depth, base.multimodal.depth, base.codebook_size) == \
        (768, 12, 12, 6, 8192)
    tiny = FlavaConfig.from_preset("tiny")
    assert (tiny.image.image_size, tiny.image.patch_size, tiny.text.vocab_size, tiny.mask_token_id) == (48, 6, 814, 4)
    assert FlavaConfig.from_preset("small").image.grid == 8
    assert tiny.init_logit_scale == pytest.approx(math.log(1 / 0.07))


def test_a_few_steps_of_the_combined_loss_learn():
    torch.manual_seed(0)
    cfg = FlavaConfig.from_preset("tiny", image=dict(image_size=24, patch_size=6, dim=32, depth=2, heads=4,
                                                     cls_token=True, pool="cls", eps=1e-12),
                                  text=dict(vocab_size=40, context_length=12, dim=32, depth=2, heads=4, causal=False,
                                            pool="cls", type_vocab_size=2, embed_norm=True),
                                  multimodal=dict(dim=32, depth=1, heads=4), codebook_size=16, embed_dim=16,
                                  mlm_prob=0.3)
    model = Flava(cfg).train()
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(8, 3, 24, 24, generator=g)
    ids = torch.randint(5, 40, (8, 10), generator=g)
    ids[:, 0] = 2
    codes = torch.randint(0, 16, (8, 16), generator=g)
    index, itm_labels = mismatch_pairs(8, generator=g)
    ids_masked, mlm_labels = model.mask_text(ids, generator=g)
    mlm_labels[:, 1], ids_masked[:, 1] = ids[:, 1], 4
    masked = model.mask_patches(8, generator=g)
    pairs = dict(pixel_values=pixels, input_ids=ids[index], input_ids_masked=ids_masked[index],
                 mlm_labels=mlm_labels[index], bool_masked_pos=masked, mim_labels=codes, itm_labels=itm_labels)
    images = dict(pixel_values=pixels, bool_masked_pos=masked, mim_labels=codes)
    text = dict(input_ids=ids, input_ids_masked=ids_masked, mlm_labels=mlm_labels)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        outs = [model(**pairs), model(**images), model(**text)]
        loss = sum(o.loss for o in outs)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.post_step()
        losses.append(loss.item())
    assert all(o.loss is not None for o in outs) and outs[0].mmm_image is not None and outs[1].mim is not None
    assert math.isfinite(losses[-1]) and losses[-1] < 0.75 * losses[0], losses
