"""Chapter 08's Shapes World in motion: the simulator's physics (straight lines, walls, elastic collisions that
conserve momentum and energy), time reversal, events read from the frames, captions, the needs-two-frames check
(the reversed clip shows the same middle frame and answers differently), the intuitive-physics pairs, rendering and
bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from vlm_primer.world import Obj, Scene
from vlm_primer.world.video import (PHYSICS_KINDS, TEMPORAL_QUESTION_TYPES, Clip, Event, answer_temporal,
                                    ask_temporal, clip_events, describe_clip, needs_two_frames, physics_pair,
                                    render_clip, sample_clip, simulate)

HEAD_ON = Scene((Obj("circle", "red", x=0.2, y=0.5), Obj("square", "blue", x=0.6, y=0.5)))


def test_free_motion_is_a_straight_line_and_walls_reflect():
    clip = simulate(Scene((Obj("circle", "red", x=0.5, y=0.5),)), [(0.03, -0.02)], 5)
    p = clip.positions()[:, 0]
    np.testing.assert_allclose(np.diff(p, axis=0), [[0.03, -0.02]] * 4, atol=1e-12)
    r = HEAD_ON[0].radius
    wall = simulate(Scene((Obj("circle", "red", x=1 - r - 0.01, y=0.5),)), [(0.04, 0.0)], 3).positions()[:, 0, 0]
    np.testing.assert_allclose(wall, [1 - r - 0.01, 1 - r - 0.03, 1 - r - 0.07], atol=1e-12)  # 0.03 past: 0.03 back


def _velocities(clip: Clip, step: int) -> np.ndarray:
    return np.diff(clip.positions(), axis=0)[step]


@given(st.floats(0.02, 0.06), st.floats(-0.03, 0.03), st.floats(0.35, 0.65))
def test_collisions_conserve_momentum_and_energy(speed, other, y):
    scene = Scene((Obj("circle", "red", x=0.25, y=0.5), Obj("circle", "blue", size="small", x=0.62, y=y)))
    clip = simulate(scene, [(speed, 0.0), (other, 0.0)], 12)
    hits = [e for e in clip_events(clip) if e.kind == "hit"]
    if not hits:
        return
    before, after = _velocities(clip, hits[0].step - 1), _velocities(clip, hits[0].step)
    if any(e.kind == "bounce" and e.step in (hits[0].step, hits[0].step + 1) for e in clip_events(clip)):
        return  # a wall in the same step changes the sums
    np.testing.assert_allclose(before.sum(0), after.sum(0), atol=1e-9)
    assert (before ** 2).sum() == pytest.approx((after ** 2).sum(), abs=1e-9)


def test_events_of_a_head_on_collision_and_its_reversal():
    clip = simulate(HEAD_ON, [(0.05, 0.0), (0.0, 0.0)], 15)
    kinds = [(e.kind, e.subject, e.other, e.detail) for e in clip_events(clip)]
    assert kinds == [("move", 0, None, "right"), ("hit", 0, 1, ""), ("stop", 0, None, ""), ("move", 1, None, "right"),
                     ("bounce", 1, None, "right")]
    assert describe_clip(clip) == ("the disk starts moving right, then the disk hits the square, then the disk "
                                   "stops, then the square starts moving right, then the square bounces off the "
                                   "right wall.")
    back = [(e.kind, e.subject, e.detail) for e in clip_events(clip.reversed())]
    assert back[:2] == [("move", 1, "right"), ("bounce", 1, "right")] and ("move", 0, "left") in back
    still = simulate(HEAD_ON, [(0.0, 0.05), (0.0, 0.0)], 3)
    assert describe_clip(still).endswith("; the square stays still.")


@pytest.mark.parametrize("seed", range(40))
def test_reversal_keeps_the_frames_and_the_counts(seed):
    clip = sample_clip(seed)
    back = clip.reversed()
    frames, frames_back = render_clip(clip), render_clip(back)
    assert torch.equal(frames.flip(0), frames_back)
    assert torch.equal(frames[len(clip) // 2], frames_back[len(clip) // 2])  # 9 frames: the same middle frame
    for kind in ("bounce", "hit"):
        assert sum(e.kind == kind for e in clip_events(clip)) == sum(e.kind == kind for e in clip_events(back))


def test_needs_two_frames_is_proved_by_the_reversed_clip_and_only_claimed_then():
    counts = {t: [0, 0] for t in TEMPORAL_QUESTION_TYPES}
    for seed in range(150):
        clip = sample_clip(seed)
        for qtype in TEMPORAL_QUESTION_TYPES:
            q = ask_temporal(clip, np.random.default_rng(seed), qtype)
            if q is None:
                continue
            counts[qtype][0] += 1
            assert q.answer == q.answers[0]
            if needs_two_frames(clip, q):
                counts[qtype][1] += 1
                other = answer_temporal(clip.reversed(), q.key)
                assert other != answer_temporal(clip, q.key)
    assert counts["first_event"][1] == counts["first_event"][0] > 10  # every order question flips
    assert 0.3 < counts["direction"][1] / counts["direction"][0] < 0.7  # those that end as they started do not
    assert counts["bounces"][1] == counts["hit"][1] == 0  # counts and contacts survive reversal: not claimed


def test_questions_read_the_events():
    clip = simulate(HEAD_ON, [(0.05, 0.0), (0.0, 0.0)], 15)
    assert answer_temporal(clip, ("direction", 0)) == answer_temporal(clip, ("direction", 1)) == "right"  # once hit
    assert answer_temporal(simulate(HEAD_ON, [(0.0, 0.05), (0.0, 0.0)], 3), ("direction", 1)) == "it stays still"
    assert answer_temporal(clip, ("bounces", 1)) == "one" and answer_temporal(clip, ("hit", 0, 1)) == "yes"
    assert answer_temporal(clip, ("first_event", (0, "hit"), (1, "bounce"))) == "the first"
    assert answer_temporal(clip.reversed(), ("first_event", (0, "hit"), (1, "bounce"))) == "the second"
    q = ask_temporal(clip, np.random.default_rng(0), "first_event")
    assert q.question.startswith("which happens first: ") and q.answer in q.question
    assert needs_two_frames(clip, q)


@pytest.mark.parametrize("kind", PHYSICS_KINDS)
def test_physics_pairs_match_until_the_violation(kind):
    for seed in range(5):
        possible, impossible, t = physics_pair(seed, kind)
        a, b = render_clip(possible), render_clip(impossible)
        assert torch.equal(a[:t], b[:t]) and not torch.equal(a[t], b[t])
        if kind == "vanish":
            assert [e.kind for e in clip_events(possible)][:3] == ["move", "hide", "unhide"]  # then perhaps a wall
            assert [e.kind for e in clip_events(impossible)] == ["move", "vanish"]
        else:
            assert any(e.kind == "hit" for e in clip_events(possible))
            assert not any(e.kind == "hit" for e in clip_events(impossible))


def test_rendering_draws_shown_objects_and_the_screen_on_top():
    clip = simulate(HEAD_ON, [(0.0, 0.0), (0.0, 0.0)], 3, screen=(0.5, 0.0, 0.7, 1.0), vanish=(0, 2))
    frames = render_clip(clip, 32)
    assert frames.shape == (3, 3, 32, 32) and frames.dtype == torch.float32
    assert torch.all(frames[:, :, :, 16:22] == 0.55)  # the screen hides the square's middle
    assert not torch.equal(frames[1], frames[2])  # the circle is gone in the last frame
    bare = render_clip(Clip(clip.frames, ((True, False),) * 3), 32)
    assert torch.equal(bare[0], bare[2])


def test_bad_input_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match=r"shape \(2, 2\)"):
        simulate(HEAD_ON, [(0.1, 0.0)], 5)
    with pytest.raises(ValueError, match="quarter of the image"):
        simulate(HEAD_ON, [(0.3, 0.0), (0.0, 0.0)], 5)
    with pytest.raises(ValueError, match="finite"):
        simulate(HEAD_ON, [(float("nan"), 0.0), (0.0, 0.0)], 5)
    with pytest.raises(ValueError, match="num_frames"):
        simulate(HEAD_ON, [(0.0, 0.0)] * 2, 1)
    with pytest.raises(ValueError, match="vanish"):
        simulate(HEAD_ON, [(0.0, 0.0)] * 2, 5, vanish=(2, 1))
    with pytest.raises(ValueError, match="vanish must be \\(object, frame\\)"):
        simulate(HEAD_ON, [(0.0, 0.0)] * 2, 5, vanish=(0,))
    for screen in ((0, 1), (0.5, 0.0, 0.2, 1.0), (0.0, 0.0, 1.5, 1.0)):
        with pytest.raises(ValueError, match="screen must be"):
            simulate(HEAD_ON, [(0.0, 0.0)] * 2, 5, screen=screen)
    with pytest.raises(ValueError, match="too short for the object to reach the screen"):
        physics_pair(0, "vanish", num_frames=5)
    with pytest.raises(TypeError, match="Scene"):
        simulate("scene", [(0.0, 0.0)], 5)
    with pytest.raises(ValueError, match="same objects"):
        Clip((HEAD_ON, Scene(HEAD_ON.objects[:1])), ((True, True), (True,)))
    with pytest.raises(ValueError, match="at least 2"):
        Clip((HEAD_ON,), ((True, True),))
    with pytest.raises(ValueError, match="qtype"):
        ask_temporal(sample_clip(0), np.random.default_rng(0), "color")
    with pytest.raises(ValueError, match="kind"):
        physics_pair(0, "teleport")
    with pytest.raises(TypeError, match="TemporalQuestion"):
        needs_two_frames(sample_clip(0), "which way?")
    with pytest.raises(TypeError, match="Clip"):
        render_clip(HEAD_ON)
    assert Event(0, "move", 0).other is None
