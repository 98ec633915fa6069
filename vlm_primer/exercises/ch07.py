"""Checks for the exercises of chapter 07 (evaluation: VQA accuracy, intervals, Winoground, POPE, CHAIR, WEAT,
CLIPScore). Explained in notebook 07, §Exercises."""

from __future__ import annotations

import numpy as np
import torch

from vlm_primer.exercises import Wrong, close, exercise, number


@exercise("07.1", "VQA accuracy")
def vqa_acc(fn) -> None:
    cases = [("red", ["red"] * 10, 1.0), ("red", ["red"] * 2 + ["blue"] * 8, 0.6), ("red", ["red"] * 3 + ["blue"] * 7,
             0.9), ("red", ["blue"] * 10, 0.0), ("red", ["red"] + ["blue"] * 9, 0.3)]
    for pred, answers, want in cases:
        got = number(fn(pred, list(answers)), "the accuracy")
        k = answers.count(pred)
        if abs(got - min(k / 3, 1)) < 1e-9 and abs(want - min(k / 3, 1)) > 1e-9:
            raise Wrong("min(#matches / 3, 1) over all ten is not the official score: average it over the ten "
                        "subsets that leave one annotator out")
        if abs(got - want) > 1e-9:
            raise Wrong(f"{k} of ten annotators gave the answer: the accuracy is off")


@exercise("07.2", "A bootstrap interval")
def boot_ci(fn) -> None:
    rng = np.random.default_rng(0)
    values = rng.random(30)
    idx = rng.integers(30, size=(500, 30))
    got = np.asarray(fn(values.copy(), idx.copy()), dtype=float).ravel()
    means = values[idx].mean(1)
    want = np.percentile(means, [2.5, 97.5])
    if got.shape != (2,):
        raise Wrong("return the two ends of the interval, (low, high)")
    if np.allclose(got, np.percentile(values, [2.5, 97.5])):
        raise Wrong("that is the spread of the values themselves: take the percentiles of the resampled *means*")
    if np.allclose(got, np.percentile(means, [5, 95])):
        raise Wrong("a 95 % interval leaves 2.5 % out on each side")
    # any percentile definition is right: each end lies between the order statistics around its rank
    ranked = np.sort(means)
    for end, q in zip(got, (0.025, 0.975)):
        pos = q * (len(ranked) - 1)
        lo, hi = ranked[max(int(np.floor(pos)) - 1, 0)], ranked[min(int(np.ceil(pos)) + 1, len(ranked) - 1)]
        if not lo - 1e-12 <= end <= hi + 1e-12:
            close(torch.tensor(got), torch.tensor(want), "the interval")


@exercise("07.3", "Winoground's scores")
def wino(fn) -> None:
    rng = np.random.default_rng(1)
    s = rng.random((40, 2, 2))
    s[0] = [[2, 1], [0, 3]]                     # every test passes
    s[1] = [[2, 3], [0, 1]]                     # both images prefer caption 1: text fails
    s[2:8] = [[3, 0], [4, 5]]                   # text passes, image fails (image 1 beats image 0 on caption 0)
    s[8:12] = [[1, 1], [1, 1]]                  # a model that scores everything alike: ties are failures
    text = (s[:, 0, 0] > s[:, 0, 1]) & (s[:, 1, 1] > s[:, 1, 0])
    image = (s[:, 0, 0] > s[:, 1, 0]) & (s[:, 1, 1] > s[:, 0, 1])
    want = np.array([text.mean(), image.mean(), (text & image).mean()])
    got = np.asarray(fn(s.copy()), dtype=float).ravel()
    if got.shape != (3,):
        raise Wrong("return three numbers: text, image and group scores")
    if not np.isclose(want[0], want[1]) and np.allclose(got, want[[1, 0, 2]]):
        raise Wrong("text and image are swapped: the text score compares the two captions for one image")
    if abs(got[2] - want[0] * want[1]) < 1e-9 and abs(want[2] - want[0] * want[1]) > 1e-9:
        raise Wrong("the group score counts pairs that pass both tests, not the product of the two rates")
    if np.isclose(got[0], want[0] + 4 / len(s)):  # the four tied examples counted as passes
        raise Wrong("a tie is a failure: the right caption (image) must score strictly higher")
    close(torch.tensor(got), torch.tensor(want), "the scores")


@exercise("07.4", "POPE")
def pope(fn) -> None:
    pred = np.array([True, True, True, False, False, True, False, True])
    label = np.array([True, False, True, False, True, True, False, False])
    tp, fp, fn_ = 3, 2, 1
    want = (2 * tp / (2 * tp + fp + fn_), pred.mean())
    got = np.asarray(fn(pred.copy(), label.copy()), dtype=float).ravel()
    if got.shape != (2,):
        raise Wrong("return (F1, yes-ratio)")
    if abs(got[1] - label.mean()) < 1e-9:
        raise Wrong("the yes-ratio is the share of the model's answers that are yes, not of the labels")
    close(torch.tensor(got), torch.tensor(want), "(F1, yes-ratio)")
    none = np.asarray(fn(np.zeros(4, bool), np.array([True, False, True, False])), dtype=float).ravel()
    if not np.isfinite(none).all() or none[0] != 0:
        raise Wrong("a model that never says yes has F1 0 (no division by zero)")


@exercise("07.5", "CHAIR_i")
def chair_i(fn) -> None:
    mentions = [["circle", "square"], ["star"], ["circle"], ["circle", "circle", "hexagon"]]
    present = [{"circle"}, {"star", "square"}, {"circle"}, {"hexagon"}]
    got = number(fn([list(m) for m in mentions], [set(p) for p in present]), "CHAIR_i")
    if abs(got - 2 / 4) < 1e-9:
        raise Wrong("that is CHAIR_s (captions with a hallucination): CHAIR_i counts mentions")
    if abs(got - 2 / 6) < 1e-9:
        raise Wrong("a caption that names a missing circle twice hallucinates twice: count every mention")
    if abs(got - 3 / 7) > 1e-9:
        raise Wrong("hallucinated mentions / all mentions over the whole corpus")
    if number(fn([[]], [{"circle"}]), "CHAIR_i") != 0:
        raise Wrong("with no mention at all, CHAIR_i is 0")


@exercise("07.6", "WEAT effect size")
def weat_d(fn) -> None:
    from vlm_primer.evaluation.stats import weat_effect_size

    g = np.random.default_rng(2)
    X, Y, A, B = (g.normal(size=(n, 5)) + shift for n, shift in ((6, 0.5), (6, -0.5), (4, 1.0), (4, -1.0)))
    want = weat_effect_size(X, Y, A, B)
    got = number(fn(X.copy(), Y.copy(), A.copy(), B.copy()), "the effect size")
    if abs(got + want) < 1e-6:
        raise Wrong("the sign is flipped: s(w) = mean cos(w, A) - mean cos(w, B), and X comes first")
    if abs(got - want) > 1e-6:
        for ddof in (0, 1):
            s = np.concatenate([_assoc(X, A, B), _assoc(Y, A, B)])
            if abs(got - (_assoc(X, A, B).mean() - _assoc(Y, A, B).mean()) / s.std(ddof=ddof)) < 1e-6:
                raise Wrong("WEAT divides by the standard deviation with ddof=1 (the sample standard deviation)")
        raise Wrong("the effect size is off: (mean s(x) - mean s(y)) / std of s over X and Y together")


def _assoc(W, A, B):
    unit = [m / np.linalg.norm(m, axis=1, keepdims=True) for m in (W, A, B)]
    return (unit[0] @ unit[1].T).mean(1) - (unit[0] @ unit[2].T).mean(1)


@exercise("07.7", "CLIPScore")
def clip_s(fn) -> None:
    cos = torch.tensor([0.4, -0.2, 0.0, 0.9])
    for w in (2.5, 1.0):
        got = torch.as_tensor(fn(cos.clone(), w=w), dtype=torch.float32)
        if torch.allclose(got, w * cos):
            raise Wrong("a negative cosine counts as 0")
        close(got, w * cos.clamp(min=0), f"CLIPScore at w = {w}")
