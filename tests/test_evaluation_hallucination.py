"""POPE and CHAIR: POPE against scikit-learn and POPE's answer parsing, CHAIR on hand examples and on Shapes World
captions (true captions hallucinate nothing; swapping in an absent shape is caught), bad input."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from vlm_primer.evaluation.hallucination import chair, mentioned_objects, parse_yes_no, pope_metrics
from vlm_primer.world import SHAPES, Obj, Scene, ShapesCaptionDataset, ShapesPOPEDataset
from vlm_primer.world.vocab import SHAPE_WORDS

# --------------------------------------------------------------------------- POPE


def _sklearn(pred, gold):
    kw = dict(pos_label=1, zero_division=0)
    return {"accuracy": accuracy_score(gold, pred), "precision": precision_score(gold, pred, **kw),
            "recall": recall_score(gold, pred, **kw), "f1": f1_score(gold, pred, **kw)}


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("p_yes", [0.0, 0.1, 0.5, 0.9, 1.0])  # 0.0: all-no predictions (no predicted positive)
def test_pope_matches_sklearn(seed, p_yes):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    pred, gold = (rng.random(n) < p_yes).astype(int), rng.integers(0, 2, n)
    expected = _sklearn(pred, gold)
    for as_given in ((pred, gold), (pred.astype(bool), gold.astype(bool)),
                     (["Yes" if p else "No" for p in pred], ["yes" if y else "no" for y in gold])):
        got = pope_metrics(*as_given)
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, abs=1e-12), (key, seed, p_yes)
        assert got["yes_ratio"] == pytest.approx(pred.sum() / n)


def test_pope_edge_cases():
    no_yes_label = pope_metrics([True, False], [False, False])  # recall has no denominator
    assert no_yes_label == {"accuracy": 0.5, "precision": 0.0, "recall": 0.0, "f1": 0.0, "yes_ratio": 0.5}
    all_no = pope_metrics(["no"] * 4, ["yes", "no", "yes", "no"])
    assert all_no == {"accuracy": 0.5, "precision": 0.0, "recall": 0.0, "f1": 0.0, "yes_ratio": 0.0}
    always_yes = pope_metrics(["Yes."] * 4, ["yes", "no", "no", "no"])  # the bias POPE reports
    assert always_yes["recall"] == 1.0 and always_yes["yes_ratio"] == 1.0 and always_yes["precision"] == 0.25


@pytest.mark.parametrize("answer, yes", [
    ("Yes, there is a red circle.", True),
    ("yes", True),
    ("No.", False),
    ("no", False),
    ("There is no star.", False),
    ("No, there is not a star in the image.", False),
    ("The star is not red", False),
    ("  No  ", False),                       # outer whitespace is stripped
    ("Yes. There is no star.", True),        # only the first sentence counts
    ("There is a circle", True),             # no negation word: yes
    ("", True),                              # official rule: anything without a negation is yes
    ("NO", True),                            # sic: case-sensitive, as evaluate.py
    ("Nothing", True),                       # "no" must be a whole word
])
def test_parse_yes_no_follows_the_official_rule(answer, yes):
    assert parse_yes_no(answer) is yes
    assert pope_metrics([answer], ["yes"])["yes_ratio"] == float(yes)


def test_pope_dataset_sentences_score_perfectly():
    ds = ShapesPOPEDataset("val", 20)  # no item rendered: the probes are built in __init__
    sentences, answers = [q.sentence for _, q in ds.probes], [q.answer for _, q in ds.probes]
    assert set(answers) == {"yes", "no"}
    got = pope_metrics(sentences, answers)
    assert got["accuracy"] == got["precision"] == got["recall"] == got["f1"] == 1.0
    assert got["yes_ratio"] == pytest.approx(answers.count("yes") / len(answers))


def test_pope_bad_input():
    with pytest.raises(ValueError, match="3 predictions but 2 labels"):
        pope_metrics(["yes"] * 3, ["yes"] * 2)
    with pytest.raises(ValueError, match="predictions is empty"):
        pope_metrics([], [])
    with pytest.raises(ValueError, match=r"labels\[1\] must be 'yes' or 'no'"):
        pope_metrics(["yes", "no"], ["yes", "maybe"])
    with pytest.raises(ValueError, match=r"labels\[0\]"):
        pope_metrics([1], [2])
    with pytest.raises(TypeError, match=r"predictions\[1\]"):
        pope_metrics(["yes", None], ["yes", "no"])
    with pytest.raises(TypeError, match="predictions must be a list"):
        pope_metrics("yes", ["yes"])
    with pytest.raises(TypeError, match="answer must be a str"):
        parse_yes_no(1)


# --------------------------------------------------------------------------- CHAIR

RED_CIRCLE_BLUE_SQUARE = Scene((Obj("circle", "red", x=0.25), Obj("square", "blue", x=0.75)))
PURPLE_DIAMOND = Scene((Obj("diamond", "purple"),))


def test_mentioned_objects_reads_synonyms_and_plurals():
    assert mentioned_objects("A red disk and two blue squares.") == ["circle", "square"]
    assert mentioned_objects("three Rhombi, a rhombus and a diamond") == ["diamond"] * 3
    assert mentioned_objects("circles, disks, stars, hexagons and triangles") == [
        "circle", "circle", "star", "hexagon", "triangle"]
    assert mentioned_objects("a circle left of a circle") == ["circle", "circle"]  # one per mention
    assert mentioned_objects("three shapes and an object") == []
    assert mentioned_objects("") == []
    assert mentioned_objects("a starfish in a circled square") == ["square"]  # whole words only


def test_chair_hand_examples():
    captions = ["a red circle and a blue square",   # all present
                "a disk, a star and a hexagon",      # star and hexagon invented
                "two squares and a triangle",        # triangle invented
                "",                                  # no mentions: CHAIR_i 0, not hallucinated
                "a rhombus"]                         # synonym, present
    scenes = [RED_CIRCLE_BLUE_SQUARE] * 4 + [PURPLE_DIAMOND]
    out = chair(captions, scenes)
    assert out["mentions"] == 2 + 3 + 2 + 0 + 1 and out["hallucinations"] == 3
    assert out["chair_i"] == pytest.approx(3 / 8)
    assert out["chair_s"] == pytest.approx(2 / 5)
    per = out["per_caption"]
    assert per[1] == {"mentioned": ["circle", "star", "hexagon"], "hallucinated": ["star", "hexagon"],
                      "chair_i": pytest.approx(2 / 3)}
    assert per[2]["hallucinated"] == ["triangle"] and per[2]["chair_i"] == pytest.approx(1 / 2)
    assert per[3] == {"mentioned": [], "hallucinated": [], "chair_i": 0.0}
    assert per[4]["mentioned"] == ["diamond"] and per[4]["hallucinated"] == []


def test_chair_without_mentions_is_zero():
    out = chair(["", "three shapes"], [RED_CIRCLE_BLUE_SQUARE, PURPLE_DIAMOND])
    assert out["chair_i"] == 0.0 and out["chair_s"] == 0.0 and out["mentions"] == 0


def test_chair_with_color():
    captions = ["a blue circle and a red square",     # both shapes present, both pairs wrong
                "a violet rhombus",                   # synonyms of colour and shape: present
                "a big purple diamond and a disk",    # size word between: colour still right before the shape
                "a circle and a green square"]        # no colour on the circle: checked on its shape
    scenes = [RED_CIRCLE_BLUE_SQUARE, PURPLE_DIAMOND, PURPLE_DIAMOND, RED_CIRCLE_BLUE_SQUARE]
    shape_only, colored = chair(captions, scenes), chair(captions, scenes, with_color=True)
    assert shape_only["hallucinations"] == 1 and shape_only["per_caption"][0]["hallucinated"] == []
    per = colored["per_caption"]
    assert per[0]["mentioned"] == ["blue circle", "red square"] == per[0]["hallucinated"]
    assert per[1] == {"mentioned": ["purple diamond"], "hallucinated": [], "chair_i": 0.0}
    assert per[2]["mentioned"] == ["purple diamond", "circle"] and per[2]["hallucinated"] == ["circle"]
    assert per[3]["mentioned"] == ["circle", "green square"] and per[3]["hallucinated"] == ["green square"]
    assert colored["chair_i"] == pytest.approx(4 / 7) and colored["chair_s"] == pytest.approx(3 / 4)


def _items(kind, n=40):
    ds = ShapesCaptionDataset("val", n, caption_kind=kind, statements=False, num_paraphrases=1, seed=3)
    items = [ds[i] for i in range(n)]
    return [it["caption"] for it in items], [it["scene"] for it in items]


@pytest.mark.parametrize("kind", ["objects", "attribute", "relation", "count"])
def test_true_world_captions_hallucinate_nothing(kind):
    """The control: captions that are true by construction have CHAIR 0, with and without colours."""
    captions, scenes = _items(kind)
    for with_color in (False, True):
        out = chair(captions, scenes, with_color=with_color)
        assert out["chair_i"] == 0.0 and out["chair_s"] == 0.0, kind
    assert out["mentions"] > 0
    if kind == "objects":  # "objects" captions name every object of the scene
        assert out["mentions"] == sum(len(s) for s in scenes)


def test_swapping_in_an_absent_shape_is_hallucinated():
    captions, scenes = _items("objects")
    rng = np.random.default_rng(0)
    changed, kept = [], []
    for caption, scene in zip(captions, scenes):
        absent = [s for s in SHAPES if s not in {o.shape for o in scene}]
        words = caption.split()
        at = next(i for i, w in enumerate(words) if mentioned_objects(w))  # the first shape word
        new = SHAPE_WORDS[absent[int(rng.integers(len(absent)))]]
        words[at] = new[int(rng.integers(len(new)))]
        changed.append(" ".join(words))
        kept.append(mentioned_objects(caption)[1:])
    out = chair(changed, scenes)
    assert out["chair_s"] == 1.0
    assert out["hallucinations"] == len(changed)  # exactly one per caption: the swapped word
    assert out["chair_i"] == pytest.approx(len(changed) / sum(len(s) for s in scenes))
    for per, rest in zip(out["per_caption"], kept):
        assert len(per["hallucinated"]) == 1 and per["mentioned"][1:] == rest


def test_negated_mentions_count_as_mentions():
    """A known limit, as in the original CHAIR: "there is no green star" mentions a star. With colours every
    "absent" caption (a colour-shape pair missing from the scene) is flagged."""
    captions, scenes = _items("absent")
    assert chair(captions, scenes, with_color=True)["chair_s"] == 1.0
    assert chair(captions, scenes)["chair_i"] > 0


def test_chair_bad_input():
    scene = RED_CIRCLE_BLUE_SQUARE
    with pytest.raises(ValueError, match="2 captions but 1 scenes"):
        chair(["a circle", "a square"], [scene])
    with pytest.raises(ValueError, match="captions is empty"):
        chair([], [])
    with pytest.raises(TypeError, match=r"captions\[1\] must be a str"):
        chair(["a circle", None], [scene, scene])
    with pytest.raises(TypeError, match=r"scenes\[0\] must be a Scene"):
        chair(["a circle"], [[Obj("circle", "red")]])
    with pytest.raises(TypeError, match="captions must be a list of str"):
        chair("a circle", [scene])
    with pytest.raises(TypeError, match="scenes must be a list of Scene"):
        chair(["a circle"], scene)
    with pytest.raises(TypeError, match="with_color must be a bool"):
        chair(["a circle"], [scene], with_color="yes")
    with pytest.raises(TypeError, match="caption must be a str"):
        mentioned_objects(["a circle"])
