"""Bootstrap intervals, WEAT/SEAT and Winoground scores: coverage, SciPy as the oracle, literal
transcriptions of the papers' definitions, hand-made cases and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats as sps

from vlm_primer.evaluation import stats
from vlm_primer.evaluation.stats import (
    bootstrap_ci,
    paired_bootstrap_diff,
    weat_association,
    weat_effect_size,
    weat_test,
    winoground_outcomes,
    winoground_scores,
)

# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_covers_the_true_mean_at_about_the_nominal_rate():
    """Over 200 simulated benchmarks of 40 items, the 95% interval holds the true mean ~95% of the time."""
    rng = np.random.default_rng(123)
    true_mean, covered, n_datasets = 1.0, 0, 200
    for i in range(n_datasets):
        values = rng.normal(true_mean, 2.0, size=40)
        est, low, high = bootstrap_ci(values, n_resamples=1000, seed=i)
        assert low <= est <= high
        covered += low <= true_mean <= high
    assert 0.9 <= covered / n_datasets <= 0.99, covered / n_datasets


def test_bootstrap_ci_covers_an_accuracy():
    """0/1 scores (an accuracy of p = 0.7 on 60 items): coverage near 90% for a 90% interval."""
    rng = np.random.default_rng(7)
    covered, n_datasets = 0, 200
    for i in range(n_datasets):
        correct = rng.random(60) < 0.7
        _, low, high = bootstrap_ci(correct, confidence=0.9, n_resamples=1000, seed=i)
        covered += low <= 0.7 <= high
    assert 0.8 <= covered / n_datasets <= 0.97, covered / n_datasets


@pytest.mark.parametrize("statistic", [np.mean, np.median])
@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_bootstrap_ci_close_to_scipy_percentile(statistic, confidence):
    values = np.random.default_rng(0).gamma(2.0, size=80)  # skewed, so the interval is not symmetric
    est, low, high = bootstrap_ci(values, statistic, n_resamples=20000, confidence=confidence, seed=1)
    ref = sps.bootstrap((values,), statistic, n_resamples=20000, confidence_level=confidence,
                        method="percentile", rng=2)
    width = ref.confidence_interval.high - ref.confidence_interval.low
    assert est == pytest.approx(statistic(values))
    assert abs(low - ref.confidence_interval.low) < 0.1 * width
    assert abs(high - ref.confidence_interval.high) < 0.1 * width


def test_bootstrap_ci_is_a_function_of_its_arguments():
    values = np.random.default_rng(3).normal(size=50)
    as_array = bootstrap_ci(values, seed=5)
    assert bootstrap_ci(values.tolist(), seed=5) == as_array
    assert bootstrap_ci(torch.tensor(values, dtype=torch.float32), seed=5) == pytest.approx(as_array, abs=1e-6)
    assert bootstrap_ci(values, seed=6) != as_array
    # Constant scores: every resample has the same mean, so the interval is a point.
    assert bootstrap_ci([0.5] * 10) == pytest.approx((0.5, 0.5, 0.5))
    # Booleans (correct / wrong) count as 0 and 1.
    assert bootstrap_ci(torch.tensor([True, False, True, True]))[0] == 0.75


def test_bootstrap_ci_same_result_when_resampled_in_blocks(monkeypatch):
    """Building the index matrix a few rows at a time (to bound memory) draws the same resamples."""
    values = np.random.default_rng(4).normal(size=30)
    whole = bootstrap_ci(values, n_resamples=500, seed=9)
    monkeypatch.setattr(stats, "_BLOCK_ENTRIES", 30 * 7)  # blocks of 7 resamples, the last one short
    assert bootstrap_ci(values, n_resamples=500, seed=9) == whole


def test_bootstrap_ci_wider_at_higher_confidence_and_narrower_with_more_items():
    rng = np.random.default_rng(8)
    small, large = rng.normal(size=30), rng.normal(size=3000)
    _, lo90, hi90 = bootstrap_ci(small, confidence=0.9)
    _, lo99, hi99 = bootstrap_ci(small, confidence=0.99)
    assert lo99 < lo90 and hi90 < hi99
    _, lo, hi = bootstrap_ci(large)
    assert hi - lo < (hi90 - lo90) / 4


def test_paired_bootstrap_diff_close_to_scipy_paired():
    rng = np.random.default_rng(10)
    difficulty = rng.normal(size=100)  # shared by both models: it cancels in the paired difference
    a = difficulty + 0.3 + 0.5 * rng.normal(size=100)
    b = difficulty + 0.5 * rng.normal(size=100)
    diff, low, high = paired_bootstrap_diff(a, b, n_resamples=20000, seed=0)
    assert diff == pytest.approx(a.mean() - b.mean())
    ref = sps.bootstrap((a, b), lambda x, y, axis: x.mean(axis) - y.mean(axis), paired=True,
                        n_resamples=20000, method="percentile", rng=1).confidence_interval
    width = ref.high - ref.low
    assert abs(low - ref.low) < 0.1 * width and abs(high - ref.high) < 0.1 * width
    # Pairing matters: treating the two score lists as independent gives a much wider interval.
    unpaired = sps.bootstrap((a, b), lambda x, y, axis: x.mean(axis) - y.mean(axis), paired=False,
                             n_resamples=5000, method="percentile", rng=1).confidence_interval
    assert high - low < 0.6 * (unpaired.high - unpaired.low)


def test_paired_bootstrap_diff_of_a_constant_shift_is_exact():
    a = np.random.default_rng(11).normal(size=20)
    assert paired_bootstrap_diff(a + 0.25, a) == pytest.approx((0.25, 0.25, 0.25))
    diff, low, high = paired_bootstrap_diff([1, 1, 0, 1], [0, 1, 0, 0], statistic=np.median, seed=3)
    assert diff == 1.0 and low <= diff <= high


# --------------------------------------------------------------------------- WEAT / SEAT


def _cos(u, v):
    return sum(p * q for p, q in zip(u, v)) / math.sqrt(sum(p * p for p in u) * sum(q * q for q in v))


def _paper_effect_size(X, Y, A, B):
    """Caliskan et al. (2017), transcribed with Python lists: s(w, A, B) and the effect size."""
    def s(w):
        return sum(_cos(w, a) for a in A) / len(A) - sum(_cos(w, b) for b in B) / len(B)

    sx, sy = [s(x) for x in X], [s(y) for y in Y]
    pooled = sx + sy
    mean = sum(pooled) / len(pooled)
    std = math.sqrt(sum((v - mean) ** 2 for v in pooled) / (len(pooled) - 1))
    return (sum(sx) / len(sx) - sum(sy) / len(sy)) / std, sum(sx) - sum(sy)


def _weat_sets(seed, nx=4, ny=4, na=5, nb=6, dim=8, bias=0.0):
    """Random target and attribute embeddings; ``bias`` pulls X towards A and Y towards B."""
    rng = np.random.default_rng(seed)
    A, B = rng.normal(size=(na, dim)), rng.normal(size=(nb, dim))
    X = rng.normal(size=(nx, dim)) + bias * A.mean(0)
    Y = rng.normal(size=(ny, dim)) + bias * B.mean(0)
    return X, Y, A, B


@pytest.mark.parametrize("seed", range(3))
def test_weat_effect_size_matches_the_paper(seed):
    X, Y, A, B = _weat_sets(seed, nx=5, ny=3)
    expected, statistic = _paper_effect_size(X.tolist(), Y.tolist(), A.tolist(), B.tolist())
    assert weat_effect_size(X, Y, A, B) == pytest.approx(expected, abs=1e-12)
    result = weat_test(X, Y, A, B)
    assert result["effect_size"] == pytest.approx(expected, abs=1e-12)
    assert result["statistic"] == pytest.approx(statistic, abs=1e-12)
    # Torch tensors of float32 give the same up to float32 rounding.
    got = weat_effect_size(*(torch.tensor(m, dtype=torch.float32) for m in (X, Y, A, B)))
    assert got == pytest.approx(expected, abs=1e-5)


def test_weat_symmetries():
    X, Y, A, B = _weat_sets(4, bias=1.0)
    d = weat_effect_size(X, Y, A, B)
    assert weat_effect_size(Y, X, A, B) == pytest.approx(-d)
    assert weat_effect_size(X, Y, B, A) == pytest.approx(-d)
    assert weat_effect_size(3.0 * X, Y, 0.5 * A, B) == pytest.approx(d)  # cosine: row norms do not matter
    s = weat_association(X, A, B)
    assert s.shape == (4,)
    expected = [sum(_cos(x, a) for a in A) / len(A) - sum(_cos(x, b) for b in B) / len(B) for x in X.tolist()]
    assert s.tolist() == pytest.approx(expected)


def test_weat_detects_a_planted_bias_and_not_a_missing_one():
    biased = weat_test(*_weat_sets(5, nx=8, ny=8, dim=16, bias=3.0), n_resamples=2000)
    assert biased["effect_size"] > 1.5 and biased["p_value"] < 0.01
    neutral = [weat_test(*_weat_sets(seed, nx=8, ny=8, dim=16), n_resamples=500)["p_value"] for seed in range(20)]
    assert sum(p < 0.05 for p in neutral) <= 4  # ~1 of 20 expected by chance


def _scipy_p_value(X, Y, A, B, **kwargs):
    sx, sy = weat_association(X, A, B), weat_association(Y, A, B)
    return sps.permutation_test((sx, sy), lambda x, y: x.sum() - y.sum(), permutation_type="independent",
                                alternative="greater", **kwargs).pvalue


@pytest.mark.parametrize("seed", range(4))
def test_weat_exact_p_value_equals_scipy(seed):
    """|X| = |Y| = 4: 70 partitions <= n_resamples, so both enumerate them all."""
    X, Y, A, B = _weat_sets(seed, bias=0.5 * seed)
    got = weat_test(X, Y, A, B, n_resamples=10000)["p_value"]
    assert got == _scipy_p_value(X, Y, A, B, n_resamples=10000, random_state=0)
    assert got * 70 == pytest.approx(round(got * 70))  # a count of partitions out of C(8, 4) = 70


def test_weat_exact_p_value_counts_ties_like_scipy():
    """Repeated targets give partitions whose statistic equals the observed one up to rounding."""
    X, Y, A, B = _weat_sets(20, nx=3, ny=3)
    X = np.stack([X[0], X[0], X[1]])
    Y = np.stack([X[0], X[1], Y[0]])
    got = weat_test(X, Y, A, B, n_resamples=20)["p_value"]  # C(6, 3) = 20: exact
    assert got == _scipy_p_value(X, Y, A, B, n_resamples=20)


def test_weat_randomized_p_value_equals_scipy_with_the_same_generator():
    """|X| = |Y| = 8: 12870 partitions > 2000 resamples. With ``rng=seed`` SciPy draws the same shuffles."""
    X, Y, A, B = _weat_sets(31, nx=8, ny=8)
    got = weat_test(X, Y, A, B, n_resamples=2000, seed=17)["p_value"]
    assert got == _scipy_p_value(X, Y, A, B, n_resamples=2000, rng=17)
    # And within Monte Carlo error of the exact p-value and of SciPy's legacy random_state stream.
    exact = weat_test(X, Y, A, B, n_resamples=12870)["p_value"]
    assert 0.1 < exact < 0.9  # a p-value in the middle, where the Monte Carlo error is largest
    mc_error = 4 * math.sqrt(exact * (1 - exact) / 2000)
    assert abs(got - exact) < mc_error
    assert abs(_scipy_p_value(X, Y, A, B, n_resamples=2000, random_state=3) - exact) < mc_error


def test_weat_unequal_sizes_match_scipy():
    X, Y, A, B = _weat_sets(40, nx=3, ny=5)  # C(8, 3) = 56 partitions
    assert weat_test(X, Y, A, B)["p_value"] == _scipy_p_value(X, Y, A, B, n_resamples=10000)


# --------------------------------------------------------------------------- Winoground


def _paper_winoground(example):
    """Thrush et al. (2022), transcribed: s(C, I) is the score of caption C with image I."""
    def s(c, i):
        return example[i][c]  # our layout is [image][caption]

    c0, c1, i0, i1 = 0, 1, 0, 1
    f = s(c0, i0) > s(c1, i0) and s(c1, i1) > s(c0, i1)  # text score
    g = s(c0, i0) > s(c0, i1) and s(c1, i1) > s(c1, i0)  # image score
    return f, g, f and g


def test_winoground_hand_cases():
    perfect = [[1.0, 0.0], [0.0, 1.0]]
    text_only = [[0.9, 0.1], [0.95, 1.0]]  # image 1 prefers caption 1, but caption 0 prefers image 1
    image_only = [[0.9, 0.95], [0.1, 1.0]]  # caption 1 prefers image 1, but image 0 prefers caption 1
    swapped = [[0.0, 1.0], [1.0, 0.0]]
    tied = [[0.5, 0.5], [0.5, 0.5]]
    s = torch.tensor([perfect, text_only, image_only, swapped, tied])
    out = winoground_outcomes(s)
    assert out["text"].tolist() == [True, True, False, False, False]
    assert out["image"].tolist() == [True, False, True, False, False]
    assert out["group"].tolist() == [True, False, False, False, False]
    assert winoground_scores(s) == {"text": 0.4, "image": 0.4, "group": 0.2}


def test_winoground_matches_the_paper_definitions():
    s = np.random.default_rng(0).integers(0, 4, size=(500, 2, 2)).astype(float)  # small integers: many ties
    expected = np.array([_paper_winoground(example.tolist()) for example in s])
    out = winoground_outcomes(s)
    for k, name in enumerate(("text", "image", "group")):
        assert out[name].tolist() == expected[:, k].tolist()
    assert winoground_scores(s.tolist()) == pytest.approx(dict(zip(("text", "image", "group"), expected.mean(0))))


def test_winoground_chance_levels():
    scores = winoground_scores(np.random.default_rng(1).normal(size=(60000, 2, 2)))
    assert scores["text"] == pytest.approx(1 / 4, abs=0.01)
    assert scores["image"] == pytest.approx(1 / 4, abs=0.01)
    assert scores["group"] == pytest.approx(1 / 6, abs=0.01)


# --------------------------------------------------------------------------- bad input

_V = [0.1, 0.5, 0.9]
_M = np.eye(3)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: bootstrap_ci([]), ValueError, "values is empty"),
        (lambda: bootstrap_ci([[0.1, 0.2]]), ValueError, r"values must be 1-D.*\(1, 2\)"),
        (lambda: bootstrap_ci([0.1, float("nan")]), ValueError, "values must be finite"),
        (lambda: bootstrap_ci(torch.tensor([1.0, float("inf")])), ValueError, "values must be finite"),
        (lambda: bootstrap_ci("abc"), TypeError, "values must be"),
        (lambda: bootstrap_ci(["a", "b"]), TypeError, "values must be"),
        (lambda: bootstrap_ci(_V, confidence=0.0), ValueError, r"confidence must be in \(0, 1\)"),
        (lambda: bootstrap_ci(_V, confidence=1.0), ValueError, r"confidence must be in \(0, 1\)"),
        (lambda: bootstrap_ci(_V, confidence=95), ValueError, r"confidence must be in \(0, 1\)"),
        (lambda: bootstrap_ci(_V, confidence=float("nan")), ValueError, "confidence"),
        (lambda: bootstrap_ci(_V, confidence="0.95"), TypeError, "confidence must be a float"),
        (lambda: bootstrap_ci(_V, n_resamples=0), ValueError, "n_resamples must be an int >= 1"),
        (lambda: bootstrap_ci(_V, n_resamples=100.0), TypeError, "n_resamples must be an int"),
        (lambda: bootstrap_ci(_V, seed=-1), ValueError, "seed must be an int >= 0"),
        (lambda: bootstrap_ci(_V, seed="0"), TypeError, "seed must be an int"),
        (lambda: bootstrap_ci(_V, statistic="mean"), TypeError, "statistic must be callable"),
        (lambda: bootstrap_ci(_V, statistic=lambda x, axis: x), ValueError, "statistic must reduce"),
        (lambda: paired_bootstrap_diff(_V, [0.1, 0.2]), ValueError, r"a \(3,\) and b \(2,\)"),
        (lambda: paired_bootstrap_diff(_V, []), ValueError, "b is empty"),
        (lambda: paired_bootstrap_diff([float("nan")] * 3, _V), ValueError, "a must be finite"),
        (lambda: paired_bootstrap_diff(_V, _V, confidence=-0.5), ValueError, "confidence"),
        (lambda: weat_effect_size(_M[0], _M, _M, _M), ValueError, r"X must be an \(N, D\) matrix"),
        (lambda: weat_effect_size(_M, np.zeros((0, 3)), _M, _M), ValueError, "Y is empty"),
        (lambda: weat_effect_size(_M, _M, np.eye(4), _M), ValueError, "same size D.*A: D=4"),
        (lambda: weat_effect_size(_M, _M, _M, np.zeros((2, 3))), ValueError, "B has all-zero rows"),
        (lambda: weat_effect_size(_M, _M * np.nan, _M, _M), ValueError, "Y must be finite"),
        (lambda: weat_effect_size(_M, _M, _M, _M), ValueError, "effect size .* is undefined"),
        (lambda: weat_effect_size(None, _M, _M, _M), TypeError, "X must be"),
        (lambda: weat_test(_M, _M[::-1], _M, _M[::-1], n_resamples=0), ValueError, "n_resamples must be an int >= 1"),
        (lambda: weat_test(_M, _M[::-1], _M, _M[::-1], seed=1.5), TypeError, "seed must be an int"),
        (lambda: weat_association(_M, np.ones((3, 2)), _M), ValueError, "same size D"),
        (lambda: winoground_scores(np.zeros((3, 2))), ValueError, r"s must have shape \(N, 2, 2\)"),
        (lambda: winoground_scores(np.zeros((3, 2, 3))), ValueError, r"s must have shape \(N, 2, 2\)"),
        (lambda: winoground_scores(np.zeros((0, 2, 2))), ValueError, "s is empty"),
        (lambda: winoground_scores(np.full((1, 2, 2), np.nan)), ValueError, "s must be finite"),
        (lambda: winoground_outcomes({"s": 1}), TypeError, "s must be"),
    ],
)
def test_bad_input_names_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()
