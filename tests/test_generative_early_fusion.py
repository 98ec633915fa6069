"""Early fusion (CM3Leon / Chameleon style): the two sequence layouts, likelihoods equal to token-by-token loops,
KV-cached and guided sampling equal to recomputed ones, condition dropout, a model that learns, and bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import event, given, settings
from hypothesis import strategies as st

from vlm_primer.generative.early_fusion import EarlyFusion, EarlyFusionConfig
from vlm_primer.nn import DecoderConfig
from vlm_primer.nn.decoding import pick_next

SMALL = dict(codebook_size=16, image_tokens=8, max_text=6, decoder=dict(dim=32, depth=2, heads=2))


def _model(seed=0, **overrides):
    """A small model with every parameter randomised (LayerNorm weights and biases start constant)."""
    torch.manual_seed(seed)
    model = EarlyFusion(EarlyFusionConfig.from_preset("tiny", **{**SMALL, **overrides}))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model.eval()


def _pairs(cfg, b=4, seed=0):
    """Captions of different lengths (<bos> words <eos>, right-padded as the tokenizer pads) and random codes."""
    g = torch.Generator().manual_seed(seed)
    lengths = [cfg.max_text - i % (cfg.max_text - 1) for i in range(b)]  # max_text, ..., 2
    ids = torch.zeros(b, cfg.max_text, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(6, cfg.text_vocab, (n,), generator=g)
        ids[i, 0], ids[i, n - 1] = cfg.bos_id, cfg.eos_id
        mask[i, :n] = 1
    codes = torch.randint(0, cfg.codebook_size, (b, cfg.image_tokens), generator=g)
    return ids, mask, codes


# --------------------------------------------------------------------------- config


def test_config_derives_the_decoder_and_presets_build():
    cfg = EarlyFusionConfig.from_preset("tiny")
    assert (cfg.decoder.dim, cfg.decoder.depth, cfg.decoder.heads) == (128, 4, 4)
    assert cfg.vocab_size == cfg.decoder.vocab_size == 814 + 128 + 2
    assert cfg.context_length == cfg.decoder.context_length == 16 + 64 + 2
    assert (cfg.image_offset, cfg.boi_id, cfg.eoi_id) == (814, 942, 943)
    assert cfg.replace(codebook_size=32).decoder.vocab_size == 814 + 32 + 2
    cham = EarlyFusionConfig.from_preset("chameleon_7b")  # config only: never instantiated
    assert (cham.vocab_size, cham.codebook_size, cham.image_tokens, cham.context_length) == (65536, 8192, 1024, 4096)
    assert (cham.decoder.dim, cham.decoder.depth, cham.decoder.mlp_dim) == (4096, 32, 11008)
    for name in ("small", "base"):
        EarlyFusionConfig.from_preset(name)


@pytest.mark.parametrize("overrides, match", [
    (dict(cond_drop=1.5), "cond_drop"), (dict(i2t_fraction=-0.1), "i2t_fraction"), (dict(max_text=1), "max_text"),
    (dict(bos_id=900), "bos_id"), (dict(eos_id=0), "eos_id"), (dict(loss_on="image"), "loss_on"),
    (dict(codebook_size=0), "codebook_size"), (dict(image_tokens=0), "image_tokens"),
    (dict(decoder=dict(dim=32, depth=2, heads=2, cross_attn_every=1)), "cross_attn_every"),
])
def test_bad_config_names_the_field(overrides, match):
    with pytest.raises(ValueError, match=match):
        EarlyFusionConfig.from_preset("tiny", **overrides)


def test_bad_config_types():
    with pytest.raises(TypeError, match="decoder"):
        EarlyFusionConfig(decoder="big")
    with pytest.raises(TypeError, match="text_vocab"):
        EarlyFusionConfig(text_vocab="814")
    with pytest.raises(ValueError, match="preset"):
        EarlyFusionConfig.from_preset("huge")


# --------------------------------------------------------------------------- sequences


def test_sequence_layouts_by_hand():
    model = EarlyFusion(EarlyFusionConfig(codebook_size=16, image_tokens=3, max_text=5,
                                          decoder=DecoderConfig(dim=32, depth=1, heads=2)))
    ids = torch.tensor([[2, 10, 11, 3], [2, 12, 3, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    codes = torch.tensor([[0, 5, 15], [1, 2, 3]])
    boi, eoi, o, X = 830, 831, 814, -100
    seq, m, labels = model.t2i_sequence(ids, mask, codes)
    assert seq.tolist() == [[0, 2, 10, 11, 3, boi, o + 0, o + 5, o + 15, eoi],
                            [0, 0, 2, 12, 3, boi, o + 1, o + 2, o + 3, eoi]]
    assert m.tolist() == [[0] + [1] * 9, [0, 0] + [1] * 8]
    assert labels.tolist() == [[X, X, 10, 11, 3, boi, o + 0, o + 5, o + 15, eoi],
                               [X, X, X, 12, 3, boi, o + 1, o + 2, o + 3, eoi]]
    *_, target = model.t2i_sequence(ids, mask, codes, loss_on="target")
    assert target.tolist() == [[X] * 6 + [o + 0, o + 5, o + 15, X], [X] * 6 + [o + 1, o + 2, o + 3, X]]
    seq, m, labels = model.i2t_sequence(ids, mask, codes)
    assert seq.tolist() == [[boi, o + 0, o + 5, o + 15, eoi, 2, 10, 11, 3, 0],
                            [boi, o + 1, o + 2, o + 3, eoi, 2, 12, 3, 0, 0]]
    assert m.tolist() == [[1] * 9 + [0], [1] * 8 + [0, 0]]
    assert labels.tolist() == [[X, o + 0, o + 5, o + 15, eoi, 2, 10, 11, 3, X],
                               [X, o + 1, o + 2, o + 3, eoi, 2, 12, 3, X, X]]
    *_, target = model.i2t_sequence(ids, mask, codes, loss_on="target")
    assert target.tolist() == [[X] * 6 + [10, 11, 3, X], [X] * 6 + [12, 3, X, X]]
    # only the real tokens count, wherever the input put its pads
    moved = model.t2i_sequence(torch.tensor([[0, 2, 12, 3]]), torch.tensor([[0, 1, 1, 1]]), codes[1:])
    assert [t.tolist() for t in moved] == [t[1:].tolist() for t in model.t2i_sequence(ids, mask, codes)]


@pytest.mark.parametrize("builder", ["t2i_sequence", "i2t_sequence"])
@pytest.mark.parametrize("loss_on", ["all", "target"])
def test_pads_never_supervised_and_real_tokens_contiguous(builder, loss_on):
    model = _model()
    ids, mask, codes = _pairs(model.cfg, b=5)
    seq, m, labels = getattr(model, builder)(ids, mask, codes, loss_on=loss_on)
    assert seq.shape == m.shape == labels.shape == (5, model.cfg.context_length)
    assert (labels[m == 0] == -100).all() and (seq[m == 0] == model.cfg.text_pad_id).all()
    assert ((m[:, 1:] - m[:, :-1]).abs().sum(1) <= 1).all()  # one run of real tokens: pads only at one end
    assert (m.sum(1) == mask.sum(1) + model.cfg.image_tokens + 2).all()


# --------------------------------------------------------------------------- loss


def test_forward_losses_match_the_decoder_loss():
    model = _model()
    ids, mask, codes = _pairs(model.cfg)
    with torch.no_grad():
        both = model(ids, mask, codes)
        for direction in ("t2i", "i2t"):
            seq, m, labels = getattr(model, f"{direction}_sequence")(ids, mask, codes)
            ref = model.decoder(seq, attention_mask=m, labels=labels).loss
            one = model(ids, mask, codes, direction=direction)
            torch.testing.assert_close(one.loss, ref)
            torch.testing.assert_close(getattr(both, f"{direction}_loss"), ref)
            assert getattr(one, "i2t_loss" if direction == "t2i" else "t2i_loss") is None
    assert both.logits.shape[0] == 2 * len(ids) and both.is_i2t.tolist() == [False] * 4 + [True] * 4
    assert min(both.t2i_loss, both.i2t_loss) <= both.loss <= max(both.t2i_loss, both.i2t_loss)


def test_training_mix_of_directions():
    ids, mask, codes = _pairs(_model().cfg, b=8)
    model = _model(i2t_fraction=1.0).train()
    out = model(ids, mask, codes)
    assert out.t2i_loss is None and out.is_i2t.all()
    model = _model(i2t_fraction=0.0, cond_drop=0.0).train()
    out = model(ids, mask, codes)
    assert out.i2t_loss is None
    torch.testing.assert_close(out.loss, model.eval()(ids, mask, codes, direction="t2i").loss)
    model = _model(i2t_fraction=0.5).train()
    a = model(ids, mask, codes, generator=torch.Generator().manual_seed(3))
    b = model(ids, mask, codes, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.logits, b.logits) and 0 < int(a.is_i2t.sum()) < 8


def test_condition_dropout_uses_the_empty_caption():
    model = _model(cond_drop=1.0).train()
    ids, mask, codes = _pairs(model.cfg)
    dropped = model(ids, mask, codes, direction="t2i")
    empty = torch.tensor([[model.cfg.bos_id, model.cfg.eos_id]]).expand(len(ids), -1)
    ref = model.eval()(empty, None, codes, direction="t2i")
    torch.testing.assert_close(dropped.t2i_loss, ref.t2i_loss)
    torch.testing.assert_close(dropped.logits, ref.logits)
    assert not torch.allclose(ref.loss, model(ids, mask, codes, direction="t2i").loss)  # the caption mattered


def test_learns_eight_pairs():
    torch.manual_seed(0)
    cfg = EarlyFusionConfig.from_preset("tiny", codebook_size=32, image_tokens=16, max_text=6,
                                        decoder=dict(dim=64, depth=2, heads=4))
    model = EarlyFusion(cfg)
    ids, mask, codes = _pairs(cfg, b=8, seed=1)
    with torch.no_grad():
        before = model.eval()(ids, mask, codes, direction="t2i").t2i_loss.item()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(150):
        loss = model(ids, mask, codes, generator=gen).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = model.eval()(ids, mask, codes, direction="t2i").t2i_loss.item()
    assert after <= 0.5 * before and after < 0.5 * math.log(cfg.codebook_size), (before, after)  # beyond the marginal


# --------------------------------------------------------------------------- likelihoods


def _loop_image_ll(model, ids, mask, codes, restrict):
    """log p(image | caption) one code at a time: the whole prefix through the model, no cache."""
    cfg = model.cfg
    seq, m, _ = model.t2i_sequence(ids, mask, codes)
    total = torch.zeros(len(ids))
    for k in range(cfg.image_tokens):
        end = cfg.max_text + 1 + k  # the prefix ends with <boi> img_1 .. img_k
        logits = model.decoder(seq[:, :end], attention_mask=m[:, :end]).logits[:, -1]
        if restrict:
            logp = logits[:, cfg.image_offset:cfg.image_offset + cfg.codebook_size].log_softmax(-1)
            total += logp.gather(1, codes[:, k:k + 1]).squeeze(1)
        else:
            total += logits.log_softmax(-1).gather(1, seq[:, end:end + 1]).squeeze(1)
    return total


@pytest.mark.parametrize("restrict", [True, False])
@torch.no_grad()
def test_image_log_likelihood_equals_a_token_loop(restrict):
    model = _model()
    ids, mask, codes = _pairs(model.cfg, b=5)
    ll = model.image_log_likelihood(ids, mask, codes, restrict=restrict, batch_size=2)
    torch.testing.assert_close(ll, _loop_image_ll(model, ids, mask, codes, restrict), atol=1e-5, rtol=1e-5)
    for i in range(len(ids)):  # the padding of the other captions changes nothing
        alone = model.image_log_likelihood(ids[i:i + 1, :int(mask[i].sum())], None, codes[i:i + 1], restrict=restrict)
        torch.testing.assert_close(ll[i:i + 1], alone, atol=1e-5, rtol=1e-5)
    full = model.image_log_likelihood(ids, mask, codes, restrict=False)
    assert (full <= model.image_log_likelihood(ids, mask, codes) + 1e-5).all()  # renormalising only adds mass


@pytest.mark.parametrize("restrict", [True, False])
@torch.no_grad()
def test_caption_log_likelihood_equals_a_token_loop(restrict):
    model = _model()
    cfg = model.cfg
    ids, mask, codes = _pairs(cfg, b=4)
    seq, m, _ = model.i2t_sequence(ids, mask, codes)
    ref = torch.zeros(len(ids))
    for i in range(len(ids)):
        for t in range(1, int(mask[i].sum())):  # every caption token after <bos>
            end = cfg.image_tokens + 2 + t
            logits = model.decoder(seq[i:i + 1, :end]).logits[0, -1]
            logits = logits[:cfg.text_vocab] if restrict else logits
            ref[i] += logits.log_softmax(-1)[seq[i, end]]
    ll = model.caption_log_likelihood(ids, mask, codes, restrict=restrict)
    torch.testing.assert_close(ll, ref, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- generation


def _reference_sampler(model, ids, mask, scale, temperature, generator=None):
    """Image codes by full re-forward at every step (no cache), guided stream by stream."""
    cfg = model.cfg
    empty = torch.tensor([[cfg.bos_id, cfg.eos_id]]).expand(len(ids), -1)
    dummy = torch.zeros(len(ids), cfg.image_tokens, dtype=torch.long)
    cond = model.t2i_sequence(ids, mask, dummy)
    uncond = model.t2i_sequence(empty, None, dummy)
    codes = torch.zeros(len(ids), 0, dtype=torch.long)
    image = slice(cfg.image_offset, cfg.image_offset + cfg.codebook_size)
    for k in range(cfg.image_tokens):
        end = cfg.max_text + 1 + k
        logits = []
        for seq, m, _ in (cond, uncond):
            seq = torch.cat([seq[:, :cfg.max_text + 1], codes + cfg.image_offset], dim=1)
            logits.append(model.decoder(seq, attention_mask=m[:, :end]).logits[:, -1, image])
        c, u = logits
        guided = c if scale == 1 else u + scale * (c - u)
        codes = torch.cat([codes, pick_next(guided, temperature, generator=generator)[:, None]], dim=1)
    return codes


@pytest.mark.parametrize("scale", [1.0, 3.0])
@torch.no_grad()
def test_cached_greedy_generation_equals_full_reforward(scale):
    model = _model()
    ids, mask, _ = _pairs(model.cfg)
    codes = model.generate_image(ids, mask, guidance_scale=scale, temperature=0.0)
    assert torch.equal(codes, _reference_sampler(model, ids, mask, scale, 0.0))
    assert torch.equal(codes, model.generate_image(ids, mask, guidance_scale=scale, temperature=1.0, top_k=1))


@torch.no_grad()
def test_guidance_scales_and_sampling():
    model = _model()
    cfg = model.cfg
    ids, mask, _ = _pairs(cfg)
    gen = lambda seed: torch.Generator().manual_seed(seed)  # noqa: E731
    plain = model.generate_image(ids, mask, guidance_scale=1.0, generator=gen(0))
    assert torch.equal(plain, _reference_sampler(model, ids, mask, 1.0, 1.0, generator=gen(0)))
    empty = torch.tensor([[cfg.bos_id, cfg.eos_id]]).expand(len(ids), -1)
    assert torch.equal(model.generate_image(ids, mask, guidance_scale=0.0, generator=gen(1)),
                       model.generate_image(empty, None, guidance_scale=1.0, generator=gen(1)))
    guided = model.generate_image(ids, mask, guidance_scale=3.0, generator=gen(2))
    assert torch.equal(guided, model.generate_image(ids, mask, guidance_scale=3.0, generator=gen(2)))
    assert not torch.equal(guided, model.generate_image(ids, mask, guidance_scale=3.0, generator=gen(5)))
    for codes in (plain, guided, model.generate_image(ids, mask, temperature=2.0, top_k=3, generator=gen(4))):
        assert codes.shape == (len(ids), cfg.image_tokens) and codes.dtype == torch.long
        assert 0 <= int(codes.min()) and int(codes.max()) < cfg.codebook_size
    assert not model.training
    model.train()
    model.generate_image(ids, mask, generator=gen(0))
    assert model.training  # the mode is restored


@torch.no_grad()
def test_generate_caption():
    model = _model()
    cfg = model.cfg
    _, _, codes = _pairs(cfg, b=6)
    caps = model.generate_caption(codes)
    assert caps.shape[0] == 6 and caps.shape[1] <= cfg.max_text and (caps[:, 0] == cfg.bos_id).all()
    assert int(caps.max()) < cfg.text_vocab
    for row in caps.tolist():
        assert cfg.eos_id in row or len(row) == cfg.max_text
        if cfg.eos_id in row:
            assert all(t == cfg.text_pad_id for t in row[row.index(cfg.eos_id) + 1:])
    # greedy = the argmax of caption_log_likelihood's distribution, step by step: re-score with the loop
    seq, _, _ = model.i2t_sequence(torch.tensor([[cfg.bos_id, cfg.eos_id]]), None, codes[:1])
    prefix = seq[:, :cfg.image_tokens + 3]
    for t in caps[0, 1:].tolist():
        logits = model.decoder(prefix).logits[0, -1, :cfg.text_vocab]
        assert int(logits.argmax()) == t
        if t == cfg.eos_id:
            break
        prefix = torch.cat([prefix, torch.tensor([[t]])], dim=1)
    assert model.generate_caption(codes, max_new_tokens=2).shape[1] <= 3
    beams = model.generate_caption(codes[:2], strategy="beam", num_beams=3)
    assert beams.shape[0] == 2 and (beams[:, 0] == cfg.bos_id).all()


# --------------------------------------------------------------------------- bad input


def test_bad_input_names_the_argument():
    model = _model()
    cfg = model.cfg
    ids, mask, codes = _pairs(cfg)
    with pytest.raises(ValueError, match="image_codes"):
        model(ids, mask, codes + cfg.codebook_size)
    with pytest.raises(ValueError, match="image_codes"):
        model(ids, mask, codes - cfg.codebook_size)
    with pytest.raises(ValueError, match="image_codes.*image_tokens"):
        model.image_log_likelihood(ids, mask, codes[:, :-1])
    with pytest.raises(TypeError, match="image_codes"):
        model(ids, mask, codes.float())
    long_ids = F.pad(ids, (0, 1))
    with pytest.raises(ValueError, match="max_text"):
        model(long_ids, F.pad(mask, (0, 1)), codes)
    with pytest.raises(ValueError, match="mismatched batch sizes"):
        model(ids, mask, codes[:2])
    with pytest.raises(ValueError, match="attention_mask"):
        model(ids, mask[:, :-1], codes)
    with pytest.raises(ValueError, match="input_ids.*<bos>"):
        model(ids[:, 1:], mask[:, 1:], codes)  # no <bos>
    with pytest.raises(ValueError, match="input_ids"):
        model(ids + cfg.text_vocab, mask, codes)  # image ids are not text
    with pytest.raises(ValueError, match="direction"):
        model(ids, mask, codes, direction="both")
    with pytest.raises(ValueError, match="loss_on"):
        model.t2i_sequence(ids, mask, codes, loss_on="image")
    with pytest.raises(ValueError, match="guidance_scale"):
        model.generate_image(ids, mask, guidance_scale=-1.0)
    with pytest.raises(ValueError, match="guidance_scale"):
        model.generate_image(ids, mask, guidance_scale=float("nan"))
    with pytest.raises(ValueError, match="temperature"):
        model.generate_image(ids, mask, temperature=-0.5)
    with pytest.raises(ValueError, match="top_k"):
        model.generate_image(ids, mask, top_k=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate_caption(codes, max_new_tokens=cfg.max_text)
    with pytest.raises(ValueError, match="strategy"):
        model.generate_caption(codes, strategy="sample")
    with pytest.raises(ValueError, match="batch_size"):
        model.image_log_likelihood(ids, mask, codes, batch_size=0)


# --------------------------------------------------------------------------- property

PROP = _model(seed=1)


@settings(max_examples=10, deadline=None)
@given(b=st.integers(1, 3), n=st.integers(2, 6), data=st.data(),
       broken=st.sampled_from([None, None, None, None, "code", "length", "long", "bos", "batch", "direction"]))
def test_random_input_gives_finite_loss_or_a_clear_error(b, n, data, broken):
    """Mostly valid pairs (the answer is checked), sometimes broken in one way (the error must name the argument)."""
    cfg = PROP.cfg
    ints = lambda k, hi: data.draw(st.lists(st.integers(0, hi - 1), min_size=k, max_size=k))  # noqa: E731
    n = cfg.max_text + 1 if broken == "long" else n
    ids = torch.tensor(ints(b * n, cfg.text_vocab)).reshape(b, n)
    ids[:, 0], ids[:, -1] = cfg.bos_id if broken != "bos" else cfg.eos_id, cfg.eos_id
    mask = torch.ones_like(ids)
    mask[:, 1:-1] = torch.tensor(ints(b * (ids.shape[1] - 2), 2)).reshape(b, -1)  # pads anywhere inside
    codes = torch.tensor(ints((b + (broken == "batch")) * cfg.image_tokens, cfg.codebook_size)).reshape(-1, cfg.image_tokens)
    if broken == "code":
        codes[0, data.draw(st.integers(0, cfg.image_tokens - 1))] = data.draw(st.sampled_from([-1, cfg.codebook_size]))
    if broken == "length":
        codes = codes[:, :-1]
    direction = "x" if broken == "direction" else data.draw(st.sampled_from([None, "t2i", "i2t"]))
    try:
        with torch.no_grad():
            out = PROP(ids, mask, codes, direction=direction)
            ll = PROP.image_log_likelihood(ids, mask, codes)
    except (ValueError, TypeError) as e:
        assert broken is not None, f"valid input refused: {e}"
        assert any(name in str(e) for name in ("input_ids", "image_codes", "direction", "max_text", "batch")), str(e)
        event(f"refused: {type(e).__name__}")
        return
    event("accepted")
    assert broken is None, f"{broken} input accepted"
    assert torch.isfinite(out.loss) and torch.isfinite(out.logits).all()
    assert ll.shape == (b,) and torch.isfinite(ll).all() and (ll <= 0).all()


@torch.no_grad()
def test_same_answers_with_value_checks_off():
    """The Trainer switches the value checks off after its first step: nothing may change (positions included)."""
    from vlm_primer.validate import validation

    model = _model()
    ids, mask, codes = _pairs(model.cfg)
    on = (model(ids, mask, codes).loss, model.image_log_likelihood(ids, mask, codes),
          model.generate_image(ids, mask, temperature=0.0), model.generate_caption(codes))
    with validation(False):
        off = (model(ids, mask, codes).loss, model.image_log_likelihood(ids, mask, codes),
               model.generate_image(ids, mask, temperature=0.0), model.generate_caption(codes))
    for a, b in zip(on, off):
        torch.testing.assert_close(a, b)
