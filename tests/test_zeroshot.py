"""Zero-shot classification: prompt-ensemble weights, known accuracies, model-agnostic use, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vlm_primer.contrastive import CLIP, CLIPConfig, Llip, LlipConfig
from vlm_primer.evaluation import build_classifier, zero_shot_accuracy, zero_shot_classify

CLASSES = ["circle", "square", "triangle", "star"]
TEMPLATES = ["a {}.", "a photo of a {}.", lambda c: f"the {c}"]


class WordTokenizer:
    """Id 1 + index of the class word, then id 10 + index of the template; records max_length."""

    def __init__(self) -> None:
        self.max_lengths: list[int | None] = []

    def __call__(self, texts, max_length=None):
        self.max_lengths.append(max_length)
        ids = []
        for t in texts:
            cls = next(i for i, c in enumerate(CLASSES) if c in t)
            tpl = 0 if t.startswith("a ") and "photo" not in t else (1 if "photo" in t else 2)
            ids.append([1 + cls, 10 + tpl])
        ids = torch.tensor(ids)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


class TableModel(nn.Module):
    """encode_text = class vector + template vector (random tables); encode_image = the pixels, flattened."""

    def __init__(self, dim: int = 6) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(3)
        self.classes = nn.Parameter(torch.randn(len(CLASSES), dim, generator=gen))
        self.templates = nn.Parameter(0.3 * torch.randn(3, dim, generator=gen))

    def encode_text(self, input_ids, attention_mask=None):
        return 5.0 * (self.classes[input_ids[:, 0] - 1] + self.templates[input_ids[:, 1] - 10])

    def encode_image(self, pixel_values):
        return pixel_values.flatten(1)


def test_prompt_ensemble_weights():
    model, tok = TableModel(), WordTokenizer()
    weights = build_classifier(model, tok, CLASSES, TEMPLATES, max_length=7)
    assert weights.shape == (4, 6) and tok.max_lengths == [7]
    for c in range(4):  # normalise each prompt, average over templates, normalise again
        prompts = torch.stack([F.normalize(model.classes[c] + model.templates[t], dim=0) for t in range(3)])
        torch.testing.assert_close(weights[c], F.normalize(prompts.mean(0), dim=0))
    # Small batches give the same classifier.
    torch.testing.assert_close(build_classifier(model, tok, CLASSES, TEMPLATES, batch_size=2), weights)


def test_known_accuracy():
    model, tok = TableModel(), WordTokenizer()
    weights = build_classifier(model, tok, CLASSES, TEMPLATES)
    # Image n is exactly the classifier row of class order[n]: it is classified as order[n].
    order = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    images = weights[order].view(8, 6, 1, 1)
    labels = torch.tensor([0, 1, 2, 3, 1, 2, 3, 0])  # the last four are wrong
    scores = zero_shot_classify(model, images, weights)
    assert torch.equal(scores.argmax(1), order)
    acc = zero_shot_accuracy(model, images, labels, weights, topk=(1, 4))
    assert acc == {"top1": 0.5, "top4": 1.0}
    # Top-2 from an independent computation (sorting every row).
    rank2 = [labels[n].item() in scores[n].argsort(descending=True)[:2].tolist() for n in range(8)]
    assert zero_shot_accuracy(model, images, labels, weights, topk=(2,))["top2"] == sum(rank2) / 8
    # A DataLoader-like iterable of batches gives the same numbers.
    batches = [(images[:3], labels[:3]), (images[3:], labels[3:])]
    assert zero_shot_accuracy(model, batches, None, weights, topk=(1, 4)) == acc


def test_ties_count_against_the_model():
    model, tok = TableModel(), WordTokenizer()
    weights = build_classifier(model, tok, CLASSES, TEMPLATES)
    flat = torch.zeros(4, 6, 1, 1)  # zero image: every class scores 0
    assert zero_shot_accuracy(model, flat, torch.arange(4), weights, topk=(1, 3, 4)) == {
        "top1": 0.0, "top3": 0.0, "top4": 1.0
    }


def test_a_nan_model_scores_zero():
    model, tok = TableModel(), WordTokenizer()
    weights = build_classifier(model, tok, CLASSES, TEMPLATES)
    nan = torch.full((4, 6, 1, 1), float("nan"))
    assert zero_shot_accuracy(model, nan, torch.arange(4), weights, topk=(1, 3)) == {"top1": 0.0, "top3": 0.0}


def test_the_harness_fills_both_template_slots():
    from types import SimpleNamespace

    from vlm_primer.evaluation.suites.zeroshot import zero_shot_scores

    scored = []

    def match(images, texts):
        scored.extend(texts)
        return torch.tensor([float("cat" in t) for t in texts])

    model = SimpleNamespace(classify=None, blind=False, match=match)
    scores = zero_shot_scores(model, torch.zeros(1, 3, 8, 8), ["dog", "cat"], ["a photo of a {c}.", "{}!"])
    assert scored == ["a photo of a dog.", "a photo of a cat.", "dog!", "cat!"]
    assert scores.argmax(1).tolist() == [1]


def test_with_clip_and_the_project_tokenizer():
    from vlm_primer.text import Tokenizer

    tok = Tokenizer.load()
    model = CLIP(CLIPConfig.from_preset("tiny", vision=dict(CLIPConfig.from_preset("tiny").vision.to_dict(), depth=1),
                                        text=dict(CLIPConfig.from_preset("tiny").text.to_dict(), depth=1))).eval()
    weights = build_classifier(model, tok, ["red circle", "blue square"], ["a {}", "one {} in the scene"])
    batch = tok(["a red circle", "one red circle in the scene"], max_length=model.cfg.text.context_length)
    manual = F.normalize(F.normalize(model.encode_text(batch["input_ids"], batch["attention_mask"]), dim=-1).mean(0),
                         dim=0)
    torch.testing.assert_close(weights[0], manual)
    images = torch.rand(5, 3, 64, 64)
    expected = model.encode_image(images) @ weights.t()
    torch.testing.assert_close(zero_shot_classify(model, images, weights, batch_size=2), expected)
    for training in (True, False):  # both hand the model back in the mode they found it in
        model.train(training)
        build_classifier(model, tok, ["red circle"], ["a {}"])
        zero_shot_classify(model, images, weights)
        assert model.training is training


def test_llip_uses_its_own_similarity():
    cfg = LlipConfig.from_preset("tiny")
    model = Llip(cfg.replace(vision=cfg.vision.replace(depth=1), text=cfg.text.replace(depth=1))).eval()
    weights = F.normalize(torch.randn(3, cfg.embed_dim), dim=-1)
    images = torch.rand(4, 3, 64, 64)
    expected = model.similarity(model.encode_image(images), weights)
    torch.testing.assert_close(zero_shot_classify(model, images, weights), expected)


def test_bad_input():
    model, tok = TableModel(), WordTokenizer()
    weights = build_classifier(model, tok, CLASSES, TEMPLATES)
    images = weights.view(4, 6, 1, 1)
    with pytest.raises(ValueError, match="classnames"):
        build_classifier(model, tok, [], TEMPLATES)
    with pytest.raises(ValueError, match="classnames"):
        build_classifier(model, tok, "circle", TEMPLATES)
    with pytest.raises(ValueError, match="slot"):
        build_classifier(model, tok, CLASSES, ["a photo"])
    with pytest.raises(ValueError, match="templates"):
        build_classifier(model, tok, CLASSES, [])
    with pytest.raises(ValueError, match="mismatched"):
        zero_shot_accuracy(model, images, torch.arange(3), weights)
    with pytest.raises(ValueError, match="topk"):
        zero_shot_accuracy(model, images, torch.arange(4), weights, topk=(0,))
    with pytest.raises(ValueError, match="labels must be in"):
        zero_shot_accuracy(model, images, torch.tensor([0, 1, 2, 4]), weights)
    with pytest.raises(ValueError, match="classifier"):
        zero_shot_classify(model, images, weights[0])
    with pytest.raises(ValueError, match="do not match"):
        zero_shot_classify(model, torch.rand(4, 5, 1, 1), weights)
    with pytest.raises(ValueError, match="empty"):
        zero_shot_classify(model, images[:0], weights)
