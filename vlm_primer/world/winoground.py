"""Winoground-style pairs: two scenes, two captions with the same words in swapped roles.

Explained in notebook 01, §A Winoground pair (evaluated in notebook 07). Caption ``i`` is true of
scene ``i`` and false of the other one; both captions are realised with the same template and
synonym style, so they contain exactly the same multiset of words (Thrush et al., 2022).

* ``binding``:  "a red circle left of a blue square" / "a blue circle left of a red square"
  (scene 1 = scene 0 with the two colors swapped)
* ``relation``: "a red circle left of a blue square" / "a blue square left of a red circle"
  (scene 1 = scene 0 with the two positions swapped)

In a ``relation`` pair the swapped positions are not checked against the canvas: a large object moved to a small
one's place can stick out of the image (12 of 400 pairs, at least 93 % of the object visible); the captions stay
true.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from vlm_primer.world.language import NP, Caption, Relation, holds, realize
from vlm_primer.world.scene import Scene, WorldConfig, clear_relations, sample_scene

WINOGROUND_KINDS: tuple[str, ...] = ("binding", "relation")


@dataclass(frozen=True)
class WinogroundPair:
    scenes: tuple[Scene, Scene]
    captions: tuple[Caption, Caption]
    kind: str


def same_words(a: str, b: str) -> bool:
    """Do two texts use exactly the same multiset of words?"""
    return Counter(a.split()) == Counter(b.split())


def winoground_pair(
    rng: np.random.Generator,
    config: WorldConfig | None = None,
    kind: str = "binding",
    allowed: set[tuple[str, str]] | None = None,
) -> WinogroundPair:
    """Sample a two-object scene and build its Winoground partner (see the module docstring)."""
    if kind not in WINOGROUND_KINDS:
        raise ValueError(f"unknown Winoground kind {kind!r}; choose one of {WINOGROUND_KINDS}")
    cfg = config if config is not None else WorldConfig()
    if len(cfg.colors) < 2 or len(cfg.shapes) < 2:
        raise ValueError("Winoground pairs need at least two colors and two shapes in the config")
    margin = cfg.margin
    for _ in range(1000):
        s0 = sample_scene(rng, cfg, num_objects=2, allowed=allowed)
        a, b = s0.objects
        rels = clear_relations(a, b, margin)
        if a.color == b.color or a.shape == b.shape or not rels:
            continue
        if kind == "binding":
            s1 = s0.replace(0, color=b.color).replace(1, color=a.color)
            if allowed is not None and any(o.composition not in allowed for o in s1.objects):
                continue
        else:
            s1 = s0.replace(0, x=b.x, y=b.y).replace(1, x=a.x, y=a.y)
        rel = rels[int(rng.integers(len(rels)))]
        m0 = Relation(NP(a.shape, a.color), rel, NP(b.shape, b.color))
        if kind == "binding":
            m1 = Relation(NP(a.shape, b.color), rel, NP(b.shape, a.color))
        else:
            m1 = Relation(NP(b.shape, b.color), rel, NP(a.shape, a.color))
        template, style = int(rng.integers(4)), int(rng.integers(2**31))
        caps = tuple(Caption(realize(m, style, template), m, f"winoground_{kind}", template, style) for m in (m0, m1))
        ok = (holds(m0, s0, margin) and holds(m1, s1, margin)
              and not holds(m0, s1, margin) and not holds(m1, s0, margin)
              and same_words(caps[0].text, caps[1].text) and caps[0].text != caps[1].text)
        if ok:
            return WinogroundPair((s0, s1), caps, kind)
    raise ValueError("could not build a Winoground pair; check the config's margin and vocabulary")
