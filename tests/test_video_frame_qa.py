"""Chapter 08's FrameQA: the frozen tower's pooled grid, the answer classes, and a joint encoder that reads frames in
time only through its time embedding."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vlm_primer import zoo
from vlm_primer.video.frame_qa import FIRST, SECOND, FrameQA, FrameQAConfig, answer_classes, answer_index, grid_features
from vlm_primer.video.recipes import video_qa_set
from vlm_primer.world.video import render_clip


def test_grid_features_are_the_pooled_patch_grid():
    tower, transform = zoo.load("clip-tiny-pairs").vision.eval(), zoo.preprocess("clip-tiny-pairs")
    frames = transform(torch.rand(2, 3, 3, 48, 48))
    got = grid_features(tower, frames, batch=4)
    with torch.no_grad():
        patches = tower(frames.flatten(0, 1), output_hidden_states=True).hidden_states[-1][:, 1:]  # (6, 64, D)
    grid = patches.reshape(6, 8, 8, -1)
    want = (grid[:, 0::2, 0::2] + grid[:, 0::2, 1::2] + grid[:, 1::2, 0::2] + grid[:, 1::2, 1::2]) / 4
    torch.testing.assert_close(got, want.reshape(2, 3, 16, -1))
    with pytest.raises(ValueError, match="pool=3 does not divide"):  # 8 x 8: a pool of 3 would drop a row
        grid_features(tower, frames, pool=3)


def test_answer_classes_turn_which_first_into_the_option_position():
    qa = video_qa_set("temporal", 40, split="train")
    items = [qa.item(i) for i in range(40)]
    firsts = [(c, q) for c, q in items if q.qtype == "first_event"]
    assert firsts
    for c, q in firsts:
        a, b = q.question.split(": ", 1)[1].rstrip("?").rsplit(" or ", 1)
        assert answer_index(c, q) == (FIRST if q.answer == a else SECOND) and q.answer in (a, b)
    assert set(answer_classes(items)) <= {FIRST, SECOND, "left", "right", "up", "down"}
    c, q = firsts[0]
    with pytest.raises(ValueError, match="neither option"):  # it used to become "the second"
        answer_index(c, dataclasses.replace(q, answer="the green star stopping"))


def test_frames_are_read_in_time_only_through_the_time_embedding():
    torch.manual_seed(0)
    model = FrameQA(FrameQAConfig.from_preset("tiny", num_answers=6)).eval()
    feats, ids = torch.randn(2, 5, 16, 64), torch.randint(10, 800, (2, 7))
    perm = [3, 0, 4, 1, 2]
    with torch.no_grad():
        base = model(feats, ids).logits
        assert (model(feats[:, perm], ids).logits - base).abs().max() > 1e-4  # order changes the answer
        torch.testing.assert_close(model(feats[:, perm], ids, frame_ids=perm).logits, base)  # ... only via time
        # frame ids as a tensor are the same ids (a list of 0-d tensors used to index time_emb as one element)
        torch.testing.assert_close(model(feats[:, perm], ids, frame_ids=torch.tensor(perm)).logits, base)
        model.time_emb.zero_()
        torch.testing.assert_close(model(feats[:, perm], ids).logits, model(feats, ids).logits)
        # one frame with its own id, and the blind reader: the question alone
        assert model(feats[:, 2:3], ids, frame_ids=[4]).logits.shape == (2, 6)
        assert model(None, ids).logits.shape == (2, 6)
    for bad, match in (({"frame_ids": [0.5, 1, 2, 3, 4]}, "integer frame indices"),
                       ({"frame_ids": [[0, 1, 2, 3, 4]]}, "integer frame indices"),
                       ({"frame_ids": [0, 1, 2, 3, 9]}, "max_frames"),
                       ({"input_ids": None, "attention_mask": torch.ones(2, 7)}, "pass input_ids")):
        with pytest.raises(ValueError, match=match):
            model(feats, **{"input_ids": ids, **bad})


def test_loss_is_cross_entropy_over_the_answer_classes():
    qa = video_qa_set("temporal", 60, split="train")
    items = [qa.item(i) for i in range(60)]
    keep = [i for i, (_, q) in enumerate(items) if q.qtype == "direction"]
    tower, transform = zoo.load("clip-tiny-pairs").vision.eval(), zoo.preprocess("clip-tiny-pairs")
    feats = grid_features(tower, transform(torch.stack([render_clip(items[i][0], 48) for i in keep])))
    classes = sorted({items[i][1].answer for i in keep})
    labels = torch.tensor([classes.index(items[i][1].answer) for i in keep])
    ids = torch.full((len(keep), 1), 7)  # every question is "which way does it start to move?" for one object
    torch.manual_seed(0)
    model = FrameQA(FrameQAConfig.from_preset("tiny", num_answers=len(classes)))
    out = model(feats[:8], ids[:8], labels=labels[:8])
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, labels[:8]))
    assert np.isfinite(out.loss.item())


def test_grounded_tokens_are_the_grounders_fused_tokens_frame_by_frame():
    """Pooled at the end of a question, a frame's grounded tokens are what Grounder.fuse gives that frame; a question
    longer than the text tower's context is read in windows of it."""
    from vlm_primer.text import Tokenizer
    from vlm_primer.video.frame_qa import grounded_tokens

    grounder, transform = zoo.load("grounder-tiny").float().eval(), zoo.preprocess("grounder-tiny")
    tok = Tokenizer.load()
    qa = video_qa_set("standard", 4, split="train")
    clips = [qa.item(i)[0] for i in range(2)]
    frames = transform(torch.stack([render_clip(c, 48) for c in clips]))[:, :3]  # (2, 3, 3, 48, 48)
    enc = tok(["which way does the red square start to move?", "is there a disk?"], max_length=16)
    got = grounded_tokens(grounder, frames, enc["input_ids"], enc["attention_mask"], batch=4)
    assert got.shape == (2, 3, enc["input_ids"].shape[1], 64)
    last = enc["attention_mask"].sum(1) - 1  # the eos token, where the tiny text tower pools
    with torch.no_grad():
        for t in range(3):
            want = grounder.fuse(frames[:, t], enc["input_ids"], enc["attention_mask"])
            torch.testing.assert_close(got[torch.arange(2), t, last], want)
    long = tok(["which happens first: the red square bouncing off a wall or the blue circle touching another shape?"],
               max_length=48)
    n = long["input_ids"].shape[1]
    assert n > 16
    out = grounded_tokens(grounder, frames[:1], long["input_ids"], long["attention_mask"])
    assert out.shape == (1, 3, n, 64) and torch.isfinite(out).all()
    # padding to more windows (some of padding only) changes none of the real tokens
    for enc_, n_ in ((long, n), (enc, enc["input_ids"].shape[1])):
        ids = F.pad(enc_["input_ids"], (0, 48 - n_))
        padded = grounded_tokens(grounder, frames[:1], ids[:1], F.pad(enc_["attention_mask"], (0, 48 - n_))[:1])
        want = grounded_tokens(grounder, frames[:1], enc_["input_ids"][:1], enc_["attention_mask"][:1])
        real = enc_["attention_mask"][0].bool()
        torch.testing.assert_close(padded[0, :, :n_][:, real], want[0][:, real])


def test_masked_frame_tokens_are_not_read_and_the_question_may_live_in_the_frames():
    torch.manual_seed(0)
    model = FrameQA(FrameQAConfig.from_preset("tiny", num_answers=4, tokens_per_frame=12)).eval()
    feats, mask = torch.randn(2, 3, 10, 64), torch.ones(2, 10, dtype=torch.bool)
    mask[0, 6:] = False
    changed = feats.clone()
    changed[0, :, 6:] = 100.0  # only tokens the mask hides
    with torch.no_grad():
        base = model(feats, feature_mask=mask).logits
        torch.testing.assert_close(model(changed, feature_mask=mask).logits, base)
        torch.testing.assert_close(model(feats[:, :, :6], feature_mask=mask[:, :6]).logits[0], base[0])
        assert (model(changed).logits[0] - base[0]).abs().max() > 1e-3  # unmasked, they are read
    import pytest

    with pytest.raises(ValueError, match="neither"):
        model(None)
    with pytest.raises(ValueError, match="tokens_per_frame"):
        model(torch.randn(2, 3, 13, 64))
    with pytest.raises(ValueError, match="feature_mask"):
        model(feats, feature_mask=torch.ones(2, 9))
