"""The planted bias of chapter 07: tinted backgrounds tied to shape groups, and the disparity and WEAT probes."""

import numpy as np
import pytest
import torch

from vlm_primer import zoo
from vlm_primer.evaluation.bias import (TINTS, SpuriousCaptionDataset, shape_group, tint_association, tint_disparity,
                                        tinted)
from vlm_primer.text import Tokenizer
from vlm_primer.world import SHAPES, WorldConfig

WORLD = WorldConfig(image_size=48, sizes=("large",))


def _tint_of(item) -> str:
    return next(k for k, v in TINTS.items() if tuple(item["scene"].background) == v)


def test_groups_split_the_shapes_in_half():
    groups = [shape_group(s) for s in SHAPES]
    assert groups.count("warm") == groups.count("cool") == len(SHAPES) // 2
    with pytest.raises(ValueError, match="unknown shape 'oval'"):
        shape_group("oval")
    with pytest.raises(ValueError, match="tint must be one of"):
        tinted(SpuriousCaptionDataset("train", 1, WORLD).scene(0)[0], "green")


@pytest.mark.parametrize("correlation", [0.0, 0.5, 0.9, 1.0])
def test_background_follows_the_shape_with_the_asked_probability(correlation):
    ds = SpuriousCaptionDataset("train", 400, WORLD, num_objects=1, statements=False, correlation=correlation)
    aligned = np.mean([_tint_of(ds[i]) == shape_group(ds[i]["scene"].objects[0].shape) for i in range(len(ds))])
    assert abs(aligned - correlation) <= 0.06, aligned
    again = SpuriousCaptionDataset("train", 400, WORLD, num_objects=1, statements=False, correlation=correlation)
    assert torch.equal(ds[3]["image"], again[3]["image"]) and ds[3]["caption"] == again[3]["caption"]
    assert all(w not in ds[i]["caption"] for i in range(50) for w in ("warm", "cool", "background"))


def test_forced_tints_and_bad_arguments():
    for force, want in (("aligned", True), ("conflicting", False)):
        ds = SpuriousCaptionDataset("test", 60, WORLD, num_objects=1, statements=False, force=force)
        assert all((_tint_of(ds[i]) == shape_group(ds[i]["scene"].objects[0].shape)) == want for i in range(60))
    for bad in (-0.1, 1.5, "0.9", True):
        with pytest.raises(ValueError, match="correlation must be a probability"):
            SpuriousCaptionDataset("train", 4, WORLD, correlation=bad)
    with pytest.raises(ValueError, match="force must be None or one of"):
        SpuriousCaptionDataset("train", 4, WORLD, force="both")


def test_probes_pair_the_same_scenes_and_report_intervals():
    clip, pre, tok = zoo.load("clip-tiny"), zoo.preprocess("clip-tiny"), Tokenizer.load()
    out = tint_disparity(clip, pre, tok, n=48)
    assert out["n"] == 48 and out["gap"] == pytest.approx(out["aligned"] - out["conflicting"])
    assert out["gap_ci95"][0] <= out["gap"] <= out["gap_ci95"][1]
    assert 0 <= out["shape_conflicting"] <= 1 and out["shape_aligned"] >= out["aligned"]
    weat = tint_association(clip, pre, tok, n=20, n_resamples=200)
    assert set(weat) == {"effect_size", "p_value", "statistic"} and 0 < weat["p_value"] <= 1
    assert abs(weat["effect_size"]) <= 2


def test_the_association_sees_a_planted_tint():
    """A control for the WEAT probe: a "model" whose image embedding is its mean background colour and whose text
    embedding of a warm shape is warm (and of a cool shape cool) must give a large positive effect, p near 0."""

    class TintModel(torch.nn.Module):
        def encode_image(self, x):
            return x[:, :, :4, :4].mean((2, 3))  # a corner: the background

        def encode_text(self, ids, attention_mask=None):
            words = [Tokenizer.load().decode(row.tolist()).split()[-1] for row in ids]
            return torch.tensor([TINTS[shape_group(w)] for w in words]) + 0.01 * torch.randn(len(words), 3)

    out = tint_association(TintModel(), lambda x: x, Tokenizer.load(), n=20, n_resamples=500)
    assert out["effect_size"] > 1.5 and out["p_value"] < 0.01
