"""Hard negatives: captions one edit away from a true one, and false of the scene.

Explained in notebook 01, §Hard negatives (and used in notebook 07 for ARO/SugarCrepe-style tests).
Every negative is an edit of the caption's *meaning*, realised with the same template and
synonyms, and kept only if ``holds`` says it is false of the scene:

* ``binding``   swap an attribute between two objects: "a red circle and a blue square" -> "a blue circle and a red square"
* ``relation``  swap the arguments ("Y left of X") or flip the relation ("X right of Y")
* ``shuffle``   word-order shuffle of the nouns: "a red circle left of a blue square" -> "a red square left of a blue circle"
* ``replace``   replace one attribute or object ("a red circle" -> "a green circle"), a count, or an absent object

A relation negative is false by ``holds``, which needs an offset past the margin: a few are false only because
of it (0.1-0.5 % of relation, shuffle and replace negatives are true with margin 0, e.g. a triangle 2 px below the
hexagon it is said to be under).
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from vlm_primer.world.language import (
    DEFAULT_MARGIN,
    NP,
    Absent,
    Caption,
    Count,
    Exists,
    Meaning,
    Relation,
    holds,
    realize,
)
from vlm_primer.world.scene import Scene
from vlm_primer.world.vocab import COLORS, NUMBER_WORDS, OPPOSITE, SHAPES, SIZES

NEGATIVE_KINDS: tuple[str, ...] = ("binding", "relation", "shuffle", "replace")


def _nps(m: Meaning) -> list[NP]:
    return list(m.nps) if isinstance(m, Exists) else [m.a, m.b] if isinstance(m, Relation) else [m.np]


def _with_nps(m: Meaning, nps: list[NP]) -> Meaning:
    if isinstance(m, Exists):
        return Exists(tuple(nps))
    if isinstance(m, Relation):
        return Relation(nps[0], m.rel, nps[1])
    return dataclasses.replace(m, np=nps[0])


def _swap_field(m: Meaning, field: str) -> list[Meaning]:
    nps = _nps(m)
    out = []
    for i, j in itertools.combinations(range(len(nps)), 2):
        vi, vj = getattr(nps[i], field), getattr(nps[j], field)
        if vi is None or vj is None or vi == vj:
            continue
        new = list(nps)
        new[i] = dataclasses.replace(nps[i], **{field: vj})
        new[j] = dataclasses.replace(nps[j], **{field: vi})
        out.append(_with_nps(m, new))
    return out


def candidates(meaning: Meaning, kind: str, scene: Scene | None = None) -> list[Meaning]:
    """All edits of ``kind`` of ``meaning`` (not yet filtered for falsity)."""
    if kind == "binding":
        if isinstance(meaning, (Exists, Relation)):
            return _swap_field(meaning, "color") + _swap_field(meaning, "size")
        return []
    if kind == "relation":
        if isinstance(meaning, Relation):
            return [Relation(meaning.b, meaning.rel, meaning.a), Relation(meaning.a, OPPOSITE[meaning.rel], meaning.b)]
        return []
    if kind == "shuffle":
        if isinstance(meaning, (Exists, Relation)):
            return _swap_field(meaning, "shape")
        return []
    if kind == "replace":
        if isinstance(meaning, Count):
            near = range(max(1, meaning.n - 2), min(len(NUMBER_WORDS), meaning.n + 3))  # off by one or two
            return [Count(n, meaning.np) for n in near if n != meaning.n]
        if isinstance(meaning, Absent) and scene is not None:
            return [Absent(NP(o.shape, o.color)) for o in scene.objects]
        out = []
        nps = _nps(meaning)
        for i, np_ in enumerate(nps):
            for field, values in (("color", COLORS), ("shape", SHAPES), ("size", SIZES)):
                if getattr(np_, field) is None:
                    continue
                for v in values:
                    if v != getattr(np_, field):
                        new = list(nps)
                        new[i] = dataclasses.replace(np_, **{field: v})
                        out.append(_with_nps(meaning, new))
        return out
    raise ValueError(f"unknown negative kind {kind!r}; choose one of {NEGATIVE_KINDS}")


def hard_negatives(
    caption: Caption,
    scene: Scene,
    rng: np.random.Generator,
    kinds: tuple[str, ...] = NEGATIVE_KINDS,
    margin: float = DEFAULT_MARGIN,
) -> list[Caption]:
    """At most one negative of each kind that applies, each false of ``scene``.

    The text reuses the caption's template and synonym style, so it differs only where the meaning does.
    """
    if not isinstance(caption, Caption):
        raise TypeError(f"caption must be a Caption (with a meaning), got {type(caption).__name__}")
    out = []
    for kind in kinds:
        false = [m for m in candidates(caption.meaning, kind, scene) if not holds(m, scene, margin)]
        if not false:
            continue
        m = false[int(rng.integers(len(false)))]
        out.append(Caption(realize(m, caption.style, caption.template), m, f"neg_{kind}",
                           caption.template, caption.style))
    return out


def hard_negative(
    caption: Caption,
    scene: Scene,
    rng: np.random.Generator,
    kind: str | None = None,
    margin: float = DEFAULT_MARGIN,
) -> Caption | None:
    """One negative of ``kind`` (a random applicable kind if None), or None when none exists."""
    negs = hard_negatives(caption, scene, rng, NEGATIVE_KINDS if kind is None else (kind,), margin)
    if not negs:
        return None
    return negs[int(rng.integers(len(negs)))]
