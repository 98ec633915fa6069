"""Every exercise's worked solution passes its check, and typical wrong answers fail with the right hint."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vlm_primer.exercises import EXERCISES, check
from vlm_primer.book import load_book

from exercise_solutions import SOLUTIONS

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_every_exercise_has_a_solution():
    assert set(SOLUTIONS) == set(EXERCISES)


def test_every_written_chapter_has_4_to_8_exercises():
    for ch in load_book(ROOT).written:
        n = sum(1 for k in EXERCISES if k.startswith(f"{ch.id}."))
        assert 4 <= n <= 8, f"chapter {ch.id} has {n} exercises"
        text = (ROOT / ch.script).read_text()
        assert "from vlm_primer.exercises import check" in text, f"{ch.script} never lets a reader check an answer"
        for k in (k for k in EXERCISES if k.startswith(f"{ch.id}.")):
            assert f'("{k}", ' in text or f'check("{k}"' in text, f"{ch.script} never lets a reader check exercise {k}"


@pytest.mark.parametrize("ex", sorted(EXERCISES))
def test_solution_passes(ex, capsys):
    assert check(ex, SOLUTIONS[ex]), capsys.readouterr().out
    assert "✓" in capsys.readouterr().out


def verdict(ex, answer, capsys) -> str:
    assert not check(ex, answer)
    return capsys.readouterr().out


def not_yet(*args, **kwargs):
    raise NotImplementedError


WRONG = [
    ("00.2", lambda s, p: s // p, "square grid"),
    ("00.2", lambda s, p: (s // p) ** 2 + 1, "class token"),
    ("00.4", lambda n: 12 * n, "add the gradients"),
    ("01.1", lambda a, b, rel, m: {"left": a.x < b.x - m, "right": a.x > b.x + m,
                                   "above": a.y > b.y + m, "below": a.y < b.y - m}[rel], "grow downwards"),
    ("01.2", lambda a, b: set(a.split()) == set(b.split()), "word counts"),
    ("02.1", lambda i, t, s, lab: F.cross_entropy(s * i @ t.t(), torch.arange(len(i)))
     / 2 + F.cross_entropy(s * t @ i.t(), torch.arange(len(i))) / 2, "ordinary CLIP loss"),
    ("02.2", lambda i, t, tt, b: -F.logsigmoid((2 * torch.eye(len(i), dtype=i.dtype) - 1) * (tt * i @ t.t() + b)).sum()
     / len(i) ** 2, "divides the sum by the number of images"),
    ("02.4", lambda n: math.log2(n), "natural log"),
    ("02.5", lambda b, k: k * (1 - (1 - 1 / k) ** b), "*distinct*"),
    ("02.6", lambda sim: (sim.argmax(0) == torch.arange(len(sim))).float().mean().item(), "text→image"),
    ("02.7", lambda p: F.normalize(p.mean(1), dim=-1), "normalise each prompt"),
    ("02.7", lambda p: torch.zeros(5), "expected a (classes, dim)"),
    ("05.2", lambda s, p, keep: (s // p) ** 2 + 1, "drops the CLS"),
    ("05.3", lambda v, t: v * t + t, "linear projection"),
    ("05.4", lambda g, r, c, size: g * g + r * g * (c * g + 1), "unpad first"),
    ("05.5", lambda a, b: 1.0 if not a and not b else 2 * len(set(a) & set(b)) / (len(set(a)) + len(set(b))),
     "multiset"),
    ("05.6", lambda x, f: x.reshape(x.shape[0], -1, x.shape[-1] * f * f), "2 x 2 block"),
    ("03.1", lambda noise, ratio: noise.argsort(1, descending=True)[:, : int(noise.shape[1] * (1 - ratio))],
     "smallest"),
    ("03.2", lambda p: (p - p.mean(-1, keepdim=True)) / p.var(-1, keepdim=True) ** 0.5, "1e-6"),
    ("03.3", lambda pred, target, mask: (pred - target).pow(2).mean(), "hidden patches"),
    ("03.4", lambda ids, k: (lambda p: float(-(p[p > 0] * p[p > 0].log()).sum()))(
        torch.bincount(ids, minlength=k).double() / len(ids)), "base 2"),
    ("03.5", lambda logits, labels: (logits.argmax(-1) == labels).float().mean(), "masked positions"),
    ("04.1", lambda logits, target, eps: F.cross_entropy(logits, target), "no longer one-hot"),
    ("04b.1", lambda ids, k: (lambda p: float(-(p[p > 0] * p[p > 0].log()).sum()))(
        torch.bincount(ids, minlength=k).double() / len(ids)), "exponential"),
    ("04b.2", lambda x0, noise, a: a.view(-1, 1, 1, 1) * x0 + (1 - a.view(-1, 1, 1, 1)) * noise, "square roots"),
    ("04b.3", lambda u, c, s: u + s * (u - c), "towards"),
    ("04b.4", lambda x_t, eps, a: ((x_t - (1 - a) ** 0.5 * eps) / a ** 0.5).clamp(-1, 1), "no clipping"),
    ("04b.5", lambda ll, lp: ll.softmax(-1), "prior is missing"),
    ("04.2", lambda probs, p: probs.argsort(descending=True).argsort() < 1, "crosses it"),
    ("04.3", lambda scores, logp, k: [(int(i) // 3, int(i) % 3) for i in logp.flatten().topk(k).indices], "running score"),
    ("04.4", lambda sim, alpha: (1 - alpha) * sim.softmax(1) + alpha * torch.eye(len(sim)), "alpha weighs"),
    ("04.5", lambda t, q, wq, wk, wv: torch.softmax(torch.einsum("qd,bnd->bqn", q @ wq.T, t @ wk.T), -1) @ (t @ wv.T),
     "sqrt(d)"),
    ("05b.1", lambda kind, q, t: torch.ones(q + t, q + t, dtype=torch.bool).tril() if kind == "multimodal_causal"
     else SOLUTIONS["05b.1"](kind, q, t), "queries see each other"),
    ("05b.2", lambda i, t: torch.einsum("iqd,td->iqt", F.normalize(i, dim=-1), F.normalize(t, dim=-1)).mean(1),
     "best query"),
    ("05b.3", lambda s: torch.softmax(s, dim=1) * (1 - torch.eye(len(s))), "renormalise"),
    ("05b.4", lambda ids, img, eos: [sum(1 for x in ids[:k + 1] if x == img) - 1 for k in range(len(ids))],
     "after an <eos>"),
    ("05b.5", lambda d, v, h, dh, m, a: 2 * d + 2 * d * h * dh + 2 * v * h * dh + 2 * d * m + 2, "three matrices"),
    ("06b.1", lambda a, b: 1 / 7 if a == (0.0, 0.0, 2.0, 2.0) else 0.0, "that is the IoU"),
    ("06b.2", lambda box, p: (math.floor(box[0] * p) * p + math.floor(box[1] * p),
                              math.ceil(box[2] * p - 1) * p + math.ceil(box[3] * p - 1)), "row by row"),
    ("06b.2", lambda box, p: (math.floor(box[1] * p) * p + math.floor(box[0] * p),
                              math.floor(box[3] * p) * p + math.floor(box[2] * p)), "contains"),
    ("06b.3", lambda pc, pr, rc, rr, beta: -F.logsigmoid(-beta * ((pc - rc) - (pr - rr))).mean(), "sign is flipped"),
    ("06b.3", lambda pc, pr, rc, rr, beta: -F.logsigmoid((pc - rc) - (pr - rr)).mean(), "multiply the log-ratio"),
    ("06b.4", lambda x, W, b, A, B, alpha: x @ W.T + b + alpha * (x @ A.T @ B.T), "alpha / r"),
    ("06b.4", lambda x, W, b, A, B, alpha: x @ W.T + b, "frozen layer alone"),
    ("06b.5", lambda x, lv: lv[(x[:, None] - lv).abs().argmin(dim=1)], "absmax"),
    ("06b.6", lambda f, W1, W2, a: (1 - a) * torch.relu(torch.relu(f @ W1.T) @ W2.T) + a * f, "adapter's"),
    ("08.1", lambda n, k: [int(i * n / k) for i in range(k)], "middle one"),
    ("08.1", lambda n, k: [n // 2] if k == 1 else [int(i * n / k) for i in range(k)], "first and the last"),
    ("08.2", lambda a, r: sum(x == y for x, y in zip(a, r)) / len(a), "at most one of two"),
    ("08.3", lambda x, e: x.flatten(1, 2), "temporal embedding"),
    ("08.3", lambda x, e: (x + e[:x.shape[2]]).flatten(1, 2), "indexed by the frame"),
    ("08.4", lambda p, s: [((a, b), int(p[a] > p[b])) for a in range(len(s)) for b in range(a + 1, len(s))
                           if s[a] and s[b]], "originally"),
    ("08.5", lambda x, m: x.reshape(x.shape[0], m, -1, x.shape[2]).transpose(1, 2).flatten(2), "adjacent"),
    ("08.6", lambda c, t, p, m: c // (p // m), "subtract text_tokens"),
    # answers an earlier version of the checks accepted (the sixth audit)
    ("05.5", lambda a, b: sum((a & b).values()) / sum(a.values()) if a else 1.0, "harmonic mean"),
    ("05.5", lambda a, b: (lambda s: 1.0 if not a and not b else (s / max(sum(a.values()), 1)
                                                                    + s / max(sum(b.values()), 1)) / 2)(
        sum((a & b).values())), "harmonic mean"),
    ("06b.1", lambda a, b: (lambda iw, ih: (lambda inter, c: inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0])
                                                                        * (b[3] - b[1]) - inter)
                                             - (c - ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
                                                     - inter)) / c)(
        iw * ih, (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))))(
        min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])), "at least 0"),
    ("06.4", lambda x, c, eps: [any(float(x[i] @ x[j]) > 1 - eps for i in range(j)) for j in range(len(x))],
     "rank from farthest"),
    ("01.2", lambda a, b: sorted(a) == sorted(b), "felt of a square' should give False"),
    ("07.3", lambda s: [((s[:, 0, 0] >= s[:, 0, 1]) & (s[:, 1, 1] >= s[:, 1, 0])).mean(),
                        ((s[:, 0, 0] >= s[:, 1, 0]) & (s[:, 1, 1] >= s[:, 0, 1])).mean(),
                        ((s[:, 0, 0] >= s[:, 0, 1]) & (s[:, 1, 1] >= s[:, 1, 0]) & (s[:, 0, 0] >= s[:, 1, 0])
                         & (s[:, 1, 1] >= s[:, 0, 1])).mean()], "a tie is a failure"),
    ("00.3", lambda cfg: SOLUTIONS["00.3"](cfg.replace(pre_norm=False)), "too few"),
    ("08.6", lambda c, t, p, m: max(0, (c - t) / (p / m)), "whole number"),
    ("03.5", lambda logits, labels: (logits.argmax(-1) == labels)[labels > 0].float().mean(), "label 0 included"),
    ("03.1", lambda noise, ratio: noise.argsort(1)[:, : round(noise.shape[1] * (1 - ratio))], "int(N"),
    ("02.4", lambda n: None, "forget `return`"),
    ("04.3", lambda s, lp, k: [(t, b) for b, t in SOLUTIONS["04.3"](s, lp, k)], "yours are (token, beam)"),
    ("08.6", lambda c, t, p, m: round(max(0, c - t) / (p / m)), "round down"),
    ("01.5", lambda train, test: (lambda by, ov: sum((max(by[q], key=by[q].count) if q in by else "yes") == a
                                                     for q, a in test) / len(test))(
        {q: [a for t, a in train if t == q] for q, _ in train}, None), "the accuracy is off"),
]


@pytest.mark.parametrize("ex, answer, hint", WRONG, ids=[f"{w[0]}-{w[2][:12]}" for w in WRONG])
def test_wrong_answers_get_a_hint(ex, answer, hint, capsys):
    out = verdict(ex, answer, capsys)
    assert hint in out, out


def test_correct_answers_written_otherwise_pass(capsys):
    """Right answers in another form: exact fractions, float64, log-space normalisation."""
    assert check("02.6", lambda sim: sum(int(sim[i].argmax()) == i for i in range(len(sim))) / len(sim))
    assert check("04b.5", lambda ll, lp: ((ll + lp) - (ll + lp).logsumexp(-1, keepdim=True)).exp())
    nf4 = SOLUTIONS["06b.5"]
    assert check("06b.5", lambda x, lv: nf4(x.double(), lv.double()))
    assert check("06.5", lambda *a: SOLUTIONS["06.5"](*a)) and not check("06.5", lambda *a: 0, quiet=True)
    for method in ("lower", "higher", "nearest", "midpoint", "hazen", "weibull"):  # any percentile definition
        assert check("07.2", lambda v, idx: np.percentile(v[idx].mean(1), [2.5, 97.5], method=method))


def test_unattempted_and_crashing_answers(capsys):
    assert "not attempted yet" in verdict("02.4", not_yet, capsys)
    assert "raised ZeroDivisionError" in verdict("02.4", lambda n: 1 / 0, capsys)
    def helper(n):
        return [1 / 0 for _ in range(n)]  # the learner's code, one call below the answer
    assert "your answer raised ZeroDivisionError" in verdict("02.4", lambda n: helper(n), capsys)
    out = verdict("03.1", lambda *a: "abc", capsys)  # the answer ran; the check failed on what it gave
    assert "could not use what your answer gave (TypeError" in out and "your answer raised" not in out, out
    assert "the loss should be one number, got str" in verdict("02.4", lambda n: "abc", capsys)
    assert "one number, got Tensor of shape (3,)" in verdict("02.4", lambda n: torch.ones(3), capsys)
    assert check("08.2", lambda a, b: torch.tensor(0.75) if len(a) == 2 else SOLUTIONS["08.2"](a, b))
    with pytest.raises(ValueError, match="no exercise '99.1'"):
        check("99.1", None)
    with pytest.raises(TypeError, match="id must be an exercise id"):
        check(2.1, None)


def test_recall_case_separates_the_two_directions():
    from vlm_primer.evaluation.retrieval import recall_at_k

    g = torch.Generator().manual_seed(3)
    sim = 0.1 * torch.randn(7, 7, generator=g) + 2 * torch.eye(7)
    sim[1, 4], sim[4, 4] = 9.0, 10.0
    r = recall_at_k(sim, ks=1)
    assert r["i2t_R@1"] != r["t2i_R@1"]


def test_families_answer_is_checked_per_model(capsys):
    answer = dict(SOLUTIONS["00.1"], CoCa="contrastive")
    assert "1 of 14 misplaced, e.g. CoCa" in verdict("00.1", answer, capsys)
    assert Counter(SOLUTIONS["00.1"].values())["pretrained backbones"] == 5


def test_learner_code_covers_closures_and_own_classes_not_libraries():
    from vlm_primer.exercises import _learner_code

    def outer():
        return lambda: 1 / 0

    assert outer().__code__ in _learner_code(outer)  # a closure the answer returns is the learner's

    class Mine(torch.nn.Module):
        def forward(self, x):
            return x

    codes = _learner_code(Mine())
    assert Mine.forward.__code__ in codes and torch.nn.Module.__call__.__code__ not in codes
    assert _learner_code(torch.zeros(2)) == set()
