"""``python -m vlm_primer.train blip2 --stage 1|2`` and ``flamingo`` at the tiny preset: a few steps each, stage 2
starting from stage 1's Q-Former, the options checked."""

from __future__ import annotations

import contextlib
import io
import re

import pytest
import torch

COMMON = ["--preset", "tiny", "--batch-size", "4", "--steps", "2", "--no-progress", "--device", "cpu",
          "--set", "train_size=16"]


def _finite(history):
    return all(torch.isfinite(torch.tensor(h["loss"])) for h in history)


def test_blip2_stage_1_then_stage_2_from_its_q_former(tmp_path):
    from vlm_primer.train import main
    from vlm_primer.training.checkpoint import latest_checkpoint

    h1 = main(["blip2", *COMMON, "--stage", "1", "--ckpt-dir", str(tmp_path / "s1")])
    h2 = main(["blip2", *COMMON, "--stage", "2", "--set", f"qformer_init={tmp_path / 's1'}", "--set", "data=vqa",
               "--ckpt-dir", str(tmp_path / "s2")])
    assert h1[-1]["step"] == h2[-1]["step"] == 2 and _finite(h1 + h2)
    # stage 2 began from stage 1's queries: its saved Q-Former text side is stage 1's, untouched
    from safetensors.torch import load_file

    s1 = load_file(latest_checkpoint(tmp_path / "s1") / "model.safetensors")
    s2 = load_file(latest_checkpoint(tmp_path / "s2") / "model.safetensors")
    assert torch.equal(s1["lm_head.word_emb.weight"], s2["qformer.word_emb.weight"])  # (stage 1 ties them)
    assert torch.equal(s1["qformer.itm_head.weight"], s2["qformer.itm_head.weight"])
    assert not torch.equal(s1["qformer.query_tokens"], s2["qformer.query_tokens"])
    with pytest.raises(SystemExit, match="^2$"), contextlib.redirect_stderr(io.StringIO()) as err:
        main(["blip2", *COMMON, "--stage", "3"])
    assert re.search("stages 1 and 2", err.getvalue()), err.getvalue()
    with pytest.raises(SystemExit, match="^2$"), contextlib.redirect_stderr(io.StringIO()) as err:
        main(["blip2", *COMMON, "--set", "connector=mlp"])
    assert re.search(r"unknown --set option\(s\) \['connector'\]", err.getvalue()), err.getvalue()


def test_flamingo_trains_only_its_new_layers():
    from vlm_primer.train import main

    history = main(["flamingo", *COMMON])
    assert history[-1]["step"] == 2 and _finite(history)


def test_replies_from_instructblip_and_flamingo_and_an_instruction_batch():
    """generate_replies hands InstructBLIP's Q-Former the question, and reads Flamingo's new tokens; the
    instruction dataset's batches carry the question for the Q-Former."""
    from vlm_primer.backbones import Flamingo, FlamingoConfig, InstructBlip, InstructBlipConfig
    from vlm_primer.backbones.data import InstructionChatDataset, llava_collate
    from vlm_primer.backbones.inference import generate_replies

    torch.manual_seed(0)
    images = torch.rand(3, 3, 48, 48)
    for model in (InstructBlip(InstructBlipConfig.from_preset("tiny")), Flamingo(FlamingoConfig.from_preset("tiny"))):
        replies = generate_replies(model.eval(), ["what color is it?", "how many?", "is there a star?"], images,
                                   max_new_tokens=3, batch_size=2)
        assert len(replies) == 3 and all(isinstance(r, str) for r in replies)
    model = InstructBlip(InstructBlipConfig.from_preset("tiny"))
    from vlm_primer.backbones.stages import TINY_WORLD
    from vlm_primer.world import WorldConfig

    data = InstructionChatDataset("vqa", size=4, image_tokens=model.tokens_per_image, config=WorldConfig(**TINY_WORLD))
    batch = llava_collate()([data[i] for i in range(3)])
    assert batch["qformer_input_ids"].shape[0] == 3 and batch["qformer_attention_mask"].sum(1).min() > 2
    out = model(**batch)
    assert torch.isfinite(out.loss)


def test_minigpt4_trains_the_projection_alone():
    """``--set train_qformer=0``: stage 2 trains the projection and nothing else (MiniGPT-4's recipe)."""
    from vlm_primer.backbones.recipes import blip2_recipe
    from vlm_primer.training.recipes import RecipeArgs

    options = {"stage": "2", "data": "vqa", "train_size": "16"}
    for train_qformer, want in (("0", {"language_projection"}), ("1", {"language_projection", "qformer"})):
        job = blip2_recipe(RecipeArgs(options=dict(options, train_qformer=train_qformer)))
        assert {n.split(".")[0] for n, p in job.model.named_parameters() if p.requires_grad} == want
    batch = next(iter(torch.utils.data.DataLoader(job.train_data, 4, collate_fn=job.collate_fn)))
    job = blip2_recipe(RecipeArgs(options=dict(options, train_qformer="0")))
    job.model(**batch).loss.backward()
    assert {n.split(".")[0] for n, p in job.model.named_parameters() if p.grad is not None} == {"language_projection"}


@pytest.mark.parametrize("name", ["Blip2Config", "InstructBlipConfig", "FlamingoConfig", "LlavaConfig",
                                  "LlavaNextConfig", "QFormerConfig"])
def test_every_preset_builds(name):
    """Each preset is a valid config, and the paper-shaped models build (on the meta device: shapes only)."""
    from vlm_primer import backbones

    cls = getattr(backbones, name)
    for preset in cls.PRESETS:
        cfg = cls.from_preset(preset)
        model_cls = {"Blip2Config": "Blip2", "InstructBlipConfig": "InstructBlip", "FlamingoConfig": "Flamingo",
                     "LlavaConfig": "Llava", "LlavaNextConfig": "LlavaNext", "QFormerConfig": "QFormer"}[name]
        with torch.device("meta"):
            model = getattr(backbones, model_cls)(cfg)
        assert sum(p.numel() for p in model.parameters()) > 0
