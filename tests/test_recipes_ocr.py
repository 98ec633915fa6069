"""Chapter 06b's Lumos-style decoupled recognizer: crops of the text boxes, a small classifier that reads them, and
the line of text the LLM gets. Crops against slicing and resizing by hand, a recognizer that learns to read digits
well above chance (and is beaten by lowering the resolution), the prompt's format, the wrapped dataset, bad input."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from vlm_primer.recipes.ocr import CROP, OCRQuestions, TextRecognizer, crop_texts, ocr_prompt, train_recognizer
from vlm_primer.world import WorldConfig
from vlm_primer.world.text_rich import DIGITS, TextVQADataset, render_text_scene

WORLD = WorldConfig(image_size=96, sizes=("large",), max_objects=2)
KW = dict(qtypes=("read_sign",), num_texted=(0, 1), num_signs=1, vocabulary=DIGITS, text_size=10)


def test_crops_are_the_boxes_resized():
    image = torch.rand(3, 40, 50)
    crops = crop_texts(image, [[5, 6, 20, 12], [0, 0, 50, 40]])
    assert crops.shape == (2, 3, *CROP)
    want = F.interpolate(image[None, :, 6:12, 5:20], size=CROP, mode="bilinear", antialias=True, align_corners=False)
    torch.testing.assert_close(crops[0], want[0])
    assert crop_texts(image, torch.zeros(0, 4)).shape == (0, 3, *CROP)


def _scenes(split: str, n: int, seed: int = 0):
    data = TextVQADataset(split, n, WORLD, seed=seed, **KW)
    return [(render_text_scene(ts), ts) for ts in (data.text_scene(i)[0] for i in range(n))]


def _blurred(scenes, blur: int):
    """Each image averaged down by ``blur`` and back up: the pixels a lower resolution keeps."""
    return [(F.interpolate(F.avg_pool2d(image[None], blur), scale_factor=blur, mode="nearest")[0], ts)
            for image, ts in scenes]


def _accuracy(model: TextRecognizer, scenes) -> float:
    right = total = 0
    for image, ts in scenes:
        read = model.read(image, ts.boxes())
        right += sum(r == t.text for r, t in zip(read, ts.texts))
        total += len(ts.texts)
    return right / total


def test_the_recognizer_learns_to_read_digits_and_needs_the_resolution():
    train, test = _scenes("train", 400), _scenes("test", 60)
    full = _accuracy(train_recognizer(train, DIGITS, steps=150, seed=0), test)
    quarter = _accuracy(train_recognizer(_blurred(train, 4), DIGITS, steps=150, seed=0), _blurred(test, 4))
    assert full > 0.6 > quarter + 0.2  # chance is 0.1; 2.5 px digits are mostly unreadable, even when trained on


def test_ocr_prompt_names_each_word_and_where_it_is():
    assert ocr_prompt(["5", "CAT"], [[70, 5, 80, 15], [40, 40, 56, 50]], 96) == "ocr: 5 (top right), CAT (middle)."
    assert ocr_prompt([], torch.zeros(0, 4), 96) == "ocr: none."
    with pytest.raises(ValueError, match="2 words for 1 boxes"):
        ocr_prompt(["5", "6"], [[0, 0, 5, 5]], 96)


def test_ocr_questions_prefix_what_the_recognizer_reads():
    data = TextVQADataset("test", 5, WORLD, **KW)
    torch.manual_seed(0)
    wrapped = OCRQuestions(data, TextRecognizer(DIGITS))
    for i in range(len(data)):
        item, q = wrapped[i], wrapped.question(i)
        assert item["question"] == q.question and q.question.startswith("ocr: ")
        assert q.question.endswith(data.question(i).question)
        assert dataclasses.replace(q, question=data.question(i).question) == data.question(i)
        assert item["answer"] == data[i]["answer"]


def test_bad_input_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        crop_texts(torch.rand(40, 50), [[0, 0, 5, 5]])
    with pytest.raises(ValueError, match="empty or outside"):
        crop_texts(torch.rand(3, 40, 50), [[5, 5, 5, 9]])
    with pytest.raises(ValueError, match="empty or outside"):
        crop_texts(torch.rand(3, 40, 50), [[45, 0, 55, 9]])
    with pytest.raises(ValueError, match=r"\(N, 3, h, w\)"):
        TextRecognizer(DIGITS)(torch.rand(2, 16, 48))
    with pytest.raises(ValueError, match="not in the vocabulary"):
        train_recognizer(_scenes("train", 3), ["1", "2"], steps=1)
    with pytest.raises(TypeError, match="TextRecognizer"):
        OCRQuestions(TextVQADataset("test", 2, WORLD, **KW), torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="without a transform"):
        OCRQuestions(TextVQADataset("test", 2, WORLD, transform=lambda x: x, **KW), TextRecognizer(DIGITS))
