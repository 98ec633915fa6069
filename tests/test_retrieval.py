"""Recall@K with several captions per image: brute force, scikit-learn, hand-made cases, ties, bad input."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import top_k_accuracy_score

from vlm_primer.evaluation.retrieval import first_hit_rank, recall_at_k, retrieval_metrics


def _brute_force(sim: list[list[float]], t2i: list[int], k: int) -> tuple[float, float]:
    """Plain-Python Recall@K by sorting every row (continuous scores, so no ties)."""
    n_img, n_txt = len(sim), len(sim[0])
    i2t_hits = 0
    for i in range(n_img):
        order = sorted(range(n_txt), key=lambda j: -sim[i][j])
        i2t_hits += any(t2i[j] == i for j in order[:k])
    t2i_hits = 0
    for j in range(n_txt):
        order = sorted(range(n_img), key=lambda i: -sim[i][j])
        t2i_hits += t2i[j] in order[:k]
    return i2t_hits / n_img, t2i_hits / n_txt


@pytest.mark.parametrize("captions_per_image", [1, 3, 5])
def test_matches_brute_force(captions_per_image):
    gen = torch.Generator().manual_seed(captions_per_image)
    n_img = 12
    t2i = torch.arange(n_img).repeat_interleave(captions_per_image)
    t2i = t2i[torch.randperm(len(t2i), generator=gen)]  # captions in any order
    sim = torch.randn(n_img, len(t2i), generator=gen, dtype=torch.float64)
    sim[t2i, torch.arange(len(t2i))] += 1.0  # better than chance, so recalls are not trivial
    ks = (1, 2, 5, 10)
    got = recall_at_k(sim, t2i, ks)
    for k in ks:
        i2t, t2i_r = _brute_force(sim.tolist(), t2i.tolist(), k)
        assert got[f"i2t_R@{k}"] == pytest.approx(i2t)
        assert got[f"t2i_R@{k}"] == pytest.approx(t2i_r)
        # Text -> image is top-k accuracy with the caption's image as label.
        sk = top_k_accuracy_score(t2i.numpy(), sim.t().numpy(), k=k, labels=list(range(n_img)))
        assert got[f"t2i_R@{k}"] == pytest.approx(sk)
    assert 0 < got["i2t_R@1"] < 1 and 0 < got["t2i_R@1"] < 1


def test_perfect_retrieval_is_one():
    t2i = torch.tensor([0, 0, 1, 1, 2, 2])
    sim = (t2i[None, :] == torch.arange(3)[:, None]).float()  # 1 for own captions, 0 otherwise
    assert set(recall_at_k(sim, t2i, (1, 2)).values()) == {1.0}


def test_known_permutation():
    # Image i is most similar to caption perm[i]; with perm = (1, 0, 2, 3) only images 2 and 3 hit at K=1.
    perm = torch.tensor([1, 0, 2, 3])
    sim = torch.full((4, 4), 0.0)
    sim[torch.arange(4), perm] = 1.0
    sim[torch.arange(4), torch.arange(4)] += 0.5  # the right caption comes second for images 0 and 1
    out = recall_at_k(sim, None, (1, 2, 3))
    assert out["i2t_R@1"] == 0.5 and out["i2t_R@2"] == 1.0
    # Caption 0: image 1 scores 1.0, image 0 scores 0.5 -> rank 2; caption 1 likewise; 2 and 3 at rank 1.
    assert out["t2i_R@1"] == 0.5 and out["t2i_R@2"] == 1.0


def test_any_caption_counts_for_image_to_text():
    t2i = torch.tensor([0, 0, 1, 1])
    sim = torch.tensor([[0.1, 0.9, 0.8, 0.0],   # image 0: best is its 2nd caption -> hit at 1
                        [0.7, 0.0, 0.1, 0.2]])  # image 1: captions 3 then 2 after 0 -> first hit at rank 2
    out = recall_at_k(sim, t2i, (1, 2))
    assert out["i2t_R@1"] == 0.5 and out["i2t_R@2"] == 1.0
    # text->image, own image vs the other: caption 0 0.1 < 0.7 (miss), caption 1 0.9 > 0.0 (hit),
    # caption 2 0.1 < 0.8 (miss), caption 3 0.2 > 0.0 (hit)
    assert out["t2i_R@1"] == 0.5 and out["t2i_R@2"] == 1.0


def test_ties_count_against_the_model():
    sim = torch.zeros(4, 4)  # a model that says nothing
    out = recall_at_k(sim, None, (1, 3, 4, 10))
    assert out["i2t_R@1"] == 0.0 and out["t2i_R@3"] == 0.0
    assert out["i2t_R@4"] == 1.0 and out["t2i_R@10"] == 1.0
    # A correct candidate tied with one wrong one is ranked second.
    assert first_hit_rank(torch.tensor([[1.0, 1.0, 0.0]]), torch.tensor([[False, True, False]])).item() == 1


def test_nan_scores_count_against_the_model():
    correct = torch.eye(3, dtype=torch.bool)
    nan = torch.full((3, 3), float("nan"))
    assert first_hit_rank(nan, correct).tolist() == [2, 2, 2]  # a diverged model ranks every answer last
    one_nan_wrong = torch.eye(3).index_put((torch.tensor([0]), torch.tensor([1])), torch.tensor(float("nan")))
    assert first_hit_rank(one_nan_wrong, correct).tolist() == [1, 0, 0]


def test_float64_scores_are_not_rounded_to_ties():
    base = 300.0  # e.g. summed log-likelihoods: a float32 cannot tell these apart
    sim = torch.tensor([[base + 1e-9, base], [base, base + 1e-9]], dtype=torch.float64)
    assert recall_at_k(sim, None, 1) == {"i2t_R@1": 1.0, "t2i_R@1": 1.0}


def test_from_embeddings_is_cosine():
    gen = torch.Generator().manual_seed(0)
    img, txt = torch.randn(6, 8, generator=gen), torch.randn(12, 8, generator=gen)
    t2i = torch.arange(6).repeat(2)
    sim = torch.nn.functional.normalize(img, dim=-1) @ torch.nn.functional.normalize(txt, dim=-1).t()
    assert retrieval_metrics(img * 3.0, txt, t2i, (1, 5)) == recall_at_k(sim, t2i, (1, 5))


def test_bad_input():
    sim = torch.randn(3, 6)
    t2i = torch.tensor([0, 0, 1, 1, 2, 2])
    with pytest.raises(ValueError, match="each K must be an int >= 1"):
        recall_at_k(sim, t2i, (0,))
    with pytest.raises(TypeError, match="int"):
        recall_at_k(sim, t2i, (1.5,))
    with pytest.raises(ValueError, match="text_to_image"):
        recall_at_k(sim)  # 3x6 needs the caption -> image map
    with pytest.raises(ValueError, match=r"shape \(6,\)"):
        recall_at_k(sim, t2i[:5])
    with pytest.raises(ValueError, match="outside"):
        recall_at_k(sim, torch.tensor([0, 0, 1, 1, 2, 3]))
    with pytest.raises(ValueError, match="no caption"):
        recall_at_k(sim, torch.tensor([0, 0, 1, 1, 0, 1]))
    with pytest.raises(ValueError, match=r"\(N_img, N_txt\)"):
        recall_at_k(torch.randn(6))
    with pytest.raises(ValueError, match="empty"):
        recall_at_k(torch.randn(0, 0))
    with pytest.raises(ValueError, match="embedding size"):
        retrieval_metrics(torch.randn(3, 8), torch.randn(6, 4), t2i)
