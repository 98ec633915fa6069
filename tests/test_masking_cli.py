"""``python -m vlm_primer.train mae`` at the tiny preset: a few steps, checkpoints, options checked; the base preset
is the paper's ViT-B/16 MAE."""

from __future__ import annotations

import contextlib
import io
import re

import pytest
import torch

COMMON = ["--preset", "tiny", "--batch-size", "4", "--steps", "2", "--no-progress", "--device", "cpu",
          "--set", "train_size=16"]


def test_mae_recipe_trains_checkpoints_and_checks_its_options(tmp_path):
    from vlm_primer.train import main

    history = main(["mae", *COMMON, "--ckpt-dir", str(tmp_path), "--ckpt-every", "2", "--set", "mask_ratio=0.5"])
    assert history[-1]["step"] == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    assert any(tmp_path.iterdir())
    with pytest.raises(SystemExit, match="^2$"), contextlib.redirect_stderr(io.StringIO()) as err:
        main(["mae", *COMMON, "--set", "stage=1"])
    assert re.search(r"unknown --set option\(s\) \['stage'\]", err.getvalue()), err.getvalue()


def test_mae_learning_rate_follows_the_global_batch(monkeypatch):
    """1.5e-4 x batch / 256 on the batch of one optimizer step: --batch-size x --grad-accum x processes."""
    from vlm_primer.masking.recipes import mae_recipe
    from vlm_primer.training.recipes import RecipeArgs

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert mae_recipe(RecipeArgs(preset="small", batch_size=64)).config.lr == pytest.approx(1.5e-4 / 4)
    assert mae_recipe(RecipeArgs(preset="small", batch_size=64, grad_accum=4)).config.lr == pytest.approx(1.5e-4)
    monkeypatch.setenv("WORLD_SIZE", "16")   # what torchrun sets: 16 processes of 64 x 4 = 4,096, the paper's batch
    assert mae_recipe(RecipeArgs(preset="small", batch_size=64, grad_accum=4)).config.lr == pytest.approx(2.4e-3)
    assert mae_recipe(RecipeArgs(preset="tiny", batch_size=64, grad_accum=4)).config.lr == 1e-3


def test_mae_base_is_the_papers_vit_b16_with_its_decoder():
    from vlm_primer.masking import MAE, MAEConfig

    with torch.device("meta"):
        mae = MAE(MAEConfig.from_preset("base"))

    def count(m):
        return sum(p.numel() for p in m.parameters())

    assert mae.cfg.mask_ratio == 0.75 and mae.cfg.norm_pix_loss and mae.cfg.encoder.num_patches == 196
    assert abs(count(mae.encoder) - 85.8e6) < 0.2e6  # ViT-B/16 without a classifier
    decoder = count(mae) - count(mae.encoder)
    assert abs(decoder - 26.2e6) < 0.3e6, decoder  # the paper's decoder: 8 blocks, 512 wide


def test_flava_recipe_trains_all_five_objectives(tmp_path):
    from vlm_primer.train import main

    history = main(["flava", *COMMON, "--ckpt-dir", str(tmp_path), "--ckpt-every", "2"])
    assert history[-1]["step"] == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    with pytest.raises(SystemExit, match="^2$"), contextlib.redirect_stderr(io.StringIO()) as err:
        main(["flava", *COMMON, "--set", "mask_ratio=0.5"])
    assert re.search(r"unknown --set option\(s\) \['mask_ratio'\]", err.getvalue()), err.getvalue()


def test_flava_collate_and_joint_step_run_every_loss():
    from vlm_primer.masking import Flava, FlavaConfig
    from vlm_primer.masking.recipes import FlavaJointStep, flava_collate, shapes_codebook
    from vlm_primer.world import ShapesCaptionDataset, WorldConfig

    cfg = FlavaConfig.from_preset("tiny")
    codebook = shapes_codebook(WorldConfig(image_size=48), 6, 16, n=32)
    assert codebook.codes.shape == (16, 108)
    data = ShapesCaptionDataset("train", 8, WorldConfig(image_size=48), statements=False)
    batch = flava_collate(cfg.replace(codebook_size=16), codebook)([data[i] for i in range(8)])
    assert batch["mim_labels"].max() < 16 and batch["itm_labels"].shape == (8,)
    same = batch["input_ids"] == batch["text_ids"]
    assert torch.equal(batch["itm_labels"].bool(), same.all(1))  # a pair matches iff the caption is its own
    out = FlavaJointStep(Flava(cfg.replace(codebook_size=16)))(**batch)
    assert set(out.losses) == {"mim", "mlm", "mmm_image", "mmm_text", "itm", "global_contrastive"}
    torch.testing.assert_close(out.loss.detach(), sum(out.losses.values()), atol=1e-4, rtol=1e-4)


def test_flava_hard_negatives_pair_each_image_with_its_own_swap(tmp_path):
    from vlm_primer.masking import FlavaConfig
    from vlm_primer.masking.recipes import flava_collate, shapes_codebook, with_hard_negatives
    from vlm_primer.text import Tokenizer
    from vlm_primer.train import main
    from vlm_primer.world import ShapesCaptionDataset, WorldConfig

    cfg = FlavaConfig.from_preset("tiny", codebook_size=16)
    codebook = shapes_codebook(WorldConfig(image_size=48), 6, 16, n=32)
    data = ShapesCaptionDataset("train", 16, WorldConfig(image_size=48), num_objects=2, statements=False,
                                negatives=True)
    items = [data[i] for i in range(16)]
    batch = with_hard_negatives(flava_collate(cfg, codebook), cfg, prob=1.0)(items)
    tok = Tokenizer.load()
    for row, it, label in zip(batch["input_ids"], items, batch["itm_labels"].tolist()):
        text = tok.decode(row)
        assert (text == it["negative"] and label == 0) if it["negative"] else (text == it["caption"] and label == 1)
    assert batch["itm_labels"].eq(0).any()
    with pytest.raises(ValueError, match="negatives=True"):
        with_hard_negatives(flava_collate(cfg, codebook), cfg)([{k: v for k, v in it.items() if k != "negative"}
                                                                for it in items[:2]])
    history = main(["flava", *COMMON, "--set", "negatives=hard"])
    assert history[-1]["step"] == 2
    with pytest.raises(SystemExit, match="^2$"), contextlib.redirect_stderr(io.StringIO()) as err:
        main(["flava", *COMMON, "--set", "negatives=soft"])
    assert re.search("'random' or 'hard'", err.getvalue()), err.getvalue()
