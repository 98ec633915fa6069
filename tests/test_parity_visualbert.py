"""VisualBERT and BERT's MLM against ``transformers``: ``VisualBertForPreTraining`` (MLM and sentence-image logits,
the loss), ``BertForMaskedLM`` and ``BertForPreTraining`` (text only), tiny random configs with every parameter
perturbed; the post-LN transformer block against a hand-written one; bad input; and a short training run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlm_primer.interop.visual_bert import visual_bert_from_hf
from vlm_primer.masking.visualbert import VisualBert, VisualBertConfig
from vlm_primer.nn import TransformerBlock

VOCAB, VISUAL_DIM = 60, 24
TOL = dict(atol=1e-5, rtol=1e-5)


def _perturbed(cls, seed=0, scale=0.1):
    """A tiny random ``transformers`` model with noise on every parameter (zero biases and LN shifts included)."""
    from transformers import BertConfig, VisualBertConfig as HFVisualBertConfig

    shape = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                 max_position_embeddings=40)
    config = HFVisualBertConfig(**shape, visual_embedding_dim=VISUAL_DIM) if cls.__name__.startswith("VisualBert") \
        else BertConfig(**shape, attn_implementation="eager")
    torch.manual_seed(seed)
    model = cls(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    return model


def _inputs(batch=3, length=7, regions=5):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, VOCAB, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, 4:] = 0
    types = torch.randint(0, 2, (batch, length), generator=g)
    visual = torch.randn(batch, regions, VISUAL_DIM, generator=g)
    visual_mask = torch.ones(batch, regions, dtype=torch.long)
    visual_mask[2, 3:] = 0
    labels = torch.full((batch, length), -100)
    labels[:, 1:3] = ids[:, 1:3]  # two "masked" words per caption, at real positions
    return ids, mask, types, visual, visual_mask, labels


@torch.no_grad()
def test_visualbert_pretraining_logits_and_loss_match_transformers():
    from transformers import VisualBertForPreTraining

    hf = _perturbed(VisualBertForPreTraining)
    ours = visual_bert_from_hf(hf)
    assert ours.cfg.visual and ours.cfg.itm_head and not ours.training
    ids, mask, types, visual, visual_mask, labels = _inputs()
    sentence_image = torch.tensor([0, 1, 0])  # theirs: 0 = the text matches the image
    # theirs predicts at text + visual positions and takes labels over both: -100 on the visual tokens
    hf_labels = torch.cat([labels, torch.full(visual_mask.shape, -100)], dim=1)
    want = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, visual_embeds=visual,
              visual_attention_mask=visual_mask, labels=hf_labels, sentence_image_labels=sentence_image)
    got = ours(ids, mask, types, visual, visual_mask, labels=labels, itm_labels=1 - sentence_image)
    assert got.mlm_logits.shape == (3, 7, VOCAB) and want.prediction_logits.shape == (3, 12, VOCAB)
    torch.testing.assert_close(got.mlm_logits, want.prediction_logits[:, :7], **TOL)
    torch.testing.assert_close(got.itm_logits, want.seq_relationship_logits.flip(-1), **TOL)  # ours: 1 = match
    torch.testing.assert_close(got.loss, want.loss, **TOL)
    torch.testing.assert_close(got.mlm_loss + got.itm_loss, got.loss)
    hidden = hf.visual_bert(input_ids=ids, attention_mask=mask, token_type_ids=types, visual_embeds=visual,
                            visual_attention_mask=visual_mask).last_hidden_state
    torch.testing.assert_close(got.hidden, hidden, **TOL)
    # no image at all: both are BERT over the words
    want = hf(input_ids=ids, attention_mask=mask, token_type_ids=types)
    got = ours(ids, mask, types)
    torch.testing.assert_close(got.mlm_logits, want.prediction_logits, **TOL)
    torch.testing.assert_close(got.itm_logits, want.seq_relationship_logits.flip(-1), **TOL)


@pytest.mark.parametrize("kind", ["BertForMaskedLM", "BertForPreTraining"])
@torch.no_grad()
def test_bert_mlm_matches_transformers(kind):
    import transformers

    hf = _perturbed(getattr(transformers, kind), seed=2)
    ours = visual_bert_from_hf(hf)
    assert not ours.cfg.visual and not hasattr(ours, "visual_proj")
    ids, mask, types, *_, labels = _inputs()
    want = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels)
    got = ours(ids, mask, types, labels=labels)
    logits = want.logits if kind == "BertForMaskedLM" else want.prediction_logits
    torch.testing.assert_close(got.mlm_logits, logits, **TOL)
    torch.testing.assert_close(got.loss, F.cross_entropy(logits.flatten(0, 1), labels.flatten()), **TOL)
    if kind == "BertForMaskedLM":
        torch.testing.assert_close(got.loss, want.loss, **TOL)
        assert got.itm_logits is None
    else:  # BERT's next-sentence head is our 2-way head, rows swapped
        torch.testing.assert_close(got.itm_logits, want.seq_relationship_logits.flip(-1), **TOL)


@torch.no_grad()
def test_the_comparison_can_fail_and_the_converter_is_strict():
    from transformers import VisualBertForPreTraining

    hf = _perturbed(VisualBertForPreTraining)
    ids, mask, types, visual, visual_mask, _ = _inputs()
    want = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, visual_embeds=visual,
              visual_attention_mask=visual_mask).prediction_logits[:, :7]
    # one visual weight nudged in ours: the image now reaches the words differently and the test would catch it
    ours = visual_bert_from_hf(hf)
    ours.visual_proj.weight[0, 0] += 0.5
    assert (ours(ids, mask, types, visual, visual_mask).mlm_logits - want).abs().max() > 1e-3
    # an untied MLM decoder is refused, as is a model the converter does not know
    hf.cls.predictions.decoder.weight = torch.nn.Parameter(hf.cls.predictions.decoder.weight + 1)
    with pytest.raises(ValueError, match="not tied"):
        visual_bert_from_hf(hf)
    with pytest.raises(ValueError, match="converts"):
        visual_bert_from_hf(torch.nn.Linear(2, 2))


def _small(**overrides):
    return VisualBertConfig(**{**dict(vocab_size=50, dim=32, depth=2, heads=4, mlp_dim=64, max_positions=16,
                                      visual_dim=8, mask_token_id=4, cls_token_id=2, sep_token_id=3), **overrides})


def test_bad_input_is_refused_with_a_clear_message():
    model = VisualBert(_small()).eval()
    ids, visual = torch.randint(5, 50, (2, 6)), torch.randn(2, 3, 8)
    with pytest.raises(ValueError, match=r"visual_embeds must have shape \(2, N, 8\)"):
        model(ids, visual_embeds=torch.randn(2, 3, 7))
    with pytest.raises(ValueError, match="mismatched batch sizes: input_ids=2, visual_embeds=3"):
        model(ids, visual_embeds=torch.randn(3, 3, 8))
    with pytest.raises(TypeError, match="visual_embeds must be a float tensor"):
        model(ids, visual_embeds=torch.ones(2, 3, 8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"input_ids has ids outside \[0, 50\)"):
        model(ids + 100, visual_embeds=visual)
    with pytest.raises(ValueError, match="longer than the model's context of 16"):
        model(torch.randint(5, 50, (2, 17)))
    with pytest.raises(ValueError, match=r"visual_attention_mask must have shape \(B, N\)"):
        model(ids, visual_embeds=visual, visual_attention_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"token_type_ids has ids outside \[0, 2\)"):
        model(ids, token_type_ids=torch.full_like(ids, 2))
    with pytest.raises(ValueError, match="itm_labels must be 0"):
        model(ids, visual_embeds=visual, itm_labels=torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="visual=False"):
        VisualBert(_small(visual=False))(ids, visual_embeds=visual)
    with pytest.raises(ValueError, match="divisible by heads"):
        _small(dim=30)
    with pytest.raises(ValueError, match="mask_token_id=50 is outside the vocabulary"):
        _small().replace(mask_token_id=50)


def test_presets_build_and_run():
    assert VisualBertConfig.from_preset("base").visual_dim == 2048
    cfg = VisualBertConfig.from_preset("tiny", depth=1)
    assert (cfg.vocab_size, cfg.mask_token_id, cfg.cls_token_id) == (814, 4, 2)
    model = VisualBert(cfg).eval()
    torch.testing.assert_close(model.visual_pos_emb.weight, model.pos_emb.weight)  # VisualBERT's initialisation
    out = model(torch.randint(5, 814, (2, 9)), visual_embeds=torch.randn(2, 4, 64))
    assert out.mlm_logits.shape == (2, 9, 814) and out.itm_logits.shape == (2, 2) and out.hidden.shape == (2, 13, 64)
    assert out.loss is None


def _reference_post_ln(block, x, context=None):
    x = block.ln1(x + block.attn(x))
    if context is not None:
        x = block.ln_x(x + torch.tanh(block.xattn_gate) * block.xattn(x, context=context))
    return block.ln2(x + block.mlp(x))


def _reference_pre_ln(block, x, context=None):
    x = x + block.attn(block.ln1(x))
    if context is not None:
        x = x + torch.tanh(block.xattn_gate) * block.xattn(block.ln_x(x), context=context)
    return x + block.mlp(block.ln2(x))


@torch.no_grad()
def test_post_norm_block_is_ln_of_the_residual_sum_and_the_default_is_unchanged():
    torch.manual_seed(0)
    x, ctx = torch.randn(2, 5, 16), torch.randn(2, 3, 12)
    for cross in (False, True):
        kw = dict(cross_attn=cross, context_dim=12, gated_xattn=cross)
        post, pre = TransformerBlock(16, 4, post_norm=True, **kw), TransformerBlock(16, 4, **kw)
        assert list(post.state_dict()) == list(pre.state_dict())  # same parameters, same names
        for p in post.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        pre.load_state_dict(post.state_dict())
        context = ctx if cross else None
        torch.testing.assert_close(post(x, context=context), _reference_post_ln(post, x, context))
        assert torch.equal(pre(x, context=context), _reference_pre_ln(pre, x, context))
        explicit = TransformerBlock(16, 4, post_norm=False, **kw)
        explicit.load_state_dict(pre.state_dict())
        assert torch.equal(explicit(x, context=context), pre(x, context=context))


def test_visualbert_learns_mlm_and_matching():
    torch.manual_seed(0)
    cfg = _small()
    model = VisualBert(cfg)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 50, (16, 8), generator=g)
    visual = torch.randn(16, 3, 8, generator=g)
    masked = torch.rand(16, 8, generator=g) < 0.3
    masked[:, 1] = True
    labels = ids.masked_fill(~masked, -100)
    inputs = ids.masked_fill(masked, cfg.mask_token_id)
    itm = torch.randint(0, 2, (16,), generator=g)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    mlm = []
    for _ in range(30):
        out = model(inputs, visual_embeds=visual, labels=labels, itm_labels=itm)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        mlm.append(out.mlm_loss.item())
    assert mlm[-1] < 0.7 * mlm[0] and out.itm_loss < 0.3, (mlm, out.itm_loss)
