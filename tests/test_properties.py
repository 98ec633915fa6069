"""Property-based checks of the public surface (hypothesis, fixed seed and example budget).

The property, for random shapes, dtypes and values: an entry point either returns a correct, finite
result or raises ValueError/TypeError whose message names the argument at fault. Never another
exception type, never a non-finite output from finite input. Later chapters add their entry points
here (one ``@given`` test per model family).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from vlm_primer.backbones import Llava, LlavaConfig, LlavaNextConfig, QFormer, QFormerConfig
from vlm_primer.backbones.blip2 import Blip2Config, InstructBlipConfig
from vlm_primer.backbones.flamingo import FlamingoConfig
from vlm_primer.contrastive import CLIP, CLIPConfig, Llip, LlipConfig, SigLIP, SigLIPConfig
from vlm_primer.contrastive.losses import ClipLoss, SigLipLoss
from vlm_primer.evaluation import recall_at_k
from vlm_primer.nn import DecoderConfig, DecoderLM, TextConfig, TextTransformer, ViT, ViTConfig
from vlm_primer.text import Tokenizer
from vlm_primer.training import TrainConfig
from vlm_primer.world import ShapesCaptionDataset, WorldConfig, caption_scene, render, sample_scene

INT_DTYPES = [torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8]
ANY_DTYPES = INT_DTYPES + [torch.float32, torch.bool]


def clear_or_ok(fn, *names):
    """Run ``fn``; a ValueError/TypeError must name one of ``names``. Returns the result or None."""
    try:
        out = fn()
    except (ValueError, TypeError) as e:
        assert any(n in str(e) for n in names), f"the message does not name any of {names}: {e}"
        event(f"refused: {type(e).__name__}")  # --hypothesis-show-statistics shows the mix
        return None
    event("accepted")
    return out


def finite(*tensors):
    for t in tensors:
        assert torch.isfinite(t).all(), "non-finite output from finite input"


def _fit(values, dtype):
    """Values as a tensor of ``dtype``, wrapped to its range the way NumPy would store them."""
    if dtype == torch.bool:
        return torch.tensor(values, dtype=torch.long).remainder(2).bool()
    if dtype.is_floating_point:
        return torch.tensor(values, dtype=dtype)
    info = torch.iinfo(dtype)
    return torch.tensor(values, dtype=torch.long).clamp(info.min, info.max).to(dtype)


@st.composite
def token_batches(draw, vocab, max_len, b=None):
    """Mostly valid ids (so the models' answers get checked too), sometimes broken in one way."""
    b = draw(st.sampled_from([1, 2, 3, 0])) if b is None else b
    n = draw(st.one_of(st.integers(1, max_len), st.integers(1, max_len), st.sampled_from([0, max_len + 1])))
    dtype = draw(st.sampled_from(INT_DTYPES * 2 + [torch.float32, torch.bool]))
    values = draw(st.lists(st.integers(0, vocab - 1), min_size=b * n, max_size=b * n))
    if values and draw(st.integers(0, 3)) == 0:  # one id out of range
        values[draw(st.integers(0, len(values) - 1))] = draw(st.sampled_from([-1, -3, vocab, vocab + 3, 255]))
    ids = _fit(values, dtype).reshape(b, n)
    return draw(st.sampled_from(["tensor", "tensor", "numpy", "list"])), ids


@st.composite
def masks(draw, b, n):
    rows, cols = draw(st.sampled_from([b, b, b, b + 1])), draw(st.sampled_from([n, n, n, max(n - 1, 0), n + 1]))
    dtype = draw(st.sampled_from([torch.bool, torch.int64, torch.uint8, torch.float32]))
    values = draw(st.lists(st.sampled_from([0, 1, 1, 1, 2, -1]), min_size=rows * cols, max_size=rows * cols))
    mask = torch.tensor(values, dtype=torch.float32).reshape(rows, cols)
    if draw(st.integers(0, 3)):
        mask = mask.clamp(0, 1)
        if mask.numel() and draw(st.booleans()):
            mask[:, 0] = 1  # every row keeps a real token
    if dtype != torch.float32 and draw(st.booleans()):
        mask = _fit(mask.long().tolist(), dtype)
    return draw(st.sampled_from(["tensor", "numpy", "list"])), mask


@st.composite
def valid_tokens(draw, vocab, max_len, b):
    """Valid ids in any integer dtype that holds them, as a tensor, array or list; and the int64 reference."""
    n = draw(st.integers(1, max_len))
    values = draw(st.lists(st.integers(0, vocab - 1), min_size=b * n, max_size=b * n))
    fits = [d for d in INT_DTYPES if torch.iinfo(d).max >= max(values)]
    ids = torch.tensor(values, dtype=draw(st.sampled_from(fits))).reshape(b, n)
    return as_form(draw(st.sampled_from(["tensor", "numpy", "list"])), ids), ids.long()


@st.composite
def valid_masks(draw, b, n):
    """A 0/1 mask with a real token in every row, as bool, int or float, tensor, array or list; and the bool reference."""
    bits = torch.tensor(draw(st.lists(st.booleans(), min_size=b * n, max_size=b * n))).reshape(b, n)
    bits[torch.arange(b), torch.tensor(draw(st.lists(st.integers(0, n - 1), min_size=b, max_size=b)))] = True
    mask = bits.to(draw(st.sampled_from([torch.bool, torch.int64, torch.uint8, torch.float32])))
    return as_form(draw(st.sampled_from(["tensor", "numpy", "list"])), mask), bits


def as_form(form, t):
    return t if form == "tensor" else t.numpy() if form == "numpy" else t.tolist()


@st.composite
def images(draw, size, b=None):
    b = draw(st.sampled_from([1, 2, 2, 0])) if b is None else b
    c = draw(st.sampled_from([3] * 6 + [1, 4]))
    hw = draw(st.sampled_from([size] * 6 + [size // 2, size + 1]))
    dtype = draw(st.sampled_from([torch.float32] * 6 + [torch.float16, torch.uint8, torch.int64]))
    x = torch.rand(b, c, hw, hw, generator=torch.Generator().manual_seed(draw(st.integers(0, 9))))
    return (x * draw(st.sampled_from([1.0, 255.0, -3.0]))).to(dtype)


# --------------------------------------------------------------------------- models

TEXT = TextTransformer(TextConfig.from_preset("tiny", depth=1, context_length=8)).eval()
LM = DecoderLM(DecoderConfig.from_preset("tiny", depth=1, context_length=12, vocab_size=100)).eval()
VIT = ViT(ViTConfig.from_preset("tiny", depth=1, image_size=16)).eval()


def _pair_model(model_cls, cfg_cls):
    tiny = cfg_cls.from_preset("tiny")
    torch.manual_seed(0)
    return model_cls(cfg_cls.from_preset("tiny", vision=tiny.vision.replace(depth=1, image_size=16),
                                         text=tiny.text.replace(depth=1, context_length=8))).eval()


PAIR_MODELS = {"clip": _pair_model(CLIP, CLIPConfig), "siglip": _pair_model(SigLIP, SigLIPConfig),
               "llip": _pair_model(Llip, LlipConfig)}


@given(st.integers(1, 3), st.data())
def test_text_tower_valid_input(b, data):
    """Any integer dtype, tensor or array-like, any 0/1 mask: the same answer as int64 ids and a bool mask."""
    ids, ref_ids = data.draw(valid_tokens(1024, 8, b))
    mask, ref_mask = data.draw(valid_masks(*ref_ids.shape))
    with torch.no_grad():
        out, ref = TEXT(ids, mask), TEXT(ref_ids, ref_mask)
    finite(out.pooled)
    assert torch.equal(out.pooled, ref.pooled)
    event("accepted")


@pytest.mark.parametrize("name", sorted(PAIR_MODELS))
@given(b=st.integers(1, 3), data=st.data())
def test_contrastive_models_valid_input(name, b, data):
    ids, ref_ids = data.draw(valid_tokens(1024, 8, b))
    mask, ref_mask = data.draw(valid_masks(*ref_ids.shape))
    pixels = torch.rand(b, 3, 16, 16, generator=torch.Generator().manual_seed(data.draw(st.integers(0, 99))))
    with torch.no_grad():
        out, ref = PAIR_MODELS[name](pixels, ids, mask), PAIR_MODELS[name](pixels, ref_ids, ref_mask)
    finite(out.loss, out.logits_per_image)
    assert torch.equal(out.logits_per_image, ref.logits_per_image)


@given(token_batches(1024, 8), st.data())
def test_text_tower(batch, data):
    form, ids = batch
    mask = None
    if data.draw(st.booleans()):
        mform, mask = data.draw(masks(*ids.shape))
        mask = as_form(mform, mask)
    with torch.no_grad():
        out = clear_or_ok(lambda: TEXT(as_form(form, ids), mask), "input_ids", "attention_mask")
    if out is not None:
        finite(out.pooled, out.last_hidden_state)
        assert out.pooled.shape == (ids.shape[0], 64)


@given(token_batches(100, 12), st.data())
def test_decoder_forward_and_generate(batch, data):
    form, ids = batch
    labels = None
    if data.draw(st.booleans()) and ids.numel():
        labels = ids.long().clone()
        labels[:, 0] = data.draw(st.sampled_from([-100, 5, 100, -1]))
    with torch.no_grad():
        out = clear_or_ok(lambda: LM(as_form(form, ids), labels=labels), "input_ids", "labels")
        if out is not None:
            finite(out.logits)
            if labels is not None:
                finite(out.loss)
        new = data.draw(st.integers(0, 4))
        gen = clear_or_ok(lambda: LM.generate(as_form(form, ids), new), "input_ids", "max_new_tokens")
    if gen is not None:
        assert gen.shape[0] == ids.shape[0] and ids.shape[1] <= gen.shape[1] <= ids.shape[1] + new


@given(images(16))
def test_vit(pixels):
    with torch.no_grad():
        out = clear_or_ok(lambda: VIT(pixels), "pixel_values")
    if out is not None:
        finite(out.pooled)


@pytest.mark.parametrize("name", sorted(PAIR_MODELS))
@given(data=st.data())
def test_contrastive_models(name, data):
    b = data.draw(st.sampled_from([1, 2, 3, 0]))
    pixels = data.draw(images(16, b=data.draw(st.sampled_from([b, b, b, b + 1]))))
    form, ids = data.draw(token_batches(1024, 8, b=b))
    mask = None
    if data.draw(st.booleans()):
        mform, mask = data.draw(masks(*ids.shape))
        mask = as_form(mform, mask)
    with torch.no_grad():
        out = clear_or_ok(lambda: PAIR_MODELS[name](pixels, as_form(form, ids), mask),
                          "pixel_values", "input_ids", "attention_mask", "batch")
    if out is not None:
        finite(out.loss, out.logits_per_image)


@given(st.integers(0, 4), st.integers(1, 8), st.sampled_from([1.0, 0.0, -1.0, math.nan, math.inf, 1e30]),
       st.sampled_from([0.0, -10.0, math.nan, -math.inf]))
def test_contrastive_losses(b, d, scale, bias):
    x = torch.nn.functional.normalize(torch.randn(b, d), dim=-1)
    for fn in (lambda: ClipLoss()(x, x, scale), lambda: SigLipLoss()(x, x, scale, bias)):
        loss = clear_or_ok(fn, "image_features", "logit_scale", "logit_bias")
        if loss is not None and abs(scale) < 1e6:
            finite(loss)


# --------------------------------------------------------------------------- configs

WILD = st.one_of(
    st.integers(-2, 9), st.floats(allow_nan=True, allow_infinity=True, width=32), st.none(), st.booleans(),
    st.text(max_size=3), st.sampled_from(["gelu", "swiglu", "mean", "cls", "rope", "rmsnorm", "map", "none"]),
)
PLAUSIBLE = {int: st.integers(1, 8), float: st.floats(0.01, 0.9), bool: st.booleans(),
             str: st.sampled_from(["gelu", "swiglu", "quick_gelu", "mean", "cls", "eos", "last", "rope", "learned",
                                   "rmsnorm", "layernorm", "map", "none", "sincos", "tokens", "pooled", "cpu",
                                   "skip", "fp32", "always"])}


@st.composite
def config_kwargs(draw, cls, skip=()):
    """1-3 fields set to a plausible value of their type (2 times in 3) or to anything at all."""
    hints = {f.name: f.type for f in dataclasses.fields(cls) if f.name not in skip}
    names = draw(st.lists(st.sampled_from(sorted(hints)), min_size=1, max_size=3, unique=True))
    kinds = {"int": int, "float": float, "bool": bool, "str": str}
    out = {}
    for n in names:
        plausible = PLAUSIBLE.get(kinds.get(str(hints[n]).split(" |")[0]))
        out[n] = draw(WILD if plausible is None or draw(st.integers(0, 2)) == 0 else plausible)
    return out


def _build_and_run(cls, cfg):
    """A config that constructs must give a model that runs on valid input (finite output)."""
    if cls is ViTConfig:
        out = ViT(cfg).eval()(torch.rand(2, cfg.channels, cfg.image_size, cfg.image_size))
        finite(out.last_hidden_state)
    elif cls is TextConfig:
        ids = torch.randint(0, cfg.vocab_size, (2, min(cfg.context_length, 5)))
        finite(TextTransformer(cfg).eval()(ids).pooled)
    else:
        ids = torch.randint(0, cfg.vocab_size, (2, min(cfg.context_length, 5)))
        context = torch.randn(2, 3, cfg.context_dim or cfg.dim) if cfg.cross_attn_every else None
        out = DecoderLM(cfg).eval()(ids, labels=ids if ids.shape[1] > 1 else None, context=context)
        finite(out.logits if out.loss is None else out.loss)


LLAVA = Llava(LlavaConfig.from_preset("tiny")).eval()


@given(st.integers(0, 3), st.integers(0, 3), st.integers(0, 2), st.integers(0, 100), st.sampled_from([48, 32]),
       st.booleans())
@example(3, 3, 0, 100, 48, True)  # 3 x 64 image tokens + 102 text tokens: past the context of 256
@example(1, 1, 1, 0, 48, True)    # one placeholder too many: a partial image
def test_llava_placeholders_images_and_context(placeholders, n_images, partial, text, size, with_pixels):
    """Placeholders vs images, a partial image, wrong sizes, empty batches, context overflow: run or say which."""
    ids = torch.tensor([[2] + [5] * (placeholders * LLAVA.tokens_per_image + partial) + [7] * (1 + text)])
    pixels = torch.rand(n_images, 3, size, size) if with_pixels else None
    with torch.no_grad():
        out = clear_or_ok(lambda: LLAVA(ids, pixels), "input_ids", "pixel_values")
    if out is not None:
        finite(out.logits)
        assert out.logits.shape[:2] == ids.shape and placeholders == (n_images if with_pixels else 0) and not partial


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 3), st.integers(0, 3), st.booleans(), st.integers(-1, 3), st.integers(-1, 4))
def test_llava_chat_and_replies(placeholders, n_images, ends_with_assistant, batch_size, max_new_tokens):
    """chat: placeholders vs images, a conversation that ends with the assistant, bad token budgets;
    generate_replies: prompts vs images and the batch size. Each runs or says which argument is wrong."""
    from vlm_primer.backbones.inference import chat, generate_replies

    messages = [{"role": "user", "content": "<image>" * placeholders + "what is this?"}]
    if ends_with_assistant:
        messages.append({"role": "assistant", "content": "a star."})
    images = torch.rand(n_images, 3, 48, 48) if n_images else None
    reply = clear_or_ok(lambda: chat(LLAVA, messages, images, max_new_tokens=max_new_tokens), "<image>",
                        "assistant turn", "max_new_tokens")
    if reply is not None:
        assert isinstance(reply, str) and placeholders == n_images and not ends_with_assistant
    replies = clear_or_ok(lambda: generate_replies(LLAVA, ["a?", "b?"], torch.rand(max(n_images, 1), 3, 48, 48),
                                                   batch_size=batch_size, max_new_tokens=2),
                          "one image per prompt", "batch_size")
    if replies is not None:
        assert len(replies) == 2 and max(n_images, 1) == 2 and batch_size >= 1


@given(st.one_of(st.text(max_size=40), st.none(), st.integers()), st.one_of(st.text(max_size=40), st.none()))
def test_judge_scores_any_text(answer, reference):
    """The judge scores any pair of strings in [1, 10] (10 for an answer against itself) and names a non-string."""
    from vlm_primer.evaluation.judge import judge_score, relative_score

    score = clear_or_ok(lambda: judge_score(answer, reference), "answer", "reference")
    if score is not None:
        assert 1.0 <= score <= 10.0 and judge_score(reference, reference) == 10.0
        assert clear_or_ok(lambda: relative_score([answer], [reference, reference]), "as many answers") is None


@pytest.mark.parametrize("cls", [ViTConfig, TextConfig, DecoderConfig])
@given(data=st.data())
def test_tower_configs(cls, data):
    kw = data.draw(config_kwargs(cls))
    base = dict(dim=16, heads=2, depth=1, image_size=16, patch_size=8) if cls is ViTConfig else \
        dict(dim=16, heads=2, depth=1, vocab_size=50, context_length=8, eos_token_id=3, pad_token_id=0)
    if cls is DecoderConfig:
        base.pop("eos_token_id")
    cfg = clear_or_ok(lambda: cls(**{**base, **kw}), cls.__name__, *kw)
    if cfg is not None:
        with torch.no_grad():
            clear_or_ok(lambda: _build_and_run(cls, cfg), *kw)


@pytest.mark.parametrize("cls", [CLIPConfig, SigLIPConfig, LlipConfig, LlavaConfig, LlavaNextConfig, WorldConfig,
                                 TrainConfig, QFormerConfig, Blip2Config, InstructBlipConfig, FlamingoConfig])
@given(data=st.data())
def test_other_configs(cls, data):
    kw = data.draw(config_kwargs(cls, skip=("vision", "text", "qformer")))
    clear_or_ok(lambda: cls(**kw), cls.__name__, *kw)


# --------------------------------------------------------------------------- text and world

TOK = Tokenizer.load()


@given(st.one_of(st.text(max_size=40), st.text(alphabet="abcdefghij <>image", max_size=40), st.integers(),
                 st.none(), st.lists(st.integers(), max_size=3)),
       st.booleans(), st.booleans())
def test_tokenizer(text, add_bos, add_eos):
    ids = clear_or_ok(lambda: TOK.encode(text, add_bos=add_bos, add_eos=add_eos), "text")
    if ids is not None:
        assert all(0 <= i < TOK.vocab_size for i in ids)
        assert isinstance(TOK.decode(ids), str)


@given(st.integers(0, 2**32), st.one_of(st.integers(-1, 9), st.tuples(st.integers(-1, 9), st.integers(-1, 9)),
                                        st.none(), st.text(max_size=2)),
       st.sampled_from([16, 32, 64, 13, 0, -4]), st.sampled_from(["objects", "relation", "count", "bogus", 3]))
def test_world_generator(seed, num_objects, size, kind):
    rng = np.random.default_rng(seed)
    scene = clear_or_ok(lambda: sample_scene(rng, WorldConfig(max_objects=4), num_objects=num_objects), "num_objects")
    if scene is None:
        return
    image = clear_or_ok(lambda: render(scene, size=size), "size")
    if image is not None:
        assert image.shape == (3, size, size) and 0 <= float(image.min()) <= float(image.max()) <= 1
    clear_or_ok(lambda: caption_scene(scene, rng, kind=kind), "kind")


@given(st.sampled_from(["train", "val", "test", "bogus", 3]), st.sampled_from([1, 5, 0, -2, 2.5]),
       st.one_of(st.integers(1, 4), st.tuples(st.integers(0, 4), st.integers(0, 9))),
       st.sampled_from(["objects", "random", "relation", "nope"]), st.sampled_from([None, 1, 4, 100, 0]))
def test_caption_dataset(split, size, num_objects, kind, distinct):
    ds = clear_or_ok(lambda: ShapesCaptionDataset(split, size=size, num_objects=num_objects, caption_kind=kind,
                                                  distinct=distinct, statements=False),
                     "split", "size", "num_objects", "caption_kind", "distinct", "compositions")
    if ds is not None:
        item = ds[len(ds) - 1]
        assert item["image"].shape == (3, 64, 64) and isinstance(item["caption"], str)


@given(st.integers(1, 4), st.integers(1, 4), st.sampled_from([None, "short", "floats", "out_of_range", "ok"]),
       st.sampled_from([1.0, math.nan, math.inf]), st.sampled_from([1, (1, 5), 0, (2, "a")]))
def test_recall_at_k(n_img, n_txt, mapping, poison, ks):
    sim = torch.randn(n_img, n_txt)
    sim[0, 0] *= poison
    t2i = {None: None, "short": [0] * max(n_txt - 1, 0), "floats": [0.5] * n_txt, "out_of_range": [n_img] * n_txt,
           "ok": [j % n_img for j in range(n_txt)]}[mapping]
    out = clear_or_ok(lambda: recall_at_k(sim, t2i, ks), "similarity", "text_to_image", "K", "images", "ks")
    if out is not None:
        assert all(0.0 <= v <= 1.0 for v in out.values())


@given(st.sampled_from(["vqa", "pope", "instruct"]), st.sampled_from(["train", "val", "compositional", "nope"]),
       st.sampled_from([1, 3, 0, "2"]), st.sampled_from([None, (1, 1), (2, 4), 0]),
       st.sampled_from([None, ["color"], ["count", "relation"], [], ["mood"], "color"]))
def test_question_and_instruction_datasets(kind, split, size, num_objects, types):
    from vlm_primer.world import ShapesInstructDataset, ShapesPOPEDataset, ShapesVQADataset

    def build():
        if kind == "vqa":
            return ShapesVQADataset(split, size, num_objects=num_objects, **({} if types is None else {"qtypes": types}))
        if kind == "pope":
            return ShapesPOPEDataset(split, size, num_objects=num_objects, setting="popular", stats_size=50)
        return ShapesInstructDataset(split, size, num_objects=num_objects,
                                     **({} if types is None else {"kinds": types}))

    ds = clear_or_ok(build, "split", "size", "num_objects", "qtypes", "kinds", "compositions")
    if ds is not None and len(ds):
        item = ds[len(ds) - 1]
        assert item["image"].shape == (3, 64, 64)
        assert isinstance(item.get("question", item.get("text")), str)


# --------------------------------------------------------------------------- Q-Former, BLIP-2, Flamingo (05b)

def _qformer_family():
    from vlm_primer.backbones.blip2 import Blip2Stage1, InstructBlip, InstructBlipConfig
    from vlm_primer.backbones.flamingo import Flamingo, FlamingoConfig

    torch.manual_seed(0)
    stage1 = Blip2Stage1(QFormer(QFormerConfig.from_preset("tiny"))).eval()
    return stage1, InstructBlip(InstructBlipConfig.from_preset("tiny")).eval(), \
        Flamingo(FlamingoConfig.from_preset("tiny")).eval()

STAGE1, INSTRUCTBLIP, FLAMINGO = _qformer_family()


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([0, 1, 2, 3]), st.sampled_from([1, 5, 0]), st.sampled_from([64, 48, 0]), st.data())
def test_qformer_stage1_any_batch(batch, tokens, width, data):
    """Stage 1 on image features and captions: runs (finite losses) or names what is wrong."""
    src, ids = data.draw(token_batches(STAGE1.qformer.cfg.vocab_size, 64, b=batch))
    image = torch.randn(batch, tokens, width) if data.draw(st.booleans()) else torch.randn(max(batch - 1, 0), 4, 64)
    ids_in = ids.numpy() if src == "numpy" else ids.tolist() if src == "list" else ids
    with torch.no_grad():
        out = clear_or_ok(lambda: STAGE1(image, ids_in), "image", "input_ids", "hard negatives", "images but", "texts")
    if out is not None:
        finite(out["loss"], out["sim"])


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2), st.integers(0, 3), st.sampled_from([None, 1, 2, 3]), st.booleans(), st.data())
def test_instructblip_placeholders_and_instructions(placeholders, n_images, n_instructions, extra, data):
    """InstructBLIP: placeholders vs images, instructions vs images (one row each), bad instruction ids."""
    ids = torch.tensor([[2] + [5] * (placeholders * INSTRUCTBLIP.tokens_per_image + int(extra)) + [7, 8]])
    pixels = torch.rand(n_images, 3, 48, 48) if n_images else None
    instruction = None
    if n_instructions is not None:
        _, instruction = data.draw(token_batches(INSTRUCTBLIP.cfg.qformer.vocab_size, 8, b=n_instructions))
    with torch.no_grad():
        out = clear_or_ok(lambda: INSTRUCTBLIP(ids, pixels, qformer_input_ids=instruction), "input_ids",
                          "pixel_values", "qformer_input_ids", "images but")
    if out is not None:
        finite(out.logits)
        assert placeholders == n_images and not extra and n_images in (0, n_instructions)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 2), st.integers(0, 3), st.sampled_from([None, "ok", "columns", "rows", "batch"]),
       st.sampled_from([48, 32]), st.booleans())
def test_flamingo_images_and_media_masks(batch, n_images, mask_kind, size, five_d):
    """Flamingo: any number of images per sequence, a media mask of the wrong shape, wrong image sizes."""
    ids = torch.randint(6, 800, (batch, 10))
    ids[:, 1] = 5
    pixels = torch.rand(batch, n_images, 3, size, size) if five_d else torch.rand(batch, 3, size, size)
    n = n_images if five_d else 1
    mask = {None: None, "ok": torch.ones(batch, 10, n), "columns": torch.ones(batch, 10, n + 1),
            "rows": torch.ones(batch, 11, n), "batch": torch.ones(batch + 1, 10, n)}[mask_kind]
    with torch.no_grad():
        out = clear_or_ok(lambda: FLAMINGO(ids, pixels, image_attention_mask=mask), "pixel_values",
                          "image_attention_mask")
    if out is not None:
        finite(out.logits)
        assert size == 48 and n >= 1 and mask_kind in (None, "ok")


@given(st.sampled_from(["ok", "2d", "list", "empty", "int", "4ch", "tiny", "wide"]), st.booleans())
def test_anyres_view_any_image(kind, squeeze):
    """AnyRes tiles of any image: the base view and the tiles, or a message naming the image."""
    from vlm_primer.backbones import anyres_view

    cfg = LlavaNextConfig.from_preset("tiny")
    image = {"ok": lambda: torch.rand(3, 96, 96), "2d": lambda: torch.rand(96, 96), "list": lambda: [[0.5]],
             "empty": lambda: torch.rand(3, 0, 48), "int": lambda: torch.zeros(3, 48, 48, dtype=torch.uint8),
             "4ch": lambda: torch.rand(4, 48, 48), "tiny": lambda: torch.rand(3, 1, 1),
             "wide": lambda: torch.rand(3, 20, 150)}[kind]()
    out = clear_or_ok(lambda: anyres_view(image, cfg, squeeze=squeeze), "image")
    if out is not None:
        tiles, size = out
        assert tiles.shape[1:] == (3, 48, 48) and kind in ("ok", "tiny", "wide")
        assert size == ((48, 48) if squeeze else tuple(image.shape[1:]))
        finite(tiles)


@given(st.sampled_from(["scene", "str", "none"]), st.sampled_from(["rng", 3]), st.sampled_from([1, 2, 3, 0, 2.0]),
       st.sampled_from([48, 0, 16]))
def test_mosaics_any_input(scene_kind, rng_kind, grid, cell):
    """spread_scene / render_mosaic name a non-scene, a bad generator, grid and cell size."""
    from vlm_primer.world.mosaic import render_mosaic, spread_scene

    rng = np.random.default_rng(0)
    scene = {"scene": sample_scene(rng, WorldConfig(max_objects=4), num_objects=1), "str": "a scene",
             "none": None}[scene_kind]
    moved = clear_or_ok(lambda: spread_scene(scene, rng if rng_kind == "rng" else rng_kind, grid),
                        "scene", "rng", "grid", "mosaic")
    if moved is not None:
        image = clear_or_ok(lambda: render_mosaic(moved, cell, grid), "size")
        if image is not None:
            assert image.shape == (3, grid * cell, grid * cell)


@given(st.sampled_from(["ok", "1d", "wide", "nan", "one"]), st.sampled_from([None, "ok", "shape", "list"]))
def test_hard_negatives_any_scores(kind, same_kind):
    from vlm_primer.backbones.blip2 import hard_negatives

    scores = {"ok": torch.randn(3, 3), "1d": torch.randn(3), "wide": torch.randn(3, 2),
              "nan": torch.full((3, 3), math.nan), "one": torch.randn(1, 1)}[kind]
    same = {None: None, "ok": torch.zeros(3, 3, dtype=torch.bool), "shape": torch.zeros(2, 2), "list": [[0]]}[same_kind]
    neg = clear_or_ok(lambda: hard_negatives(scores, same), "scores", "same", "batch of at least 2")
    if neg is not None:
        assert (neg != torch.arange(3)).all()


@given(st.sampled_from(["qwen", "perceiver"]), st.sampled_from([(2, 16, 8), (2, 5, 8), (2, 16, 9), (16, 8), (0, 16, 8)]))
def test_resamplers_any_features(kind, shape):
    from vlm_primer.backbones.resamplers import PerceiverResampler, QwenResampler

    model = QwenResampler(8, 16, 4) if kind == "qwen" else PerceiverResampler(8, 1, 4, 2, 4)
    out = clear_or_ok(lambda: model(torch.randn(*shape)), "features", "square grids")
    if out is not None:
        finite(out)
        assert out.shape[:2] == (shape[0], 4)


@given(st.sampled_from(["ok", "str", "list"]), st.sampled_from(["next", None, "llava"]),
       st.sampled_from([0.5, 0, 1, math.nan, "a", 2, True]), st.sampled_from([0, 3, -1, 1.5]))
def test_anyres_dataset_any_arguments(questions, cfg_kind, squeeze, seed):
    from vlm_primer.backbones.data import AnyResVQADataset
    from vlm_primer.world import ShapesVQADataset

    qs = {"ok": ShapesVQADataset("train", 2), "str": "questions", "list": [1, 2]}[questions]
    cfg = {"next": LlavaNextConfig.from_preset("tiny"), None: None, "llava": LlavaConfig.from_preset("tiny")}[cfg_kind]
    ds = clear_or_ok(lambda: AnyResVQADataset(qs, cfg, squeeze=squeeze, seed=seed), "squeeze", "cfg", "questions",
                     "seed")
    if ds is not None:
        item = clear_or_ok(lambda: ds[1], "questions[1]")
        assert (item is None) == (questions == "list")


@given(st.sampled_from(["ok", "str", "short", "list"]), st.sampled_from([0, 2, -1, 1.5, True]),
       st.sampled_from([0, 3, -1, "a"]))
def test_interleaved_dataset_any_arguments(questions, max_shots, seed):
    from vlm_primer.backbones.fewshot import InterleavedVQADataset
    from vlm_primer.world import ShapesVQADataset

    qs = {"ok": ShapesVQADataset("train", 4), "str": "questions", "short": ShapesVQADataset("train", 2),
          "list": [{"image": torch.zeros(3, 8, 8), "question": "q", "answer": "a"}] * 4}[questions]
    ds = clear_or_ok(lambda: InterleavedVQADataset(qs, max_shots=max_shots, seed=seed), "max_shots", "seed",
                     "questions", "cannot supply")
    if ds is not None:
        item = ds[len(ds) - 1]
        assert item["image"].shape[0] == max_shots + 1 and len(item["input_ids"]) == len(item["target"])


@given(st.sampled_from([(2, 5, 16), (1, 3, 16), (2, 5, 8), (2, 16)]), st.sampled_from([1, 3, 0, -1, True]))
def test_itg_captions_any_features(shape, max_new):
    from vlm_primer.backbones import Blip2Stage1, QFormer, QFormerConfig
    from vlm_primer.backbones.blip2 import itg_captions

    stage1 = Blip2Stage1(QFormer(QFormerConfig(dim=16, depth=2, heads=2, mlp_dim=32, num_queries=2, vision_dim=16,
                                               vocab_size=20, max_positions=8, embed_dim=8)))
    out = clear_or_ok(lambda: itg_captions(stage1, torch.randn(*shape), 2, 3, max_new), "image", "max_new_tokens")
    if out is not None:
        assert out.shape[0] == shape[0] and 1 <= out.shape[1] <= max_new and out.dtype == torch.long


@given(st.lists(st.tuples(st.lists(st.text(alphabet="ab .", max_size=8), max_size=3),
                          st.text(alphabet="ab .", max_size=8)), max_size=4))
def test_caption_scores_any_captions(pairs):
    from vlm_primer.evaluation import caption_scores

    refs, cands = [r for r, _ in pairs], [c for _, c in pairs]
    out = clear_or_ok(lambda: caption_scores(refs, cands), "no captions", "references[")
    if out is not None:
        assert all(math.isfinite(v) and v >= 0 for v in out.values()) and out["BLEU-1"] <= 1 + 1e-9


# ---------------------------------------------------------------- chapter 07: the harness and its metrics

def _random_matcher(images, texts):
    from vlm_primer.evaluation.harness import _check_pairs

    _check_pairs(images, texts)
    return torch.rand(len(texts))


@settings(max_examples=25)
@given(st.sampled_from(["aro", "winoground", "dci", "pug", "zeroshot", "vqa", "bogus", 7]),
       st.sampled_from([1, 2, 0, -1, 1.5, True, None]), st.sampled_from([0, 3, -1, 2.0]), st.booleans())
def test_evaluate_any_request(suite, n, seed, can_match):
    from vlm_primer.evaluation import EvalModel, evaluate

    model = EvalModel("random", match=_random_matcher if can_match else None,
                      answer=None if can_match else (lambda images, qs, **kw: ["yes"] * len(qs)))
    out = clear_or_ok(lambda: evaluate(model, suite, n=n if n is not None else 2, seed=seed),
                      "suite", "n must", "seed", "'match'", "'answer'")
    if out is not None:
        assert out["ci95"][0] <= out["score"] <= out["ci95"][1] and math.isfinite(out["blind"]["score"])


class _TableCLIP(torch.nn.Module):
    """A CLIP-like model for the CLIPScore properties: the image's first 4 values, a constant text embedding."""

    def encode_image(self, x):
        return x.flatten(1)[:, :4]

    def encode_text(self, ids, attention_mask=None):
        return torch.ones(len(ids), 4)


def _one_token(texts, max_length=None):
    return {"input_ids": torch.zeros(len(texts), 1, dtype=torch.long),
            "attention_mask": torch.ones(len(texts), 1, dtype=torch.long)}


@given(st.integers(0, 3), st.integers(0, 3), st.sampled_from([2.5, 0.0, -1.0]), st.booleans())
def test_clip_score_any_batch(n_img, n_txt, w, three_d):
    from vlm_primer.evaluation import clip_score

    images = torch.rand(n_img, 3, 2, 2) if not three_d else torch.rand(n_img, 2, 2)
    out = clear_or_ok(lambda: clip_score(_TableCLIP(), _one_token, images, ["a"] * n_txt, w=w),
                      "images", "captions", "w")
    if out is not None:
        finite(out)
        assert out.shape == (n_img,) and (out >= 0).all()


@given(st.integers(0, 3), st.integers(0, 3), st.sampled_from([2, 256, 0, -1, 1.5, True]), st.booleans())
def test_pair_cosines_any_batch(n_img, n_txt, batch_size, three_d):
    from vlm_primer.evaluation import pair_cosines

    images = torch.rand(n_img, 3, 2, 2) if not three_d else torch.rand(n_img, 2, 2)
    out = clear_or_ok(lambda: pair_cosines(_TableCLIP(), _one_token, images, ["a"] * n_txt, batch_size=batch_size),
                      "images", "captions", "batch_size")
    if out is not None:
        finite(out)
        assert out.shape == (n_img,) and (out.abs() <= 1 + 1e-5).all()


@given(st.sampled_from([0.0, 0.3, 0.99, 1.0, -0.5, "0.3", True]), st.sampled_from([0.5, 0.95, 2.0, -1, "x"]),
       st.sampled_from([None, "aligned", "conflicting", "both"]), st.sampled_from([1.0, 0.0, -1.0, "2"]))
def test_chapter07_sampler_arguments(p, correlation, force, exponent):
    from vlm_primer.evaluation.bias import SpuriousCaptionDataset
    from vlm_primer.evaluation.frequency import zipf_weights
    from vlm_primer.evaluation.memorization import text_randomization

    collate = lambda s: {"input_ids": torch.arange(6).view(1, 6), "attention_mask": torch.ones(1, 6)}  # noqa: E731
    masked = clear_or_ok(lambda: text_randomization(collate, p, 4), "p must")
    if masked is not None:
        assert masked([{}])["input_ids"].shape == (1, 6)
    ds = clear_or_ok(lambda: SpuriousCaptionDataset("test", 2, WorldConfig(image_size=32), correlation=correlation,
                                                    force=force), "correlation", "force")
    if ds is not None:
        assert ds[0]["image"].shape == (3, 32, 32)
    w = clear_or_ok(lambda: zipf_weights([("red", "circle"), ("blue", "square")], exponent), "exponent")
    if w is not None:
        assert sum(w.values()) == pytest.approx(1)


@given(st.sampled_from(["shape", "color", "composition", "texture", 3]), st.sampled_from([0.0, 2.0, -1.0, "1", True]),
       st.sampled_from([0, 2, 5, -1, 100, 1.5]), st.sampled_from([0.0, 0.4, 1.0, 1.5, -0.1, "x", True]))
def test_chapter06_data_arguments(concept, exponent, tail, fraction):
    from vlm_primer.recipes import ConceptFrequencyDataset, keep_random, keep_top

    world = WorldConfig(image_size=32, sizes=("large",))
    ds = clear_or_ok(lambda: ConceptFrequencyDataset(4, world, concept=concept, exponent=exponent, tail=tail),
                     "concept", "exponent", "tail")
    if ds is not None:
        assert ds[0]["image"].shape == (3, 32, 32) and sum(ds.weights.values()) == pytest.approx(1)
        assert all(ds.weights[k] > 0 for k in list(ds.weights)[:len(ds.weights) - tail])
    keep = clear_or_ok(lambda: keep_top([0.3, 0.1, 0.2, 0.5], fraction), "fraction")
    if keep is not None:
        assert sum(keep) == round(fraction * 4) and keep == sorted(keep, key=lambda k: 0) and len(keep) == 4
        assert sum(clear_or_ok(lambda: keep_random(4, fraction), "fraction")) == sum(keep)


@given(st.sampled_from([1, 7, 0, -3, 2.5, True]), st.sampled_from([1e6, 1e9, 0, -1.0, "1e9"]),
       st.sampled_from(["A100-80GB", "V100", "TPU", 3]), st.sampled_from([0.4, 1.0, 0.0, 1.5, "0.4"]),
       st.sampled_from([0.0, 0.5, 0.75, 1.0, -0.2]), st.sampled_from(["bf16", "fp32", "fp16", "int8"]))
def test_chapter06_compute_arguments(batch, samples, gpu, mfu, mask_ratio, precision):
    from vlm_primer.contrastive import CLIPConfig
    from vlm_primer.recipes import budget

    b = clear_or_ok(lambda: budget(CLIPConfig.from_preset("tiny"), batch, samples, gpu=gpu, mfu=mfu,
                                   mask_ratio=mask_ratio, precision=precision),
                    "batch", "samples_seen", "GPU", "mfu", "mask_ratio", "precision", "bf16")
    if b is not None:
        assert b.flops > 0 and b.gpu_hours > 0 and b.gpus >= 1 and str(b)


@given(st.lists(st.floats(-0.5, 1.5, allow_nan=False), min_size=4, max_size=4),
       st.lists(st.floats(-0.5, 1.5, allow_nan=False), min_size=4, max_size=4), st.sampled_from([1, 7, 32, 0, -2, 2.5]))
def test_chapter06b_box_arguments(a, b, num_bins):
    from vlm_primer.recipes.grounding import (box_to_location_tokens, generalized_box_iou, location_tokens_to_box,
                                              referring_accuracy_by_kind)

    giou = clear_or_ok(lambda: generalized_box_iou(torch.tensor([a]), torch.tensor([b])), "box")
    if giou is not None:
        assert giou.shape == (1, 1) and (giou.isnan() | ((giou >= -1) & (giou <= 1))).all()
    tokens = clear_or_ok(lambda: box_to_location_tokens(torch.tensor(a), num_bins), "box", "num_bins")
    if tokens is not None:
        back = location_tokens_to_box(tokens, num_bins)
        assert back.shape == (4,) and ((back - torch.tensor(a)).abs() <= 1 / num_bins + 1e-6).all()
    kinds = [["attribute", "relation"], ["relation"], "ab", []][int(num_bins) % 4]
    pair = torch.tensor([a, b])
    scores = clear_or_ok(lambda: referring_accuracy_by_kind(pair, pair.flip(0), kinds), "box", "kinds")
    if scores is not None:
        assert set(scores) == {"all", *kinds} and all(0 <= v <= 1 for v in scores.values())


@given(st.sampled_from([1, 4, 0, -1, 2.5]), st.sampled_from([8.0, 1.0, 0.0, -4.0, "8"]),
       st.sampled_from(["fc1", ["fc1", "fc2"], "nope", "act"]), st.sampled_from([False, True]))
def test_chapter06b_lora_arguments(r, alpha, targets, use_dora):
    from vlm_primer.recipes.peft import apply_lora, trainable_parameters

    from collections import OrderedDict

    model = torch.nn.Sequential(OrderedDict(fc1=torch.nn.Linear(6, 5), act=torch.nn.GELU(), fc2=torch.nn.Linear(5, 3)))
    out = clear_or_ok(lambda: apply_lora(model, targets, r, alpha, use_dora=use_dora), "r", "alpha", "target",
                      "Linear")
    if out is not None:
        finite(out(torch.randn(2, 6)))
        assert 0 < trainable_parameters(out) < sum(p.numel() for p in out.parameters())  # the base stays frozen


@given(st.sampled_from([0.1, 2.0, 0.0, -1.0, float("nan")]), st.sampled_from([0.0, 0.2, 0.5, 1.0, -0.1]),
       st.sampled_from(["sigmoid", "robust", "hinge", "ipo", "kto"]), st.sampled_from([3, 0]))
def test_chapter06b_dpo_arguments(beta, smoothing, loss_type, n):
    from vlm_primer.recipes.alignment import dpo_loss

    logps = [torch.randn(n) for _ in range(4)]
    lengths = torch.full((n,), 4) if loss_type == "ipo" else None  # IPO normalises by length, the others refuse it
    out = clear_or_ok(lambda: dpo_loss(*logps, beta, smoothing, loss_type=loss_type, chosen_lengths=lengths,
                                       rejected_lengths=lengths), "beta", "label_smoothing", "loss_type", "empty",
                      "policy_chosen")
    if out is not None:
        finite(*out)
        assert all(t.shape == (n,) for t in out)


@given(st.sampled_from([1, 3, 0]), st.sampled_from([(4,), (4, 2), (2, 4)]), st.sampled_from([1.0, 10.0, 0.0]),
       st.sampled_from([None, "all", "none", "float"]))
def test_chapter06b_negclip_arguments(b, neg_shape, scale, valid):
    from vlm_primer.recipes.negatives import negclip_loss

    unit = lambda *s: torch.nn.functional.normalize(torch.randn(*s), dim=-1)  # noqa: E731
    img, txt = unit(b, 4), unit(b, 4)
    neg = unit(b, *neg_shape) if len(neg_shape) == 1 else unit(b * neg_shape[0] // 4 or 1, neg_shape[1])
    mask = {None: None, "all": torch.ones(b, dtype=torch.bool), "none": torch.zeros(b, dtype=torch.bool),
            "float": torch.ones(b)}[valid]
    out = clear_or_ok(lambda: negclip_loss(img, txt, neg, scale, mask), "embeds", "one shape", "negative_valid",
                      "empty")
    if out is not None:
        finite(out)
        assert out >= 0


_PROMPT_CLIP = []


def _prompt_clip():
    """One tiny frozen CLIP (the zoo's towers, random weights) shared by the prompt-tuning properties below."""
    if not _PROMPT_CLIP:
        from vlm_primer.zoo.recipes import contrastive_config

        torch.manual_seed(0)
        _PROMPT_CLIP.append(CLIP(contrastive_config("clip", TOK)).eval())
    return _PROMPT_CLIP[0]


PROMPT_NAMES = st.sampled_from([["circle", "red square"], ["big green triangle"], ["a", "b", "c"]] * 2
                               + [[], "circle", ["circle", " "], ["circle", 7], ["red circle " * 8]])


@given(st.sampled_from([None, None, 1, 4, 4, 14, 0, -1, 2.5, True]), st.sampled_from([False, True, False, True, 1]),
       st.sampled_from(["a photo of a", "a photo of a", None, None, "a", "", 3]), PROMPT_NAMES)
def test_chapter06b_coop_arguments(n_ctx, class_specific, init, class_names):
    from vlm_primer.recipes.prompts import CoOp, trainable_parameters

    clip = _prompt_clip()
    coop = clear_or_ok(lambda: CoOp(clip, class_names, TOK, n_ctx=n_ctx, class_specific=class_specific, init=init),
                       "n_ctx", "class_names", "class_specific", "init")
    if coop is not None:
        logits = coop(torch.randn(2, 3, 48, 48))
        finite(logits)
        assert logits.shape == (2, len(class_names))
        per_class = len(class_names) if class_specific else 1
        assert trainable_parameters(coop) == per_class * coop.n_ctx * clip.cfg.text.dim


IMAGE_CASES = st.sampled_from([(2, 3, 48, 48), (1, 3, 48, 48), (0, 3, 48, 48), (2, 3, 32, 32), (2, 1, 48, 48),
                               (3, 48, 48), "int"])


@given(st.sampled_from([0, 1, 4, -1, 2.5, True]), st.sampled_from([False, True, "yes"]), IMAGE_CASES,
       st.sampled_from([(3, 64), (1, 64), (3, 10), (0, 64), (64,), "nan"]))
def test_chapter06b_vpt_arguments(n_prompts, deep, image_shape, embeds_shape):
    from vlm_primer.recipes.prompts import VPT, trainable_parameters

    clip = _prompt_clip()
    images = torch.zeros(2, 3, 48, 48, dtype=torch.long) if image_shape == "int" else torch.randn(*image_shape)
    embeds = torch.full((3, 64), float("nan")) if embeds_shape == "nan" else torch.randn(*embeds_shape)
    vpt = clear_or_ok(lambda: VPT(clip, n_prompts=n_prompts, deep=deep), "n_prompts", "deep")
    if vpt is not None:
        layers = clip.cfg.vision.depth if deep else 1
        assert trainable_parameters(vpt) == layers * n_prompts * clip.cfg.vision.dim
        logits = clear_or_ok(lambda: vpt(images, embeds), "pixel_values", "class_embeds")
        if logits is not None:
            finite(logits)
            assert logits.shape == (images.shape[0], embeds.shape[0])


@given(st.sampled_from([0.0, 0.2, 1.0, -0.1, 1.5, float("nan"), "0.2", True]), st.sampled_from([1, 4, 64, 0, 65, 2.5]),
       st.sampled_from([None, 0.0, 0.2, 2.0]), IMAGE_CASES)
def test_chapter06b_clip_adapter_arguments(alpha, reduction, text_alpha, image_shape):
    from vlm_primer.recipes.prompts import CLIPAdapter, trainable_parameters

    clip = _prompt_clip()
    adapter = clear_or_ok(lambda: CLIPAdapter(clip, alpha=alpha, reduction=reduction, text_alpha=text_alpha),
                          "alpha", "reduction", "text_alpha")
    if adapter is not None:
        d = clip.cfg.embed_dim
        assert trainable_parameters(adapter) == 2 * d * (d // reduction) * (1 + (text_alpha is not None))
        images = torch.zeros(2, 3, 48, 48, dtype=torch.long) if image_shape == "int" else torch.randn(*image_shape)
        logits = clear_or_ok(lambda: adapter(images, torch.randn(4, d)), "pixel_values")
        if logits is not None:
            finite(logits)
            assert logits.shape == (images.shape[0], 4)


@given(PROMPT_NAMES, st.sampled_from(["a photo of a {}", "{}", "a photo", 3]), IMAGE_CASES)
def test_chapter06b_zero_shot_logits_arguments(class_names, template, image_shape):
    from vlm_primer.recipes.prompts import class_text_embeddings, zero_shot_logits

    clip = _prompt_clip()
    embeds = clear_or_ok(lambda: class_text_embeddings(clip, TOK, class_names, template), "class_names", "template")
    if embeds is not None:
        assert embeds.shape == (len(class_names), clip.cfg.embed_dim)
        torch.testing.assert_close(embeds.norm(dim=-1), torch.ones(len(class_names)))
        images = torch.zeros(2, 3, 48, 48, dtype=torch.long) if image_shape == "int" else torch.randn(*image_shape)
        logits = clear_or_ok(lambda: zero_shot_logits(clip, images, embeds), "pixel_values")
        if logits is not None:
            finite(logits)
            assert logits.shape == (images.shape[0], len(class_names))


# --------------------------------------------------------------------------- text-rich Shapes World (06b, survey §3.5)


@given(st.integers(0, 2**32), st.sampled_from([64, 128, 32]), st.sampled_from([None, None, 1, 3, 8, 0, -2, 2.5, 200]),
       st.sampled_from([(1, 2), (1, 2), 0, 2, (0, 1), (3, 1), 9, "1"]),
       st.sampled_from([(0, 1), (0, 1), 0, 2, (1, 3), -1]),
       st.sampled_from(["default", "default", "words", "letters", "empty", "lower", "str", "one"]))
def test_text_scene_sampler_and_renderer(seed, size, text_size, num_texted, num_signs, vocab):
    """sample_text_scene names a bad text size, count or vocabulary; a scene renders deterministically inside [0, 1]
    with its texts distinct, from the vocabulary, in the asked numbers, and read back whole by ocr_targets."""
    from vlm_primer.world.text_rich import (DEFAULT_VOCABULARY, LETTERS, WORDS, ocr_targets, render_text_scene,
                                            sample_text_scene)

    vocabulary = {"default": DEFAULT_VOCABULARY, "words": WORDS, "letters": LETTERS, "empty": [], "lower": ["cat"],
                  "str": "CAT", "one": ["A"]}[vocab]
    cfg = WorldConfig(image_size=size, max_objects=3, max_tries=20)
    ts = clear_or_ok(lambda: sample_text_scene(seed, cfg, num_texted=num_texted, num_signs=num_signs,
                                               vocabulary=vocabulary, text_size=text_size),
                     "text_size", "num_texted", "num_signs", "vocabulary")
    if ts is None:
        return
    image, boxes = render_text_scene(ts, return_boxes=True)
    finite(image)
    assert image.shape == (3, size, size) and 0 <= float(image.min()) <= float(image.max()) <= 1
    assert torch.equal(image, render_text_scene(ts)) and boxes.shape == (len(ts.texts), 4)
    texted = (num_texted, num_texted) if isinstance(num_texted, int) else num_texted
    signs = (num_signs, num_signs) if isinstance(num_signs, int) else num_signs
    assert texted[0] <= len(ts.on_objects) <= texted[1] and signs[0] <= len(ts.signs) <= signs[1]
    words = [t.text for t in ts.texts]
    assert len(set(words)) == len(words) and set(words) <= set(vocabulary) and words
    assert sorted(ocr_targets(ts)) == sorted((t.text, t.box) for t in ts.texts)


@given(st.sampled_from(["vqa", "instruct"]), st.sampled_from(["train", "train", "val", "compositional", "nope", 3]),
       st.sampled_from([1, 3, 3, 0, "2"]), st.sampled_from([None, None, 10, 0]),
       st.sampled_from([None, None, None, ["read_object"], ["count_signs", "word_yn"], [], ["mood"], "read_sign",
                        ["describe", "ocr"]]))
def test_text_vqa_and_instruct_datasets(kind, split, size, text_size, types):
    """TextVQADataset / TextInstructDataset name a bad split, size, text size, question type or kind; items carry
    the image, an answer among its references (or chat messages opening with <image>) and the OCR targets."""
    from vlm_primer.world.text_rich import TextInstructDataset, TextVQADataset

    def build():
        if kind == "vqa":
            return TextVQADataset(split, size, text_size=text_size, **({} if types is None else {"qtypes": types}))
        return TextInstructDataset(split, size, text_size=text_size, **({} if types is None else {"kinds": types}))

    ds = clear_or_ok(build, "split", "size", "text_size", "qtypes", "kinds")
    if ds is not None:
        item = ds[len(ds) - 1]
        finite(item["image"])
        assert item["image"].shape == (3, 64, 64) and item["text_boxes"].shape == (len(item["ocr"]), 4)
        if kind == "vqa":
            assert isinstance(item["question"], str) and item["answer"] in item["answers"]
        else:
            assert item["messages"][0]["content"].startswith("<image>") and isinstance(item["text"], str)


# --------------------------------------------------------------------------- the grounder, QLoRA, apply_peft (06b)

_GROUNDER: list = []


def _grounder():
    if not _GROUNDER:
        from vlm_primer.recipes.xvlm import Grounder

        _GROUNDER.append(Grounder.from_clip(_prompt_clip()).eval())
    return _GROUNDER[0]


@given(IMAGE_CASES, st.sampled_from([(2, 9), (1, 9), (2, 17), (3, 9)]), st.sampled_from([None, (2, 4), (2, 3), "nan"]))
def test_chapter06b_grounder_arguments(image_shape, ids_shape, boxes):
    """The grounder names a bad image, a batch mismatch or bad target boxes; else finite boxes inside [0, 1]."""
    model = _grounder()
    images = torch.zeros(2, 3, 48, 48, dtype=torch.long) if image_shape == "int" else torch.randn(*image_shape)
    ids = torch.randint(6, 100, ids_shape)
    ids[:, -1] = TOK.eos_id
    target = None
    if boxes == "nan":
        target = torch.full((ids_shape[0], 4), float("nan"))
    elif boxes is not None:
        target = torch.tensor([[0.1, 0.1, 0.5, 0.5]]).repeat(boxes[0], 1)[:, :boxes[1]]
    out = clear_or_ok(lambda: model(images, ids, torch.ones_like(ids), target), "pixel_values", "input_ids", "batch",
                      "target_xyxy", "boxes", "finite")
    if out is not None:
        finite(out.boxes)
        assert out.boxes.shape == (images.shape[0], 4) and out.boxes.min() >= 0 and out.boxes.max() <= 1
        assert (out.loss is None) == (target is None)


@given(st.sampled_from([(8, 12), (64, 64), (3, 130), (1, 1)]), st.sampled_from([64, 16, 0, 7, True]),
       st.sampled_from([True, False]), st.sampled_from([torch.float32, torch.bfloat16]))
def test_chapter06b_nf4_linear(shape, block, double, dtype):
    """NF4Linear from any linear layer: a clear error for a bad block size; else finite, close to the layer."""
    from vlm_primer.recipes.quant import NF4Linear

    torch.manual_seed(0)
    layer = torch.nn.Linear(shape[1], shape[0]).to(dtype)
    q = clear_or_ok(lambda: NF4Linear.from_linear(layer, block_size=block, double_quant=double), "block_size")
    if q is not None:
        x = torch.randn(3, shape[1], dtype=dtype)
        y = q(x)
        finite(y.float())
        assert y.dtype == dtype and y.shape == (3, shape[0])
        assert (y - layer(x)).float().norm() <= 0.25 * layer(x).float().norm() + 1e-3


@given(st.sampled_from(["lora", "dora", "qlora", "vera", "prefix", 3]), st.sampled_from([1, 4, 0, -1, 2.5, True]),
       st.sampled_from([None, 8.0, 0.0, float("inf")]))
def test_chapter06b_apply_peft_arguments(method, r, alpha):
    """apply_peft names a bad method, rank or alpha; else only adapters and the connector train, outputs finite."""
    from vlm_primer.recipes.peft import apply_peft

    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"connector": torch.nn.Linear(6, 8), "lm": torch.nn.Sequential(
        torch.nn.Linear(8, 8), torch.nn.GELU(), torch.nn.Linear(8, 5))})
    got = clear_or_ok(lambda: apply_peft(model, method, r, None if method == "vera" else alpha), "method", "r",
                      "alpha")
    if got is not None:
        assert all(p.requires_grad for p in model["connector"].parameters())
        assert not any(p.requires_grad for n, p in model["lm"].named_parameters() if n.endswith("base.weight"))
        finite(model["lm"](model["connector"](torch.randn(2, 6))))


_KOSMOS: list = []


@given(st.sampled_from([8, 4, 0, 100, 2.5, True]), st.sampled_from([1, 3]), st.booleans())
def test_chapter06b_location_tokens_in_a_llava(bins, n, with_answer):
    """add_location_tokens names a bad bin count; else prompts decode to valid boxes inside [0, 1]."""
    from vlm_primer import zoo
    from vlm_primer.recipes import kosmos as K
    from vlm_primer.recipes.grounding import referring_items

    if not _KOSMOS:
        _KOSMOS.append(zoo.load("llava-tiny"))
    model = clear_or_ok(lambda: K.add_location_tokens(_KOSMOS[0], bins), "num_bins")
    if model is None:
        return
    items = referring_items(n, WorldConfig(image_size=48, sizes=("large",)), seed=n)
    batch = K.location_batches(items, TOK, model, bins, zoo.preprocess("llava-tiny"), n, with_answer=with_answer)[0]
    assert ("labels" in batch) == with_answer
    if not with_answer:
        boxes, tokens = K.predict_boxes(model, batch, bins)
        finite(boxes)
        assert boxes.shape == (n, 4) and boxes.min() >= 0 and boxes.max() <= 1
        assert (boxes[:, 2:] >= boxes[:, :2]).all() and tokens.max() < bins * bins
    with pytest.raises(ValueError, match="location tokens"):
        K.location_base(_KOSMOS[0], 8)


# --------------------------------------------------------------------------- recogniser, adapters (06b); video (08)


@given(st.sampled_from([(3, 40, 50), (40, 50), (1, 40, 50)]),
       st.sampled_from([[[5, 6, 20, 12]], [[0, 0, 50, 40], [3, 3, 9, 9]], [[5, 5, 5, 9]], [[45, 0, 55, 9]], []]))
def test_chapter06b_recogniser_crops_and_reads(image_shape, boxes):
    """crop_texts names a bad image or box; else a TextRecognizer reads one word of its vocabulary per box."""
    from vlm_primer.recipes.ocr import TextRecognizer, crop_texts
    from vlm_primer.world.text_rich import DIGITS

    image = torch.rand(image_shape)
    crops = clear_or_ok(lambda: crop_texts(image, boxes), "image", "box")
    if crops is not None:
        finite(crops)
        torch.manual_seed(0)
        read = TextRecognizer(DIGITS).read(image, boxes)
        assert crops.shape[0] == len(boxes) == len(read) and set(read) <= set(DIGITS)


@given(st.sampled_from([("shared",), ("a", "b"), ("a", "a"), (), "vqa"]), st.sampled_from([8, 2, 1, 0, 64, 2.5, True]))
def test_chapter06b_vl_adapters_arguments(tasks, reduction):
    """apply_adapters names bad tasks or a bad reduction; else a zero-initialised model is unchanged."""
    from vlm_primer.nn import Transformer
    from vlm_primer.recipes.vl_adapter import apply_adapters

    torch.manual_seed(0)
    model = Transformer(2, 32, heads=4, causal=True).eval()
    x = torch.randn(2, 5, 32)
    before = model(x)[0]
    got = clear_or_ok(lambda: apply_adapters(model, tasks, reduction), "tasks", "reduction")
    if got is not None:
        torch.testing.assert_close(got(x)[0], before)


@given(st.integers(0, 2**16), st.sampled_from([2, 9, 1, 300, 2.5]),
       st.sampled_from([(0.05, 0.0), (0.0, -0.2), (0.3, 0.0), (float("nan"), 0.0)]), st.booleans())
def test_chapter08_clip_simulation(seed, num_frames, velocity, collide):
    """simulate names bad frames or velocities; else every object stays inside the image, and the events and
    questions are read from any clip, its reversal too."""
    from vlm_primer.world.video import TEMPORAL_QUESTION_TYPES, ask_temporal, clip_events, render_clip, simulate

    scene = sample_scene(np.random.default_rng(seed), WorldConfig(), 2)
    clip = clear_or_ok(lambda: simulate(scene, [velocity, (0.0, 0.03)], num_frames, collide=collide),
                       "num_frames", "velocities", "quarter")
    if clip is not None:
        p, r = clip.positions(), np.array([o.radius for o in scene])
        assert (p >= r[None, :, None] - 1e-9).all() and (p <= 1 - r[None, :, None] + 1e-9).all()
        assert render_clip(clip, 32).shape == (num_frames, 3, 32, 32)
        for c in (clip, clip.reversed()):
            clip_events(c)
            for qtype in TEMPORAL_QUESTION_TYPES:
                ask_temporal(c, np.random.default_rng(seed), qtype)


@given(st.sampled_from(["standard", "temporal", "physics"]), st.sampled_from([9, 2, 1, 65, True]),
       st.sampled_from([(2, 3), 2, 0, (3, 2)]))
def test_chapter08_video_qa_arguments(suite, num_frames, num_objects):
    """VideoQADataset names a bad suite, frame count or object count; else its items have the frames asked for."""
    from vlm_primer.world.video_qa import VideoQADataset

    data = clear_or_ok(lambda: VideoQADataset("train", 3, suite=suite, num_frames=num_frames,
                                              num_objects=num_objects), "suite", "num_frames", "num_objects")
    if data is not None:
        item = data[1]
        assert item["frames"].shape == (num_frames, 3, 64, 64) and (item["needs_two_frames"] or suite == "standard")


@given(st.sampled_from([(1, 2, 3, 48, 48), (1, 3, 3, 48, 48), (2, 2, 3, 48, 48), (2, 3, 48, 48), (1, 2, 3, 32, 32)]),
       st.sampled_from([1, 2]))
def test_chapter08_video_llava_inputs(video_shape, videos_in_prompt):
    """VideoLlava names a bad video tensor, frame count or placeholder count; else its logits are finite."""
    from vlm_primer.video import VideoLlava, VideoLlavaConfig

    torch.manual_seed(0)
    model = VideoLlava(VideoLlavaConfig.from_preset("tiny", num_frames=2)).eval()
    ids = torch.tensor([[2] + [5] * model.tokens_per_video * videos_in_prompt + [7, 3]])
    with torch.no_grad():
        out = clear_or_ok(lambda: model(ids, pixel_values_videos=torch.rand(video_shape)),
                          "pixel_values_videos", "video placeholders", "frames")
    if out is not None:
        finite(out.logits)


@given(st.sampled_from([(2, 9, 16, 64), (2, 1, 16, 64), (2, 10, 16, 64), (3, 9, 16, 64), (2, 9, 8, 64), None]),
       st.sampled_from([None, [4], [0, 9], [8]]), st.sampled_from([(2, 12), (2, 40), (2, 0)]))
def test_chapter08_frame_qa_arguments(features_shape, frame_ids, ids_shape):
    """FrameQA names bad frame features, frame ids or questions; else its logits are finite."""
    from vlm_primer.video.frame_qa import FrameQA, FrameQAConfig

    torch.manual_seed(0)
    model = FrameQA(FrameQAConfig.from_preset("tiny", num_answers=5)).eval()
    feats = None if features_shape is None else torch.randn(features_shape)
    out = clear_or_ok(lambda: model(feats, torch.randint(5, 800, ids_shape), frame_ids=frame_ids),
                      "features", "frame", "input_ids", "same batch")
    if out is not None:
        finite(out.logits)


@given(st.sampled_from([(4, 2, 3, 32, 32), (0, 2, 3, 32, 32), (4, 3, 32, 32), None]), st.sampled_from([4, 3]),
       st.sampled_from([(1, 1), (0, 1), (1, 0), (True, 1), (1, 2.0)]))
def test_chapter08_train_merlot_arguments(frames_shape, texts, steps_batch):
    """train_merlot names bad clips, texts or step counts; else it trains and returns the model in eval mode."""
    from vlm_primer.video.merlot import Merlot, MerlotConfig, train_merlot

    torch.manual_seed(0)
    model = Merlot(MerlotConfig.from_preset("tiny", max_frames=2))
    frames = None if frames_shape is None else torch.randn(frames_shape)
    steps, batch = steps_batch
    out = clear_or_ok(lambda: train_merlot(model, frames, torch.randint(5, 800, (texts, 6)), steps=steps, batch=batch,
                                           warmup=1), "frames", "texts", "steps", "batch", "frames")
    if out is not None:
        assert out is model and not model.training


@given(st.sampled_from([(1, 3), (9,), (), (0,), (10,)]), st.sampled_from([16, 1]))
def test_chapter08_video_collate_arguments(counts, per_frame):
    """video_collate names bad frame counts; else each batch has k frames and k * tokens placeholders per item."""
    from vlm_primer.video.data import video_collate

    items = [{"input_ids": [2, 5, 9, 3], "target": [False, False, True, True], "frames": torch.rand(9, 3, 8, 8),
              "index": i} for i in range(2)]
    batch = clear_or_ok(lambda: video_collate(per_frame, counts)(items), "frame_counts", "k must be")
    if batch is not None:
        k = batch["pixel_values_videos"].shape[1]
        assert k in counts and (batch["input_ids"] == 5).sum() == 2 * k * per_frame


@given(st.sampled_from([(2, 8, 3), (2, 7, 3), (8, 3), (1, 4, 1)]), st.sampled_from([4, 1, 0, 3, 2.0, True]))
def test_chapter08_token_merging_arguments(shape, m):
    """merge_tokens / pool_tokens name a bad tensor or merge factor; else they keep every value / the mean."""
    from vlm_primer.video import merge_tokens, pool_tokens

    x = torch.randn(shape)
    merged = clear_or_ok(lambda: merge_tokens(x, m), "tokens", "m ")
    if merged is not None:
        assert merged.numel() == x.numel() and merged.shape[1] == shape[1] // m
        torch.testing.assert_close(pool_tokens(x, m).sum(), x.sum() / m)


@given(st.sampled_from([(2, 6), (2, 200), (3, 6)]), st.sampled_from([(2, 5), (2, 5, 1), (2, 0)]),
       st.sampled_from([0, 31, 32, 33, -1]))
def test_chapter08_videobert_arguments(ids_shape, vis_shape, visual_id):
    """VideoBert names bad words, visual words or lengths; else its logits are finite."""
    from vlm_primer.video import VideoBert, VideoBertConfig

    torch.manual_seed(0)
    model = VideoBert(VideoBertConfig.from_preset("tiny", visual_vocab_size=32)).eval()
    out = clear_or_ok(lambda: model(torch.randint(10, 800, ids_shape), torch.full(vis_shape, visual_id)),
                      "input_ids", "visual_ids", "same batch", "max_positions", "positions")
    if out is not None:
        finite(out.text_logits, out.visual_logits)


@given(st.sampled_from([(2, 4, 3, 32, 32), (2, 9, 3, 32, 32), (3, 4, 3, 32, 32), (2, 4, 3, 16, 16), (4, 3, 32, 32)]),
       st.booleans())
def test_chapter08_merlot_arguments(frames_shape, shuffle):
    """Merlot names bad frames or batch sizes; else its order logits are finite."""
    from vlm_primer.video import Merlot, MerlotConfig

    torch.manual_seed(0)
    model = Merlot(MerlotConfig.from_preset("tiny", max_frames=4)).eval()
    out = clear_or_ok(lambda: model(torch.rand(frames_shape), torch.randint(10, 800, (2, 8)), shuffle=shuffle),
                      "frames", "same batch", "input_ids")
    if out is not None:
        finite(out.order_logits)


@given(st.sampled_from([(2, 4), (2, 5), (2, 0), (4,), (2, 4, 1), (1, 1)]))
def test_chapter08_merlot_time_ids_arguments(shape):
    """Merlot.time_ids names a mask of the wrong shape or with more slots than max_frames; else one row per slot,
    unknown slots reading rows max_frames + t."""
    from vlm_primer.video import Merlot, MerlotConfig

    model = Merlot(MerlotConfig.from_preset("tiny", max_frames=4))
    unknown = torch.ones(shape, dtype=torch.bool)
    ids = clear_or_ok(lambda: model.time_ids(unknown), "unknown")
    if ids is not None:
        assert ids.shape == unknown.shape and torch.equal(ids[0], torch.arange(shape[1]) + 4)


@given(st.sampled_from([(2, 3, 64), (1, 3, 64), (2, 3, 32), (3, 64), (2, 0, 64)]))
def test_vit_embed_extra_arguments(shape):
    """ViT.embed names extra tokens of the wrong shape; else they are appended after the patch tokens."""
    from vlm_primer.nn import ViT, ViTConfig

    vit = ViT(ViTConfig.from_preset("tiny", image_size=32, depth=1))
    x = clear_or_ok(lambda: vit.embed(torch.rand(2, 3, 32, 32), extra=torch.zeros(shape)), "extra")
    if x is not None:
        assert x.shape[1] == vit.embed(torch.rand(2, 3, 32, 32)).shape[1] + shape[1]


@given(st.sampled_from([(1, 2, 3, 48, 48), (1, 9, 3, 48, 48), (2, 2, 3, 48, 48), (1, 2, 3, 32, 32), (2, 3, 48, 48)]))
def test_chapter08_video_llama_arguments(frames_shape):
    """VideoLlama names bad frames or batch sizes; else its logits are finite."""
    from vlm_primer.video import VideoLlama, VideoLlamaConfig

    torch.manual_seed(0)
    model = VideoLlama(VideoLlamaConfig.from_preset("tiny")).eval()
    out = clear_or_ok(lambda: model(torch.rand(frames_shape), torch.randint(10, 800, (1, 6))),
                      "frames", "clips", "input_ids")
    if out is not None:
        finite(out.logits)


@given(st.text(max_size=12), st.sampled_from([5, 0.1, False, "x"]))
def test_recipe_options_parse_or_name_the_option(text, default):
    """Any ``--set size=TEXT`` either parses to the default's type or is a ValueError naming ``--set size``."""
    from vlm_primer.training.recipes import RecipeArgs

    got = clear_or_ok(lambda: RecipeArgs(options={"size": text}).option("size", default), "--set size=")
    if got is not None:
        assert type(got) is type(default)
    assert RecipeArgs(options={"size": text}).option("other", default) is default


@given(st.lists(st.sampled_from([{"x": torch.zeros(2)}, {}, [torch.zeros(2)], torch.zeros(2), None, "x"]),
                max_size=3))
def test_ready_batches_any_list(batches):
    """``Batches`` keeps a non-empty list of dicts as it is, or refuses it naming what a batch must be."""
    from vlm_primer.training import Batches

    got = clear_or_ok(lambda: Batches(batches), "a batch must be a dict", "at least one batch")
    if got is not None:
        assert list(got) == batches and len(got) == len(batches) > 0


@given(st.sampled_from([None, "x", 3, [[1, -100, 2]], [1, 2], [[[1]]], [[1, 2], [3]], [[-100, -100]]]),
       st.booleans())
def test_causal_lm_items_any_labels(labels, first_is_target):
    """The count of targets the Trainer weighs micro-batches by: a whole number within the labels, or an error
    naming the labels."""
    from vlm_primer.nn import causal_lm_items

    got = clear_or_ok(lambda: causal_lm_items(labels, first_is_target=first_is_target), "labels")
    if got is not None:
        assert isinstance(got, int) and 0 <= got <= torch.as_tensor(labels).numel()
    for ids in (torch.randint(0, 9, (3, 5)), torch.full((2, 4), -100)):
        want = int((ids[:, 0 if first_is_target else 1:] != -100).sum())
        assert causal_lm_items(ids, first_is_target=first_is_target) == want
