"""CapFilt: the planted corruptions are what they say (false of the scene, the right kind, the right rate), the
pipeline keeps exactly what scores above the threshold, and the report counts against the planted labels."""

from __future__ import annotations

import pytest
import torch

from vlm_primer.generative import Blip, BlipConfig
from vlm_primer.generative.capfilt import CORRUPTIONS, CapFiltResult, capfilt, corrupt_captions, filter_report


@pytest.fixture(scope="module")
def items():
    from vlm_primer.world import ShapesCaptionDataset, WorldConfig

    ds = ShapesCaptionDataset("train", 60, WorldConfig(image_size=48), num_objects=(1, 2), statements=False, seed=3)
    return [ds[i] for i in range(60)]


def test_corruptions_are_false_of_their_scene_and_of_the_planted_kind(items):
    from vlm_primer.evaluation.judge import answer_facts

    out = corrupt_captions(items, 0.5, seed=0)
    planted = [o["corruption"] for o in out]
    assert sum(bool(c) for c in planted) == 30 and set(planted) - {""} <= set(CORRUPTIONS)
    for item, o in zip(items, out):
        if not o["corruption"]:
            assert o["caption"] == item["caption"]
            continue
        assert o["caption"] != item["caption"]
        said = {f for f in answer_facts(o["caption"]) if f[0] == "object"}
        truth = {("object", ob.color, ob.shape) for ob in item["scene"].objects}
        if o["corruption"] == "object":  # some object named (colour and shape) is not in the scene
            assert said - truth
        if o["corruption"] == "unrelated":
            assert o["caption"] in [it["caption"] for it in items]
    assert corrupt_captions(items, 0.0)[0]["corruption"] == ""
    with pytest.raises(ValueError, match="fraction"):
        corrupt_captions(items, 1.5)
    with pytest.raises(ValueError, match="kinds"):
        corrupt_captions(items, 0.5, kinds=("typo",))


def test_pipeline_keeps_what_scores_above_the_threshold(items):
    from vlm_primer.text import Tokenizer

    torch.manual_seed(0)
    model = Blip(BlipConfig.from_preset("tiny", vision=dict(image_size=48, patch_size=6, depth=1)))
    images = torch.stack([it["image"] for it in items[:6]])
    result = capfilt(model, model, images, [it["caption"] for it in items[:6]], Tokenizer.load(), num_samples=2,
                     threshold=0.5, batch_size=4, max_new_tokens=5, generator=torch.Generator().manual_seed(0))
    assert result.synthetic_score.shape == (6, 2) and len(result.synthetic) == 6
    kept = result.pairs()
    assert len(kept) == int(result.keep_original.sum() + result.keep_synthetic.sum())
    assert all(s >= 0.5 for s in result.original_score[[i for i, _ in kept[:int(result.keep_original.sum())]]])
    with pytest.raises(ValueError, match="threshold"):
        capfilt(model, model, images, [it["caption"] for it in items[:6]], Tokenizer.load(), threshold=2.0)


def test_an_empty_synthetic_caption_is_never_kept(items):
    """A captioner that writes nothing: the filter would accept anything (ITM 0.9), but an empty caption scores 0."""
    from vlm_primer.text import Tokenizer

    class Silent:
        def captions(self, px, tokenizer, repeats=1, **kw):
            return ["", "a circle"] * (len(px) * repeats // 2)

    class Agreeable:
        def itm_scores(self, px, ids, mask):
            return torch.full((len(px),), 0.9)

    images = torch.stack([it["image"] for it in items[:4]])
    result = capfilt(Silent(), Agreeable(), images, [it["caption"] for it in items[:4]], Tokenizer.load(),
                     num_samples=2)
    assert result.synthetic_score[:, 0].eq(0).all() and result.synthetic_score[:, 1].eq(0.9).all()
    assert all(c for _, c in result.pairs())


def test_filter_report_counts_against_the_planted_labels():
    result = CapFiltResult(["a"] * 6, [[]] * 6, torch.tensor([0.9, 0.1, 0.2, 0.8, 0.3, 0.7]), torch.zeros(6, 0), 0.5)
    report = filter_report(result, ["", "object", "unrelated", "attribute", "", ""])
    # removed: 1, 2, 4; corrupted: 1, 2, 3
    assert report["precision"] == pytest.approx(2 / 3) and report["recall"] == pytest.approx(2 / 3)
    assert report["clean_kept"] == pytest.approx(2 / 3) and report["recall_attribute"] == 0.0
    assert report["recall_object"] == report["recall_unrelated"] == 1.0
