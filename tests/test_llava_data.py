"""LLaVA's data (answers are the only targets; image placeholders expanded) and its two-stage CLI recipe."""

from __future__ import annotations

import contextlib
import io
import re

import pytest
import torch

from vlm_primer.backbones import Llava, LlavaConfig
from vlm_primer.backbones.data import LlavaChatDataset, llava_collate, prompt_ids
from vlm_primer.text import Tokenizer
from vlm_primer.world import WorldConfig

WORLD = WorldConfig(image_size=48, sizes=("large",))


@pytest.mark.parametrize("kind", ["caption", "vqa", "instruct"])
def test_items_expand_the_image_and_target_only_answers(kind):
    tok = Tokenizer.load()
    ds = LlavaChatDataset(kind, "train", 6, image_tokens=16, config=WORLD, num_objects=(1, 2))
    for i in range(len(ds)):
        item = ds[i]
        ids, target = item["input_ids"], item["target"]
        assert len(ids) == len(target) and ids.count(5) == 16 and item["image"].shape == (3, 48, 48)
        assert not any(t for t, x in zip(target, ids) if x == 5)   # no image position is a target
        assert ids[-1] == tok.end_id and target[-1]                 # the answer's <|end|> is learned
        first = target.index(True)
        assert tok.decode(ids[first - 1:first], skip_special=False) == "<|assistant|>"  # targets start after the role
    batch = llava_collate()([ds[0], ds[1]])
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert ((batch["labels"] != -100) <= batch["attention_mask"].bool()).all()   # padding is never a target


def test_a_batch_trains_and_prompts_generate():
    model = Llava(LlavaConfig.from_preset("tiny", connector="pixel_shuffle"))
    ds = LlavaChatDataset("vqa", "train", 4, image_tokens=model.tokens_per_image, config=WORLD, num_objects=(1, 2))
    out = model(**llava_collate()([ds[i] for i in range(4)]))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.connector.mlp.fc1.weight.grad is not None
    ids = prompt_ids(Tokenizer.load(), "what color is the circle?", model.tokens_per_image)
    new = model.generate(torch.tensor([ids]), torch.rand(1, 3, 48, 48), max_new_tokens=3)
    assert new.shape == (1, 3)
    with pytest.raises(ValueError, match="image_tokens"):
        LlavaChatDataset("vqa", image_tokens=0)
    with pytest.raises(ValueError, match="kind must be one of"):
        LlavaChatDataset("pretrain", image_tokens=4)


def test_cli_runs_stage_1_then_stage_2_from_its_checkpoint(tmp_path):
    from vlm_primer.train import main

    common = ["--preset", "tiny", "--batch-size", "4", "--steps", "2", "--no-progress", "--device", "cpu"]
    h1 = main(["llava", *common, "--set", "stage=1", "--set", "train_size=16", "--ckpt-dir", str(tmp_path / "s1")])
    h2 = main(["llava", *common, "--set", "stage=2", "--set", "train_size=16", "--set", f"init={tmp_path / 's1'}"])
    assert h1[-1]["step"] == h2[-1]["step"] == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in h1 + h2)
    with pytest.raises(SystemExit, match="^2$"), contextlib.redirect_stderr(io.StringIO()) as err:
        main(["llava", *common, "--set", "stages=2"])
    assert re.search(r"unknown --set option\(s\) \['stages'\]", err.getvalue()), err.getvalue()


def test_anyres_items_tile_or_squeeze_and_a_batch_trains():
    from vlm_primer.backbones import LlavaNext, LlavaNextConfig, anyres_view
    from vlm_primer.backbones.data import AnyResVQADataset
    from vlm_primer.backbones.stages import mosaic_set, vqa_eval

    cfg = LlavaNextConfig.from_preset("tiny")
    cfg.text = cfg.text.replace(context_length=512)
    model = LlavaNext(cfg)
    questions = mosaic_set(8, split="train")
    image = questions[0]["image"]
    tiles, size = anyres_view(image, cfg)
    assert size == (96, 96) and tiles.shape == (5, 3, 48, 48)       # base view + 2 x 2 tiles
    small, small_size = anyres_view(image, cfg, lambda x: x * 0, squeeze=True)
    assert small_size == (48, 48) and small.shape == (3, 3, 48, 48) and not small.any()   # transform applied
    ds = AnyResVQADataset(questions, cfg, squeeze=0.5, seed=3)
    again = AnyResVQADataset(questions, cfg, seed=3)
    assert [ds.squeezed(i) for i in range(8)] == [again.squeezed(i) for i in range(8)]   # drawn per item from seed
    assert 0 < sum(ds.squeezed(i) for i in range(200)) < 200
    assert not AnyResVQADataset(questions, cfg, squeeze=0).squeezed(1)
    items = [ds[i] for i in range(4)]
    for it in items:
        assert it["input_ids"].count(cfg.image_token_id) == cfg.num_image_tokens(it["image_size"])
        assert not any(t for t, x in zip(it["target"], it["input_ids"]) if x == cfg.image_token_id)
    batch = llava_collate()(items)
    assert isinstance(batch["pixel_values"], list)
    assert batch["image_sizes"].tolist() == [list(it["image_size"]) for it in items]
    out = model(**batch)
    out.loss.backward()
    assert torch.isfinite(out.loss) and model.image_newline.grad is not None
    result = vqa_eval(model, lambda x: x, questions, squeeze=True, batch_size=4)
    assert len(result["predictions"]) == 8 and 0 <= result["accuracy"]["all"] <= 1
    with pytest.raises(ValueError, match="squeeze is the fraction"):
        AnyResVQADataset(questions, cfg, squeeze=1.5)
