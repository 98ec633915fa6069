"""Captioning metrics as the COCO caption evaluation computes them: BLEU-1..4, CIDEr-D and ROUGE-L.

Explained in notebook 04 (chapter 07 reuses them). Each metric compares a candidate caption with the references
of the same image, on whitespace tokens (tokenise first: :func:`simple_tokenize`, or the PTB tokenizer of
``pycocoevalcap`` where Java is installed). Every formula, constant and quirk follows ``pycocoevalcap`` so that the
numbers are comparable with papers' (the tests check equality on random corpora):

* **BLEU-n** (Papineni et al. 2002) is a *corpus* score: clipped n-gram matches summed over all images, the
  geometric mean of the 1..n precisions, times a brevity penalty against the reference length closest to each
  candidate's (ties: the shorter);
* **CIDEr-D** (Vedantam et al. 2015): per image, the mean over references of the cosine between TF-IDF n-gram
  vectors (n = 1..4, document frequencies counted over the evaluated set's references, candidate weights clipped
  at the reference's), times a Gaussian penalty on the length difference (sigma 6), averaged over n, times 10;
* **ROUGE-L** (Lin 2004): per image, the F-measure (beta 1.2) of the best precision and the best recall of the
  longest common subsequence over the references.

**METEOR** (Banerjee and Lavie 2005; version 1.5) aligns words through exact matches, stems, WordNet synonyms and a
paraphrase table; :func:`meteor` runs the reference implementation itself (``pycocoevalcap``'s Java jar, offline)
rather than a re-implementation, so it needs Java.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Sequence

__all__ = ["bleu", "caption_scores", "cider_d", "meteor", "rouge_l", "simple_tokenize"]

_PUNCT = re.compile(r"[^\w\s']|(?<!\w)'|'(?!\w)")


def simple_tokenize(text: str) -> str:
    """Lower-case ``text``, drop punctuation, collapse whitespace: the PTB tokenizer's tokens on the book's captions,
    not on all English (PTB splits "doesn't" into "does n't" and keeps "black-and-white" and "3.5", which this
    splits). For numbers comparable with COCO papers, tokenise with pycocoevalcap's ``PTBTokenizer``."""
    if not isinstance(text, str):
        raise TypeError(f"a caption must be a str, got {type(text).__name__}")
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def _check(references: Sequence[Sequence[str]], candidates: Sequence[str]) -> None:
    if isinstance(candidates, str) or isinstance(references, str):
        raise TypeError("candidates is a list of captions (one per image) and references a list of lists")
    if len(references) != len(candidates):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference lists: one per image each")
    if not candidates:
        raise ValueError("no captions to score")
    for i, (refs, cand) in enumerate(zip(references, candidates)):
        if isinstance(refs, str) or not len(refs):
            raise ValueError(f"references[{i}] must be a non-empty list of captions, got {refs!r}")
        if not isinstance(cand, str) or not all(isinstance(r, str) for r in refs):
            raise TypeError(f"image {i}: captions must be str")


def _ngrams(words: Sequence[str], n: int) -> Counter:
    """Counts of every 1..n-gram of ``words``."""
    return Counter(tuple(words[i:i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


def bleu(references: Sequence[Sequence[str]], candidates: Sequence[str], n: int = 4) -> list[float]:
    """Corpus BLEU-1..``n`` of ``candidates`` (one tokenised caption per image) against ``references``."""
    _check(references, candidates)
    correct, guess = [0] * n, [0] * n
    test_len = ref_len = 0
    for refs, cand in zip(references, candidates):
        words = cand.split()
        counts = _ngrams(words, n)
        ref_counts, lengths = Counter(), []
        for ref in refs:
            ref_words = ref.split()
            lengths.append(len(ref_words))
            ref_counts |= _ngrams(ref_words, n)  # each n-gram's largest count in any one reference
        for gram, c in counts.items():
            correct[len(gram) - 1] += min(c, ref_counts[gram])
        for k in range(n):
            guess[k] += max(0, len(words) - k)
        test_len += len(words)
        ref_len += min((abs(length - len(words)), length) for length in lengths)[1]  # closest; ties: shorter
    tiny, small = 1e-15, 1e-9  # pycocoevalcap's guards against empty counts
    scores, product = [], 1.0
    for k in range(n):
        product *= (correct[k] + tiny) / (guess[k] + small)
        scores.append(product ** (1 / (k + 1)))
    ratio = (test_len + tiny) / (ref_len + small)
    penalty = math.exp(1 - 1 / ratio) if ratio < 1 else 1.0
    return [s * penalty for s in scores]


def cider_d(references: Sequence[Sequence[str]], candidates: Sequence[str], n: int = 4,
            sigma: float = 6.0) -> tuple[float, list[float]]:
    """CIDEr-D over the corpus and per image (``pycocoevalcap``'s ``Cider``: document frequencies from these
    references, so the score of one image depends on the whole evaluated set)."""
    _check(references, candidates)
    ref_grams = [[_ngrams(r.split(), n) for r in refs] for refs in references]
    doc_freq = Counter(gram for grams in ref_grams for gram in set().union(*grams))
    log_docs = math.log(len(references))

    def tfidf(counts: Counter) -> tuple[list[dict], list[float], int]:
        vec = [{} for _ in range(n)]
        for gram, tf in counts.items():
            vec[len(gram) - 1][gram] = tf * (log_docs - math.log(max(1.0, doc_freq[gram])))
        norms = [math.sqrt(sum(v * v for v in d.values())) for d in vec]
        length = sum(tf for gram, tf in counts.items() if len(gram) == 2)  # sic: pycocoevalcap counts bigrams
        return vec, norms, length

    per_image = []
    for grams, cand in zip(ref_grams, candidates):
        vec, norm, length = tfidf(_ngrams(cand.split(), n))
        total = [0.0] * n
        for ref in grams:
            rvec, rnorm, rlength = tfidf(ref)
            penalty = math.exp(-((length - rlength) ** 2) / (2 * sigma ** 2))
            for k in range(n):
                dot = sum(min(w, rvec[k].get(g, 0.0)) * rvec[k].get(g, 0.0) for g, w in vec[k].items())
                total[k] += (dot / (norm[k] * rnorm[k]) if norm[k] and rnorm[k] else dot) * penalty
        per_image.append(10.0 * sum(total) / n / len(grams))
    return sum(per_image) / len(per_image), per_image


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists."""
    row = [0] * (len(b) + 1)
    for x in a:
        prev_diag, row[0] = 0, 0
        for j, y in enumerate(b, 1):
            prev_diag, row[j] = row[j], prev_diag + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l(references: Sequence[Sequence[str]], candidates: Sequence[str],
            beta: float = 1.2) -> tuple[float, list[float]]:
    """ROUGE-L over the corpus (the mean) and per image."""
    _check(references, candidates)
    per_image = []
    for refs, cand in zip(references, candidates):
        tokens = cand.split(" ")  # sic: single spaces, as pycocoevalcap splits
        lcs = [(_lcs(r.split(" "), tokens), len(r.split(" "))) for r in refs]
        prec, rec = max(m / len(tokens) for m, _ in lcs), max(m / length for m, length in lcs)
        per_image.append((1 + beta ** 2) * prec * rec / (rec + beta ** 2 * prec) if prec and rec else 0.0)
    return sum(per_image) / len(per_image), per_image


def meteor(references: Sequence[Sequence[str]], candidates: Sequence[str], tokenize: bool = True
           ) -> tuple[float, list[float]]:
    """METEOR 1.5 of ``candidates`` against ``references``: ``(corpus score, per-image scores)``, computed by
    ``pycocoevalcap``'s Java implementation (the COCO evaluation's). Raises a ``RuntimeError`` naming what is missing
    when Java or ``pycocoevalcap`` is not installed."""
    import shutil

    _check(references, candidates)
    if shutil.which("java") is None:
        raise RuntimeError("METEOR runs the reference Java implementation: install Java (a JRE) to compute it")
    try:
        from pycocoevalcap.meteor.meteor import Meteor
    except ImportError as e:
        raise RuntimeError("METEOR needs pycocoevalcap (pip install pycocoevalcap)") from e
    if tokenize:
        references = [[simple_tokenize(r) for r in refs] for refs in references]
        candidates = [simple_tokenize(c) for c in candidates]
    scorer = Meteor()  # a Java process, ended when the scorer is collected
    score, per_image = scorer.compute_score({i: list(r) for i, r in enumerate(references)},
                                            {i: [c] for i, c in enumerate(candidates)})
    del scorer
    return float(score), [float(x) for x in per_image]


def caption_scores(references: Sequence[Sequence[str]], candidates: Sequence[str],
                   tokenize: bool = True) -> dict[str, float]:
    """BLEU-1..4, CIDEr-D and ROUGE-L of ``candidates`` (one caption per image) against ``references`` (a list of
    captions per image), tokenised with :func:`simple_tokenize` first unless ``tokenize=False``."""
    _check(references, candidates)
    if tokenize:
        references = [[simple_tokenize(r) for r in refs] for refs in references]
        candidates = [simple_tokenize(c) for c in candidates]
    scores = {f"BLEU-{k}": s for k, s in enumerate(bleu(references, candidates), 1)}
    scores["CIDEr-D"] = cider_d(references, candidates)[0]
    scores["ROUGE-L"] = rouge_l(references, candidates)[0]
    return scores
