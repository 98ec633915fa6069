"""CLIPScore and RefCLIPScore equal torchmetrics' CLIPScore on the zoo's clip-tiny (exported to transformers), and
a hand computation on a table model; the clip at 0, the scale w and bad input."""

from __future__ import annotations

import math
import os
import sys

import pytest
import torch
from torch import nn

from vlm_primer import zoo
from vlm_primer.contrastive import Llip, LlipConfig
from vlm_primer.evaluation.clipscore import clip_score, pair_cosines, ref_clip_score
from vlm_primer.text import Tokenizer
from vlm_primer.world import ShapesCaptionDataset, WorldConfig

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "helpers"))
from clipscore_oracle import torchmetrics_oracle  # noqa: E402

# --- a table model: embeddings chosen by hand ----------------------------------------------------------------------

WORDS = ["right", "up", "diagonal", "left", "down"]
VECTORS = [(3.0, 0.0), (0.0, 2.0), (0.6, 0.8), (-1.0, 0.0), (0.0, -5.0)]  # not unit length: the cosine normalises


class TableModel(nn.Module):
    """encode_text: a fixed 2-D vector per word; encode_image: the first two channels of the 1x1 image."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.tensor(VECTORS))

    def encode_text(self, input_ids, attention_mask=None):
        return self.table[input_ids[:, 0]]

    def encode_image(self, pixel_values):
        return pixel_values[:, :2, 0, 0]


class WordTokenizer:
    """One id per text (its index in WORDS); records the max_length it is called with."""

    def __init__(self) -> None:
        self.max_lengths: list[int | None] = []

    def __call__(self, texts, max_length=None):
        self.max_lengths.append(max_length)
        ids = torch.tensor([[WORDS.index(t)] for t in texts])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _images(*xy: tuple[float, float]) -> torch.Tensor:
    return torch.tensor([[x, y, 0.0] for x, y in xy]).view(len(xy), 3, 1, 1)


# item: image, caption, references; cos(caption, image) and the best cos(caption, reference) worked out by hand
HAND = [
    ((1.0, 0.0), "diagonal", ["up", "right"]),  # cos 0.6 -> CLIP-S 1.5; refs 0.8 and 0.6 -> 0.8
    ((0.0, 4.0), "left", ["left"]),  # cos 0 -> 0; the reference is the caption (1), but H-Mean(0, 1) = 0
    ((-2.0, 0.0), "right", ["left", "down"]),  # cos -1 -> 0; refs -1 and 0 -> 0; H-Mean(0, 0) = 0, not NaN
    ((0.0, 1.0), "diagonal", ["left"]),  # cos 0.8 -> 2.0; ref -0.6 -> clipped to 0, so H-Mean = 0
    ((0.6, 0.8), "diagonal", ["diagonal", "down"]),  # cos 1 -> 2.5; ref 1 -> H-Mean(2.5, 1) = 5 / 3.5
]


def _hand():
    images = _images(*(xy for xy, _, _ in HAND))
    return images, [c for _, c, _ in HAND], [r for _, _, r in HAND]


def test_clip_score_by_hand():
    images, captions, _ = _hand()
    tok = WordTokenizer()
    got = clip_score(TableModel(), tok, images, captions)
    torch.testing.assert_close(got, torch.tensor([1.5, 0.0, 0.0, 2.0, 2.5]))
    assert got.dtype == torch.float32 and got.device.type == "cpu"
    assert tok.max_lengths == [None]  # a model without cfg.text.context_length: the tokenizer's own default
    clip_score(TableModel(), tok, images, captions, max_length=7)
    assert tok.max_lengths[-1] == 7


def test_ref_clip_score_by_hand():
    images, captions, references = _hand()
    got = ref_clip_score(TableModel(), WordTokenizer(), images, captions, references)
    torch.testing.assert_close(got, torch.tensor([2 * 1.5 * 0.8 / 2.3, 0.0, 0.0, 0.0, 2 * 2.5 * 1.0 / 3.5]))
    assert not got.isnan().any()
    # the reference side is not scaled by w: with w = 1 the first item is H-Mean(0.6, 0.8)
    got = ref_clip_score(TableModel(), WordTokenizer(), images, captions, references, w=1.0)
    torch.testing.assert_close(got[0], torch.tensor(2 * 0.6 * 0.8 / 1.4))


def test_negative_cosines_clip_to_zero():
    images, captions, _ = _hand()
    model = TableModel()
    cos = torch.nn.functional.cosine_similarity(model.encode_image(images), model.encode_text(
        WordTokenizer()(captions)["input_ids"]), dim=-1)
    assert (cos < 0).any()
    got = clip_score(model, WordTokenizer(), images, captions)
    assert torch.equal(got[cos <= 0], torch.zeros(int((cos <= 0).sum())))
    torch.testing.assert_close(got[cos > 0], 2.5 * cos[cos > 0].detach())


def test_pair_cosines_are_clip_score_before_its_weight_and_clipping_and_what_the_probes_read():
    from vlm_primer.evaluation.probes import pair_similarity

    images, captions, _ = _hand()
    cos = pair_cosines(TableModel(), WordTokenizer(), images, captions, batch_size=2)
    torch.testing.assert_close(cos, torch.tensor([0.6, 0.0, -1.0, 0.8, 1.0]))  # worked out by hand in HAND
    torch.testing.assert_close(clip_score(TableModel(), WordTokenizer(), images, captions), 2.5 * cos.clamp(min=0))
    assert torch.equal(pair_similarity(TableModel(), WordTokenizer(), images, captions, max_length=1), cos)
    with pytest.raises(ValueError, match="5 images but 4 captions"):
        pair_cosines(TableModel(), WordTokenizer(), images, captions[:4])
    with pytest.raises((TypeError, ValueError), match="batch_size"):
        pair_cosines(TableModel(), WordTokenizer(), images, captions, batch_size=0)


@pytest.mark.parametrize("w", [1.0, 2.5, 100])
def test_w_scales_clip_score(w):
    images, captions, _ = _hand()
    got = clip_score(TableModel(), WordTokenizer(), images, captions, w=w)
    torch.testing.assert_close(got, w * torch.tensor([0.6, 0.0, 0.0, 0.8, 1.0]))


def test_batches_do_not_change_the_scores():
    images, captions, references = _hand()
    model = TableModel()
    for fn, args in ((clip_score, ()), (ref_clip_score, (references,))):
        whole = fn(model, WordTokenizer(), images, captions, *args)
        torch.testing.assert_close(fn(model, WordTokenizer(), images, captions, *args, batch_size=2), whole)


def test_bad_input():
    images, captions, references = _hand()
    model, tok = TableModel(), WordTokenizer()
    with pytest.raises(ValueError, match=r"5 images but 4 captions"):
        clip_score(model, tok, images, captions[:4])
    with pytest.raises(ValueError, match=r"4 images but 5 captions"):
        ref_clip_score(model, tok, images[:4], captions, references)
    with pytest.raises(ValueError, match="captions is empty"):
        clip_score(model, tok, images[:0], [])
    with pytest.raises(ValueError, match=r"shape \(N, C, H, W\), got \(3, 1, 1\)"):
        clip_score(model, tok, images[0], captions[:1])
    with pytest.raises(TypeError, match="images must be a tensor"):
        clip_score(model, tok, list(images), captions)
    with pytest.raises(TypeError, match="captions must be a list of str"):
        clip_score(model, tok, images[:1], "diagonal")
    with pytest.raises(TypeError, match=r"captions\[1\] must be a str"):
        clip_score(model, tok, images[:2], ["up", 3])
    with pytest.raises(ValueError, match="5 captions but 4 reference lists"):
        ref_clip_score(model, tok, images, captions, references[:4])
    with pytest.raises(ValueError, match=r"references\[2\] is empty"):
        ref_clip_score(model, tok, images, captions, references[:2] + [[]] + references[3:])
    with pytest.raises(TypeError, match=r"references\[0\] must be a list of str, not one str.*wrap it"):
        ref_clip_score(model, tok, images, captions, ["up"] + references[1:])
    with pytest.raises(TypeError, match=r"references\[1\]\[0\] must be a str"):
        ref_clip_score(model, tok, images, captions, references[:1] + [[None]] + references[2:])
    for w in (0, -2.5, math.nan, math.inf):
        with pytest.raises(ValueError, match="w must be a positive finite number"):
            clip_score(model, tok, images, captions, w=w)
    for w in (True, "2.5"):
        with pytest.raises(TypeError, match="w must be a number"):
            ref_clip_score(model, tok, images, captions, references, w=w)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        clip_score(model, tok, images, captions, batch_size=0)


def test_llip_is_scored_with_its_own_similarity():
    cfg = LlipConfig.from_preset("tiny")
    model = Llip(cfg.replace(vision=cfg.vision.replace(depth=1), text=cfg.text.replace(depth=1))).eval()
    tok = Tokenizer.load()
    images, captions = torch.rand(3, 3, 64, 64), ["a red circle", "two blue squares", "a green star"]
    enc = tok(captions, max_length=cfg.text.context_length)
    with torch.no_grad():
        text = torch.nn.functional.normalize(model.encode_text(enc["input_ids"], enc["attention_mask"]), dim=-1)
        cos = model.similarity(model.encode_image(images), text).diagonal()
    torch.testing.assert_close(clip_score(model, tok, images, captions, batch_size=2), 2.5 * cos.clamp(min=0))


# --- the oracle: torchmetrics' CLIPScore on clip-tiny exported to transformers (tests/helpers/clipscore_oracle.py) ---


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    return torchmetrics_oracle(tmp_path_factory.mktemp("clipscore") / "clip-tiny")


@pytest.fixture(scope="module")
def world():
    """12 one-object test scenes of clip-tiny's world: pixels in [0, 1], the same normalised, captions and their
    paraphrases (short: every text fits the 16-token context with its EOS, so no truncation is involved)."""
    pre = zoo.card("clip-tiny")["preprocess"]
    ds = ShapesCaptionDataset("test", 12, WorldConfig(**pre["world"]), num_objects=1, statements=False)
    items = [ds[i] for i in range(len(ds))]
    pixels = torch.stack([it["image"] for it in items])
    normalize = zoo.preprocess("clip-tiny")
    tok = Tokenizer.load()
    assert max(len(tok.encode(t)) for it in items for t in [it["caption"], *it["captions"]]) <= 16
    return {"pixels": pixels, "images": torch.stack([normalize(p) for p in pixels]),
            "captions": [it["caption"] for it in items], "paraphrases": [it["captions"] for it in items]}


@pytest.fixture(scope="module")
def clip():
    return zoo.load("clip-tiny")


def test_torchmetrics_sees_our_inputs(oracle, world):
    _, processor = oracle()
    out = processor(text=world["captions"], images=list(world["pixels"]), return_tensors="pt", padding=True)
    ours = Tokenizer.load()(world["captions"], max_length=16)
    assert torch.equal(out["input_ids"], ours["input_ids"])
    assert torch.equal(out["attention_mask"], ours["attention_mask"])
    assert torch.equal(out["pixel_values"], world["images"])


def test_clip_score_equals_torchmetrics(oracle, world, clip):
    from torchmetrics.functional.multimodal.clip_score import _clip_score_update
    from torchmetrics.multimodal import CLIPScore

    # the true pairs, then every image with the next image's caption (some of those cosines are negative)
    pixels = torch.cat([world["pixels"], world["pixels"]])
    images = torch.cat([world["images"], world["images"]])
    captions = world["captions"] + world["captions"][1:] + world["captions"][:1]
    ours = clip_score(clip, Tokenizer.load(), images, captions)

    metric = CLIPScore(model_name_or_path=oracle)
    per_pair = torch.stack([metric(pixels[i : i + 1], [captions[i]]) for i in range(len(captions))])
    assert (per_pair == 0).sum() >= 3 and (per_pair > 0).sum() >= 12  # both sides of the clip are exercised
    torch.testing.assert_close(40 * ours, per_pair, rtol=0, atol=2e-4)  # 2e-6 in cosine (float32 round-off)
    assert torch.equal(ours == 0, per_pair == 0)

    # the unclipped 100 * cos of every pair, from torchmetrics' update step
    raw, n = _clip_score_update(list(pixels), captions, *oracle())
    assert n == len(captions) and (raw < 0).any()
    torch.testing.assert_close(ours, 2.5 * raw.clamp(min=0) / 100, rtol=0, atol=5e-6)
    # torchmetrics' corpus value clips the mean, Hessel et al.'s averages clipped pairs: they differ here
    assert metric.compute() == pytest.approx(max(raw.mean().item(), 0), abs=1e-4)
    assert 40 * ours.mean().item() > metric.compute().item() + 1


def test_ref_clip_score_equals_torchmetrics(oracle, world, clip):
    from torchmetrics.multimodal import CLIPScore

    captions, n = world["captions"], len(world["captions"])
    # the captions of the next two scenes, and for every other scene a paraphrase of its own caption
    references = [[captions[(i + 1) % n], captions[(i + 2) % n]] + world["paraphrases"][i][-1:] * (i % 2)
                  for i in range(n)]
    got = ref_clip_score(clip, Tokenizer.load(), world["images"], captions, references)

    metric = CLIPScore(model_name_or_path=oracle)  # image-text and text-text, max(100 * cos, 0) per pair
    image_side = torch.stack([2.5 / 100 * metric(world["pixels"][i : i + 1], [captions[i]]) for i in range(n)])
    text_side = torch.stack([max(metric([captions[i]], [r]) / 100 for r in references[i]) for i in range(n)])
    assert (text_side == 0).any() and ((text_side > 0.1) & (text_side < 0.99)).any()  # clipped and in between
    want = 2 * image_side * text_side / (image_side + text_side)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    torch.testing.assert_close(clip_score(clip, Tokenizer.load(), world["images"], captions), image_side,
                               rtol=0, atol=1e-5)
