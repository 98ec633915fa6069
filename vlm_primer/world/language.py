"""The language of Shapes World: structured meanings, a template grammar, and a truth checker.

Explained in notebook 01, §Captions. Every caption is built from a *meaning* (a small frozen
dataclass) and only then realised as text with synonyms and paraphrases, so that

* ``holds(meaning, scene)`` decides truth from the scene graph alone (no string matching), and
* hard negatives (``negatives.py``) edit the meaning, not the string.

Meanings and their semantics (``margin``: a relation needs an offset larger than it):

* ``Exists(nps)``      there are *distinct* objects matching each noun phrase ("a red circle and a blue square")
* ``Relation(a, r, b)`` some object matching ``a`` is clearly ``r`` of some other object matching ``b``
* ``Count(n, np)``     exactly ``n`` objects match ``np`` ("two blue squares", "three shapes")
* ``Absent(np)``       no object matches ``np`` ("there is no green star")

Known gap: a relation caption with the definite template ("the X is left of the Y") can name an object that has a
twin in the scene (2-5 % of such captions, e.g. "the small cyan square is over the small cyan square"): the caption
is true (``holds``), but "the" promises a unique referent. Questions avoid this with ``unique_ref``.
"""

from __future__ import annotations

import itertools
import re
import zlib
from dataclasses import dataclass
from typing import Union

import numpy as np

from vlm_primer.validate import check_int
from vlm_primer.world.scene import Obj, Scene, clear_relations, relation_holds
from vlm_primer.world.vocab import (
    COLOR_WORDS,
    NUMBER_WORDS,
    OPPOSITE,
    PLURALS,
    RELATION_PHRASES,
    SHAPE_WORDS,
    SIZE_WORDS,
    check_color,
    check_relation,
    check_shape,
    check_size,
)

DEFAULT_MARGIN = 0.08  # same as WorldConfig.margin


@dataclass(frozen=True)
class NP:
    """A noun phrase: ``[size] [color] shape``; a missing shape reads "shape"/"object"."""

    shape: str | None = None
    color: str | None = None
    size: str | None = None

    def __post_init__(self) -> None:
        if self.shape is not None:
            check_shape(self.shape)
        if self.color is not None:
            check_color(self.color)
        if self.size is not None:
            check_size(self.size)

    def matches(self, obj: Obj) -> bool:
        return ((self.shape is None or obj.shape == self.shape)
                and (self.color is None or obj.color == self.color)
                and (self.size is None or obj.size == self.size))


@dataclass(frozen=True)
class Exists:
    nps: tuple[NP, ...]


@dataclass(frozen=True)
class Relation:
    a: NP
    rel: str
    b: NP

    def __post_init__(self) -> None:
        check_relation(self.rel)


@dataclass(frozen=True)
class Count:
    n: int
    np: NP

    def __post_init__(self) -> None:
        check_int(self.n, "Count.n", 1, len(NUMBER_WORDS) - 1)


@dataclass(frozen=True)
class Absent:
    np: NP


Meaning = Union[Exists, Relation, Count, Absent]


@dataclass(frozen=True)
class Caption:
    """A caption: its text, the meaning it was realised from, and its kind (e.g. ``relation``)."""

    text: str
    meaning: Meaning
    kind: str
    template: int = 0
    style: int | None = None  # synonym style (None: canonical words), see _pick

    def __str__(self) -> str:
        return self.text


# --------------------------------------------------------------------------- truth


def holds(meaning: Meaning, scene: Scene, margin: float = DEFAULT_MARGIN) -> bool:
    """Is ``meaning`` true of ``scene``? Decided from the scene graph only."""
    objs = scene.objects
    if isinstance(meaning, Exists):
        k = len(meaning.nps)
        if k == 0:
            raise ValueError("Exists needs at least one noun phrase")
        cands = [[i for i, o in enumerate(objs) if np_.matches(o)] for np_ in meaning.nps]
        return any(len(set(choice)) == k for choice in itertools.product(*cands))
    if isinstance(meaning, Relation):
        return any(
            meaning.a.matches(a) and meaning.b.matches(b) and relation_holds(a, b, meaning.rel, margin)
            for a, b in itertools.permutations(objs, 2)
        )
    if isinstance(meaning, Count):
        return sum(meaning.np.matches(o) for o in objs) == meaning.n
    if isinstance(meaning, Absent):
        return not any(meaning.np.matches(o) for o in objs)
    raise TypeError(f"unknown meaning type {type(meaning).__name__}")


# --------------------------------------------------------------------------- realisation

# Templates: {a}/{b} indefinite NPs ("a red circle"), {the_a}/{the_b} definite, {r} relation phrase,
# {list} a list of indefinite NPs, {n} a number word, {pl} a plural NP ("blue squares"), {bare} an NP
# without article ("green star").
TEMPLATES: dict[str, tuple[str, ...]] = {
    "attribute": ("{list}", "there is {list}", "a picture of {list}", "an image showing {list}"),
    "objects": ("{list}", "there is {list}", "a picture of {list}", "the image shows {list}"),
    "relation": ("{a} {r} {b}", "there is {a} {r} {b}", "the {bare_a} is {r} the {bare_b}",
                 "a picture of {a} {r} {b}"),
    "count": ("{n} {pl}", "there are {n} {pl}", "exactly {n} {pl}", "the image shows {n} {pl}"),
    "count_one": ("one {bare}", "there is one {bare}", "exactly one {bare}", "a single {bare}"),
    "absent": ("there is no {bare}", "there are no {pl}", "no {pl}", "the image has no {bare}"),
}
TEMPLATE_WORDS: frozenset[str] = frozenset(
    w for ts in TEMPLATES.values() for t in ts for w in re.sub(r"\{\w+\}", " ", t).split()
) | {"a", "an", "and", "shape", "object"}


Style = Union[np.random.Generator, int, None]


def _pick(options: tuple[str, ...], style: Style) -> str:
    """A synonym: the canonical one (None), a random one (Generator), or a fixed one per ``(style, word)``
    (int): the same style always renames a word the same way, so a negative or a Winoground partner
    realised with its caption's style differs from it only where the meaning differs."""
    if style is None or len(options) == 1:
        return options[0]
    if isinstance(style, np.random.Generator):
        return options[int(style.integers(len(options)))]
    return options[zlib.crc32(f"{style}:{options[0]}".encode()) % len(options)]


def np_words(np_: NP, style: Style = None, plural: bool = False) -> str:
    """``[size] [color] shape`` without article; synonyms chosen by ``style`` (see ``_pick``)."""
    words = []
    if np_.size is not None:
        words.append(_pick(SIZE_WORDS[np_.size], style))
    if np_.color is not None:
        words.append(_pick(COLOR_WORDS[np_.color], style))
    noun = _pick(SHAPE_WORDS[np_.shape], style) if np_.shape is not None else _pick(("shape", "object"), style)
    words.append(PLURALS[noun] if plural else noun)
    return " ".join(words)


def _indefinite(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def realize(meaning: Meaning, rng: Style = None, template: int | None = None) -> str:
    """Text for ``meaning``. ``rng``: a Generator draws template and synonyms at random, an int is a
    fixed *style* (see ``_pick``), None gives canonical words. ``template`` forces a template index
    (negatives and Winoground pairs reuse their caption's template and style).
    """
    def choose(kind: str) -> str:
        ts = TEMPLATES[kind]
        if template is not None:
            return ts[template % len(ts)]
        return _pick(ts, rng) if isinstance(rng, np.random.Generator) else ts[0]

    if isinstance(meaning, Exists):
        t = choose("attribute" if len(meaning.nps) == 1 else "objects")
        return t.format(list=_join([_indefinite(np_words(n, rng)) for n in meaning.nps]))
    if isinstance(meaning, Relation):
        t = choose("relation")
        a, b = np_words(meaning.a, rng), np_words(meaning.b, rng)
        r = _pick(RELATION_PHRASES[meaning.rel], rng)
        return t.format(a=_indefinite(a), b=_indefinite(b), bare_a=a, bare_b=b, r=r)
    if isinstance(meaning, Count):
        if meaning.n == 1:
            return choose("count_one").format(bare=np_words(meaning.np, rng))
        return choose("count").format(n=NUMBER_WORDS[meaning.n], pl=np_words(meaning.np, rng, plural=True))
    if isinstance(meaning, Absent):
        t = choose("absent")
        return t.format(bare=np_words(meaning.np, rng), pl=np_words(meaning.np, rng, plural=True))
    raise TypeError(f"unknown meaning type {type(meaning).__name__}")


def paraphrases(meaning: Meaning, rng: np.random.Generator, k: int = 4) -> list[str]:
    """Up to ``k`` distinct texts for the same meaning (relations may also be read backwards:
    "X left of Y" = "Y right of X")."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    out: list[str] = []
    for _ in range(8 * k):
        m = meaning
        if isinstance(m, Relation) and rng.random() < 0.3:
            m = Relation(m.b, OPPOSITE[m.rel], m.a)
        text = realize(m, rng)
        if text not in out:
            out.append(text)
        if len(out) == k:
            break
    return out


# --------------------------------------------------------------------------- describing a scene

CAPTION_KINDS: tuple[str, ...] = ("objects", "attribute", "relation", "count", "absent")


def full_np(obj: Obj) -> NP:
    return NP(obj.shape, obj.color, obj.size)


def referring_np(obj: Obj, scene: Scene) -> NP:
    """The shortest noun phrase that picks out ``obj`` alone (falls back to all attributes)."""
    for attrs in (("shape",), ("color", "shape"), ("size", "shape"), ("size", "color", "shape")):
        np_ = NP(**{a: getattr(obj, a) for a in attrs})
        if sum(np_.matches(o) for o in scene.objects) == 1:
            return np_
    return full_np(obj)


def scene_meanings(
    scene: Scene,
    rng: np.random.Generator,
    kind: str,
    margin: float = DEFAULT_MARGIN,
    colors: tuple[str, ...] | None = None,
    shapes: tuple[str, ...] | None = None,
) -> Meaning | None:
    """One true meaning of the given kind for ``scene`` (None when the kind does not apply)."""
    from vlm_primer.world.vocab import COLORS, SHAPES

    objs = scene.objects
    if not objs:
        return None
    if kind == "objects":
        return Exists(tuple(full_np(o) for o in objs))
    if kind == "attribute":
        o = objs[int(rng.integers(len(objs)))]
        attrs = [("size", "color", "shape"), ("color", "shape"), ("size", "shape")][int(rng.integers(3))]
        return Exists((NP(**{a: getattr(o, a) for a in attrs}),))
    if kind == "relation":
        pairs = [(a, b, r) for a, b in itertools.permutations(objs, 2) for r in clear_relations(a, b, margin)]
        if not pairs:
            return None
        a, b, r = pairs[int(rng.integers(len(pairs)))]
        return Relation(referring_np(a, scene), r, referring_np(b, scene))
    if kind == "count":
        o = objs[int(rng.integers(len(objs)))]
        options = [NP(), NP(shape=o.shape), NP(o.shape, o.color), NP(color=o.color)]
        np_ = options[int(rng.integers(len(options)))]
        return Count(sum(np_.matches(x) for x in objs), np_)
    if kind == "absent":
        colors = colors or tuple(COLORS)
        shapes = shapes or tuple(SHAPES)
        present = {(o.color, o.shape) for o in objs}
        missing = [(c, s) for c in colors for s in shapes if (c, s) not in present]
        if not missing:
            return None
        c, s = missing[int(rng.integers(len(missing)))]
        return Absent(NP(s, c))
    raise ValueError(f"unknown caption kind {kind!r}; choose one of {CAPTION_KINDS}")


def caption_scene(
    scene: Scene,
    rng: np.random.Generator,
    kind: str = "objects",
    margin: float = DEFAULT_MARGIN,
    **vocab,
) -> Caption | None:
    """A true caption of ``kind`` (text drawn with synonyms/paraphrases), or None if it does not apply."""
    meaning = scene_meanings(scene, rng, kind, margin, **vocab)
    if meaning is None:
        return None
    template, style = int(rng.integers(len(TEMPLATES["count"]))), int(rng.integers(2**31))
    return Caption(realize(meaning, style, template), meaning, kind, template, style)


def describe(
    scene: Scene,
    rng: np.random.Generator,
    kinds: tuple[str, ...] = CAPTION_KINDS,
    margin: float = DEFAULT_MARGIN,
    **vocab,
) -> list[Caption]:
    """One true caption of each applicable kind."""
    out = []
    for kind in kinds:
        cap = caption_scene(scene, rng, kind, margin, **vocab)
        if cap is not None:
            out.append(cap)
    return out
