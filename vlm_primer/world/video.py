"""Shapes World in motion: clips, the events in them, temporal questions, and questions that need two frames.

Explained in notebook 08, §The world in motion and §Which questions need two frames (survey §5). A :class:`Clip` is
a sequence of :class:`~vlm_primer.world.Scene` frames of the same objects (object ``i`` of every frame is one
object), which objects are shown in each frame, and an optional *screen*: a gray rectangle drawn over everything,
behind which objects hide. :func:`simulate` moves the objects of a scene at constant velocity (image fractions per
frame, along one axis: left, right, up or down), reflects them off the walls and lets them collide (equal masses,
elastic: the velocity components along the line of centres are exchanged); :func:`sample_clip` draws a scene and
velocities.

**Events are read from the frames, not from the simulator**: :func:`clip_events` finds, in the positions alone, where
each object starts to move, where it bounces off a wall, where two objects hit, where an object goes behind the
screen and comes out, appears or vanishes. Captions (:func:`describe_clip`) and questions (:func:`ask_temporal`)
are written from the events, so the same functions read any clip, a reversed one too.

**Which questions need more than one frame.** One frame holds positions, not time: a frame of clip ``C`` is also a
frame of ``C`` played backwards (:meth:`Clip.reversed`), and for an odd number of frames the middle frame is the
middle frame of both. The reversed clip obeys the same physics (straight lines and wall reflections exactly,
collisions up to the frame on which the contact is detected). When a question's answer differs between ``C`` and
``C.reversed()`` (which way an object starts to move, which of two events came first), no function of a single
frame answers both: :func:`needs_two_frames`
checks exactly that, item by item. Questions about appearance (colour, shape, how many) give the same answer on
both: the single-frame baseline of §5.4 can answer those.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
import numpy as np
import torch

from vlm_primer.validate import check_int
from vlm_primer.world.render import render_numpy
from vlm_primer.world.scene import Scene, WorldConfig, sample_scene
from vlm_primer.world.vqa import Question, _the, unique_ref

__all__ = ["DIRECTIONS", "EVENT_KINDS", "PHYSICS_KINDS", "TEMPORAL_QUESTION_TYPES", "Clip", "Event", "TemporalQuestion", "answer_temporal",
           "ask_temporal", "clip_events", "describe_clip", "needs_two_frames", "physics_pair", "render_clip", "sample_clip",
           "simulate"]

DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
TEMPORAL_QUESTION_TYPES = ("direction", "first_event", "bounces", "hit")
EVENT_KINDS = ("hit", "bounce", "stop", "move", "hide", "unhide", "vanish", "appear")  # order within a step
PHYSICS_KINDS = ("vanish", "pass_through")
SCREEN_COLOR = np.float32(0.55)
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Clip:
    """``frames[t]`` is the scene at frame ``t`` (the same objects, in the same order, in every frame); ``shown[t][i]``
    says whether object ``i`` exists at frame ``t``; ``screen`` is the occluder ``(x0, y0, x1, y1)`` in fractions of
    the side, drawn over everything (None: no screen)."""

    frames: tuple[Scene, ...]
    shown: tuple[tuple[bool, ...], ...]
    screen: Box | None = None

    def __post_init__(self) -> None:
        frames, shown = tuple(self.frames), tuple(tuple(bool(v) for v in s) for s in self.shown)
        if len(frames) < 2 or not all(isinstance(f, Scene) for f in frames):
            raise ValueError(f"a clip needs at least 2 Scene frames, got {len(frames)}")
        n = len(frames[0])
        same = all(len(f) == n and all((a.shape, a.color, a.size) == (b.shape, b.color, b.size)
                                       for a, b in zip(f, frames[0])) for f in frames)
        if not same or len(shown) != len(frames) or any(len(s) != n for s in shown):
            raise ValueError("every frame must hold the same objects in the same order, with one shown flag each")
        object.__setattr__(self, "frames", frames)
        object.__setattr__(self, "shown", shown)

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def num_objects(self) -> int:
        return len(self.frames[0])

    def positions(self) -> np.ndarray:
        """``(T, N, 2)`` object centres ``(x, y)`` per frame."""
        return np.array([[(o.x, o.y) for o in f] for f in self.frames], dtype=np.float64)

    def reversed(self) -> "Clip":
        """The clip played backwards."""
        return Clip(self.frames[::-1], self.shown[::-1], self.screen)


def _check_velocities(velocities, n: int) -> np.ndarray:
    v = np.asarray(velocities, dtype=np.float64)
    if v.shape != (n, 2) or not np.isfinite(v).all():
        raise ValueError(f"velocities must be finite, one (vx, vy) per object: shape ({n}, 2), got {v.shape}")
    if (np.abs(v) >= 0.25).any():
        raise ValueError("a speed of a quarter of the image per frame or more would skip through walls and objects")
    return v


def simulate(scene: Scene, velocities, num_frames: int = 9, *, collide: bool = True, screen: Box | None = None,
             vanish: tuple[int, int] | None = None) -> Clip:
    """Move ``scene``'s objects for ``num_frames`` frames (frame 0 is ``scene``): constant ``velocities`` (one
    ``(vx, vy)`` per object, fractions of the side per frame), reflection off the walls (an object's circumradius
    from the edge), and elastic collisions between objects closer than their two radii that approach each other
    (``collide=False``: they pass through each other, an impossible clip). ``vanish = (i, t)`` removes object ``i``
    from frame ``t`` on (behind a screen: an impossible clip, unless it was meant to vanish)."""
    if not isinstance(scene, Scene) or len(scene) == 0:
        raise TypeError(f"scene must be a Scene with objects, got {scene!r}")
    check_int(num_frames, "num_frames", 2, 256)
    n = len(scene)
    v = _check_velocities(velocities, n)
    if screen is not None:
        box = np.asarray(screen, dtype=np.float64) if not isinstance(screen, str) else np.zeros(0)
        if box.shape != (4,) or not ((0 <= box) & (box <= 1)).all() or box[0] >= box[2] or box[1] >= box[3]:
            raise ValueError(f"screen must be (x0, y0, x1, y1), fractions of the side with x0 < x1 and y0 < y1, "
                             f"got {screen!r}")
    if vanish is not None and (not isinstance(vanish, (tuple, list)) or len(vanish) != 2):
        raise ValueError(f"vanish must be (object, frame), got {vanish!r}")
    if vanish is not None and not (0 <= vanish[0] < n and 0 < vanish[1] < num_frames):
        raise ValueError(f"vanish must be (object, frame) with object < {n} and 0 < frame < {num_frames}, got {vanish}")
    p = np.array([(o.x, o.y) for o in scene], dtype=np.float64)
    r = np.array([o.radius for o in scene])
    frames, shown = [scene], [(True,) * n]
    for t in range(1, num_frames):
        p = p + v
        for axis in (0, 1):  # walls: reflect the overshoot and the velocity
            low, high = p[:, axis] < r, p[:, axis] > 1 - r
            p[low, axis] = 2 * r[low] - p[low, axis]
            p[high, axis] = 2 * (1 - r[high]) - p[high, axis]
            v[low | high, axis] *= -1
        if collide:
            for i in range(n):
                for j in range(i + 1, n):
                    d = p[i] - p[j]
                    dist = float(np.hypot(*d))
                    if 0 < dist < r[i] + r[j] and float(np.dot(v[i] - v[j], d)) < 0:
                        u = d / dist
                        exchange = np.dot(v[i] - v[j], u) * u
                        v[i], v[j] = v[i] - exchange, v[j] + exchange
        frames.append(Scene(tuple(dataclasses.replace(o, x=float(x), y=float(y)) for o, (x, y) in zip(scene, p)),
                            scene.background))
        shown.append(tuple(not (vanish is not None and i == vanish[0] and t >= vanish[1]) for i in range(n)))
    return Clip(tuple(frames), tuple(shown), screen)


def sample_clip(rng: np.random.Generator | int, config: WorldConfig | None = None, *, num_frames: int = 9,
                num_objects: int | tuple[int, int] = (2, 3), speed: tuple[float, float] = (0.03, 0.07),
                still: float = 0.25, allowed=None, required=None) -> Clip:
    """A scene of ``config`` (default: 64 px, large and small objects; ``allowed`` and ``required`` compositions as
    :func:`~vlm_primer.world.sample_scene`) and a velocity per object: still with probability ``still``, else along
    one of :data:`DIRECTIONS` at a speed drawn from ``speed``."""
    rng = np.random.default_rng(rng) if isinstance(rng, (int, np.integer)) else rng
    scene = sample_scene(rng, config or WorldConfig(), num_objects, allowed, required)
    velocities = []
    for _ in scene:
        if rng.random() < still:
            velocities.append((0.0, 0.0))
        else:
            d = np.array(list(DIRECTIONS.values())[int(rng.integers(4))])
            velocities.append(tuple(d * rng.uniform(*speed)))
    return simulate(scene, velocities, num_frames)


# --------------------------------------------------------------------------- events, read from the frames


@dataclass(frozen=True)
class Event:
    """Something that happens between frames ``step`` and ``step + 1``: ``kind`` is "move" (it starts to move;
    ``detail``: the direction), "stop", "bounce" (``detail``: the wall), "hit" (``other``: the object hit), "hide" / "unhide" (behind the
    screen), "vanish" or "appear"; ``subject`` and ``other`` index the clip's objects."""

    step: int
    kind: str
    subject: int
    other: int | None = None
    detail: str = ""


def _direction(v: np.ndarray, eps: float = 1e-9) -> str | None:
    if np.abs(v).max() <= eps:
        return None
    axis = int(np.argmax(np.abs(v)))
    return ("left", "right")[int(v[0] > 0)] if axis == 0 else ("up", "down")[int(v[1] > 0)]


def _covered(clip: Clip, t: int, i: int) -> bool:
    if clip.screen is None:
        return False
    o, (x0, y0, x1, y1) = clip.frames[t][i], clip.screen
    return x0 <= o.x - o.radius and o.x + o.radius <= x1 and y0 <= o.y - o.radius and o.y + o.radius <= y1


def clip_events(clip: Clip) -> list[Event]:
    """Every event of ``clip``, in time order (ties by object), read from its positions and shown flags alone.

    A bounce is where a component of an object's motion between frames changes sign, away from other objects (a
    wall's reflection may fall between frames, so the step across it is short: the sign change is counted once); a
    hit is where the motions of two objects in contact change (recorded once, for the one that moved faster). A wall
    reflection in the same step as a contact is read as the hit only, so "how many times does X bounce?" can come out
    one short (2 of 194 bounce questions, against the simulator's own count)."""
    p, n = clip.positions(), clip.num_objects
    d = np.diff(p, axis=0)  # (T-1, N, 2): the motion between frames
    d[np.abs(d) < 1e-9] = 0.0
    r = np.array([o.radius for o in clip.frames[0]])
    events = [Event(0, "move", i, detail=m) for i in range(n)
              if (m := _direction(d[0, i])) is not None and clip.shown[0][i] and clip.shown[1][i]]
    last_sign = np.sign(d[0])  # (N, 2): the sign of each component's last non-zero motion
    for s in range(1, len(d)):
        changed = [i for i in range(n) if not np.allclose(d[s, i], d[s - 1, i], atol=1e-9)
                   and clip.shown[s][i] and clip.shown[s + 1][i]]  # a vanished object's track is not seen
        touching = {i: [j for j in changed if j != i and np.hypot(*(p[s, i] - p[s, j])) < 1.05 * (r[i] + r[j])]
                    for i in changed}
        for i in changed:
            was, now = _direction(d[s - 1, i]), _direction(d[s, i])
            if was is None and now is not None:
                events.append(Event(s, "move", i, detail=now))
            elif was is not None and now is None:
                events.append(Event(s, "stop", i))
            if touching[i]:
                j = touching[i][0]
                if np.hypot(*d[s - 1, i]) > np.hypot(*d[s - 1, j]) or (
                        np.isclose(np.hypot(*d[s - 1, i]), np.hypot(*d[s - 1, j])) and i < j):
                    events.append(Event(s, "hit", i, j))
                continue
            for axis, walls in ((0, ("left", "right")), (1, ("top", "bottom"))):
                now = np.sign(d[s, i, axis])
                if now != 0 and last_sign[i, axis] != 0 and now != last_sign[i, axis]:
                    events.append(Event(s, "bounce", i, detail=walls[int(last_sign[i, axis] > 0)]))
        nonzero = d[s] != 0
        last_sign[nonzero] = np.sign(d[s][nonzero])
    for t in range(1, len(clip)):
        for i in range(n):
            was, now = clip.shown[t - 1][i], clip.shown[t][i]
            if was != now:
                events.append(Event(t - 1, "appear" if now else "vanish", i))
            elif now and _covered(clip, t, i) != _covered(clip, t - 1, i):
                events.append(Event(t - 1, "hide" if _covered(clip, t, i) else "unhide", i))
    return sorted(events, key=lambda e: (e.step, EVENT_KINDS.index(e.kind), e.subject))


def _names(clip: Clip) -> dict[int, str]:
    """Each object that a phrase picks out alone (in the first frame), with "the" and the phrase."""
    scene, rng = clip.frames[0], np.random.default_rng(0)
    return {i: _the(ref, rng) for i, o in enumerate(scene) if (ref := unique_ref(o, scene)) is not None}


def _event_phrase(e: Event, names: dict[int, str]) -> str:
    return {"move": f"starts moving {e.detail}", "stop": "stops", "bounce": f"bounces off the {e.detail} wall",
            "hit": f"hits {names.get(e.other, 'another shape')}", "hide": "goes behind the screen",
            "unhide": "comes out from behind the screen", "vanish": "vanishes", "appear": "appears"}[e.kind]


def describe_clip(clip: Clip) -> str:
    """A caption with temporal language: each event in order ("the red square starts moving left, then the red
    square hits the blue circle."), and the objects that never move."""
    names = _names(clip)
    for i, o in enumerate(clip.frames[0]):
        names.setdefault(i, f"the {o.color} {o.shape}")
    events = clip_events(clip)
    parts = [f"{names[e.subject]} {_event_phrase(e, names)}" for e in events]
    moving = np.abs(np.diff(clip.positions(), axis=0)).max(axis=(0, 2)) > 1e-9
    still = [names[i] for i in range(clip.num_objects) if not moving[i]]
    text = ", then ".join(parts) if parts else "nothing moves"
    if still and parts:
        text += "; " + " and ".join(still) + (" stays" if len(still) == 1 else " stay") + " still"
    return text + "."


# --------------------------------------------------------------------------- temporal questions


@dataclass(frozen=True)
class TemporalQuestion(Question):
    """A :class:`~vlm_primer.world.vqa.Question` about a clip; ``key`` says what is asked, so that
    :func:`answer_temporal` can answer it on any clip of the same objects (the reversed one)."""

    key: tuple = ()

    @property
    def answer_type(self) -> str:
        return {"bounces": "number", "hit": "yes/no"}.get(self.qtype, "other")


def _once(events: list[Event], subject: int, kind: str) -> Event | None:
    """The one event of ``kind`` that involves object ``subject`` (either side of a hit); None unless exactly one."""
    found = [e for e in events if e.kind == kind and subject in (e.subject, e.other)]
    return found[0] if len(found) == 1 else None


def answer_temporal(clip: Clip, key: tuple) -> str:
    """The answer to the question ``key`` (a :class:`TemporalQuestion`'s) on ``clip``, read from its events."""
    events, kind = clip_events(clip), key[0]
    if kind == "direction":
        return next((e.detail for e in events if e.kind == "move" and e.subject == key[1]), "it stays still")
    if kind == "bounces":
        k = sum(e.kind == "bounce" and e.subject == key[1] for e in events)
        return ("zero", "one", "two", "three", "four", "five")[min(k, 5)]
    if kind == "hit":
        return "yes" if any(e.kind == "hit" and {e.subject, e.other} == set(key[1:]) for e in events) else "no"
    if kind == "first_event":  # key = ("first_event", (i, kind_i), (j, kind_j)): each happens once
        a, b = (_once(events, *k) for k in key[1:])
        if a is None or b is None or a.step == b.step:
            return "neither"  # not once each on this clip, or at the same time
        return "the first" if a.step < b.step else "the second"
    raise ValueError(f"unknown question key {key!r}")


def ask_temporal(clip: Clip, rng: np.random.Generator, qtype: str) -> TemporalQuestion | None:
    """A question of ``qtype`` (:data:`TEMPORAL_QUESTION_TYPES`) about a named object of ``clip`` (None when the type
    does not apply): ``direction`` ("which way does the red square start to move?": left, right, up, down or "it
    stays still"), ``first_event`` ("which happens first: the red square bouncing or the blue circle hitting
    something?", two events that each happen once, at different steps), ``bounces`` ("how many times does the red
    square bounce off a wall?") and ``hit`` ("does the red square hit the blue circle?")."""
    if qtype not in TEMPORAL_QUESTION_TYPES:
        raise ValueError(f"qtype must be one of {TEMPORAL_QUESTION_TYPES}, got {qtype!r}")
    names, events = _names(clip), clip_events(clip)
    if not names:
        return None
    pick = lambda items: items[int(rng.integers(len(items)))]  # noqa: E731
    if qtype in ("direction", "bounces"):
        i = pick(sorted(names))
        key = (qtype, i)
        text = (f"which way does {names[i]} start to move?" if qtype == "direction" else
                f"how many times does {names[i]} bounce off a wall?")
    elif qtype == "hit":
        pairs = [(i, j) for i in sorted(names) for j in sorted(names) if i < j]
        if not pairs:
            return None
        i, j = pick(pairs)
        key, text = ("hit", i, j), f"does {names[i]} hit {names[j]}?"
    else:
        once = [(i, e) for i in sorted(names) for kind in ("bounce", "hit") if (e := _once(events, i, kind))]
        pairs = [(a, b) for a in once for b in once if a[1].step != b[1].step and a[0] != b[0]]
        if not pairs:
            return None
        a, b = pick(pairs)
        gerund = {"bounce": "bouncing off a wall", "hit": "touching another shape"}
        phrases = [f"{names[i]} {gerund[e.kind]}" for i, e in (a, b)]
        key = ("first_event", (a[0], a[1].kind), (b[0], b[1].kind))
        text = f"which happens first: {phrases[0]} or {phrases[1]}?"
    answer = answer_temporal(clip, key)
    if qtype == "first_event":
        answer = phrases[0] if answer == "the first" else phrases[1]
    return TemporalQuestion(text, answer, (answer,) * 10, qtype, answer + ".", key=key)


def needs_two_frames(clip: Clip, question: TemporalQuestion) -> bool:
    """True when the reversed clip, which holds the same frames (for an odd length, the same middle frame as well),
    answers ``question`` differently: then no function of one frame is right on both."""
    if not isinstance(question, TemporalQuestion):
        raise TypeError(f"question must be a TemporalQuestion, got {type(question).__name__}")
    mine, theirs = answer_temporal(clip, question.key), answer_temporal(clip.reversed(), question.key)
    return mine != theirs and theirs != "neither"


# --------------------------------------------------------------------------- intuitive physics


def physics_pair(rng: np.random.Generator | int, kind: str, *, num_frames: int = 15) -> tuple[Clip, Clip, int]:
    """A matched ``(possible, impossible, first_different_frame)`` pair for a violation-of-expectation probe: the
    same objects and motion, identical frames up to ``first_different_frame``.

    ``vanish``: one large object moves right behind a screen (a vertical band); in the possible clip it comes out on
    the other side, in the impossible one it is gone from the frame it is fully hidden on. ``pass_through``: two
    large objects move towards each other on one line; in the possible clip they collide and bounce apart, in the
    impossible one they pass through each other."""
    if kind not in PHYSICS_KINDS:
        raise ValueError(f"kind must be one of {PHYSICS_KINDS}, got {kind!r}")
    rng = np.random.default_rng(rng) if isinstance(rng, (int, np.integer)) else rng
    cfg = WorldConfig(sizes=("large",))
    objs = sample_scene(rng, cfg, 2).objects
    y, speed = float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.045, 0.055))
    if kind == "vanish":
        mover = dataclasses.replace(objs[0], x=objs[0].radius + 0.02, y=y)
        screen = (0.32, 0.0, 0.68, 1.0)
        possible = simulate(Scene((mover,)), [(speed, 0.0)], num_frames, screen=screen)
        hidden = next((t for t in range(len(possible)) if _covered(possible, t, 0)), None)
        if hidden is None:
            raise ValueError(f"num_frames={num_frames} is too short for the object to reach the screen")
        impossible = simulate(Scene((mover,)), [(speed, 0.0)], num_frames, screen=screen, vanish=(0, hidden))
    else:
        a = dataclasses.replace(objs[0], x=objs[0].radius + 0.02, y=y)
        b = dataclasses.replace(objs[1], x=1 - objs[1].radius - 0.02, y=y)
        velocities = [(speed, 0.0), (-speed, 0.0)]
        possible = simulate(Scene((a, b)), velocities, num_frames)
        impossible = simulate(Scene((a, b)), velocities, num_frames, collide=False)
    frames_p, frames_i = render_clip(possible), render_clip(impossible)
    differs = [t for t in range(num_frames) if not torch.equal(frames_p[t], frames_i[t])]
    if not differs:
        raise RuntimeError("the pair never differs: num_frames is too short for the event")
    return possible, impossible, differs[0]


# --------------------------------------------------------------------------- rendering


def render_clip(clip: Clip, size: int = 64) -> torch.Tensor:
    """The clip's frames ``(T, 3, size, size)`` in ``[0, 1]``: the shown objects of each frame, then the screen."""
    if not isinstance(clip, Clip):
        raise TypeError(f"clip must be a Clip, got {type(clip).__name__}")
    out = np.empty((len(clip), 3, size, size), dtype=np.float32)
    for t, (frame, shown) in enumerate(zip(clip.frames, clip.shown)):
        out[t] = render_numpy(Scene(tuple(o for o, s in zip(frame, shown) if s), frame.background), size)
        if clip.screen is not None:
            x0, y0, x1, y1 = (int(round(c * size)) for c in clip.screen)
            out[t, :, y0:y1, x0:x1] = SCREEN_COLOR
    return torch.from_numpy(out)

