"""Déjà vu memorization (chapter 07): the sets, the recovery rate against oracle models that do and do not remember,
the gap, and text randomization."""

import numpy as np
import pytest
import torch

from vlm_primer.evaluation.memorization import (WORLD, DejaVuSets, PairDataset, dejavu_gap, dejavu_sets,
                                                hidden_object, recovery_rates, text_randomization)
from vlm_primer.world import COLORS, SHAPES, render

CLASSES = [(c, s) for c in COLORS for s in SHAPES]


@pytest.fixture(scope="module")
def sets() -> DejaVuSets:
    return dejavu_sets(40, public=600)


def test_sets_are_disjoint_deterministic_and_each_caption_hides_one_object(sets):
    assert len(sets.a) == len(sets.b) == 40 and len(sets.public) == 600
    assert not {repr(s) for s, _ in sets.a} & {repr(s) for s, _ in sets.b}
    for scene, caption in sets.a + sets.b:
        hidden = hidden_object(scene, caption)
        assert len(scene.objects) == 3 and hidden is not None
        assert hidden[1] not in caption.text.split() or hidden[0] not in caption.text.split()
    again = dejavu_sets(40, public=600)
    assert [c.text for _, c in again.a] == [c.text for _, c in sets.a]
    assert [c.text for _, c in dejavu_sets(40, public=5).a] == [c.text for _, c in sets.a]  # public size apart
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="size must be a positive int"):
            dejavu_sets(bad)


class Oracle(torch.nn.Module):
    """Image embedding: the multi-hot of the scene's colour-shape pairs. Text embedding of caption ``i``: the
    multi-hot of what pair ``i``'s caption names, plus its hidden object when ``remembers``."""

    def __init__(self, pairs, public, remembers: bool):
        super().__init__()
        self.images = {render(s, WORLD["image_size"]).numpy().tobytes(): self._hot(s.objects) for s in public}
        self.texts = []
        for scene, caption in pairs:
            hidden = hidden_object(scene, caption)
            kept = [o for o in scene.objects if (o.color, o.shape) != hidden or remembers]
            self.texts.append(self._hot(kept))

    @staticmethod
    def _hot(objects):
        v = torch.zeros(len(CLASSES))
        for o in objects:
            v[CLASSES.index((o.color, o.shape))] = 1
        return v

    def encode_image(self, x):
        return torch.stack([self.images[im.numpy().tobytes()] for im in x])

    def encode_text(self, ids, attention_mask=None):
        return torch.stack([self.texts[i] for i in ids[:, 0].tolist()])


def _index_tokenizer(pairs):
    index = {c.text: i for i, (_, c) in enumerate(pairs)}
    return lambda texts, max_length=None: {"input_ids": torch.tensor([[index[t]] for t in texts]),
                                           "attention_mask": torch.ones(len(texts), 1, dtype=torch.long)}


def test_a_model_that_remembers_recovers_the_hidden_object(sets):
    tok = _index_tokenizer(sets.a)
    rate = {r: recovery_rates(Oracle(sets.a, sets.public, r), lambda x: x, tok, sets.a, sets.public, k=10)
            for r in (True, False)}
    assert rate[True].shape == (40,) and ((0 <= rate[True]) & (rate[True] <= 1)).all()
    assert rate[True].mean() > 0.3 and rate[False].mean() < 0.1, (rate[True].mean(), rate[False].mean())
    gap = dejavu_gap(rate[True], rate[False])
    assert gap["gap"] == pytest.approx(rate[True].mean() - rate[False].mean()) and gap["n"] == 40
    assert gap["ci95"][0] > 0.2
    with pytest.raises(ValueError, match="k must be an int in"):
        recovery_rates(Oracle(sets.a, sets.public, True), lambda x: x, tok, sets.a, sets.public, k=601)
    with pytest.raises(ValueError, match="no pairs"):
        recovery_rates(Oracle(sets.a, sets.public, True), lambda x: x, tok, [], sets.public)


def test_text_randomization_masks_the_asked_share_and_keeps_padding_and_eos():
    def collate(samples):
        ids = torch.arange(10, 30).repeat(len(samples), 1)
        ids[:, -1], ids[:, -5:-1] = 3, 0  # <eos>, then padding before it in this toy layout
        mask = (ids != 0).long()
        return {"input_ids": ids, "attention_mask": mask}

    masked = text_randomization(collate, 0.3, mask_id=4, keep_ids=(3,), seed=0)
    ids = masked([{}] * 200)["input_ids"]
    real = (ids != 0) & (ids != 3)
    share = ((ids == 4) & real).sum() / (real.sum() + (ids == 4).sum() - ((ids == 4) & real).sum())
    assert (ids[:, -1] == 3).all() and (ids[:, -5:-1] == 0).all()
    assert abs(float((ids == 4).float().sum() / (200 * 15)) - 0.3) < 0.03, share
    assert torch.equal(text_randomization(collate, 0.0, 4)([{}])["input_ids"], collate([{}])["input_ids"])
    for bad in (1.0, -0.1, "0.3"):
        with pytest.raises(ValueError, match="p must be a probability"):
            text_randomization(collate, bad, 4)


def test_pair_dataset_serves_the_fixed_pairs(sets):
    ds = PairDataset(sets.a[:5], transform=lambda x: 2 * x)
    assert len(ds) == 5 and ds[2]["caption"] == sets.a[2][1].text
    assert torch.equal(ds[2]["image"], 2 * render(sets.a[2][0], WORLD["image_size"]))
    assert np.isclose(float(ds[0]["image"].max()), 2 * float(render(sets.a[0][0], 48).max()))
