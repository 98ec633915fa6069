"""Chapter 06b's prompt and adapter tuning of a frozen CLIP: CoOp, VPT and CLIP-Adapter.

Exact starting points (CoOp initialised from "a photo of a" = zero-shot CLIP with that prompt, for every text pooling;
VPT with no prompt = the plain image tower, for every image pooling; CLIP-Adapter with α = 0 = plain CLIP), VPT
against an independent implementation (the plain blocks with the prompts spliced in by hand and by forward hooks),
the context sitting where the class's prompt is, gradients that reach only the new parameters, trainable-parameter
counts against the papers' formulas, a short training run per method, and bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlm_primer.contrastive import CLIP
from vlm_primer.recipes import prompts as P
from vlm_primer.recipes.peft import trainable_parameters
from vlm_primer.text import Tokenizer
from vlm_primer.zoo.recipes import contrastive_config

TOL = 1e-5
TOK = Tokenizer.load()
NAMES = ["circle", "red circle", "small blue square", "big green triangle in the middle"]  # 1-5 words: padding


def _clip(seed: int = 0, **changes) -> CLIP:
    """The zoo's tiny CLIP (48 px, 2 + 4 blocks), every parameter randomised (biases and norms start constant)."""
    cfg = contrastive_config("clip", TOK)
    cfg = cfg.replace(vision=cfg.vision.replace(**changes.get("vision", {})),
                      text=cfg.text.replace(**changes.get("text", {})))
    torch.manual_seed(seed)
    clip = CLIP(cfg).eval()
    with torch.no_grad():
        for p in clip.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return clip


def _images(n: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 48, 48, generator=torch.Generator().manual_seed(seed))


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=0, atol=TOL)


# --- exact starting points -------------------------------------------------------------------------------------

TEXT_POOLS = [dict(), dict(pool="argmax"), dict(pool="last"), dict(pool="cls"), dict(pool="mean"),
              dict(type_vocab_size=2, embed_norm=True), dict(causal=False)]


@pytest.mark.parametrize("text", TEXT_POOLS, ids=lambda d: "-".join(f"{k}={v}" for k, v in d.items()) or "eos")
@pytest.mark.parametrize("class_specific", [False, True])
def test_coop_from_phrase_equals_clip_with_that_prompt(text, class_specific):
    clip = _clip(text=text)
    assert TOK.encode("a photo of a " + NAMES[3], add_eos=False) == \
        TOK.encode("a photo of a", add_eos=False) + TOK.encode(NAMES[3], add_eos=False)
    plain = P.class_text_embeddings(clip, TOK, NAMES, "a photo of a {}")  # chapter 02's zero-shot classifier
    one_by_one = torch.cat([clip.encode_text(TOK(["a photo of a " + n])["input_ids"]) for n in NAMES])  # no padding
    coop = P.CoOp(clip, NAMES, TOK, class_specific=class_specific, init="a photo of a")
    assert coop.n_ctx == 4
    _close(coop.class_embeddings(), plain)
    x = _images()
    _close(coop(x), P.zero_shot_logits(clip, x, plain))
    if text.get("pool") != "last":  # "last" pools the last *padded* position: then only the same padding agrees
        _close(coop.class_embeddings(), one_by_one)
        _close(coop(x), clip.logit_scale.exp() * clip.encode_image(x) @ one_by_one.t())


def test_coop_class_specific_context_belongs_to_its_class():
    clip = _clip()
    coop = P.CoOp(clip, NAMES, TOK, class_specific=True)
    before = coop.class_embeddings().detach()
    with torch.no_grad():
        coop.ctx[2].add_(torch.randn_like(coop.ctx[2]))
    after = coop.class_embeddings().detach()
    assert (after[2] - before[2]).abs().max() > 1e-2
    _close(after[[0, 1, 3]], before[[0, 1, 3]])  # the other classes' prompts are untouched


def test_coop_random_context_is_the_words_it_replaces():
    """With ``init=None`` the context is random; writing a phrase's word embeddings into it gives that prompt."""
    clip = _clip()
    coop = P.CoOp(clip, NAMES, TOK, n_ctx=2, init=None)
    assert coop.ctx.shape == (2, 64) and 0.01 < coop.ctx.std() < 0.03  # N(0, 0.02²)
    with torch.no_grad():
        coop.ctx.copy_(clip.text.tok_emb.weight[TOK.encode("a big", add_eos=False)])
    _close(coop.class_embeddings(), P.class_text_embeddings(clip, TOK, NAMES, "a big {}"))


VISION_POOLS = [dict(), dict(pool="mean"), dict(pool="map", cls_token=False, final_norm_on="tokens"),
                dict(pre_norm=False, final_norm_on="tokens")]


@pytest.mark.parametrize("vision", VISION_POOLS, ids=lambda d: "-".join(f"{k}={v}" for k, v in d.items()) or "cls")
@pytest.mark.parametrize("deep", [False, True])
def test_vpt_without_prompts_is_the_plain_tower(vision, deep):
    clip = _clip(vision=vision)
    vpt = P.VPT(clip, n_prompts=0, deep=deep)
    x = _images()
    out, plain = vpt.vision(x), clip.vision(x)
    _close(out.pooled, plain.pooled)
    _close(out.last_hidden_state, plain.last_hidden_state)
    _close(vpt.encode_image(x), clip.encode_image(x))
    w = P.class_text_embeddings(clip, TOK, NAMES)
    _close(vpt(x, w), P.zero_shot_logits(clip, x, w))


def _prompted_reference(clip, prompts, x, deep):
    """VPT another way: prompts concatenated after CLS, the tower's own Transformer run whole, deep prompts written
    over the prompt positions by forward pre-hooks on blocks 1..L-1; then CLS through ln_post."""
    vit, p = clip.vision, prompts.shape[1]
    tokens = vit.embed(x)
    tokens = torch.cat([tokens[:, :1], prompts[0].expand(len(x), -1, -1), tokens[:, 1:]], dim=1)
    hooks = []
    for i, block in list(enumerate(vit.transformer.blocks))[1:] if deep else []:
        def hook(module, args, kwargs, i=i):
            h = args[0].clone()
            h[:, 1:1 + p] = prompts[i]
            return (h,), kwargs
        hooks.append(block.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        out, _ = vit.transformer(tokens)
    finally:
        for h in hooks:
            h.remove()
    return clip.visual_projection(vit.norm(out[:, 0]))


@pytest.mark.parametrize("deep", [False, True])
def test_vpt_equals_prompts_spliced_in_by_hand(deep):
    clip = _clip()
    vpt = P.VPT(clip, n_prompts=3, deep=deep)
    assert vpt.prompts.shape == ((2 if deep else 1), 3, 64)
    x = _images()
    _close(vpt.encode_image(x, normalize=False), _prompted_reference(clip, vpt.prompts, x, deep))
    assert (vpt.encode_image(x) - clip.encode_image(x)).abs().max() > 1e-3  # the prompts do something


def test_vpt_deep_differs_from_shallow_with_the_same_first_prompts():
    clip = _clip()
    shallow, deep = P.VPT(clip, n_prompts=3), P.VPT(clip, n_prompts=3, deep=True)
    with torch.no_grad():
        deep.prompts[0].copy_(shallow.prompts[0])
    x = _images()
    assert (deep.encode_image(x) - shallow.encode_image(x)).abs().max() > 1e-3
    # Deep prompts at block 1 set to what block 0 made of the shallow prompts (for one image): shallow again.
    tokens = clip.vision.embed(x[:1])
    tokens = torch.cat([tokens[:, :1], shallow.prompts[0][None], tokens[:, 1:]], dim=1)
    with torch.no_grad():
        deep.prompts[1].copy_(clip.vision.transformer.blocks[0](tokens)[0, 1:4])
    _close(deep.encode_image(x[:1]), shallow.encode_image(x[:1]))


def test_adapter_with_zero_ratio_is_plain_clip():
    clip = _clip()
    adapter = P.CLIPAdapter(clip, alpha=0.0, text_alpha=0.0)
    x, w = _images(), P.class_text_embeddings(clip, TOK, NAMES)
    _close(adapter.encode_image(x), clip.encode_image(x))
    _close(adapter(x, w), P.zero_shot_logits(clip, x, w))
    ids = TOK(NAMES)
    _close(adapter.encode_text(ids["input_ids"], ids["attention_mask"]), clip.encode_text(**ids))


def test_adapter_blends_the_unnormalised_image_embedding():
    clip = _clip()
    adapter = P.CLIPAdapter(clip, alpha=0.2)
    x = _images()
    f = clip.encode_image(x, normalize=False)
    a = adapter.image_adapter
    by_hand = 0.2 * F.relu(F.relu(f @ a[0].weight.t()) @ a[2].weight.t()) + 0.8 * f
    _close(adapter.encode_image(x, normalize=False), by_hand)
    assert a[0].bias is None and a[2].bias is None and a[0].weight.shape == (16, 64)


# --- what trains -----------------------------------------------------------------------------------------------

def _methods(clip, names, coop_init="a photo of a"):
    """Each method: (module, images -> class logits over ``names``, its new parameters, their count by formula)."""
    w, c, d, e = P.class_text_embeddings(clip, TOK, names), len(names), clip.cfg.text.dim, clip.cfg.embed_dim
    depth, m = clip.cfg.vision.depth, 4
    return {
        "coop": (m_ := P.CoOp(clip, names, TOK, n_ctx=m, init=coop_init), m_, ["ctx"], m * d),
        "coop-class": (m_ := P.CoOp(clip, names, TOK, n_ctx=m, class_specific=True, init=coop_init), m_, ["ctx"],
                       c * m * d),
        "vpt": (m_ := P.VPT(clip, n_prompts=5), lambda x, m_=m_: m_(x, w), ["prompts"], 5 * clip.cfg.vision.dim),
        "vpt-deep": (m_ := P.VPT(clip, n_prompts=5, deep=True), lambda x, m_=m_: m_(x, w), ["prompts"],
                     depth * 5 * clip.cfg.vision.dim),
        "adapter": (m_ := P.CLIPAdapter(clip), lambda x, m_=m_: m_(x, w), ["image_adapter"], 2 * e * e // 4),
        "adapter-text": (m_ := P.CLIPAdapter(clip, text_alpha=0.2), lambda x, m_=m_: m_(x, w),
                         ["image_adapter", "text_adapter"], 2 * 2 * e * e // 4),
    }


KINDS = ["coop", "coop-class", "vpt", "vpt-deep", "adapter", "adapter-text"]


@pytest.mark.parametrize("kind", KINDS)
def test_only_the_new_parameters_train(kind):
    clip = _clip()
    module, run, new, count = _methods(clip, NAMES)[kind]
    assert trainable_parameters(module) == count  # CoOp M·d or C·M·d, VPT P·d or L·P·d, adapter 2·d²/4 each
    assert trainable_parameters(clip) == 0
    logits = run(_images(6))
    assert logits.shape == (6, len(NAMES))
    F.cross_entropy(logits, torch.tensor([0, 1, 2, 3, 0, 1])).backward()
    assert all(p.grad is None for p in clip.parameters())
    for name, p in module.named_parameters():
        if name.split(".")[0] in new:
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert name.startswith("clip.") and not p.requires_grad, name


@pytest.fixture(scope="module")
def shapes():
    """32 one-object training scenes of the zoo CLIP's world (normalised as it was trained), 48 colour-shape names."""
    from vlm_primer.world import ShapesCaptionDataset, WorldConfig
    from vlm_primer.zoo.recipes import WORLD, normalizer, pixel_stats

    ds = ShapesCaptionDataset("train", 32, WorldConfig(**WORLD), num_objects=1, statements=False,
                              transform=normalizer(*pixel_stats()))
    items = [ds[i] for i in range(32)]
    return torch.stack([it["image"] for it in items]), torch.tensor([it["label_id"] for it in items]), ds.classnames


@pytest.mark.parametrize("kind", KINDS)
def test_a_short_run_lowers_the_loss(kind, shapes):
    """30 Adam steps on the pretrained zoo CLIP (CoOp from a random context, the paper's default)."""
    from vlm_primer import zoo

    x, y, names = shapes
    clip = zoo.load("clip-tiny")
    module, run, _, _ = _methods(clip, names, coop_init=None)[kind]
    opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=1e-2)
    before = [p.detach().clone() for p in clip.parameters()]
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(run(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
    assert all(torch.equal(a, b) for a, b in zip(before, clip.parameters()))  # CLIP itself never moved


# --- bad input -------------------------------------------------------------------------------------------------

def test_coop_bad_input():
    clip = _clip()
    with pytest.raises(ValueError, match="n_ctx"):
        P.CoOp(clip, NAMES, TOK, n_ctx=0, init=None)
    with pytest.raises(ValueError, match="n_ctx"):
        P.CoOp(clip, NAMES, TOK, n_ctx=16)  # "a photo of a" is 4 tokens
    with pytest.raises(TypeError, match="n_ctx must be an int"):
        P.CoOp(clip, NAMES, TOK, n_ctx=2.5, init=None)
    with pytest.raises(ValueError, match="class_names"):
        P.CoOp(clip, [], TOK)
    with pytest.raises(ValueError, match="class_names"):
        P.CoOp(clip, "circle", TOK)
    with pytest.raises(ValueError, match=r"class_names\[1\]"):
        P.CoOp(clip, ["circle", "  "], TOK)
    with pytest.raises(TypeError, match=r"class_names\[0\]"):
        P.CoOp(clip, [3], TOK)
    with pytest.raises(ValueError, match=r"class_names\[0\].*context_length"):
        P.CoOp(clip, ["red circle " * 8], TOK)
    with pytest.raises(TypeError, match="tokenizer"):
        P.CoOp(clip, NAMES, lambda texts: texts)
    with pytest.raises(TypeError, match="clip"):
        P.CoOp(torch.nn.Linear(2, 2), NAMES, TOK)
    with pytest.raises(TypeError, match="class_specific"):
        P.CoOp(clip, NAMES, TOK, class_specific="yes")
    with pytest.raises(ValueError, match="init"):
        P.CoOp(clip, NAMES, TOK, init="")
    with pytest.raises(TypeError, match="init"):
        P.CoOp(clip, NAMES, TOK, init=3)
    coop = P.CoOp(clip, NAMES, TOK)
    with pytest.raises(ValueError, match="pixel_values"):
        coop(torch.randn(3, 48, 48))
    with pytest.raises(ValueError, match="pixel_values"):
        coop(torch.randn(2, 3, 32, 32))


def test_vpt_adapter_and_helpers_bad_input():
    clip = _clip()
    w = P.class_text_embeddings(clip, TOK, NAMES)
    for bad, error in ((-1, ValueError), (2.5, TypeError), (True, TypeError), ("4", TypeError)):
        with pytest.raises(error, match="n_prompts must be an int >= 0"):
            P.VPT(clip, n_prompts=bad)
    with pytest.raises(TypeError, match="deep"):
        P.VPT(clip, deep=1)
    vpt = P.VPT(clip)
    with pytest.raises(ValueError, match="pixel_values"):
        vpt.encode_image(torch.randn(2, 3, 48))
    with pytest.raises(TypeError, match="pixel_values"):
        vpt.encode_image(torch.zeros(2, 3, 48, 48, dtype=torch.long))
    with pytest.raises(ValueError, match="class_embeds"):
        vpt(_images(), w[:, :10])
    with pytest.raises(ValueError, match="class_embeds"):
        vpt(_images(), torch.full_like(w, float("nan")))
    with pytest.raises(TypeError, match="class_embeds"):
        vpt(_images(), w.tolist())
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="alpha"):
            P.CLIPAdapter(clip, alpha=bad)
    with pytest.raises(TypeError, match="alpha"):
        P.CLIPAdapter(clip, alpha="0.2")
    with pytest.raises(ValueError, match="text_alpha"):
        P.CLIPAdapter(clip, text_alpha=2.0)
    for bad, error in ((0, ValueError), (128, ValueError), (1.5, TypeError)):
        with pytest.raises(error, match="reduction"):
            P.CLIPAdapter(clip, reduction=bad)
    with pytest.raises(ValueError, match="class_embeds"):
        P.CLIPAdapter(clip)(_images(), w[0])
    with pytest.raises(ValueError, match="template"):
        P.class_text_embeddings(clip, TOK, NAMES, "a photo")
    with pytest.raises(TypeError, match="clip"):
        P.zero_shot_logits(vpt, _images(), w)
    with pytest.raises(ValueError, match="class_embeds"):
        P.zero_shot_logits(clip, _images(), w[:0])
