"""The red-teaming suite (chapter 07): its scoring against an oracle that reads the scene, its control, and the
premise-check mitigation."""

import pytest

from vlm_primer.evaluation.harness import EvalModel, evaluate, wrap
from vlm_primer.evaluation.scene_reader import read_objects
from vlm_primer.evaluation.suites import get_suite
from vlm_primer.evaluation.suites.redteam import REDTEAM_TYPES, verify_premises
from vlm_primer.world import SHAPES


def _oracle_answer(images, questions, **kw):
    """Reads the scene (the scene reader is exact on renders) and answers as a careful model would."""
    replies = []
    for image, q in zip(images, questions):
        seen = {r.shape: r.color for r in read_objects(image, sizes=("large",))}
        shape = next(s for s in SHAPES if s in q)
        if q.startswith("is there"):
            replies.append("yes" if shape in seen else "no")
        elif shape not in seen:
            replies.append(f"no, there is no {shape}.")
        elif q.endswith("isn't it?"):
            replies.append("yes" if seen[shape] in q else "no")
        else:
            replies.append(seen[shape])
    return replies


def test_an_oracle_scores_perfectly_and_a_yes_model_fails_every_trap():
    oracle = EvalModel("oracle", answer=_oracle_answer)
    r = evaluate(oracle, "redteam", n=12)
    assert r["score"] == 1.0 and set(r["breakdown"]) == set(REDTEAM_TYPES) and r["n"] == 36
    assert r["breakdown"]["false_premise"]["blind"] == 0.0  # the prior names a colour whatever is asked
    yes = EvalModel("yes-man", answer=lambda images, qs, **kw: ["yes"] * len(qs))
    r = evaluate(yes, "redteam", n=12)
    assert r["breakdown"]["false_premise"]["score"] == r["breakdown"]["leading"]["score"] == 0.0
    # denying every object is right on false premises only: on a leading question the object is there
    denier = EvalModel("denier", answer=lambda images, qs, **kw: [
        f"no, there is no {next(s for s in SHAPES if s in q)}." for q in qs])
    r = evaluate(denier, "redteam", n=12)
    assert r["breakdown"]["false_premise"]["score"] == 1.0
    assert r["breakdown"]["leading"]["score"] == r["breakdown"]["true_premise"]["score"] == 0.0


def test_premise_check_denies_what_the_model_says_is_absent():
    oracle_exists = EvalModel("colour-namer", answer=lambda images, qs, **kw: [
        _oracle_answer([im], [q])[0] if q.startswith("is there") else "red" for im, q in zip(images, qs)])
    plain, checked = (evaluate(m, "redteam", n=12) for m in (oracle_exists, verify_premises(oracle_exists)))
    assert plain["breakdown"]["false_premise"]["score"] == 0.0
    assert checked["breakdown"]["false_premise"]["score"] == 1.0  # a reliable check fixes every false premise
    assert checked["breakdown"]["true_premise"]["score"] == plain["breakdown"]["true_premise"]["score"]
    assert checked["model"] == "colour-namer + premise check"
    with pytest.raises(ValueError, match="needs a model that can 'answer'"):
        verify_premises(wrap("clip-tiny"))


def test_items_are_balanced_deterministic_and_about_present_or_absent_shapes():
    m = EvalModel("x", answer=_oracle_answer)
    items = get_suite("redteam").build(m, 10, 0)
    assert [it["question"] for it in items] == [it["question"] for it in get_suite("redteam").build(m, 10, 0)]
    for it in items:
        shapes = {o.shape for o in it["scene"].objects}
        named = next(s for s in SHAPES if s in it["question"])
        assert (named in shapes) == (it["type"] != "false_premise")
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        evaluate(m, "redteam", n=0)
