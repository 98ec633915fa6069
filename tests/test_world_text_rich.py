"""Text-rich Shapes World (chapter 06b, survey §3.6): text drawn only inside its box, legible at a readable size and
not at a tiny one, every answer read off the scene, splits disjoint, instruction data in the chat format."""

from __future__ import annotations

import collections
import itertools
import re

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vlm_primer.text import Tokenizer, encode_chat, format_chat
from vlm_primer.text.chat import IMAGE_TOKEN
from vlm_primer.world import DEFAULT_HELD_OUT, WorldConfig, make_collate, render
from vlm_primer.world.instruct import position_words
from vlm_primer.world.render import object_box, object_coverage
from vlm_primer.world.scene import Obj, Scene
from vlm_primer.world.text_rich import (TEXT_QUESTION_TYPES, WORDS, Text, TextInstructDataset, TextScene,
                                        TextVQADataset, ask_text, check_text_size, ocr_targets, render_text_scene,
                                        sample_text_scene, text_instruction, text_mask)
from vlm_primer.world.vocab import COLOR_WORDS, NUMBER_WORDS, SHAPE_WORDS, SIZE_WORDS

CFG = {size: WorldConfig(image_size=size) for size in (64, 128)}
SCENES = [sample_text_scene(i, CFG[128], num_signs=(0, 2)) for i in range(150)]
WORD_OF = {w: (attr, value) for attr, table in (("color", COLOR_WORDS), ("shape", SHAPE_WORDS), ("size", SIZE_WORDS))
           for value, words in table.items() for w in words}


def _resolve(phrase: str, scene: Scene) -> list[int]:
    """The objects a noun phrase of the questions ("the big violet disk", "the green object") fits."""
    attrs = dict(WORD_OF[w] for w in phrase.removeprefix("the ").split() if w not in ("object", "shape"))
    return [i for i, o in enumerate(scene.objects) if all(getattr(o, a) == v for a, v in attrs.items())]


def _on_sign(word: str, x: int, y: int, size: int = 12) -> Text:
    h, w = text_mask(word, size).shape
    return Text(word, (x, y, x + w, y + h), sign=(x - 3, y - 3, x + w + 3, y + h + 3))


def test_sampling_and_rendering_are_deterministic():
    ts = sample_text_scene(5, CFG[128])
    assert ts == sample_text_scene(np.random.default_rng(5), CFG[128]) != sample_text_scene(6, CFG[128])
    image = render_text_scene(ts)
    text_mask.cache_clear()  # drawn again from the font: the same pixels
    assert torch.equal(image, render_text_scene(ts))
    assert torch.equal(image, render_text_scene(sample_text_scene(5, CFG[128])))
    assert image.shape == (3, 128, 128) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
    mask = text_mask("CAT", 10)
    assert mask.shape[0] <= 10 < mask.shape[1] and ((mask > 0) & (mask < 1)).mean() > 0.2  # anti-aliased edges
    _, boxes = render_text_scene(ts, return_boxes=True)
    assert torch.equal(boxes, ts.boxes()) and boxes.shape == (len(ts.texts), 4)


@pytest.mark.parametrize("size", [64, 128])
def test_text_changes_pixels_only_inside_its_box(size):
    scenes = SCENES[:60] if size == 128 else [sample_text_scene(i, CFG[64], num_signs=(0, 2)) for i in range(60)]
    kinds = collections.Counter()
    for ts in scenes:
        image, plain = render_text_scene(ts), render(ts.scene, size)
        changed = (image != plain).any(0)
        allowed = torch.zeros(size, size, dtype=torch.bool)
        for t in ts.texts:
            x0, y0, x1, y1 = t.sign or t.box
            allowed[y0:y1, x0:x1] = True
        assert not (changed & ~allowed).any(), "pixels changed outside every text box and sign"
        for t in ts.texts:
            kinds[t.kind, t.obj is None] += 1
            x0, y0, x1, y1 = t.box
            inside = changed[y0:y1, x0:x1]
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()  # a tight box
            if t.obj is None:  # a sign: inside the image, around its text, clear of every object
                sx0, sy0, sx1, sy1 = t.sign
                assert 0 <= sx0 < x0 and 0 <= sy0 < y0 and x1 < sx1 <= size and y1 < sy1 <= size
                for o in ts.scene.objects:
                    b = object_box(o, size)
                    assert b[2] < sx0 or sx1 < b[0] or b[3] < sy0 or sy1 < b[1]
            else:  # on an object: the whole box lies on it
                r0, c0, cov = object_coverage(ts.scene[t.obj], size)
                full = np.zeros((size, size), np.float32)
                full[r0:r0 + cov.shape[0], c0:c0 + cov.shape[1]] = cov
                assert full[y0:y1, x0:x1].min() >= 0.5
    # every kind of text appears, on objects and on signs
    assert {k for k, _ in kinds} == {"word", "letter", "number"} and {s for _, s in kinds} == {True, False}


def _spread(size: int) -> np.ndarray:
    """Pairwise L2 distances between the 128 px renders of the three-letter words on one sign at ``size`` px."""
    crops = []
    for word in [w for w in WORDS if len(w) == 3]:
        h, w = text_mask(word, size).shape
        ts = TextScene(Scene(()), (Text(word, (8, 8, 8 + w, 8 + h), sign=(4, 4, 124, 60)),), 128, size)
        crops.append(render_text_scene(ts)[:, 4:60, 4:124].flatten())
    return np.array([float((a - b).norm()) for a, b in itertools.combinations(crops, 2)])


def test_words_are_legible_only_at_a_readable_size():
    readable, default64, tiny = _spread(12), _spread(check_text_size(None, 64)), _spread(3)
    assert check_text_size(None, 64) == 5 and check_text_size(None, 128) == 10
    assert readable.min() > 3.0, "two different words drawn at 12 px look alike"
    assert tiny.max() < readable.min() / 2, "at 3 px even the most different words should nearly coincide"
    assert np.median(default64) < np.median(_spread(check_text_size(None, 128))) / 2  # 64 px text reads worse


def test_ocr_targets_are_in_reading_order():
    texts = (_on_sign("B", 60, 10), _on_sign("C", 30, 50), _on_sign("A", 10, 12), _on_sign("D", 90, 52))
    ts = TextScene(Scene(()), texts, 128, 12)
    assert [t for t, _ in ocr_targets(ts)] == ["A", "B", "C", "D"]
    assert ocr_targets(ts)[0] == ("A", texts[2].box)
    for ts in SCENES:
        targets = ocr_targets(ts)
        assert sorted(targets) == sorted((t.text, t.box) for t in ts.texts)
        assert all(a[1][1] < b[1][3] for a, b in zip(targets, targets[1:]))  # never a line above the one before


@pytest.mark.parametrize("qtype", TEXT_QUESTION_TYPES)
def test_every_answer_agrees_with_the_scene(qtype):
    asked, answers = 0, collections.Counter()
    for i, ts in enumerate(SCENES):
        q = ask_text(ts, np.random.default_rng(i), qtype)
        if q is None:
            continue
        asked += 1
        answers[q.answer] += 1
        scene, texts = ts.scene, [t.text for t in ts.texts]
        assert len(set(texts)) == len(texts), "the texts of a scene are distinct"
        assert len(q.answers) == 10 and q.answers.count(q.answer) >= 7
        assert q.answer_type in ("yes/no", "number", "other")
        if qtype in ("read_object", "word_yn"):  # the object is named by a phrase that fits it alone
            phrase = re.search(r"written on (the .+)\?$", q.question).group(1)
            assert _resolve(phrase, scene) == list(q.targets)
            own = ts.text_on(q.targets[0])
            if qtype == "read_object":
                assert q.answer == own and q.question.startswith(f"what {Text(own, (0, 0, 0, 0)).kind} ")
            else:
                asked_word = re.match(r"is the (?:word|letter|number) (\w+) written", q.question).group(1)
                assert q.answer == ("yes" if own == asked_word else "no")
        elif qtype == "read_sign":
            phrase = re.search(r"written on (the sign.*)\?$", q.question).group(1)
            signs = ts.signs
            if phrase == "the sign":
                assert len(signs) == 1 and q.answer == signs[0].text
            else:
                where = [position_words(Obj("square", "white", x=(t.sign[0] + t.sign[2]) / 256,
                                            y=(t.sign[1] + t.sign[3]) / 256)) for t in signs]
                picked = [t.text for t, w in zip(signs, where) if phrase == f"the sign at the {w}"]
                assert picked == [q.answer]
        elif qtype in ("word_shape", "word_color"):
            word = re.search(r"the (?:word|letter|number) (\w+) on it\?$", q.question).group(1)
            (carrier,) = [t.obj for t in ts.on_objects if t.text == word]
            assert (carrier,) == q.targets and q.answer == getattr(scene[carrier], qtype.split("_")[1])
        else:
            assert q.answer == NUMBER_WORDS[len(ts.signs)]
    assert asked >= 40, f"{qtype} applied to only {asked} scenes"
    if qtype == "word_yn":
        assert 0.35 <= answers["yes"] / asked <= 0.65, answers


def test_splits_are_disjoint_pure_and_honour_held_out():
    train, val = TextVQADataset("train", 40), TextVQADataset("val", 40)
    train_scenes = {train.text_scene(i)[0] for i in range(40)}
    assert len(train_scenes) == 40 and not train_scenes & {val.text_scene(i)[0] for i in range(40)}
    a, b = train[7], TextVQADataset("train", 40)[7]
    assert torch.equal(a["image"], b["image"]) and a["question"] == b["question"] == train.question(7).question
    assert a["text_scene"] != TextVQADataset("train", 40, seed=1)[7]["text_scene"]
    held = set(DEFAULT_HELD_OUT)
    assert not any(o.composition in held for s in train_scenes for o in s.scene.objects)
    comp = TextVQADataset("compositional", 10)
    assert all(comp.scene(i)[0][0].composition in held for i in range(10))
    item = a
    assert item["image"].shape == (3, 64, 64) and item["scene"] == item["text_scene"].scene
    assert torch.equal(item["text_boxes"], item["text_scene"].boxes()) and item["index"] == 7
    assert item["ocr"] == ocr_targets(item["text_scene"])
    # a collate stacks the images and tokenises the questions; a transform applies to every image
    ds = TextVQADataset("train", 8, transform=lambda x: 2 * x - 1)
    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=make_collate(Tokenizer.load(), text_key="question"))))
    assert batch["pixel_values"].shape == (4, 3, 64, 64) and batch["pixel_values"].min() < 0
    assert batch["input_ids"].shape[0] == 4


def test_instructions_follow_the_chat_format():
    tok, kinds = Tokenizer.load(), collections.Counter()
    ds = TextInstructDataset("train", 40, CFG[128])
    for i in range(len(ds)):
        item = ds[i]
        messages, kind = item["messages"], item["kind"]
        kinds[kind] += 1
        assert all(set(m) == {"role", "content"} for m in messages)
        assert [m["role"] for m in messages] == ["user", "assistant"] * (len(messages) // 2)
        assert messages[0]["content"].startswith(IMAGE_TOKEN)
        assert sum(m["content"].count(IMAGE_TOKEN) for m in messages) == 1
        assert item["text"] == format_chat(messages)
        ids, target = encode_chat(tok, messages)
        learned = tok.decode([t for t, keep in zip(ids, target) if keep])  # the assistant's words only
        assert all(m["content"] in learned for m in messages[1::2])
        assert messages[0]["content"].removeprefix(IMAGE_TOKEN) not in learned
        answer, texts = messages[1]["content"], [t for t, _ in item["ocr"]]
        if kind == "describe":
            assert all(t in answer.split() or f"{t}." in answer.split() for t in texts)
        elif kind == "ocr":
            assert answer == " ".join(texts)
        else:
            assert 2 <= len(messages) // 2 <= 3
    assert set(kinds) == {"describe", "conversation", "ocr"}
    ts = SCENES[0]
    assert text_instruction(ts, np.random.default_rng(0), "describe")[1]["content"].startswith("the image shows ")


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(vocabulary=[]), ValueError, "vocabulary must not be empty"),
    (dict(vocabulary=["cat"]), ValueError, "vocabulary entry 'cat'"),
    (dict(vocabulary=["CA-T"]), ValueError, "vocabulary entry 'CA-T'.*'-'"),
    (dict(vocabulary=["ABCDEFGHI"]), ValueError, "vocabulary entry"),
    (dict(vocabulary="CAT"), TypeError, "vocabulary"),
    (dict(vocabulary=["CAT", 7]), TypeError, "vocabulary entries"),
    (dict(vocabulary=["A"], num_texted=2), ValueError, "vocabulary has 1 distinct"),
    (dict(text_size=0), ValueError, "text_size"),
    (dict(text_size=-3), ValueError, "text_size"),
    (dict(text_size=2.5), TypeError, "text_size"),
    (dict(text_size=True), TypeError, "text_size"),
    (dict(text_size=30), ValueError, "text_size=30 is too big for a 64 px image"),
    (dict(num_texted=(2, 1)), ValueError, "num_texted"),
    (dict(num_texted=4), ValueError, "num_texted"),
    (dict(num_signs="1"), TypeError, "num_signs"),
    (dict(num_texted=0, num_signs=0), ValueError, "no text at all"),
    (dict(config={"image_size": 64}), TypeError, "config"),
    (dict(rng="seed"), TypeError, "rng"),
    (dict(rng=-1), ValueError, "rng"),
    (dict(config=WorldConfig(max_tries=3), vocabulary=["HOTEL"], text_size=12, num_texted=1, num_signs=0), ValueError,
     "could not write"),
])
def test_bad_sampler_arguments(kwargs, exc, match):
    kwargs = {"rng": 0, **kwargs}
    with pytest.raises(exc, match=match):
        sample_text_scene(kwargs.pop("rng"), kwargs.pop("config", None), **kwargs)


def test_bad_dataset_and_question_arguments():
    with pytest.raises(ValueError, match="split"):
        TextVQADataset("training")
    with pytest.raises(ValueError, match="qtypes"):
        TextVQADataset("train", 4, qtypes=["mood"])
    with pytest.raises(ValueError, match="kinds"):
        TextInstructDataset("train", 4, kinds=["poem"])
    with pytest.raises(ValueError, match="text_size"):
        TextVQADataset("train", 4, text_size=0)
    with pytest.raises(ValueError, match="vocabulary"):
        TextInstructDataset("train", 4, vocabulary=["no"])
    ts, rng = SCENES[0], np.random.default_rng(0)
    with pytest.raises(ValueError, match="qtype"):
        ask_text(ts, rng, "bogus")
    with pytest.raises(ValueError, match="kind"):
        text_instruction(ts, rng, "poem")
    with pytest.raises(TypeError, match="TextScene"):
        render_text_scene(ts.scene)
    with pytest.raises(TypeError, match="TextScene"):
        ocr_targets("CAT")
    with pytest.raises(ValueError, match="texts"):  # a box that is not its text's size
        TextScene(Scene(()), (Text("CAT", (0, 0, 5, 5), sign=(0, 0, 9, 9)),), 128, 12)
    with pytest.raises(ValueError, match="texts"):  # on an object the scene does not have
        TextScene(Scene(()), (Text("A", _on_sign("A", 9, 9).box, obj=0),), 128, 12)


def test_a_one_word_vocabulary_leaves_some_yes_no_questions_nothing_to_ask():
    """With one word in the world and one text per scene, "is the number 7 written on ...?" about the object
    that carries it has no other word to ask: that scene falls back to a question that applies (it used to crash
    inside numpy)."""
    ds = TextVQADataset("train", 6, qtypes=("word_yn",), num_texted=1, num_signs=0, vocabulary=["7"])
    items = [ds[i] for i in range(6)]
    assert {it["qtype"] for it in items} <= {"word_yn", "count_signs"} and any(it["qtype"] == "word_yn" for it in items)
