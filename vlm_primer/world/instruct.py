"""Instruction data as LLaVA made it, written from the scene graph, plus grounding targets.

Explained in notebook 01, §Instruction data. LLaVA (Liu et al., 2023) gave a text-only GPT-4 the
captions and boxes of a COCO image and asked for three kinds of data: a multi-turn *conversation*
about the image, a *detailed description*, and *complex reasoning* (a question whose answer takes
a step of inference). Here the scene graph is the symbolic input and a deterministic teacher
writes the same three kinds, every statement true by construction, as chat messages in the
tokenizer's template (``vlm_primer.text.encode_chat`` trains on the assistant's tokens only). The
first user turn carries the ``<image>`` placeholder, as in LLaVA.

Grounding targets write an object's box as text, ``<box>x1,y1,x2,y2</box>``, corners normalised to
integers in ``[0, 100)`` (Kosmos-2 and Qwen-VL use the same idea with their own token formats).

Known gap: a reasoning question "what color is the object below the triangle?" requires one object *clearly*
below it (past the relation margin); another object may lie just below it within the margin (about 3 % of such
questions), which a reader would also call "below".
"""

from __future__ import annotations

import itertools
import numpy as np

from vlm_primer.text.chat import IMAGE_TOKEN
from vlm_primer.validate import check_int
from vlm_primer.world.language import NP, np_words, referring_np
from vlm_primer.world.render import object_box
from vlm_primer.world.scene import Obj, Scene, clear_relations
from vlm_primer.world.vocab import NUMBER_WORDS, RELATION_PHRASES, SHAPES
from vlm_primer.world.vqa import _a, _the, ask, unique_ref

INSTRUCTION_KINDS: tuple[str, ...] = ("conversation", "detail", "reasoning", "grounding")
DETAIL_PROMPTS: tuple[str, ...] = ("describe the image in detail.", "describe the picture in detail.",
                                   "what is in this image? describe it in detail.")
CONVERSATION_TYPES: tuple[str, ...] = ("exist", "color", "shape", "size", "count", "relation", "attribute")


def position_words(obj: Obj) -> str:
    """Where ``obj`` is, in thirds of the image: "top left", "middle", "bottom", ..."""
    row = ("top", "", "bottom")[min(2, int(obj.y * 3))]
    col = ("left", "", "right")[min(2, int(obj.x * 3))]
    return " ".join(w for w in (row, col) if w) or "middle"


def box_text(obj: Obj, image_size: int = 64) -> str:
    """``<box>x1,y1,x2,y2</box>`` with corners as integers in ``[0, 100)`` of the image side."""
    check_int(image_size, "image_size")
    x0, y0, x1, y1 = object_box(obj, image_size)
    q = [min(99, max(0, int(v / image_size * 100))) for v in (x0, y0, x1, y1)]
    return "<box>{},{},{},{}</box>".format(*q)


def parse_box(text: str) -> tuple[int, int, int, int]:
    """Inverse of :func:`box_text`'s format (the first ``<box>...</box>`` in ``text``)."""
    start = text.find("<box>")
    end = text.find("</box>", start + 5) if start >= 0 else -1
    if end < 0:
        raise ValueError(f"no <box>...</box> in {text!r}")
    parts = text[start + 5:end].split(",")
    if len(parts) != 4 or not all(p.strip().isascii() and p.strip().isdigit() for p in parts):
        raise ValueError(f"a box is four integers x1,y1,x2,y2, got {text[start:end + 6]!r}")
    return tuple(int(p) for p in parts)  # type: ignore[return-value]


def _user(text: str, first: bool) -> dict[str, str]:
    return {"role": "user", "content": (IMAGE_TOKEN if first else "") + text}


def conversation(scene: Scene, rng: np.random.Generator, turns: int = 3, **kw) -> list[dict[str, str]]:
    """A multi-turn conversation: ``turns`` questions of different types, each answered in a sentence."""
    check_int(turns, "turns")
    messages: list[dict[str, str]] = []
    for qtype in rng.permutation(list(CONVERSATION_TYPES)):
        q = ask(scene, rng, str(qtype), **kw)
        if q is None:
            continue
        messages += [_user(q.question, not messages), {"role": "assistant", "content": q.sentence}]
        if len(messages) == 2 * turns:
            break
    return messages


def detailed_description(scene: Scene, rng: np.random.Generator, margin: float = 0.08) -> str:
    """Every object with its place, the clear relations between them, and the count."""
    objs = scene.objects
    n = len(objs)
    sentences = [f"the image shows {NUMBER_WORDS[n]} object{'s' if n > 1 else ''} on a dark background."]
    for o in objs:
        sentences.append(f"there is {_a(NP(o.shape, o.color, o.size), rng)} at the {position_words(o)}.")
    for a, b in itertools.combinations(objs, 2):
        rels, ref_a, ref_b = clear_relations(a, b, margin), unique_ref(a, scene), unique_ref(b, scene)
        if rels and ref_a is not None and ref_b is not None:  # twins cannot be told apart in words
            r = rels[int(rng.integers(len(rels)))]
            phrase = RELATION_PHRASES[r][int(rng.integers(len(RELATION_PHRASES[r])))]
            sentences.append(f"{_the(ref_a, rng)} is {phrase} {_the(ref_b, rng)}.")
    return " ".join(sentences)


def complex_reasoning(scene: Scene, rng: np.random.Generator, margin: float = 0.08) -> tuple[str, str]:
    """A question that takes a step of inference, and its answer with the reasoning spelled out.

    Two kinds: comparing two counts ("are there more circles than squares?"), and finding an object
    by a relation, then reading one of its attributes ("what color is the object left of the star?").
    """
    objs = scene.objects
    pairs = [(a, b, r) for a, b in itertools.permutations(objs, 2) if unique_ref(b, scene) is not None
             for r in clear_relations(a, b, margin)]
    if pairs and rng.random() < 0.5:
        a, b, r = pairs[int(rng.integers(len(pairs)))]
        ref_b = unique_ref(b, scene)
        candidates = [o for o in objs if o is not b and r in clear_relations(o, b, margin)]
        if len(candidates) == 1:  # the relation picks out one object: its color is the answer
            phrase = RELATION_PHRASES[r][0]
            q = f"what color is the object {phrase} {_the(ref_b, rng)}?"
            ans = (f"the object {phrase} {_the(ref_b, rng)} is {_a(NP(a.shape, a.color, a.size), rng)}, "
                   f"so its color is {a.color}.")
            return q, ans
    s1 = objs[int(rng.integers(len(objs)))].shape  # one shape that is there, one other
    others = [s for s in SHAPES if s != s1]
    s2 = others[int(rng.integers(len(others)))]
    if rng.random() < 0.5:
        s1, s2 = s2, s1
    n1, n2 = (sum(o.shape == s for o in objs) for s in (s1, s2))
    pl1, pl2 = np_words(NP(s1), None, plural=True), np_words(NP(s2), None, plural=True)
    verdict = "yes" if n1 > n2 else "no"
    ans = f"{verdict}. {_count(n1, s1)} and {_count(n2, s2)}, so there are " + (
        f"more {pl1}." if n1 > n2 else f"more {pl2}." if n2 > n1 else f"as many {pl1} as {pl2}.")
    return f"are there more {pl1} than {pl2}?", ans


def _count(n: int, shape: str) -> str:
    if n == 0:
        return f"there are no {np_words(NP(shape), None, plural=True)}"
    if n == 1:
        return f"there is one {shape}"
    return f"there are {NUMBER_WORDS[n]} {np_words(NP(shape), None, plural=True)}"


def grounding(scene: Scene, rng: np.random.Generator, image_size: int = 64) -> tuple[str, str, int]:
    """A referring expression and its box: ("find the red circle and give its box.", "<box>..</box>", index).

    An object with a twin cannot be referred to alone; if every object has one, the first is asked
    for and the expression names its attributes (any of the twins' boxes would then be right).
    """
    unique = [i for i, o in enumerate(scene.objects) if unique_ref(o, scene) is not None] or [0]
    i = unique[int(rng.integers(len(unique)))]
    ref = referring_np(scene.objects[i], scene)
    return f"find {_the(ref, rng)} and give its box.", box_text(scene.objects[i], image_size), i


def grounded_caption(scene: Scene, rng: np.random.Generator, image_size: int = 64) -> str:
    """Every object named and boxed: "a red circle <box>..</box> and a small blue star <box>..</box>"."""
    return " and ".join(f"{_a(NP(o.shape, o.color, o.size), rng)} {box_text(o, image_size)}" for o in scene.objects)


def instruction(scene: Scene, rng: np.random.Generator, kind: str, image_size: int = 64, margin: float = 0.08,
                **kw) -> list[dict[str, str]]:
    """One instruction sample of ``kind`` (:data:`INSTRUCTION_KINDS`) as chat messages."""
    if kind == "conversation":
        return conversation(scene, rng, turns=int(rng.integers(2, 5)), margin=margin, **kw)
    if kind == "detail":
        prompt = DETAIL_PROMPTS[int(rng.integers(len(DETAIL_PROMPTS)))]
        return [_user(prompt, True), {"role": "assistant", "content": detailed_description(scene, rng, margin)}]
    if kind == "reasoning":
        q, a = complex_reasoning(scene, rng, margin)
        return [_user(q, True), {"role": "assistant", "content": a}]
    if kind == "grounding":
        q, box, _ = grounding(scene, rng, image_size)
        return [_user(q, True), {"role": "assistant", "content": box}]
    raise ValueError(f"unknown instruction kind {kind!r}; choose one of {INSTRUCTION_KINDS}")


__all__ = ["CONVERSATION_TYPES", "INSTRUCTION_KINDS", "box_text", "complex_reasoning", "conversation",
           "detailed_description", "grounded_caption", "grounding", "instruction", "parse_box", "position_words"]
