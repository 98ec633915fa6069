"""Concept frequency (chapter 07): the Zipf sampler draws compositions at the asked rates, never the held-out ones,
and the accuracy-frequency correlation is computed per composition."""

import numpy as np
import pytest

from vlm_primer import zoo
from vlm_primer.evaluation.frequency import ZipfCaptionDataset, accuracy_by_frequency, frequency_table, zipf_weights
from vlm_primer.text import Tokenizer
from vlm_primer.world import WorldConfig
from vlm_primer.world.splits import DEFAULT_HELD_OUT

WORLD = WorldConfig(image_size=48, sizes=("large",))


def test_zipf_weights():
    pairs = [("red", "circle"), ("blue", "square"), ("green", "star"), ("white", "hexagon")]
    w = zipf_weights(pairs, 1.0)
    assert sum(w.values()) == pytest.approx(1) and sorted(w.values(), reverse=True)[0] / min(w.values()) == \
        pytest.approx(4)
    assert set(zipf_weights(pairs, 0.0).values()) == {0.25}
    assert zipf_weights(pairs, 1.0, seed=0) == w and zipf_weights(pairs, 1.0, seed=1) != w
    for bad in (-1, "1", True):
        with pytest.raises(ValueError, match="exponent must be"):
            zipf_weights(pairs, bad)


def test_dataset_follows_the_law_and_keeps_held_out_pairs_out():
    ds = ZipfCaptionDataset(3000, WORLD, exponent=1.5, statements=False)
    counts = frequency_table(ds)
    assert len(counts) == 48 - len(DEFAULT_HELD_OUT) and not set(counts) & set(DEFAULT_HELD_OUT)
    assert sum(counts.values()) == 3000 and list(counts.values()) == sorted(counts.values(), reverse=True)
    for pair, p in ds.weights.items():
        assert abs(counts[pair] / 3000 - p) < 4 * np.sqrt(p * (1 - p) / 3000) + 1e-3
    item = ds[5]
    o = item["scene"].objects[0]
    assert o.color in item["caption"] or o.shape in item["caption"] or len(item["caption"]) > 0
    with pytest.raises(ValueError, match="one-object scenes"):
        ZipfCaptionDataset(10, WORLD, num_objects=2)


def test_accuracy_by_frequency_reports_each_composition():
    counts = dict(list(frequency_table(ZipfCaptionDataset(500, WORLD, exponent=1.0, statements=False)).items())[::5])
    out = accuracy_by_frequency(zoo.load("clip-tiny"), zoo.preprocess("clip-tiny"), Tokenizer.load(), counts,
                                per_class=4, max_length=16, n_boot=200)
    assert list(out["per_class_accuracy"]) == list(counts) and -1 <= out["spearman"] <= 1, out
    assert out["ci95"][0] <= out["ci95"][1] and np.mean(list(out["per_class_accuracy"].values())) >= 0.7
