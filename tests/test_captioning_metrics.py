"""BLEU-1..4, CIDEr-D and ROUGE-L equal pycocoevalcap's on the same tokenised references and candidates."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from vlm_primer.evaluation.captioning import bleu, caption_scores, cider_d, rouge_l, simple_tokenize

WORDS = "a the red blue green circle square star big small left of right above there is picture".split()


def corpus(seed: int, images: int = 12, refs: int = 5):
    """Random captions over a small vocabulary (so n-grams repeat), with near-copies and odd lengths."""
    rng = np.random.default_rng(seed)
    sentence = lambda: " ".join(rng.choice(WORDS, size=int(rng.integers(1, 12))))  # noqa: E731
    references = [[sentence() for _ in range(refs)] for _ in range(images)]
    candidates = [references[i][0] if i % 4 == 0 else sentence() for i in range(images)]
    candidates[1] = references[1][2] + " star"  # a near copy
    candidates[2] = ""  # an empty caption
    references[3][0] = "star"  # a one-word reference
    return references, candidates


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_pycocoevalcap(seed):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    references, candidates = corpus(seed, images=12 + seed, refs=5 - seed)
    gts = {i: refs for i, refs in enumerate(references)}
    res = {i: [c] for i, c in enumerate(candidates)}
    want_bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    np.testing.assert_allclose(bleu(references, candidates), want_bleu, rtol=1e-12, atol=1e-15)
    want_cider, want_per = Cider().compute_score(gts, res)
    got_cider, got_per = cider_d(references, candidates)
    np.testing.assert_allclose(got_per, want_per, rtol=1e-10, atol=1e-12)
    assert got_cider == pytest.approx(want_cider, rel=1e-10)
    want_rouge, want_per = Rouge().compute_score(gts, res)
    got_rouge, got_per = rouge_l(references, candidates)
    np.testing.assert_allclose(got_per, want_per, rtol=1e-12)
    assert got_rouge == pytest.approx(want_rouge, rel=1e-12)


def test_scores_see_a_wrong_caption_and_tokenize():
    refs = [["a big red circle.", "There is a large red circle"], ["a small blue star", "a blue star"]]
    good = caption_scores(refs, ["A big red circle!", "a blue star"])
    bad = caption_scores(refs, ["a big blue star", "a red circle"])
    assert all(good[k] > bad[k] for k in good), (good, bad)
    assert good["BLEU-1"] <= 1.0 and simple_tokenize("There's a Big, red circle.") == "there's a big red circle"


def test_bad_input_names_the_problem():
    with pytest.raises(ValueError, match="2 candidates but 1 reference"):
        bleu([["a b"]], ["a", "b"])
    with pytest.raises(ValueError, match=r"references\[0\] must be a non-empty list"):
        cider_d([[]], ["a"])
    with pytest.raises(ValueError, match="no captions"):
        rouge_l([], [])
    with pytest.raises(TypeError, match="must be str"):
        caption_scores([["a"]], [3])
    with pytest.raises(TypeError, match="list of captions"):
        bleu([["a"]], "a")


@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR runs the reference Java implementation")
def test_meteor_runs_the_reference_implementation_per_image_in_order():
    from vlm_primer.evaluation import meteor

    refs = [["a red circle", "a big red circle"], ["a blue square"], ["two green stars"]]
    cands = ["A red circle.", "a green star", "two green stars"]
    score, per_image = meteor(refs, cands)
    assert per_image[0] == pytest.approx(1.0) and per_image[2] == pytest.approx(1.0) and per_image[1] < 0.5
    assert min(per_image) < score < 1.0
    # image order is kept: each image alone scores what it scored in the corpus
    assert meteor(refs[1:2], cands[1:2])[1][0] == pytest.approx(per_image[1])
    with pytest.raises(ValueError):
        meteor(refs, cands[:2])
