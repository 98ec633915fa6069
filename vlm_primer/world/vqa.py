"""Questions about a scene with answers read off its scene graph: VQA, POPE probes, the blind prior.

Explained in notebook 01, §Questions. Every answer is true by construction (the tests check each
against the scene graph). Questions are *balanced*: a yes/no question is a "yes" or a "no" with
equal probability, and counts, colors, shapes and sizes are drawn so that the question text alone
says little about the answer. :func:`blind_prior` is the control that measures how little: the most
frequent training answer for each question text, scored on held-out questions.

Answers follow VQAv2's format: ten reference answers per question (human annotators in VQAv2;
here the canonical word seven times and a synonym three times, e.g. ``purple``/``violet``,
``two``/``2``). VQAv2's official soft accuracy applies once the references are normalised as VQAv2's are
(:func:`~vlm_primer.evaluation.vqa_metrics.normalize_answer`; the harness does): the official script normalises
only the prediction, so against the raw references the right count, "two" or "2", matches the three digits only
and scores 0.9.

POPE (Li et al., 2023) probes object hallucination with "Is there a <object> in the image?": half
the probes name objects that are present, half name absent ones, chosen at random, among the most
frequent objects of the dataset (*popular*), or among those that co-occur most with the objects
present (*adversarial*). Objects here are (color, shape) compositions. Simplifications: random negatives come from
every composition of the world (POPE's code samples objects seen in the evaluated set); *adversarial* ranks an
absent object by its co-occurrence summed over all present objects, counted on the statistics given (POPE pairs
each present object greedily with its own most co-occurring absent one, counted on the evaluated images).

Known gap (measured, kept so that the zoo's training data stay as built): an *absent* object (the "no" of an
"is there ...?" question, POPE's negatives) is drawn from every composition of the config, the held-out ones
included. So on the ``train`` split a question naming a held-out pair is always answered "no" (316 of 6,000 exist
questions), a text-only shortcut that fails on the ``compositional`` split (a blind prior fit on ``train`` scores
0.12 on its exist questions naming a held-out pair). No chapter evaluates VQA on the ``compositional`` split.
"""

from __future__ import annotations

import collections
import itertools
import dataclasses
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from vlm_primer.validate import check_int
from vlm_primer.world.language import (DEFAULT_MARGIN, NP, Absent, Count, Exists, Meaning, Relation, holds, np_words,
                                      referring_np)
from vlm_primer.world.scene import Obj, Scene, clear_relations
from vlm_primer.world.vocab import (COLOR_WORDS, COLORS, NUMBER_WORDS, OPPOSITE, RELATION_PHRASES,
                                    SHAPE_WORDS, SHAPES, SIZE_WORDS, SIZES)

QUESTION_TYPES: tuple[str, ...] = ("exist", "attribute", "relation_yn", "color", "shape", "size", "count", "relation")
ANSWER_TYPES: dict[str, str] = {"exist": "yes/no", "attribute": "yes/no", "relation_yn": "yes/no", "count": "number",
                                "color": "other", "shape": "other", "size": "other", "relation": "other"}
POPE_SETTINGS: tuple[str, ...] = ("random", "popular", "adversarial")
ANSWER_WORDS: dict[str, tuple[str, ...]] = {
    **{c: COLOR_WORDS[c] for c in COLORS}, **{s: SHAPE_WORDS[s] for s in SHAPES},
    **{z: SIZE_WORDS[z] for z in SIZES}, **{w: (w, str(i)) for i, w in enumerate(NUMBER_WORDS)},
}


@dataclass(frozen=True)
class Question:
    """A question, its canonical ``answer``, VQAv2's ten reference ``answers`` and a full-sentence answer.

    ``targets`` are the indices of the objects the question is about; ``meaning`` is the statement
    a yes/no or count answer rests on (``holds(meaning, scene)`` decides it).
    """

    question: str
    answer: str
    answers: tuple[str, ...]
    qtype: str
    sentence: str
    targets: tuple[int, ...] = ()
    meaning: Meaning | None = None

    @property
    def answer_type(self) -> str:
        return ANSWER_TYPES[self.qtype]


def ten_answers(answer: str) -> tuple[str, ...]:
    """VQAv2-style references: the canonical answer 7 times and its synonyms 3 times (10 if none)."""
    alts = [w for w in ANSWER_WORDS.get(answer, (answer,)) if w != answer]
    if not alts:
        return (answer,) * 10
    return (answer,) * 7 + tuple(alts[i % len(alts)] for i in range(3))


def _words(np_: NP, style) -> str:
    """``np_words``, but a phrase without a shape ends in "object" ("the green object", not "the green shape")."""
    words = np_words(np_, style)
    return words.rsplit(" ", 1)[0] + " object" if np_.shape is None and " " in words else words


def _the(np_: NP, style) -> str:
    return "the " + _words(np_, style)


def _a(np_: NP, style) -> str:
    words = _words(np_, style)
    return ("an " if words[0] in "aeiou" else "a ") + words


def _ref_without(obj: Obj, scene: Scene, attr: str) -> NP | None:
    """The shortest unique noun phrase for ``obj`` that does not use ``attr`` (None if there is none)."""
    for attrs in (("shape",), ("color", "shape"), ("size", "shape"), ("color",), ("size", "color"),
                  ("size", "color", "shape")):
        if attr in attrs:
            continue
        np_ = NP(**{a: getattr(obj, a) for a in attrs})
        if sum(np_.matches(o) for o in scene.objects) == 1:
            return np_
    return None


def unique_ref(obj: Obj, scene: Scene) -> NP | None:
    """``referring_np(obj, scene)`` if it picks out ``obj`` alone; None when a twin (same size, color
    and shape) makes every description ambiguous."""
    np_ = referring_np(obj, scene)
    return np_ if sum(np_.matches(o) for o in scene.objects) == 1 else None


def _choice(rng: np.random.Generator, items: Sequence):
    return items[int(rng.integers(len(items)))]


def ask(
    scene: Scene,
    rng: np.random.Generator,
    qtype: str,
    *,
    margin: float = DEFAULT_MARGIN,
    colors: Sequence[str] = tuple(COLORS),
    shapes: Sequence[str] = SHAPES,
) -> Question | None:
    """One balanced question of ``qtype`` about ``scene`` (None if the type does not apply to it).

    Words are drawn with synonyms (``rng`` picks them); the answer is the canonical word.
    """
    if qtype not in QUESTION_TYPES:
        raise ValueError(f"unknown question type {qtype!r}; choose one of {QUESTION_TYPES}")
    objs, style = scene.objects, rng
    if not objs:
        return None
    yes = bool(rng.integers(2))  # yes/no questions: the answer is drawn first
    if qtype == "exist":
        present = [NP(o.shape, o.color) for o in objs]
        absent = [NP(s, c) for c in colors for s in shapes if not any(NP(s, c).matches(o) for o in objs)]
        np_ = _choice(rng, present if yes or not absent else absent)
        meaning = Exists((np_,))
        ans = "yes" if holds(meaning, scene, margin) else "no"
        sentence = f"yes, there is {_a(np_, style)}." if ans == "yes" else f"no, there is no {np_words(np_, style)}."
        return Question(f"is there {_a(np_, style)} in the image?", ans, ten_answers(ans), qtype, sentence,
                        meaning=meaning if ans == "yes" else Absent(np_))
    if qtype in ("attribute", "color", "shape", "size"):
        attr = {"attribute": str(_choice(rng, ("color", "size"))), "color": "color", "shape": "shape",
                "size": "size"}[qtype]
        order = rng.permutation(len(objs))
        for i in order:
            ref = _ref_without(objs[i], scene, attr)
            if ref is not None:
                break
        else:
            return None
        o, i = objs[int(i)], int(i)
        value = getattr(o, attr)
        if qtype == "attribute":
            others = [v for v in (colors if attr == "color" else SIZES) if v != value]
            if not yes and not others:  # a world of one colour (or size) has no "no" to ask
                return None
            asked = value if yes else str(_choice(rng, others))
            words = COLOR_WORDS if attr == "color" else SIZE_WORDS
            ans = "yes" if asked == value else "no"
            sentence = f"{ans}, {_the(ref, style)} is {value}."
            asked_np = dataclasses.replace(ref, **{attr: asked})
            return Question(f"is {_the(ref, style)} {_choice(rng, words[asked])}?", ans, ten_answers(ans), qtype,
                            sentence, (i,), Exists((asked_np,)) if ans == "yes" else Absent(asked_np))
        if qtype == "color":
            question = f"what color is {_the(ref, style)}?"
            sentence = f"{_the(ref, style)} is {value}."
        elif qtype == "shape":
            question = f"what shape is {_the(ref, style)}?"
            sentence = f"{_the(ref, style)} is {_a(NP(o.shape), None)}."
        else:
            question = f"what size is {_the(ref, style)}?"
            sentence = f"{_the(ref, style)} is {value}."
        return Question(question, value, ten_answers(value), qtype, sentence, (i,))
    if qtype == "count":
        options = [NP()] + [NP(shape=s) for s in shapes] + [NP(color=c) for c in colors]
        options += [NP(o.shape, o.color) for o in objs]
        by_count: dict[int, list[NP]] = collections.defaultdict(list)
        for np_ in dict.fromkeys(options):
            by_count[sum(np_.matches(o) for o in objs)].append(np_)
        n = int(_choice(rng, sorted(by_count)))  # the count first: each possible count equally likely
        np_ = _choice(rng, by_count[n])
        pl = np_words(np_, style, plural=True)
        ans = NUMBER_WORDS[n]
        sentence = (f"there are no {pl}." if n == 0 else f"there is one {np_words(np_, style)}." if n == 1
                    else f"there are {ans} {pl}.")
        targets = tuple(j for j, o in enumerate(objs) if np_.matches(o))
        return Question(f"how many {pl} are there?", ans, ten_answers(ans), qtype, sentence, targets,
                        Count(n, np_) if n else Absent(np_))
    # relations: pairs of distinct objects with a clear relation
    refs = [unique_ref(o, scene) for o in objs]
    pairs = [(i, j, r) for i, j in itertools.permutations(range(len(objs)), 2)
             if refs[i] is not None and refs[j] is not None for r in clear_relations(objs[i], objs[j], margin)]
    if qtype == "relation":  # "left, right, above or below?" needs exactly one clear relation
        pairs = [(i, j, r) for i, j, r in pairs if len(clear_relations(objs[i], objs[j], margin)) == 1]
    if not pairs:
        return None
    i, j, rel = _choice(rng, pairs)
    a, b = refs[i], refs[j]
    phrase = lambda r: str(_choice(rng, RELATION_PHRASES[r]))  # noqa: E731
    if qtype == "relation":
        sentence = f"{_the(a, style)} is {phrase(rel)} {_the(b, style)}."
        return Question(f"is {_the(a, style)} left, right, above or below {_the(b, style)}?", rel, ten_answers(rel),
                        qtype, sentence, (i, j), Relation(a, rel, b))
    asked = rel if yes else OPPOSITE[rel]
    ans = "yes" if asked == rel else "no"
    sentence = f"{ans}, {_the(a, style)} is {phrase(rel)} {_the(b, style)}."
    return Question(f"is {_the(a, style)} {phrase(asked)} {_the(b, style)}?", ans, ten_answers(ans), qtype, sentence,
                    (i, j), Relation(a, asked, b))


def ask_any(scene: Scene, rng: np.random.Generator, qtypes: Sequence[str] = QUESTION_TYPES, **kw) -> Question:
    """A question of a type drawn uniformly from ``qtypes`` (redrawn while the type does not apply)."""
    for qtype in rng.permutation(list(qtypes)):
        q = ask(scene, rng, str(qtype), **kw)
        if q is not None:
            return q
    return ask(scene, rng, "exist", **kw)  # always applies


# --------------------------------------------------------------------------- the blind prior


@dataclass
class BlindPrior:
    """A language-only baseline: the most frequent training answer for the exact question text,
    else for the question type, else overall. It never sees the image."""

    by_text: dict[str, str]
    by_type: dict[str, str]
    overall: str

    def predict(self, question: Question) -> str:
        return self.by_text.get(question.question) or self.by_type.get(question.qtype) or self.overall


def _most_common(answers: Iterable[str]) -> str:
    counts = collections.Counter(answers)
    return min(counts, key=lambda a: (-counts[a], a))  # ties broken alphabetically, so runs agree


def blind_prior(train: Sequence[Question]) -> BlindPrior:
    """Fit :class:`BlindPrior` on training questions."""
    if not train:
        raise ValueError("blind_prior needs at least one training question")
    by_text, by_type = collections.defaultdict(list), collections.defaultdict(list)
    for q in train:
        by_text[q.question].append(q.answer)
        by_type[q.qtype].append(q.answer)
    return BlindPrior({k: _most_common(v) for k, v in by_text.items()},
                      {k: _most_common(v) for k, v in by_type.items()}, _most_common(q.answer for q in train))


def accuracy_by_type(questions: Sequence[Question], predictions: Sequence[str]) -> dict[str, float]:
    """Exact-match accuracy against the canonical answer, per question type and ``"all"``.

    (Equal to VQAv2's soft accuracy, on references normalised as VQAv2's are, for a prediction of the
    canonical word.)
    """
    if len(questions) != len(predictions) or not questions:
        raise ValueError(f"need as many predictions as questions (> 0), got {len(predictions)} and {len(questions)}")
    hits = collections.defaultdict(list)
    for q, p in zip(questions, predictions):
        hits[q.qtype].append(p == q.answer)
        hits["all"].append(p == q.answer)
    return {k: float(np.mean(v)) for k, v in sorted(hits.items())}


# --------------------------------------------------------------------------- POPE


@dataclass
class PopeStats:
    """Object frequencies and co-occurrences of a set of scenes (POPE's popular / adversarial negatives)."""

    frequency: collections.Counter
    cooccurrence: collections.Counter

    @classmethod
    def from_scenes(cls, scenes: Iterable[Scene]) -> "PopeStats":
        freq, co = collections.Counter(), collections.Counter()
        for scene in scenes:
            present = sorted({o.composition for o in scene.objects})
            freq.update(present)
            co.update(itertools.permutations(present, 2))
        return cls(freq, co)


def pope_probes(
    scene: Scene,
    rng: np.random.Generator,
    setting: str = "random",
    k: int = 3,
    stats: PopeStats | None = None,
    colors: Sequence[str] = tuple(COLORS),
    shapes: Sequence[str] = SHAPES,
) -> list[Question]:
    """Up to ``k`` "yes" probes (objects present) and as many "no" probes (absent objects chosen by ``setting``)."""
    if setting not in POPE_SETTINGS:
        raise ValueError(f"setting must be one of {POPE_SETTINGS}, got {setting!r}")
    if setting != "random" and stats is None:
        raise ValueError(f"the {setting!r} setting needs stats=PopeStats.from_scenes(...) of the dataset")
    check_int(k, "k")
    present = sorted({o.composition for o in scene.objects})
    absent = [(c, s) for c in colors for s in shapes if (c, s) not in present]
    pos = [present[i] for i in rng.permutation(len(present))[:k]]
    n = len(pos)
    if setting == "random":
        neg = [absent[i] for i in rng.permutation(len(absent))[:n]]
    else:
        def score(comp):
            if setting == "popular":
                return stats.frequency[comp]
            return sum(stats.cooccurrence[(p, comp)] for p in present)
        jitter = rng.random(len(absent))  # ties in random order
        neg = [absent[i] for i in sorted(range(len(absent)), key=lambda i: (-score(absent[i]), jitter[i]))[:n]]
    out = []
    for (c, s), ans in [(p, "yes") for p in pos] + [(q, "no") for q in neg]:
        np_ = NP(s, c)
        sentence = f"yes, there is {_a(np_, None)}." if ans == "yes" else f"no, there is no {np_words(np_)}."
        meaning = Exists((np_,)) if ans == "yes" else Absent(np_)
        out.append(Question(f"is there {_a(np_, None)} in the image?", ans, ten_answers(ans), "exist", sentence,
                            tuple(i for i, o in enumerate(scene.objects) if o.composition == (c, s)), meaning))
    return out


__all__ = ["ANSWER_TYPES", "POPE_SETTINGS", "QUESTION_TYPES", "BlindPrior", "PopeStats", "Question",
           "accuracy_by_type", "ask", "ask_any", "blind_prior", "pope_probes", "ten_answers", "unique_ref"]
