"""SimCLR's NT-Xent against a written-out formula, and the caption probe of notebook 02's binding test:
its negatives are what they claim, and it sees a bag-of-words model for what it is."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from vlm_primer.contrastive import nt_xent_loss
from vlm_primer.evaluation import PROBE_KINDS, caption_probe, probe_scores
from vlm_primer.text import Tokenizer
from vlm_primer.world import ShapesCaptionDataset, WorldConfig


def test_nt_xent_matches_the_simclr_formula():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    z = F.normalize(torch.cat([a, b]), dim=-1)
    tau, n = 0.3, 5
    total = 0.0
    for i in range(2 * n):  # l(i, j) = -log exp(s_ij / tau) / sum_{k != i} exp(s_ik / tau), j = i's other view
        j = (i + n) % (2 * n)
        denom = sum(math.exp(float(z[i] @ z[k]) / tau) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(float(z[i] @ z[j]) / tau) / denom)
    assert float(nt_xent_loss(a, b, tau)) == pytest.approx(total / (2 * n), rel=1e-5)
    # identical, well separated views: the loss goes to 0 as the temperature drops
    eye = torch.eye(4)
    assert float(nt_xent_loss(eye, eye, 0.01)) < 1e-6
    with pytest.raises(ValueError, match="temperature"):
        nt_xent_loss(a, b, 0.0)


@pytest.fixture(scope="module")
def probe():
    return caption_probe(ShapesCaptionDataset("test", 40, WorldConfig(image_size=32), num_objects=2, statements=False))


def test_probe_negatives_are_what_they_claim(probe):
    assert len(probe) > 10 and probe.images.shape == (len(probe), 3, 32, 32)
    for k, true in enumerate(probe.true):
        bind, shuf, repl = (probe.negatives[kind][k] for kind in PROBE_KINDS)
        assert Counter(bind.split()) == Counter(true.split()) and bind != true  # same words, other binding
        assert Counter(shuf.split()) == Counter(true.split())
        assert len(repl.split()) == len(true.split())
        assert sum(x != y for x, y in zip(repl.split(), true.split())) == 1      # exactly one word replaced
    with pytest.raises(ValueError, match="at least two objects"):
        caption_probe(ShapesCaptionDataset("test", 4, WorldConfig(image_size=32), num_objects=1))


class BagOfWords(torch.nn.Module):
    """Text embedding = word counts @ W, exactly order-free; image embedding = a fixed random vector."""

    def __init__(self, vocab: int, dim: int = 16) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.words, self.pixels = torch.randn(vocab, dim, generator=g), torch.randn(3, dim, generator=g)

    def encode_image(self, images):
        return images.mean(dim=(2, 3)) @ self.pixels

    def encode_text(self, ids, attention_mask):
        counts = (F.one_hot(ids, self.words.shape[0]).float() * attention_mask[..., None]).sum(1)
        return counts @ self.words


def test_probe_sees_a_bag_of_words(probe):
    tok = Tokenizer.load()
    rows = probe_scores(BagOfWords(tok.vocab_size), tok, probe, 32)
    for kind in ("binding swap", "word shuffle"):  # same words: the same score, so never preferred
        assert rows[kind]["gap"] < 1e-5 and rows[kind]["prefers_true"] == 0.0
    assert rows["replace one word"]["gap"] > 1e-3  # a new word moves the score
