"""The chapter-02 recipes run through ``python -m vlm_primer.train`` on Shapes World and on shards."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlm_primer.contrastive.recipes import pair_collate, retrieval_eval
from vlm_primer.training.recipes import RecipeArgs, available_recipes, get_recipe


def test_recipes_are_registered():
    names = available_recipes()
    assert {"clip", "siglip", "llip"} <= set(names)


@pytest.mark.parametrize("name", ["clip", "siglip", "llip"])
def test_recipe_trains_two_steps(name, tmp_path):
    from vlm_primer.train import main

    history = main([name, "--preset", "tiny", "--steps", "2", "--batch-size", "4", "--no-progress",
                    "--set", "train_size=16", "--set", "eval_size=8", "--warmup-steps", "1"])
    assert history[-1]["step"] == 2
    assert torch.isfinite(torch.tensor(history[-1]["loss"]))
    assert 0.0 <= history[-1]["val_t2i_R@1"] <= 1.0


def test_recipe_on_webdataset_shards(tmp_path):
    from vlm_primer.training.shards import write_shards

    gen = torch.Generator().manual_seed(0)
    samples = [{"image": torch.rand(3, 48, 48, generator=gen), "caption": f"a red circle number {i}"} for i in range(8)]
    urls = write_shards(samples, tmp_path, maxcount=4)
    job = get_recipe("clip").build(RecipeArgs(preset="tiny", shards=str(tmp_path / "shard-{000000..000001}.tar"),
                                              batch_size=4, options={"eval_size": "8"}))
    batch = next(iter(job.train_data))
    assert len(urls) == 2
    assert set(batch) == {"pixel_values", "input_ids", "attention_mask"}
    assert batch["pixel_values"].shape == (4, 3, 64, 64)  # resized to the model's image size
    out = job.model(**batch)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)


def test_collate_and_eval_helpers():
    from vlm_primer.contrastive import CLIP, CLIPConfig
    from vlm_primer.text import Tokenizer

    collate = pair_collate(Tokenizer.load(), max_length=8, image_size=32)
    batch = collate([{"image": torch.rand(3, 32, 32), "caption": "a big blue star and a small red circle"},
                     {"image": torch.rand(3, 64, 64), "caption": "a disk"}])
    assert batch["pixel_values"].shape == (2, 3, 32, 32) and batch["input_ids"].shape[1] <= 8
    assert batch["input_ids"][0, -1].item() == 3  # truncated, <eos> kept last
    cfg = CLIPConfig.from_preset("tiny")
    model = CLIP(cfg.replace(vision=cfg.vision.replace(image_size=32, depth=1), text=cfg.text.replace(depth=1)))
    metrics = retrieval_eval(batch, ks=(1, 2))(model)
    assert metrics["val_i2t_R@2"] == 1.0 and set(metrics) == {"val_i2t_R@1", "val_i2t_R@2", "val_t2i_R@1",
                                                             "val_t2i_R@2"}
    with torch.no_grad():  # Recall@1 by hand: is the pair's score the row's (the column's) highest?
        sim = (F.normalize(model.encode_image(batch["pixel_values"]), dim=-1)
               @ F.normalize(model.encode_text(batch["input_ids"], attention_mask=batch["attention_mask"]), dim=-1).t())
    assert metrics["val_i2t_R@1"] == (sim.argmax(1) == torch.arange(2)).float().mean().item()
    assert metrics["val_t2i_R@1"] == (sim.argmax(0) == torch.arange(2)).float().mean().item()
    with pytest.raises(ValueError, match="empty"):
        collate([])
    with pytest.raises(ValueError, match="unknown --set"):
        get_recipe("clip").build(RecipeArgs(preset="tiny", options={"lr": "1"}))
    with pytest.raises(ValueError, match=r"unknown --set option\(s\) \['loss'\]"):  # Llip's option, not CLIP's
        get_recipe("clip").build(RecipeArgs(preset="tiny", options={"loss": "infonce"}))


def test_cli_refuses_bad_flags_before_training(tmp_path, capsys):
    """Every problem the flags, the options or the checkpoint folder hold is one usage line (exit 2) before a step
    is trained; nothing the user has is touched."""
    from vlm_primer.train import main

    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    run = tmp_path / "run"
    small = ["--steps", "1", "--batch-size", "4", "--no-progress", "--set", "train_size=8", "--set", "eval_size=4"]
    main(["clip", *small, "--ckpt-dir", str(run)])
    cases = [
        (["--ckpt-dir", str(notes)], "cannot be a checkpoint folder"),
        (["--set", "foo=1"], "unknown --set option"),
        (["--set", "train_size=abc"], "--set train_size=abc: expected a whole number (default 50000)"),
        (["--peft", "lora", "--peft-r", "0"], "--peft-r must be an int >= 1"),
        (["--resume"], "give --ckpt-dir"),
        (["--grad-clip", "-1"], "--grad-clip must be a max norm >= 0"),
        (["--resume", str(tmp_path / "nope")], "no such checkpoint folder"),
        (["--resume", str(run)], "is a run's folder, not one checkpoint"),
        (["--ckpt-dir", str(run)], "already holds 1 checkpoint(s)"),
    ]
    for extra, message in cases:
        with pytest.raises(SystemExit) as exit_:
            main(["clip", *small, *extra])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and message in err and "Traceback" not in err, (extra, err)
    with pytest.raises(SystemExit):
        main(["--list", "--recipe-module", "no_such_module"])
    assert "cannot be imported" in capsys.readouterr().err
    assert notes.read_text() == "mine" and sorted(p.name for p in run.iterdir()) == ["step_00000001"]


def test_recipe_options_parse_to_their_defaults_type_and_name_a_bad_value():
    args = RecipeArgs(options={"n": "12", "lr": "3e-4", "on": "Yes", "off": "0", "name": "x", "bad": "1.5"})
    assert args.option("n", 5) == 12 and args.option("lr", 0.1) == 3e-4 and args.option("name", "y") == "x"
    assert args.option("on", False) is True and args.option("off", True) is False and args.option("gone", 7) == 7
    with pytest.raises(ValueError, match=r"--set bad=1.5: expected a whole number \(default 5\)"):
        args.option("bad", 5)
    with pytest.raises(ValueError, match="--set name=x: expected 1/0, true/false or yes/no"):
        args.option("name", False)
    args.check_options(("n", "lr", "on", "off", "name", "bad"))
    with pytest.raises(ValueError, match=r"unknown --set option\(s\) \['bad', 'name'\]; this recipe knows \('n',"):
        args.check_options(("n", "lr", "on", "off"))
