"""ViT, TextTransformer and DecoderLM behaviour: pooling, masking, loss, KV-cached generation."""

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from vlm_primer.nn import DecoderConfig, DecoderLM, TextConfig, TextTransformer, ViT, ViTConfig


# --------------------------------------------------------------------------- ViT


@pytest.mark.parametrize("pool,cls_token,pos", [("cls", True, "learned"), ("mean", True, "sincos"),
                                                ("map", False, "learned"), ("none", False, "sincos")])
def test_vit_shapes(pool, cls_token, pos):
    cfg = ViTConfig.from_preset("tiny", depth=2, pool=pool, cls_token=cls_token, pos_emb=pos)
    out = ViT(cfg)(torch.rand(2, 3, 64, 64), output_hidden_states=True)
    assert out.last_hidden_state.shape == (2, 64 + cls_token, 64)
    assert (out.pooled is None) == (pool == "none")
    if out.pooled is not None:
        assert out.pooled.shape == (2, 64)
    assert len(out.hidden_states) == 3
    if pos == "sincos":
        assert not any("pos_emb" in k for k in ViT(cfg).state_dict())


def test_vit_patch_conv_is_rearrange_plus_linear():
    vit = ViT(ViTConfig.from_preset("tiny", depth=1))
    x = torch.rand(2, 3, 64, 64)
    patches = rearrange(x, "b c (h p1) (w p2) -> b (h w) (c p1 p2)", p1=8, p2=8)
    w = rearrange(vit.patch_embed.weight, "d c p1 p2 -> d (c p1 p2)")
    expected = F.linear(patches, w, vit.patch_embed.bias)
    got = rearrange(vit.patch_embed(x), "b d h w -> b (h w) d")
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_vit_clip_style_norms_only_pooled_token():
    vit = ViT(ViTConfig.from_preset("tiny", depth=1, pre_norm=True, final_norm_on="pooled")).eval()
    out = vit(torch.rand(2, 3, 64, 64))
    torch.testing.assert_close(out.pooled, vit.norm(out.last_hidden_state[:, 0]))


def test_vit_presets_are_consistent():
    for name in ViTConfig.presets():
        cfg = ViTConfig.from_preset(name)
        assert cfg.image_size % cfg.patch_size == 0
    base = ViTConfig.from_preset("base")
    assert (base.image_size, base.patch_size, base.dim, base.depth, base.heads) == (224, 16, 768, 12, 12)
    assert ViTConfig.from_preset("b32").num_patches == 49


# --------------------------------------------------------------------------- text


def test_text_pooling_modes():
    ids = torch.tensor([[5, 6, 2, 7, 2], [5, 9, 8, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    for pool, expect in [("eos", [2, 2]), ("argmax", [3, 1]), ("last", [4, 4]), ("cls", [0, 0])]:
        model = TextTransformer(TextConfig.from_preset("tiny", depth=1, pool=pool, eos_token_id=2)).eval()
        out = model(ids, mask)
        # row 1 has no eos: "eos" falls back to its last real token (index 2)
        torch.testing.assert_close(out.pooled, out.last_hidden_state[torch.arange(2), torch.tensor(expect)])
    model = TextTransformer(TextConfig.from_preset("tiny", depth=1, pool="mean")).eval()
    out = model(ids, mask)
    torch.testing.assert_close(out.pooled[1], out.last_hidden_state[1, :3].mean(0))


@pytest.mark.parametrize("causal", [True, False])
def test_text_padding_does_not_change_real_tokens(causal):
    model = TextTransformer(TextConfig.from_preset("tiny", depth=2, causal=causal, eos_token_id=2)).eval()
    ids = torch.tensor([[5, 6, 7, 2]])
    short = model(ids)
    padded_ids = torch.tensor([[5, 6, 7, 2, 0, 0, 0]])
    padded = model(padded_ids, torch.tensor([[1, 1, 1, 1, 0, 0, 0]]))
    torch.testing.assert_close(padded.last_hidden_state[:, :4], short.last_hidden_state, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(padded.pooled, short.pooled, rtol=1e-5, atol=1e-5)
    if not causal:  # without the mask, a bidirectional encoder would see the padding
        unmasked = model(padded_ids)
        assert (unmasked.pooled - short.pooled).abs().max() > 1e-4


# --------------------------------------------------------------------------- decoder


def test_decoder_loss_is_shifted_cross_entropy():
    lm = DecoderLM(DecoderConfig.from_preset("tiny", depth=1)).eval()
    ids = torch.randint(0, 1024, (2, 9))
    labels = ids.clone()
    labels[1, 5:] = -100
    out = lm(ids, labels=labels)
    logits = out.logits[:, :-1].reshape(-1, 1024)
    targets = labels[:, 1:].reshape(-1)
    keep = targets != -100
    torch.testing.assert_close(out.loss, F.cross_entropy(logits[keep], targets[keep]))
    assert lm.lm_head.weight is lm.tok_emb.weight


@pytest.mark.parametrize("preset", ["tiny", "llama_tiny"])
def test_decoder_output_does_not_depend_on_value_checks(preset):
    """Value checks only read inputs: with them off (the Trainer after its first step, generate's loop) the model
    computes the same thing, learned positions included."""
    from vlm_primer.validate import validation

    lm = _perturbed(DecoderConfig.from_preset(preset, depth=1, vocab_size=97))
    ids = torch.randint(0, 97, (2, 7))
    with validation(True):
        on = lm(ids).logits
    with validation(False):
        off = lm(ids).logits
    torch.testing.assert_close(on, off, rtol=0, atol=0)
    if lm.pos_emb is not None:  # and the positions matter: shuffled positions change the logits
        assert (lm(ids, position_ids=torch.arange(7).flip(0).expand(2, -1)).logits - on).abs().max() > 1e-4


@pytest.mark.parametrize("preset", ["tiny", "llama_tiny"])
def test_incremental_forward_matches_full(preset):
    lm = DecoderLM(DecoderConfig.from_preset(preset, depth=2)).eval()
    ids = torch.randint(0, 1024, (2, 10))
    full = lm(ids).logits
    first = lm(ids[:, :6], use_cache=True)
    rest = lm(ids[:, 6:], past_key_values=first.past_key_values, use_cache=True)
    torch.testing.assert_close(torch.cat([first.logits, rest.logits], 1), full, rtol=1e-4, atol=1e-5)


def _perturbed(cfg):
    """A decoder whose logits are far from uniform, so greedy decoding is not decided by ties."""
    lm = DecoderLM(cfg).eval()
    with torch.no_grad():
        for p in lm.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return lm


@pytest.mark.parametrize("preset,extra", [("tiny", {}), ("llama_tiny", {}),
                                          ("tiny", {"cross_attn_every": 2, "context_dim": 24})])
def test_cached_generation_equals_uncached(preset, extra):
    lm = _perturbed(DecoderConfig.from_preset(preset, depth=2, vocab_size=97, **extra))
    prompt = torch.randint(3, 97, (3, 5))
    mask = torch.ones_like(prompt)
    mask[1, :2] = 0  # left padding
    kw = {"context": torch.randn(3, 4, 24)} if extra else {}
    cached = lm.generate(prompt, 12, attention_mask=mask, use_cache=True, **kw)
    uncached = lm.generate(prompt, 12, attention_mask=mask, use_cache=False, **kw)
    assert cached.shape == (3, 17)
    assert torch.equal(cached, uncached)
    # left padding is invisible: row 1 decodes as its unpadded prompt alone would
    alone = lm.generate(prompt[1:2, 2:], 12, **({"context": kw["context"][1:2]} if kw else {}))
    assert torch.equal(cached[1, 5:], alone[0, 3:])


def test_generation_from_embeddings_and_sampling():
    lm = _perturbed(DecoderConfig.from_preset("llama_tiny", depth=2, vocab_size=97))
    embeds = torch.randn(2, 4, 64)
    a = lm.generate(inputs_embeds=embeds, max_new_tokens=8, use_cache=True)
    b = lm.generate(inputs_embeds=embeds, max_new_tokens=8, use_cache=False)
    assert a.shape == (2, 8) and torch.equal(a, b)

    prompt = torch.randint(3, 97, (2, 4))
    s1 = lm.generate(prompt, 8, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(3))
    s2 = lm.generate(prompt, 8, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(3),
                     use_cache=False)
    assert torch.equal(s1, s2)
    greedy = lm.generate(prompt, 8)
    assert torch.equal(lm.generate(prompt, 8, temperature=1.0, top_k=1), greedy)


def test_generation_stops_at_eos_and_pads():
    lm = _perturbed(DecoderConfig.from_preset("tiny", depth=1, vocab_size=50, pad_token_id=0))
    prompt = torch.randint(3, 50, (2, 3))
    free = lm.generate(prompt, 10)
    eos = int(free[0, 5])  # the 3rd generated token of row 0
    out = lm.generate(prompt, 10, eos_token_id=eos)
    row0 = out[0, 3:].tolist()
    first = row0.index(eos)
    assert first <= 2 and all(t == 0 for t in row0[first + 1:])


def test_decoder_learns_a_sequence():
    torch.manual_seed(0)
    lm = DecoderLM(DecoderConfig.from_preset("llama_tiny", depth=1, vocab_size=32))
    seq = torch.arange(1, 13).repeat(2, 1)
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        loss = lm(seq, labels=seq).loss
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first
    assert torch.equal(lm.eval().generate(seq[:1, :4], 8)[0, 4:], seq[0, 4:])
