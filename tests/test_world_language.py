"""Captions are true of their scene, hard negatives are false, Winoground pairs share words (chapter 01)."""

from collections import Counter

import numpy as np
import pytest

from vlm_primer.world import (
    CAPTION_KINDS,
    NEGATIVE_KINDS,
    NP,
    Absent,
    Caption,
    Count,
    Exists,
    Obj,
    Relation,
    Scene,
    WorldConfig,
    caption_scene,
    describe,
    hard_negative,
    hard_negatives,
    holds,
    paraphrases,
    realize,
    sample_scene,
    same_words,
    winoground_pair,
)
from vlm_primer.world.vocab import COLOR_WORDS, PLURALS, SHAPE_WORDS, SIZE_WORDS

RED_CIRCLE = Obj("circle", "red", "small", x=0.2, y=0.3)
BLUE_SQUARE = Obj("square", "blue", "large", x=0.7, y=0.35)
GREEN_STAR = Obj("star", "green", "large", x=0.5, y=0.8)
SCENE = Scene((RED_CIRCLE, BLUE_SQUARE, GREEN_STAR))


def test_semantics_on_a_hand_made_scene():
    assert holds(Exists((NP("circle", "red"), NP("square", "blue"))), SCENE)
    assert not holds(Exists((NP("circle", "blue"), NP("square", "red"))), SCENE)
    assert not holds(Exists((NP("circle"), NP("circle"))), SCENE)  # needs two distinct circles
    assert holds(Relation(NP("circle"), "left", NP("square")), SCENE)
    assert not holds(Relation(NP("square"), "left", NP("circle")), SCENE)
    assert not holds(Relation(NP("circle"), "above", NP("square")), SCENE)  # 0.05 apart: within the margin
    assert not holds(Relation(NP("circle"), "below", NP("square")), SCENE)
    assert holds(Relation(NP("star"), "below", NP("circle", "red")), SCENE)
    assert holds(Count(3, NP()), SCENE) and not holds(Count(2, NP()), SCENE)
    assert holds(Count(2, NP(size="large")), SCENE)
    assert holds(Absent(NP("star", "red")), SCENE) and not holds(Absent(NP("star")), SCENE)


def test_canonical_realisation():
    m = Relation(NP("circle", "red", "small"), "left", NP("square", "blue"))
    assert realize(m) == "a small red circle left of a blue square"
    assert realize(Exists((NP("circle", "orange"), NP("star", "white")))) == "an orange circle and a white star"
    assert realize(Count(2, NP("square", "blue"))) == "two blue squares"
    assert realize(Count(1, NP())) == "one shape"
    assert realize(Absent(NP("star", "green"))) == "there is no green star"


def _words_of(np_: NP) -> list[set[str]]:
    out = []
    if np_.size:
        out.append(set(SIZE_WORDS[np_.size]))
    if np_.color:
        out.append(set(COLOR_WORDS[np_.color]))
    if np_.shape:
        names = SHAPE_WORDS[np_.shape]
        out.append(set(names) | {PLURALS[n] for n in names})
    return out


def _nps(m):
    return list(m.nps) if isinstance(m, Exists) else [m.a, m.b] if isinstance(m, Relation) else [m.np]


def test_generated_captions_are_true_and_mention_their_meaning():
    rng = np.random.default_rng(0)
    cfg = WorldConfig(max_objects=5)
    seen = Counter()
    for _ in range(300):
        scene = sample_scene(rng, cfg)
        for cap in describe(scene, rng, margin=cfg.margin):
            seen[cap.kind] += 1
            assert holds(cap.meaning, scene, cfg.margin), (cap, scene)
            words = set(cap.text.replace(",", " ").split())
            for np_ in _nps(cap.meaning):
                for options in _words_of(np_):
                    assert words & options, (cap.text, np_)
            for text in paraphrases(cap.meaning, rng, 3):
                assert isinstance(text, str) and text
    assert set(seen) == set(CAPTION_KINDS)


def test_captions_are_deterministic():
    scene = sample_scene(np.random.default_rng(5), WorldConfig())
    a = describe(scene, np.random.default_rng(9))
    b = describe(scene, np.random.default_rng(9))
    assert a == b


def test_paraphrases_are_distinct_and_true():
    m = Relation(NP("circle", "red"), "left", NP("square", "blue"))
    texts = paraphrases(m, np.random.default_rng(0), k=6)
    assert len(texts) == len(set(texts)) >= 4
    assert any("right" in t for t in texts) or any("left" in t for t in texts)
    with pytest.raises(ValueError):
        paraphrases(m, np.random.default_rng(0), k=0)


def test_hard_negatives_are_false():
    rng = np.random.default_rng(1)
    cfg = WorldConfig(max_objects=4)
    seen = Counter()
    for _ in range(300):
        scene = sample_scene(rng, cfg, num_objects=(2, 4))
        for cap in describe(scene, rng, margin=cfg.margin):
            for neg in hard_negatives(cap, scene, rng, margin=cfg.margin):
                seen[neg.kind] += 1
                assert not holds(neg.meaning, scene, cfg.margin), (cap.text, neg.text)
                assert neg.text != cap.text
                assert neg.template == cap.template
    assert set(seen) == {f"neg_{k}" for k in NEGATIVE_KINDS}


def test_negative_kinds_do_what_they_say():
    rng = np.random.default_rng(0)
    cap = Caption(realize(Exists((NP("circle", "red"), NP("square", "blue")))),
                  Exists((NP("circle", "red"), NP("square", "blue"))), "objects")
    assert hard_negative(cap, SCENE, rng, "binding").meaning == Exists((NP("circle", "blue"), NP("square", "red")))
    assert hard_negative(cap, SCENE, rng, "shuffle").meaning == Exists((NP("square", "red"), NP("circle", "blue")))
    rel = Relation(NP("circle", "red"), "left", NP("square", "blue"))
    cap = Caption(realize(rel), rel, "relation")
    neg = hard_negative(cap, SCENE, rng, "relation")
    assert neg.meaning in (Relation(rel.b, "left", rel.a), Relation(rel.a, "right", rel.b))
    # binding is word-preserving: same multiset of words
    neg = hard_negative(cap, SCENE, rng, "binding")
    assert same_words(neg.text, cap.text)
    assert hard_negative(cap, SCENE, rng, "replace").meaning != rel
    # no negative of a kind that does not apply
    cnt = Caption("three shapes", Count(3, NP()), "count")
    assert hard_negatives(cnt, SCENE, rng, ("binding", "relation")) == []
    with pytest.raises(ValueError, match="negative kind"):
        hard_negative(cap, SCENE, rng, "antonym")
    with pytest.raises(TypeError):
        hard_negatives("a red circle", SCENE, rng)


@pytest.mark.parametrize("kind", ["binding", "relation"])
def test_winoground_pairs(kind):
    rng = np.random.default_rng(2)
    for _ in range(30):
        pair = winoground_pair(rng, WorldConfig(), kind)
        (s0, s1), (c0, c1) = pair.scenes, pair.captions
        assert Counter(c0.text.split()) == Counter(c1.text.split()) and c0.text != c1.text
        assert holds(c0.meaning, s0) and holds(c1.meaning, s1)
        assert not holds(c0.meaning, s1) and not holds(c1.meaning, s0)
        assert sorted(o.describe() for o in s0) != sorted(o.describe() for o in s1) or kind == "relation"
    with pytest.raises(ValueError, match="Winoground kind"):
        winoground_pair(rng, kind="attribute")


def test_bad_caption_input():
    with pytest.raises(ValueError, match="caption kind"):
        caption_scene(SCENE, np.random.default_rng(0), "poem")
    with pytest.raises(ValueError, match="unknown color"):
        NP("circle", "mauve")
    with pytest.raises(ValueError, match="relation"):
        Relation(NP("circle"), "behind", NP("square"))
    with pytest.raises(ValueError, match="Count.n"):
        Count(0, NP())
    with pytest.raises(TypeError):
        holds("a red circle", SCENE)
