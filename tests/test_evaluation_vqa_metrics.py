"""VQA accuracy follows vqaEval.py of the VQA API (cases worked out from the official code by hand) and ANLS equals
the `anls` package's on random and edge-case strings."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlm_primer.evaluation.vqa_metrics import (anls, anls_score, levenshtein, normalize_answer, vqa_accuracy,
                                               vqa_score)

# --- VQA accuracy: the official leave-one-out average --------------------------------------------------------------


def test_ten_identical_answers_and_the_same_prediction_score_one():
    assert vqa_accuracy("yes", ["yes"] * 10) == 1.0


@pytest.mark.parametrize("k, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (5, 1.0), (9, 1.0),
                                         (10, 1.0)])
def test_k_matching_answers_out_of_ten(k, expected):
    # k humans said "yes": the 10 - k subsets leaving out a "no" see k matches, the k subsets leaving out a "yes"
    # see k - 1, e.g. k = 1: (9 * 1/3 + 1 * 0) / 10 = 0.3
    answers = ["no"] * (10 - k) + ["yes"] * k
    assert vqa_accuracy("yes", answers) == pytest.approx(expected, abs=1e-12)
    assert vqa_accuracy("yes", answers[::-1]) == pytest.approx(expected, abs=1e-12)  # order does not matter


@pytest.mark.parametrize("n, k, expected", [
    (1, 1, 0.0),  # the only subset is empty: one answer always scores 0
    (1, 0, 0.0),
    (3, 3, 2 / 3),  # each subset has 2 matches: below 4 answers 1.0 is out of reach
    (3, 1, 2 / 9),  # (2 * 1/3 + 0) / 3
    (4, 4, 1.0),
    (5, 2, (2 * (1 / 3) + 3 * (2 / 3)) / 5),
])
def test_fewer_answers_use_the_same_leave_one_out_formula(n, k, expected):
    answers = ["yes"] * k + [f"other{i}" for i in range(n - k)]
    assert vqa_accuracy("yes", answers) == pytest.approx(expected, abs=1e-12)


def _official_loop(prediction_normalized: str, records: list[dict]) -> float:
    """The official loop over answer *records*: for each record, the others are the records that compare unequal to
    it (all but itself, since records differ by answer_id); count the matches among them."""
    accs = []
    for record in records:
        others = [r for r in records if r != record]
        accs.append(min(1, len([r for r in others if r["answer"] == prediction_normalized]) / 3))
    return sum(accs) / len(accs)


@pytest.mark.parametrize("seed", range(5))
def test_position_leave_one_out_equals_the_official_record_loop(seed):
    """Leaving answers out by position (duplicates kept) is what the record loop does when answer ids differ."""
    rng = np.random.default_rng(seed)
    vocab = ["yes", "no", "2", "red", "dog"]
    for _ in range(50):
        n = int(rng.integers(1, 12))
        answers = [str(a) for a in rng.choice(vocab, size=n)]
        prediction = str(rng.choice(vocab))
        records = [{"answer": a, "answer_id": i + 1} for i, a in enumerate(answers)]
        assert vqa_accuracy(prediction, answers) == pytest.approx(_official_loop(prediction, records), abs=1e-15)


# --- normalisation --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw, normalized", [
    ("Two", "2"),  # manualMap after lower-casing
    ("none", "0"),
    ("ten", "10"),
    ("eleven", "eleven"),  # the map stops at ten
    ("the dog", "dog"),  # articles dropped
    ("An apple", "apple"),
    ("a", ""),
    ("dont", "don't"),  # contractions table
    ("don't", "don't"),  # apostrophes are not punctuation here
    ("Im", "im"),  # sic: the table's "Im" key is never reached after lower-casing
    ("yes.", "yes"),  # periodStrip: a period not followed by a digit goes
    ("3.", "3"),
    ("3.5", "3.5"),  # ... a period before a digit stays
    ("e.g.", "eg"),
    ("1,000", "1000"),  # commaStrip matches, so every mark is deleted rather than spaced: the comma goes
    ("red-blue, 1,2", "redblue 12"),  # the same: "-" is deleted too, because of the digit comma elsewhere
    ("red,blue", "red blue"),  # no digit comma and no space next to it: replaced by a space
    ("yes, no", "yes no"),  # ", " touches a space: deleted
    ("x-y -z", "xy z"),  # one "-" touches a space, so every "-" is deleted
    ("x-y-z", "x y z"),
    ("(red)", "red"),
    ("12:30", "12:30"),  # colons are not in the list
    ("  Two\tdogs.\n", "2 dogs"),  # newline/tab to space, strip, collapse
    ("." * 40, "." * 8),  # sic: re.UNICODE passed as count, so at most 32 periods go
])
def test_normalize_answer_follows_vqaeval(raw, normalized):
    assert normalize_answer(raw) == normalized


@pytest.mark.parametrize("prediction, answer", [
    ("Two", "2"), ("the dog", "dog"), ("dont", "don't"), ("yes.", "yes"), ("YES", "yes"), ("1,000", "1000"),
    ("3.5", "3.5"), ("none", "0"),
])
def test_normalised_prediction_matches_normalised_answers(prediction, answer):
    assert vqa_accuracy(prediction, [answer] * 10) == 1.0
    assert vqa_accuracy(prediction, [answer] * 3 + ["x"] * 7) == pytest.approx(0.9)


def test_answers_are_only_punctuation_processed_and_only_when_they_differ():
    """The official asymmetry: answers never get lower-casing, number words, articles or contractions, and get the
    punctuation step only when they are not all identical."""
    assert vqa_accuracy("2", ["two"] * 10) == 0.0
    assert vqa_accuracy("yes", ["Yes"] * 10) == 0.0
    assert vqa_accuracy("dog", ["the dog"] * 10) == 0.0
    assert vqa_accuracy("1000", ["1,000"] * 10) == 0.0  # all identical: left as they are
    assert vqa_accuracy("1000", ["1,000"] * 9 + ["1000"]) == 1.0  # not identical: "1,000" -> "1000"
    assert vqa_accuracy("1000", ["1,000"] * 3 + ["no"] * 7) == pytest.approx(0.9)
    assert vqa_accuracy("yes", ["yes."] * 10) == 0.0
    assert vqa_accuracy("yes", ["yes."] * 2 + ["yes"] + ["no"] * 7) == pytest.approx(0.9)
    # passing the answers through normalize_answer first removes the asymmetry
    assert vqa_accuracy("2", [normalize_answer(a) for a in ["two"] * 10]) == 1.0


def test_vqa_score_is_the_mean_of_the_questions():
    out = vqa_score(["yes", "2", "cat"], [["yes"] * 10, ["2"] + ["3"] * 9, ["dog"] * 10])
    assert out["per_question"] == pytest.approx([1.0, 0.3, 0.0])
    assert out["accuracy"] == pytest.approx(1.3 / 3)


@settings(max_examples=40, deadline=None)
@given(st.text(max_size=12), st.lists(st.text(max_size=12), min_size=1, max_size=12))
def test_vqa_accuracy_is_in_unit_interval(prediction, answers):
    acc = vqa_accuracy(prediction, answers)
    assert 0.0 <= acc <= 1.0 and math.isfinite(acc)


# --- ANLS -----------------------------------------------------------------------------------------------------------


def test_levenshtein_known_values():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == levenshtein("abc", "") == 3
    assert levenshtein("", "") == 0
    assert levenshtein("flaw", "lawn") == 2
    assert levenshtein("abc", "abc") == 0


@pytest.mark.parametrize("seed", range(3))
def test_levenshtein_equals_the_anls_package(seed):
    from anls.metrics.dist import levenshtein_distance

    rng = np.random.default_rng(seed)
    for _ in range(200):
        a, b = ("".join(rng.choice(list("abcd"), size=int(rng.integers(0, 9)))) for _ in range(2))
        assert levenshtein(a, b) == levenshtein_distance(a, b) == levenshtein(b, a)


EDGE_CASES = [
    ("Paris", ["paris"]),  # case
    ("  New   York ", ["new york"]),  # whitespace stripped and collapsed
    ("", ["abc"]),  # empty prediction
    ("", [""]),  # both empty: NLD 0, score 1
    ("abc", [""]),
    ("ab", ["ac"]),  # NLD exactly 0.5: cut (strict)
    ("abc", ["abd"]),  # NLD 1/3: kept
    ("abcd", ["abxy"]),  # 0.5 again
    ("1984", ["1948", "nineteen eighty-four", "1984."]),  # several gold answers: the best counts
    ("STRASSE", ["straße"]),  # len of the upper-cased strings
    ("total: $12.50", ["$12.50", "12.50"]),
    ("x", ["completely different", "y"]),
]


def _random_cases(seed: int, count: int = 100):
    rng = np.random.default_rng(seed)
    alphabet = list("abAB c.")
    word = lambda: "".join(rng.choice(alphabet, size=int(rng.integers(0, 8))))  # noqa: E731
    return [(word(), [word() for _ in range(int(rng.integers(1, 4)))]) for _ in range(count)]


@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.8, 1.0])
def test_anls_equals_the_anls_package(threshold):
    import anls as anls_package

    cases = EDGE_CASES + _random_cases(int(threshold * 10))
    for prediction, answers in cases:
        want = anls_package.anls_score(prediction=prediction, gold_labels=answers, threshold=threshold)
        assert anls(prediction, answers, threshold) == want, (prediction, answers)
    want_mean = np.mean([anls_package.anls_score(prediction=p, gold_labels=a, threshold=threshold) for p, a in cases])
    assert anls_score([p for p, _ in cases], [a for _, a in cases], threshold) == pytest.approx(want_mean, abs=1e-12)


def test_anls_hand_values():
    assert anls("Paris", ["paris"]) == 1.0
    assert anls("ab", ["ac"]) == 0.0  # NLD = 0.5 is not below the threshold
    assert anls("abc", ["abd"]) == pytest.approx(2 / 3)
    assert anls("abc", ["zzz", "abd", "abc"]) == 1.0
    assert anls("ab", ["ac"], threshold=1.0) == 0.5


# --- bad input ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("call, error, match", [
    (lambda: normalize_answer(3), TypeError, "answer must be a str"),
    (lambda: vqa_accuracy(None, ["yes"]), TypeError, "prediction must be a str"),
    (lambda: vqa_accuracy("yes", []), ValueError, "answers is empty"),
    (lambda: vqa_accuracy("yes", "yes"), TypeError, "answers must be a list"),
    (lambda: vqa_accuracy("yes", ["yes", 2]), TypeError, r"answers\[1\] must be a str"),
    (lambda: vqa_score(["yes"], [["yes"], ["no"]]), ValueError, "1 predictions but 2 answer_lists"),
    (lambda: vqa_score([], []), ValueError, "predictions is empty"),
    (lambda: vqa_score("yes", [["yes"]]), TypeError, "predictions must be a list"),
    (lambda: vqa_score(["yes", 1], [["yes"], ["no"]]), TypeError, r"predictions\[1\] must be a str"),
    (lambda: vqa_score(["yes", "no"], [["yes"], []]), ValueError, r"answer_lists\[1\] is empty"),
    (lambda: anls(1.0, ["a"]), TypeError, "prediction must be a str"),
    (lambda: anls("a", []), ValueError, "answers is empty"),
    (lambda: anls("a", ["a"], threshold=0), ValueError, r"threshold must be in \(0, 1\]"),
    (lambda: anls("a", ["a"], threshold=1.5), ValueError, "threshold must be in"),
    (lambda: anls("a", ["a"], threshold=float("nan")), ValueError, "threshold must be in"),
    (lambda: anls("a", ["a"], threshold="0.5"), TypeError, "threshold must be a number"),
    (lambda: anls_score(["a"], [["a"], ["b"]]), ValueError, "1 predictions but 2 answer_lists"),
    (lambda: anls_score(["a"], [["a"]], threshold=-0.1), ValueError, "threshold must be in"),
    (lambda: anls_score(["a"], [[]]), ValueError, r"answer_lists\[0\] is empty"),
    (lambda: levenshtein("a", None), TypeError, "b must be a str"),
])
def test_bad_input_names_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()
