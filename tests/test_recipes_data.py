"""Chapter 06's data recipes: the concept-frequency sampler, web-like noise, exact and semantic deduplication on
planted duplicates (SemDeDup against a brute-force reading of the paper's rule), pruning by CLIPScore equal to
pruning by torchmetrics' CLIPScore, synthetic captions, and bad input."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vlm_primer import zoo
from vlm_primer.recipes import data as D
from vlm_primer.text import Tokenizer
from vlm_primer.world import SHAPES, ShapesCaptionDataset, WorldConfig
from vlm_primer.world.splits import split_compositions

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "helpers"))
from clipscore_oracle import torchmetrics_oracle  # noqa: E402

WORLD = WorldConfig(image_size=48, sizes=("large",))


def _items(n: int, seed: int = 0, objects=1) -> list[dict]:
    ds = ShapesCaptionDataset("train", n, WORLD, seed=seed, num_objects=objects, statements=False)
    return [ds[i] for i in range(n)]


# --- balance ---------------------------------------------------------------------------------------------------

def test_concept_weights_follow_zipf_and_drop_the_tail():
    uniform = D.concept_weights("shape", 0.0, config=WORLD)
    assert set(uniform) == set(SHAPES) and all(v == pytest.approx(1 / 6) for v in uniform.values())
    w = D.concept_weights("shape", 2.0, rank_seed=3, config=WORLD)
    p = list(w.values())
    assert sum(p) == pytest.approx(1.0)
    assert p == pytest.approx([r ** -2.0 / sum(k ** -2.0 for k in range(1, 7)) for r in range(1, 7)])
    assert list(D.concept_weights("shape", 2.0, rank_seed=4, config=WORLD)) != list(w)  # the ranking is shuffled
    tail = D.concept_weights("color", 1.0, tail=2, config=WORLD)
    assert list(tail.values())[-2:] == [0.0, 0.0] and sum(tail.values()) == pytest.approx(1.0)
    allowed, _ = split_compositions("train", WORLD, None)
    assert set(D.concept_weights("composition", 1.0, config=WORLD)) == set(allowed)


def test_the_dataset_draws_what_the_weights_say():
    ds = D.ConceptFrequencyDataset(3000, WORLD, concept="shape", exponent=2.0, tail=1, rank_seed=1, statements=False)
    counts = D.frequency_table(ds)
    for shape, p in ds.weights.items():
        assert abs(counts[shape] / len(ds) - p) < 0.03, (shape, counts[shape], p)
    rarest = list(ds.weights)[-1]
    assert counts[rarest] == 0 and ds.weights[rarest] == 0
    allowed, _ = split_compositions("train", WORLD, None)
    for i in range(200):  # only training compositions, one object, captions that name it
        item = ds[i]
        obj = item["scene"].objects[0]
        assert (obj.color, obj.shape) in allowed and len(item["scene"].objects) == 1
    assert D.frequency_table(ds) == counts  # deterministic


# --- noise ------------------------------------------------------------------------------------------------------

def test_inject_noise_plants_every_kind_at_the_rate_asked():
    items = _items(200)
    noisy = D.inject_noise(items, 0.4, seed=1)
    labels = [it["corruption"] for it in noisy]
    assert sum(bool(c) for c in labels) == 80
    assert {k: labels.count(k) for k in D.WEB_NOISE} == {k: 20 for k in D.WEB_NOISE}
    for old, new in zip(items, noisy):
        if new["corruption"] == "":
            assert new["caption"] == old["caption"]
        elif new["corruption"] == "truncated":
            words = old["caption"].split()
            assert words[:len(new["caption"].split())] == new["caption"].split() and len(new["caption"].split()) < len(words)
        else:
            assert new["caption"] != old["caption"]
    truth = D.caption_truth([it["caption"] for it in noisy], [it["scene"] for it in noisy])
    clean = [t for t, c in zip(truth, labels) if c == ""]
    assert all(clean)
    for kind in ("object", "truncated"):  # each leaves the object's shape wrong or unnamed
        assert not any(t for t, c in zip(truth, labels) if c == kind), kind
    # a wrong attribute is a colour or a size: caption_truth reads colours, not sizes
    assert 0 < sum(t for t, c in zip(truth, labels) if c == "attribute") < 10


def test_duplicate_report_counts_pairs_by_hand():
    items = [dict(duplicate="", duplicate_of=-1) for _ in range(4)]
    items += [dict(duplicate="exact", duplicate_of=0), dict(duplicate="near", duplicate_of=1)]
    # the exact pair found by removing its original, the near pair missed, one unpaired item removed
    r = D.duplicate_report([True, False, True, False, False, False], items)
    assert r == {"precision": 1 / 2, "recall": 1 / 2, "clean_kept": 1 / 2, "recall_exact": 1.0, "recall_near": 0.0}


def test_removal_report_counts_by_hand():
    r = D.removal_report([True, True, False, False, True], ["a", "", "b", "", "a"])
    assert r == {"precision": 2 / 3, "recall": 2 / 3, "clean_kept": 1 / 2, "recall_a": 1.0, "recall_b": 0.0}


# --- deduplication ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def planted():
    return D.plant_duplicates(_items(300, seed=2, objects=(2, 3)), exact=30, near=30, seed=0)


def test_exact_dedup_finds_exact_copies_only(planted):
    labels = [it["duplicate"] for it in planted]
    assert labels.count("exact") == 30 and labels.count("near") == 30
    found = D.exact_duplicates([it["image"] for it in planted], [it["caption"] for it in planted])
    r = D.duplicate_report(found, planted)
    assert r["precision"] == 1.0 and r["recall_exact"] == 1.0 and r["recall_near"] == 0.0 and r["clean_kept"] == 1.0
    near = [it for it in planted if it["duplicate"] == "near"]
    assert all(not torch.equal(it["image"], planted[it["duplicate_of"]]["image"]) for it in near)


def _semdedup_reference(x: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor, eps: float) -> list[bool]:
    """The paper's rule, item by item: within a cluster sorted farthest-first from its centroid, drop an item whose
    cosine with any item before it is above 1 - eps."""
    x = F.normalize(x, dim=-1)
    removed = [False] * len(x)
    for c in range(len(centroids)):
        members = sorted((labels == c).nonzero().flatten().tolist(),
                         key=lambda i: (float((x[i] * centroids[c]).sum()), i))
        for pos, j in enumerate(members):
            removed[j] = any(float(x[i] @ x[j]) > 1 - eps for i in members[:pos])
    return removed


def test_semantic_dedup_is_the_papers_rule_and_finds_near_copies(planted):
    images = torch.stack([it["image"] for it in planted])
    # an embedding that sees a 1.5-pixel nudge as near: 4x4-pooled pixels, centred (near copies have cosine >= 0.88
    # with their originals, other pairs <= 0.78 here)
    pixels = F.avg_pool2d(images, 4).flatten(1)
    pixels = pixels - pixels.mean(0)
    found = D.semantic_duplicates(pixels, clusters=8, eps=0.15, seed=0)
    centroids, labels = D.kmeans(pixels, 8, seed=0)
    assert found == _semdedup_reference(pixels, labels, centroids, 0.15)
    r = D.duplicate_report(found, planted)
    assert r["recall_exact"] == 1.0 and r["recall_near"] >= 0.8 and r["precision"] >= 0.8, r
    assert sum(D.semantic_duplicates(pixels, clusters=8, eps=0.01, seed=0)) < sum(found)  # a smaller eps drops less


def test_kmeans_recovers_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centers = F.normalize(torch.randn(4, 16, generator=g), dim=-1)
    x = (centers.repeat_interleave(25, 0) + 0.05 * torch.randn(100, 16, generator=g))
    _, labels = D.kmeans(x, 4, seed=1)
    truth = torch.arange(4).repeat_interleave(25)
    for c in range(4):  # every true cluster lands in one found cluster, and the found ones differ
        assert len(set(labels[truth == c].tolist())) == 1
    assert len(set(labels.tolist())) == 4


# --- pruning: the ranking is torchmetrics' --------------------------------------------------------------------------

def test_pruning_by_clipscore_equals_pruning_by_torchmetrics(tmp_path):
    from torchmetrics.multimodal import CLIPScore

    from vlm_primer.evaluation.clipscore import clip_score

    noisy = D.inject_noise(_items(40, seed=3), 0.4, seed=0)
    pixels = torch.stack([it["image"] for it in noisy])
    normalize = zoo.preprocess("clip-tiny")
    captions = [it["caption"] for it in noisy]
    ours = clip_score(zoo.load("clip-tiny"), Tokenizer.load(), torch.stack([normalize(p) for p in pixels]), captions)
    metric = CLIPScore(model_name_or_path=torchmetrics_oracle(tmp_path / "clip-tiny"))
    theirs = torch.stack([metric(pixels[i:i + 1], [captions[i]]) for i in range(len(captions))])
    torch.testing.assert_close(40 * ours, theirs, rtol=0, atol=2e-4)
    assert torch.equal(ours == 0, theirs == 0)  # negative cosines clip to 0 in both (ties broken by position)
    pos = ours[ours > 0]
    assert ((pos[:, None] - pos[None]).abs() + torch.eye(len(pos))).min() > 1e-4  # no tie a round-off could reorder
    for fraction in (0.4, 0.6, 0.8):
        assert D.keep_top(ours, fraction) == D.keep_top(theirs, fraction)
    report = D.removal_report([not k for k in D.keep_top(ours, 0.6)], [it["corruption"] for it in noisy])
    control = D.removal_report([not k for k in D.keep_random(len(noisy), 0.6)], [it["corruption"] for it in noisy])
    assert report["precision"] > control["precision"] + 0.2  # the filter sees the noise; random pruning does not


def test_keep_top_and_keep_random():
    assert D.keep_top([0.1, 0.9, 0.5, 0.9], 0.5) == [False, True, False, True]
    assert D.keep_top([1.0, 1.0, 1.0], 1 / 3) == [True, False, False]  # ties: the earlier pair
    keep = D.keep_random(10, 0.3, seed=4)
    assert sum(keep) == 3 and keep == D.keep_random(10, 0.3, seed=4) and keep != D.keep_random(10, 0.3, seed=5)


# --- synthetic captions -----------------------------------------------------------------------------------------

def test_recaption_with_blip_writes_mostly_true_captions():
    items = _items(24, seed=4)
    normalize = zoo.preprocess("blip-tiny")
    made = D.recaption(zoo.load("blip-tiny"), torch.stack([normalize(it["image"]) for it in items]), Tokenizer.load())
    assert len(made) == 24 and all(isinstance(c, str) and c for c in made)
    assert np.mean(D.caption_truth(made, [it["scene"] for it in items])) >= 0.6


# --- bad input --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("call, match", [
    (lambda: D.concept_weights("texture"), "unknown concept 'texture'"),
    (lambda: D.concept_weights("shape", -1.0), "exponent must be a number >= 0"),
    (lambda: D.concept_weights("shape", 1.0, tail=6, config=WORLD), r"tail must be an int in \[0, 5\]"),
    (lambda: D.ConceptFrequencyDataset(10, WORLD, num_objects=2), "one-object scenes"),
    (lambda: D.plant_duplicates(_items(3), exact=2, near=2), "cannot plant 2 \\+ 2 duplicates"),
    (lambda: D.plant_duplicates(_items(3), exact=-1, near=0), "exact must be an int >= 0"),
    (lambda: D.exact_duplicates([torch.zeros(3, 2, 2)], []), "1 images but 0 captions"),
    (lambda: D.kmeans(torch.zeros(3, 2), 4), r"k must be an int in \[1, 3\]"),
    (lambda: D.semantic_duplicates(torch.randn(5, 2), clusters=2, eps=1.5), r"eps must be a number in \[0, 1\)"),
    (lambda: D.keep_top([0.1, 0.2], 0.0), r"fraction \(of pairs kept\) must be a number in \(0, 1\]"),
    (lambda: D.keep_top([0.1, float("nan")], 0.5), "finite numbers"),
    (lambda: D.keep_random(0, 0.5), "n must be an int >= 1"),
    (lambda: D.inject_noise(_items(3), 0.5, kinds=("blurry",)), "kinds must be a non-empty subset"),
    (lambda: D.removal_report([True], ["", "a"]), "1 removal flags but 2 labels"),
])
def test_bad_input_is_named(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
