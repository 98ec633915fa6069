"""Splits, held-out compositions, datasets and the collate function (chapter 01)."""

import pytest
import torch
from torch.utils.data import DataLoader

from vlm_primer.text import Tokenizer
from vlm_primer.world import DEFAULT_HELD_OUT, ShapesCaptionDataset, WorldConfig, holds, make_collate, split_scene


def test_item_is_a_pure_function_of_seed_split_index():
    a = ShapesCaptionDataset("train", 50, seed=3, negatives=True)
    b = ShapesCaptionDataset("train", 50, seed=3, negatives=True)
    for i in (0, 7, 49):
        x, y = a[i], b[i]
        assert torch.equal(x["image"], y["image"]) and x["caption"] == y["caption"] and x["scene"] == y["scene"]
        assert x["captions"] == y["captions"] and x["negative"] == y["negative"]
    # random access order does not matter
    assert a[3]["scene"] == ShapesCaptionDataset("train", 50, seed=3)[3]["scene"]
    assert a[-1]["scene"] == a[49]["scene"]
    # other seeds and other splits give other scenes
    assert ShapesCaptionDataset("train", 50, seed=4)[0]["scene"] != a[0]["scene"]
    scenes = {s: {split_scene(s, i, 3)[0] for i in range(200)} for s in ("train", "val", "test")}
    assert not scenes["train"] & scenes["val"] and not scenes["train"] & scenes["test"]


def test_item_contents():
    ds = ShapesCaptionDataset("val", 20, negatives=True, caption_kind="random")
    for i in range(20):
        item = ds[i]
        img = item["image"]
        assert img.shape == (3, 64, 64) and img.dtype == torch.float32 and 0 <= img.min() and img.max() <= 1
        assert holds(item["meaning"], item["scene"], ds.config.margin)
        assert item["caption"] and item["captions"] and isinstance(item["statements"], list)
        assert item["boxes"].shape == (len(item["scene"]), 4)
        assert isinstance(item["negative"], str)
        assert 1 <= len(item["scene"]) <= 3


def test_held_out_compositions_never_leak_into_train():
    held = set(DEFAULT_HELD_OUT)
    for split in ("train", "val", "test"):
        for i in range(300):
            scene, _ = split_scene(split, i, 0, WorldConfig(max_objects=4))
            assert not {o.composition for o in scene} & held
    comp = ShapesCaptionDataset("compositional", 100)
    counts = {pair: 0 for pair in held}
    for i in range(100):
        present = {o.composition for o in comp[i]["scene"]} & held
        assert present
        for pair in present:
            counts[pair] += 1
    assert all(n > 0 for n in counts.values())
    # a custom held-out set, and none at all
    custom = ShapesCaptionDataset("train", 200, num_objects=1, held_out=[("red", "circle")])
    assert all(custom[i]["label"] != "red circle" for i in range(200))
    everything = {ShapesCaptionDataset("train", 600, num_objects=1, held_out=())[i]["label"] for i in range(600)}
    assert len(everything) == 48


def test_single_object_classification():
    ds = ShapesCaptionDataset("test", 30, num_objects=(1, 1))
    assert len(ds.classnames) == 48 and ds.classnames[0] == "red circle"
    for i in range(30):
        item = ds[i]
        obj = item["scene"][0]
        assert item["label"] == f"{obj.color} {obj.shape}" == ds.classnames[item["label_id"]]
    assert "label" not in ShapesCaptionDataset("test", 5, num_objects=(1, 2))[0]


def test_distinct_blocks_have_no_repeated_composition():
    block = 40
    ds = ShapesCaptionDataset("train", 4 * block, num_objects=1, statements=False, distinct=block, seed=2)
    held = set(DEFAULT_HELD_OUT)
    blocks = [[ds[b * block + j]["label"] for j in range(block)] for b in range(4)]
    for labels in blocks:
        assert len(set(labels)) == block  # no two items of a block share a composition
        assert not {tuple(lab.split()) for lab in labels} & held
    assert blocks[0] != blocks[1]  # each block draws its own order
    # a pure function of (seed, split, index), like every item
    again = ShapesCaptionDataset("train", 4 * block, num_objects=1, statements=False, distinct=block, seed=2)
    assert again[57]["scene"] == ds[57]["scene"]
    # random batches of the same size repeat compositions: that is what `distinct` removes
    plain = ShapesCaptionDataset("train", block, num_objects=1, statements=False, seed=2)
    assert len({plain[j]["label"] for j in range(block)}) < block
    # multi-object scenes: the first objects are distinct; the compositional split draws them from held_out
    multi = ShapesCaptionDataset("compositional", 12, statements=False, distinct=6)
    firsts = [multi[j]["scene"][0].composition for j in range(6)]
    assert set(firsts) == held


@pytest.mark.parametrize("distinct, error", [(0, ValueError), (43, ValueError), (2.5, TypeError), (True, TypeError)])
def test_bad_distinct(distinct, error):
    with pytest.raises(error, match="distinct must be an int in"):
        ShapesCaptionDataset("train", 50, distinct=distinct)


def test_collate_tokenises():
    tok = Tokenizer.load()
    ds = ShapesCaptionDataset("train", 8, num_objects=1, negatives=True)
    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=make_collate(tok, max_length=16))))
    assert batch["pixel_values"].shape == (4, 3, 64, 64)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.dtype == torch.int64 and ids.shape == mask.shape and ids.shape[0] == 4 and ids.shape[1] <= 16
    last = mask.sum(1) - 1
    assert (ids[torch.arange(4), last] == tok.eos_id).all()
    assert tok.decode(ids[0]) == batch["captions"][0]
    assert batch["labels"].shape == (4,) and batch["negative_ids"].shape[0] == 4
    with pytest.raises(ValueError, match="empty batch"):
        make_collate(tok)([])


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        (dict(split="training"), ValueError),
        (dict(split=1), TypeError),
        (dict(size=0), ValueError),
        (dict(size=2.5), TypeError),
        (dict(num_objects=(3, 1)), ValueError),
        (dict(held_out=[("mauve", "circle")]), ValueError),
        (dict(held_out="red circle"), TypeError),
        (dict(caption_kind="poem"), ValueError),
        (dict(config=WorldConfig.from_preset("tiny").to_dict()), TypeError),
        (dict(seed=-1), ValueError),
    ],
)
def test_bad_dataset_args(kwargs, exc):
    with pytest.raises(exc):
        ShapesCaptionDataset(**kwargs)


def test_index_errors():
    ds = ShapesCaptionDataset("train", 5)
    with pytest.raises(IndexError):
        ds[5]
    with pytest.raises(TypeError):
        ds["0"]
    with pytest.raises(ValueError, match="compositional"):
        ShapesCaptionDataset("compositional", 5, held_out=())
    with pytest.raises(ValueError, match="every"):
        ShapesCaptionDataset("train", 5, config=WorldConfig(colors=("red",), shapes=("circle",)),
                             held_out=[("red", "circle")])


def test_num_objects_follow_the_preset():
    cfg = WorldConfig.from_preset("small", image_size=32)
    ds = ShapesCaptionDataset("train", 60, config=cfg, statements=False)
    counts = {len(ds[i]["scene"]) for i in range(60)}
    assert counts == {1, 2, 3, 4} and "statements" not in ds[0]
    assert ds[0]["image"].shape == (3, 32, 32)
