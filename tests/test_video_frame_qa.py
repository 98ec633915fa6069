"""Chapter 08's FrameQA: the frozen tower's pooled grid, the answer classes, and a joint encoder that reads frames in
time only through its time embedding."""

from __future__ import annotations

import numpy as np
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


def test_answer_classes_turn_which_first_into_the_option_position():
    qa = video_qa_set("temporal", 40, split="train")
    items = [qa.item(i) for i in range(40)]
    firsts = [(c, q) for c, q in items if q.qtype == "first_event"]
    assert firsts
    for c, q in firsts:
        a, b = q.question.split(": ", 1)[1].rstrip("?").rsplit(" or ", 1)
        assert answer_index(c, q) == (FIRST if q.answer == a else SECOND) and q.answer in (a, b)
    assert set(answer_classes(items)) <= {FIRST, SECOND, "left", "right", "up", "down"}


def test_frames_are_read_in_time_only_through_the_time_embedding():
    torch.manual_seed(0)
    model = FrameQA(FrameQAConfig.from_preset("tiny", num_answers=6)).eval()
    feats, ids = torch.randn(2, 5, 16, 64), torch.randint(10, 800, (2, 7))
    perm = [3, 0, 4, 1, 2]
    with torch.no_grad():
        base = model(feats, ids).logits
        assert (model(feats[:, perm], ids).logits - base).abs().max() > 1e-4  # order changes the answer
        torch.testing.assert_close(model(feats[:, perm], ids, frame_ids=perm).logits, base)  # ... only via time
        model.time_emb.zero_()
        torch.testing.assert_close(model(feats[:, perm], ids).logits, model(feats, ids).logits)
        # one frame with its own id, and the blind reader: the question alone
        assert model(feats[:, 2:3], ids, frame_ids=[4]).logits.shape == (2, 6)
        assert model(None, ids).logits.shape == (2, 6)


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
