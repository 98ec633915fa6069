"""A deterministic judge for LLaVA-Bench-style relative scores on Shapes World.

Explained in notebook 05, §A LLaVA-Bench-style judge. LLaVA-Bench (Liu et al., 2023) asks a text-only
GPT-4 to rate two answers to the same question from 1 to 10, its own reference answer and the model's,
given the image's captions and boxes; the reported figure is the model's total over the reference's, in
percent. Here the reference is the teacher's answer (written from the scene graph, so always right),
and the judge compares *facts*, not wording: every answer is read into a multiset of facts (an object
named by colour and shape, a lone colour or shape, a number, a relation, a place, a yes/no verdict,
synonyms merged), and the score is ``1 + 9 * F1`` between the model's facts and the reference's.

The reference judged against itself scores 10, so the relative score is the model's mean over 10. That
differs from the paper, where GPT-4 also rates its own answer below 10; chapter 05 says so beside the
number. Wording, fluency and order do not count, a wrong colour or an invented object does. Negation and size
are not facts: "not above" matches "above" and a small star a large one.
"""

from __future__ import annotations

import collections
import re
from typing import Sequence

from vlm_primer.world.vocab import COLOR_WORDS, NUMBER_WORDS, PLURALS, SHAPE_WORDS, SIZE_WORDS

__all__ = ["answer_facts", "judge_score", "relative_score"]

Fact = tuple[str, ...]

_WORDS: dict[str, Fact] = {}
for _c, _ws in COLOR_WORDS.items():
    _WORDS |= {w: ("color", _c) for w in _ws}
for _s, _ws in SHAPE_WORDS.items():
    _WORDS |= {w: ("shape", _s) for w in _ws} | {PLURALS[w]: ("shape", _s) for w in _ws}
for _i, _w in enumerate(NUMBER_WORDS):
    _WORDS |= {_w: ("number", _w), str(_i): ("number", _w)}
_WORDS |= {"none": ("number", "zero")}
_RELATION_WORDS = {"left": ("left",), "right": ("right",), "above": ("above", "over", "higher"),
                   "below": ("below", "under", "beneath", "lower")}
_WORDS |= {w: ("relation", r) for r, ws in _RELATION_WORDS.items() for w in ws}
_WORDS |= {w: ("place", w) for w in ("top", "bottom", "middle")}
_SIZE = {w for ws in SIZE_WORDS.values() for w in ws}


def answer_facts(text: str) -> collections.Counter:
    """The facts an answer states, as a multiset: ``("object", color, shape)`` for a colour followed by a shape
    (size words may sit between), else ``("color", c)`` / ``("shape", s)``; ``("number", word)`` (digits and
    "no"/"none" become words; "no" as the first word is the ``("verdict", "no")``), ``("relation", r)``,
    ``("place", p)`` and ``("verdict", "yes"|"no")``. Synonyms map to the canonical word."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str (an answer), got {type(text).__name__}")
    tokens = re.findall(r"[a-z0-9]+", text.lower())
    facts: collections.Counter = collections.Counter()
    if tokens and tokens[0] in ("yes", "no"):
        facts[("verdict", tokens[0])] += 1
        tokens = tokens[1:]
    color = None  # a colour waiting for its shape
    for t in tokens:
        fact = _WORDS.get(t, ("number", "zero") if t == "no" else None)
        if t in _SIZE:
            continue  # a size word keeps a pending colour attached to the shape that follows
        if fact is not None and fact[0] == "shape" and color is not None:
            facts[("object", color, fact[1])] += 1
            color = None
            continue
        if color is not None:
            facts[("color", color)] += 1
            color = None
        if fact is None:
            continue
        if fact[0] == "color":
            color = fact[1]
        else:
            facts[fact] += 1
    if color is not None:
        facts[("color", color)] += 1
    return facts


def judge_score(answer: str, reference: str) -> float:
    """``1 + 9 * F1`` between the facts of ``answer`` and of ``reference`` (1 to 10; 10 when they state the
    same facts; two answers that state no fact at all tie at 10)."""
    for name, value in (("answer", answer), ("reference", reference)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    a, r = answer_facts(answer), answer_facts(reference)
    if not a and not r:
        return 10.0
    tp = sum((a & r).values())
    if tp == 0:
        return 1.0
    precision, recall = tp / sum(a.values()), tp / sum(r.values())
    return 1.0 + 9.0 * (2 * precision * recall / (precision + recall))


def relative_score(answers: Sequence[str], references: Sequence[str]) -> float:
    """LLaVA-Bench's figure: the answers' total score over the references' total (each judged against its
    reference), as a fraction (the paper prints it in percent)."""
    if isinstance(answers, str) or isinstance(references, str):
        raise TypeError("answers and references must be lists of str (one per question), not one str")
    if len(answers) != len(references) or not answers:
        raise ValueError(f"need as many answers as references (> 0), got {len(answers)} and {len(references)}")
    ours = sum(judge_score(a, r) for a, r in zip(answers, references))
    return ours / sum(judge_score(r, r) for r in references)
