"""CLIP, SigLIP and Llip: shapes, losses against written-out formulas, temperature clamp, Llip's
pairwise conditioning against a per-pair loop, a few training steps, and bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vlm_primer.contrastive import CLIP, CLIPConfig, Llip, LlipConfig, SigLIP, SigLIPConfig
from vlm_primer.nn import TextConfig, ViTConfig

B = 4


def _small(cfg_cls, **kw):
    """Tiny towers (2 blocks, 32 px) so each test runs in well under a second."""
    vision = cfg_cls.from_preset("tiny").vision.replace(image_size=32, depth=2)
    text = cfg_cls.from_preset("tiny").text.replace(depth=2, context_length=16)
    return cfg_cls.from_preset("tiny", vision=vision, text=text, **kw)


def _batch(b=B, length=12):
    gen = torch.Generator().manual_seed(1)
    pixels = torch.rand(b, 3, 32, 32, generator=gen)
    ids = torch.randint(3, 1000, (b, length), generator=gen)
    ids[:, -3] = 3  # <eos>, then <pad>
    ids[:, -2:] = 0
    mask = (torch.arange(length) < length - 2).long().expand(b, -1).clone()
    return pixels, ids, mask


MODELS = [(CLIP, CLIPConfig), (SigLIP, SigLIPConfig), (Llip, LlipConfig)]


@pytest.mark.parametrize("model_cls,cfg_cls", MODELS, ids=["clip", "siglip", "llip"])
def test_presets_build_and_round_trip(model_cls, cfg_cls):
    for name in cfg_cls.presets():
        cfg = cfg_cls.from_preset(name)
        assert cfg_cls(**cfg.to_dict()) == cfg  # a saved to_dict() rebuilds the same config
    with pytest.raises(ValueError, match="unknown preset"):
        cfg_cls.from_preset("huge")
    assert isinstance(cfg_cls.from_preset("tiny").vision, ViTConfig)
    assert isinstance(cfg_cls.from_preset("tiny").text, TextConfig)


def test_clip_forward_matches_formula():
    model = CLIP(_small(CLIPConfig)).eval()
    with torch.no_grad():
        model.logit_scale.fill_(1.7)
    pixels, ids, mask = _batch()
    out = model(pixels, ids, mask)
    img = F.normalize(model.visual_projection(model.vision(pixels).pooled), dim=-1)
    txt = F.normalize(model.text_projection(model.text(ids, mask).pooled), dim=-1)
    logits = math.exp(1.7) * img @ txt.t()
    labels = torch.arange(B)
    loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
    torch.testing.assert_close(out.logits_per_image, logits)
    torch.testing.assert_close(out.logits_per_text, logits.t())
    torch.testing.assert_close(out.loss, loss)
    torch.testing.assert_close(out.image_embeds.norm(dim=-1), torch.ones(B))
    assert model(pixels, ids, mask, return_loss=False).loss is None
    torch.testing.assert_close(model.encode_image(pixels, normalize=False).shape, torch.Size([B, 64]))


def test_siglip_forward_matches_formula():
    model = SigLIP(_small(SigLIPConfig)).eval()
    assert model.logit_scale.item() == pytest.approx(math.log(10)) and model.logit_bias.item() == -10
    with torch.no_grad():
        model.logit_scale.fill_(1.2)
        model.logit_bias.fill_(-0.6)
    pixels, ids, mask = _batch()
    out = model(pixels, ids, mask)
    img = F.normalize(model.vision(pixels).pooled, dim=-1)
    txt = F.normalize(model.text_head(model.text(ids, mask).last_hidden_state[:, -1]), dim=-1)
    logits = math.exp(1.2) * img @ txt.t() - 0.6
    z = 2 * torch.eye(B) - 1
    loss = -torch.log(torch.sigmoid(z * logits)).sum() / B
    torch.testing.assert_close(out.logits_per_image, logits)
    torch.testing.assert_close(out.loss, loss)


def test_post_step_clamps_temperature():
    model = CLIP(_small(CLIPConfig))
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    model.post_step()
    assert model.logit_scale.item() == pytest.approx(math.log(100))
    with torch.no_grad():
        model.logit_scale.fill_(-1.0)
    model.post_step()
    assert model.logit_scale.item() == 0.0


def test_llip_contextualize_matches_per_pair_attention():
    model = Llip(_small(LlipConfig)).eval()
    pixels, ids, mask = _batch()
    mix = model.encode_image(pixels)
    text = model.encode_text(ids, mask)
    assert mix.shape == (B, 8, 64) and text.shape == (B, 64)
    z = model.contextualize(mix, text[:3])  # 4 images x 3 captions
    assert z.shape == (B, 3, 64)
    for i in range(B):
        for j in range(3):  # the plain cross-attention module, one (image, caption) pair at a time
            ref = model.mixer(F.normalize(text[j], dim=-1)[None, None], context=mix[i : i + 1])[0, 0]
            torch.testing.assert_close(z[i, j], ref, atol=1e-5, rtol=1e-5)
    # The representation of an image depends on the caption.
    assert (z[0, 0] - z[0, 1]).abs().max() > 1e-4
    # Temperature sharpens the attention over the mixture tokens: check against a written-out softmax.
    model.cfg.temperature = 0.25
    q = model.mixer.q(F.normalize(text[1], dim=-1)).view(4, 16)
    k = model.mixer.k(mix[2]).view(8, 4, 16).transpose(0, 1)
    v = model.mixer.v(mix[2]).view(8, 4, 16).transpose(0, 1)
    attn = torch.softmax(torch.einsum("hd,hkd->hk", q, k) / (0.25 * 4.0), dim=-1)
    ref = model.mixer.out(torch.einsum("hk,hkd->hd", attn, v).reshape(64))
    torch.testing.assert_close(model.contextualize(mix, text)[2, 1], ref, atol=1e-5, rtol=1e-5)
    # Llip.attention gives the same weights, for every (image, caption) pair at once.
    weights = model.attention(mix, text)
    assert weights.shape == (B, 4, B, 8)
    torch.testing.assert_close(weights[2, :, 1], attn, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, 4, B))


def test_llip_mixture_tokens_go_through_ln_pre_like_the_cls_token():
    """With CLIP's ln_pre (the base preset's tower), the mixture tokens enter the blocks normalised, as the patch
    tokens (and a CLIP tower's CLS) do: the tower's input is ln_pre([patches + positions; mixture tokens])."""
    cfg = _small(LlipConfig)
    cfg = cfg.replace(vision=cfg.vision.replace(pre_norm=True))
    model = Llip(cfg).eval()
    pixels = _batch()[0]
    vit, seen = model.vision, []
    handle = vit.transformer.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    with torch.no_grad():
        model.encode_image(pixels)
        handle.remove()
        tokens = vit.patch_embed(pixels).flatten(2).transpose(1, 2)
        tokens = tokens + vit.pos_emb   # Llip's tower has no CLS: the mixture tokens are its readout
        tokens = torch.cat([tokens, model.mixture_tokens.expand(B, -1, -1)], dim=1)
        torch.testing.assert_close(seen[0], vit.ln_pre(tokens))


@pytest.mark.parametrize("loss", ["sigmoid", "infonce"])
def test_llip_loss(loss):
    model = Llip(_small(LlipConfig, loss=loss)).eval()
    pixels, ids, mask = _batch()
    out = model(pixels, ids, mask)
    sim = model.similarity(out.mixture_tokens, out.text_embeds)
    if loss == "sigmoid":
        logits = model.logit_scale.exp() * sim + model.logit_bias
        expected = -F.logsigmoid((2 * torch.eye(B) - 1) * logits).sum() / B
    else:
        assert model.logit_bias is None
        logits = model.logit_scale.exp() * sim
        expected = (F.cross_entropy(logits, torch.arange(B)) + F.cross_entropy(logits.t(), torch.arange(B))) / 2
    torch.testing.assert_close(out.logits_per_image, logits)
    torch.testing.assert_close(out.loss, expected)


@pytest.mark.parametrize(
    "model_cls,cfg_cls,kw",
    [(CLIP, CLIPConfig, {}), (SigLIP, SigLIPConfig, {}), (Llip, LlipConfig, dict(loss="infonce"))],
    ids=["clip", "siglip", "llip-infonce"],
)
def test_training_leaves_the_chance_plateau(model_cls, cfg_cls, kw):
    """80 AdamW steps on 8 distinct pairs go well below the loss of 'all pairs look alike'.

    (Llip with the sigmoid loss needs ~120 steps here to leave the plateau that the -10 bias
    init creates at tiny batch sizes; its loss is checked against the formula above.)
    """
    torch.manual_seed(0)
    model = model_cls(_small(cfg_cls, **kw))
    pixels, ids, mask = _batch(8)
    pixels = F.interpolate(torch.rand(8, 3, 4, 4), size=32, mode="nearest")  # 8 distinct blocky images
    ids[:, :4] = torch.randint(3, 1000, (8, 4))  # 8 distinct captions
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / 10))
    for _ in range(80):
        loss = model(pixels, ids, mask).loss
        opt.zero_grad()
        loss.backward()
        for name, p in model.named_parameters():
            assert p.grad is not None, f"{name} gets no gradient"
        opt.step()
        warmup.step()
        model.post_step()
    # Collapsed embeddings (every logit equal) give log(B) for InfoNCE and the binary entropy
    # B * H(1/B) for the sigmoid loss; a model that tells the pairs apart is far below.
    b = 8
    sigmoid = getattr(model, "logit_bias", None) is not None
    plateau = -math.log(1 / b) - (b - 1) * math.log(1 - 1 / b) if sigmoid else math.log(b)
    assert loss.item() < 0.7 * plateau, (loss.item(), plateau)


@pytest.mark.parametrize("model_cls,cfg_cls", MODELS, ids=["clip", "siglip", "llip"])
def test_bad_input(model_cls, cfg_cls):
    model = model_cls(_small(cfg_cls))
    pixels, ids, mask = _batch()
    with pytest.raises(ValueError, match="mismatched batch sizes"):
        model(pixels[:3], ids)
    with pytest.raises(ValueError, match="mismatched batch sizes"):
        model(pixels, ids, mask[:2])
    with pytest.raises(ValueError, match="32x32"):
        model(torch.rand(B, 3, 64, 64), ids)
    with pytest.raises(ValueError, match=r"shape \(B, 3, H, W\)"):
        model(torch.rand(3, 32, 32), ids)
    with pytest.raises(ValueError, match="longer than the model's context"):
        model(pixels, torch.randint(0, 10, (B, 17)))
    with pytest.raises(ValueError, match="empty"):
        model(pixels[:0], ids[:0])
    with pytest.raises(TypeError, match="integer"):
        model(pixels, ids.float())


def test_bad_configs():
    with pytest.raises(ValueError, match="pool"):
        CLIPConfig(vision=dict(ViTConfig.PRESETS["tiny"], pool="none"))
    with pytest.raises(TypeError, match="ViTConfig"):
        CLIPConfig(vision="vit")
    with pytest.raises(ValueError, match="loss"):
        LlipConfig(loss="hinge")
    with pytest.raises(ValueError, match="mixture"):
        LlipConfig(vision=dict(ViTConfig.PRESETS["tiny"], cls_token=True, pool="cls"))
    with pytest.raises(ValueError, match="divisible"):
        LlipConfig(embed_dim=30, heads=4)
