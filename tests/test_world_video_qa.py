"""Chapter 08's video QA suites: deterministic items, a temporal suite whose every question is proved to need two
frames (and whose middle frame a reversed clip shares), a standard suite where appearance questions dominate, the
compositional split, and bad input."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from vlm_primer.world import WorldConfig
from vlm_primer.world.video import answer_temporal, render_clip
from vlm_primer.world.video_qa import APPEARANCE_TYPES, VideoQADataset


def test_items_are_deterministic_and_shaped():
    a, b = VideoQADataset("train", 20, seed=3), VideoQADataset("train", 20, seed=3)
    for i in (0, 7, 19, -1):
        x, y = a[i], b[i]
        assert torch.equal(x["frames"], y["frames"]) and x["question"] == y["question"] and x["answer"] == y["answer"]
    assert a[0]["frames"].shape == (9, 3, 64, 64)
    assert VideoQADataset("train", 2, num_frames=5, config=WorldConfig(image_size=32))[0]["frames"].shape == (5, 3, 32, 32)
    assert a[0]["question"] != VideoQADataset("train", 20, seed=4)[0]["question"] or not torch.equal(
        a[0]["frames"], VideoQADataset("train", 20, seed=4)[0]["frames"])


def test_every_temporal_question_is_answered_differently_by_the_reversed_clip():
    data = VideoQADataset("test", 60, suite="temporal")
    for i in range(len(data)):
        clip, q = data.item(i)
        back = clip.reversed()
        assert data[i]["needs_two_frames"]
        assert answer_temporal(back, q.key) != answer_temporal(clip, q.key)
        mid = len(clip) // 2
        assert torch.equal(render_clip(clip)[mid], render_clip(back)[mid])


def test_the_standard_suite_is_mostly_answerable_from_one_frame():
    data = VideoQADataset("test", 200, suite="standard")
    items = [data[i] for i in range(len(data))]
    types = Counter(it["qtype"] for it in items)
    assert sum(types[t] for t in APPEARANCE_TYPES) > 0.45 * len(items)
    assert 0 < sum(it["needs_two_frames"] for it in items) < 0.2 * len(items)


def test_the_compositional_split_holds_out_its_pairs():
    held = [("red", "circle"), ("blue", "square")]
    train = VideoQADataset("train", 40, held_out=held)
    comp = VideoQADataset("compositional", 40, held_out=held)
    for i in range(40):
        assert not {(o.color, o.shape) for o in train.item(i)[0].frames[0]} & set(held)
        assert (comp.item(i)[0].frames[0][0].color, comp.item(i)[0].frames[0][0].shape) in held


def test_bad_input_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="suite"):
        VideoQADataset(suite="physics")
    with pytest.raises(ValueError, match="num_frames"):
        VideoQADataset(num_frames=1)
    with pytest.raises(ValueError, match="size"):
        VideoQADataset(size=0)
    with pytest.raises(ValueError, match="seed"):
        VideoQADataset(seed=-1)
    with pytest.raises(TypeError, match="WorldConfig"):
        VideoQADataset(config={"image_size": 64})
    with pytest.raises(IndexError, match="out of range"):
        VideoQADataset(size=3)[3]
